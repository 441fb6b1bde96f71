"""The PNG figures of both studies (matplotlib, imported only when plotting)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import NUM_CLASSES
from .stats import mean_std


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    plt = _pyplot()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _accuracy_vs_if(
    axes: Sequence[Any], summary: dict[str, Any], rows: Sequence[str], ifs: Sequence[float], style: dict[str, Any]
) -> None:
    """All (left) and Few (right) accuracy against the imbalance factor, one line per row, mean ± std."""
    for ax, metric in zip(axes, ("all", "few")):
        for row in rows:
            pts = [(f, summary["rows"][f"{f:g}"][row][metric]) for f in ifs if row in summary["rows"][f"{f:g}"]]
            pts = [(f, ms) for f, ms in pts if not math.isnan(ms[0])]
            if pts:
                ax.errorbar(
                    [p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], label=row, **style[row]
                )
        ax.set_xscale("log")
        ax.set_xticks(ifs, [f"{f:g}" for f in ifs])
        ax.set_xlabel("imbalance factor")
        ax.set_ylabel(f"{metric.capitalize()} accuracy (%)")
        ax.grid(alpha=0.3)


def _per_class(ax: Any, runs: list[dict[str, Any]], rows: Sequence[str], f: float, style: dict[str, Any]) -> None:
    """Per-class accuracy (%) of each row at IF ``f``, mean ± std over seeds."""
    for row in rows:
        per = [r["per_class_accuracy"] for r in runs if r["row"] == row and r["imbalance_factor"] == f]
        if per:
            ms = [mean_std([100 * p[c] for p in per]) for c in range(NUM_CLASSES)]
            ax.errorbar(range(NUM_CLASSES), [v[0] for v in ms], yerr=[v[1] for v in ms], label=row, **style[row])
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)


def paper_plots(results: dict[str, Any], recipe: Any, out: Path) -> list[str]:
    """Figures 4, 5a, 5b and 7 of the paper, redrawn from the paper study's ``results``."""
    from .paper_study import ROWS, STEM

    plt = _pyplot()
    summary = results["summary"]
    written = []
    ifs = list(recipe.imbalance_factors)
    styles = {
        row: dict(marker="o" if row in ("naive", "+BWLM") else ".", lw=2.5 if row == "+BWLM" else 1.2) for row in ROWS
    }
    with_caps = {row: {**s, "capsize": 3} for row, s in styles.items()}

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _accuracy_vs_if(axes, summary, ROWS, ifs, with_caps)
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(f"Fashion-MNIST-LT: accuracy vs IF (mean ± std, {len(recipe.seeds)} seeds) — cf. paper Fig. 5b")
    fig.tight_layout()
    written.append(_save(fig, out / f"{STEM}_accuracy_vs_if.png"))

    f = f"{recipe.alpha_sweep_if:g}"
    norms = summary["weight_norms"].get(f, {})
    if norms:
        counts = next(j["train_counts"] for j in results["jobs"] if f"{j['imbalance_factor']:g}" == f)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        x = list(range(NUM_CLASSES))
        for row in ("naive", "+CE", "+CEW", "+CBW", "+BSW", "+BWLM"):
            if row not in norms:
                continue
            m = [p[0] for p in norms[row]]
            s = [p[1] for p in norms[row]]
            axes[0].errorbar(x, m, yerr=s, label=row, capsize=2, **styles[row])
            mean = sum(m) / len(m)
            axes[1].plot(x, [v / mean for v in m], label=row, **styles[row])
        for ax, title in zip(axes, ("per-class weight norm", "norm / mean norm of the row")):
            ax.set_xlabel("class (descending training count)")
            ax.set_ylabel(title)
            ax.grid(alpha=0.3)
            twin = ax.twinx()
            twin.plot(x, counts, "k--", lw=1)
            twin.set_ylabel("training images (dashed)")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Classifier weight norms, IF = {f} (mean over seeds) — cf. paper Fig. 5a")
        fig.tight_layout()
        written.append(_save(fig, out / f"{STEM}_weight_norms.png"))

    if summary["alpha"]:
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
        alphas = [float(a) for a in summary["alpha"]]
        for ax, metric in zip(axes, ("all", "many", "medium", "few")):
            m = [summary["alpha"][f"{a:g}"][metric][0] for a in alphas]
            s = [summary["alpha"][f"{a:g}"][metric][1] for a in alphas]
            ax.errorbar(alphas, m, yerr=s, marker="o", capsize=3)
            ax.set_title(metric.capitalize())
            ax.set_xlabel("alpha")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("accuracy (%)")
        fig.suptitle(f"BWLM alpha sweep, IF = {recipe.alpha_sweep_if:g} (mean ± std) — cf. paper Fig. 4")
        fig.tight_layout()
        written.append(_save(fig, out / f"{STEM}_alpha_sweep.png"))

    f_max = max(ifs)
    fig, ax = plt.subplots(figsize=(7, 4))
    _per_class(ax, results["runs"], ("naive", "+CE", "+BWLM"), f_max, with_caps)
    ax.set_xlabel("class (descending training count)")
    ax.set_title(f"Per-class accuracy, IF = {f_max:g} (mean ± std) — cf. paper Fig. 7")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out / f"{STEM}_per_class.png"))
    return written


def method_plots(results: dict[str, Any], design: Any, out: Path) -> list[str]:
    """Accuracy against IF for every row, and per-class accuracy of a few rows, of the method study."""
    from .method_study import GROUP, PLOT_ROWS, ROWS, STEM

    plt = _pyplot()
    ifs = list(design.imbalance_factors)
    written = []
    style = {
        row: dict(
            capsize=2,
            ls="-" if GROUP[row] == "one-stage" else ("--" if GROUP[row].startswith("decoupled") else ":"),
            marker="o" if row in PLOT_ROWS else ".",
            lw=2 if row == "CE" else 1,
        )
        for row in ROWS
    }
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    _accuracy_vs_if(axes, results["summary"], ROWS, ifs, style)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"Fashion-MNIST-LT, permuted class order: accuracy vs IF (mean ± std, {len(design.seeds)} seeds); "
        "solid one-stage, dashed decoupled, dotted two-stage"
    )
    fig.tight_layout()
    written.append(_save(fig, out / f"{STEM}_accuracy_vs_if.png"))

    f_plot = 100 if 100 in ifs else max(ifs)
    fig, ax = plt.subplots(figsize=(8, 4.4))
    _per_class(ax, results["runs"], PLOT_ROWS, f_plot, {row: {"capsize": 2, "marker": "o"} for row in PLOT_ROWS})
    ax.set_xlabel("frequency rank (0 = head; a different Fashion-MNIST class per seed)")
    ax.set_title(f"Per-class accuracy by frequency rank, IF = {f_plot:g} (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    written.append(_save(fig, out / f"{STEM}_per_class.png"))
    return written
