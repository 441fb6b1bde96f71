"""What both studies share: settings, data, metrics, running the tasks, the command line and report helpers."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from longtail_losses import paper
from longtail_losses.data import fashion_mnist_lt
from longtail_losses.metrics import classifier_weight_norms, per_class_accuracy, shot_accuracy

from .stats import mean_std

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
RESULTS = Path(__file__).resolve().parents[1] / "results"
NUM_CLASSES = 10
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics
SHOTS = ("many", "medium", "few", "all")


@dataclass(frozen=True)
class Settings:
    """The settings of both studies; the loss hyperparameters are the paper's (:data:`longtail_losses.paper.RECIPE`).

    ``max_count`` is the head class size of CIFAR-100-LT, so the paper's Many (> 100) / Medium / Few (< 20)
    thresholds apply unchanged; ``stage2_steps`` gives stage 2 the paper's lr x steps on CIFAR-100-LT.
    """

    imbalance_factors: tuple[float, ...] = (10, 100, 200)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_count: int = 500
    many_threshold: float = 100
    few_threshold: float = 20
    batch_size: int = paper.RECIPE.batch_size
    weight_decay: float = paper.RECIPE.weight_decay
    alpha: float = paper.RECIPE.alpha
    beta: float = paper.RECIPE.beta
    gamma: float = paper.RECIPE.gamma
    stage2_steps: int = 3_392
    quick: bool = False


def criterion(
    row: str, counts: Tensor, classifier: nn.Module, settings: Settings, alpha: Optional[float] = None
) -> Any:
    """The loss of the paper's ``row`` with the study's hyperparameters (``alpha``: a sweep's, else the study's)."""
    alpha = settings.alpha if alpha is None else alpha
    s = settings
    return paper.criterion(
        row,
        counts,
        classifier,
        alpha=alpha,
        beta=s.beta,
        gamma=s.gamma,
        weight_decay=s.weight_decay,
        validate_args=False,
    )


def normalise(x: Tensor) -> Tensor:
    """Standardise pixels with the Fashion-MNIST training-set mean and std."""
    return (x - MEAN) / STD


_FULL: dict[tuple[str, bool], tuple[Tensor, Tensor]] = {}


def load_full(root: str, *, train: bool) -> tuple[Tensor, Tensor]:
    """All training (60,000) or test (10,000) images, normalised, with their labels; cached per process."""
    if (root, train) not in _FULL:
        x, y = fashion_mnist_lt(root, 1, train=train).as_tensors()
        _FULL[root, train] = (normalise(x), y)
    return _FULL[root, train]


def evaluate(
    logits: Tensor, target: Tensor, train_counts: Tensor, weight: Tensor, settings: Settings
) -> dict[str, Any]:
    """Shot accuracies (thresholds of ``settings``), per-class accuracy and the classifier's per-class norms."""
    shots = shot_accuracy(
        logits, target, train_counts, many_threshold=settings.many_threshold, few_threshold=settings.few_threshold
    )
    return {
        **shots,
        "per_class_accuracy": per_class_accuracy(logits, target, NUM_CLASSES).tolist(),
        "weight_norms": classifier_weight_norms(weight).tolist(),
    }


def run_all(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], jobs: int, describe: Callable) -> list[Any]:
    """``fn(*call)`` for every call, in order, on ``jobs`` spawned processes (in this process if ``jobs <= 1``).

    Every call is deterministic given its arguments, so the results do not depend on ``jobs``.
    """
    start = time.perf_counter()
    done = []
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) if jobs > 1 else nullcontext() as pool:
        for call, result in zip(calls, (pool.map if pool else map)(fn, *zip(*calls))):
            done.append(result)
            took = time.perf_counter() - start
            print(f"  [{len(done)}/{len(calls)}] {describe(call, result)} ({took:.0f} s)", flush=True)
    return done


def _commit() -> str:
    try:
        git = ["git", "rev-parse", "--short", "HEAD"]
        return subprocess.run(git, capture_output=True, text=True, check=True, cwd=RESULTS.parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_meta(*, command: str, jobs: int, root: str, load_start: Sequence[float], start: float) -> dict[str, Any]:
    """The record of a study's run: command, versions, machine, commit, load and wall time."""
    return {
        "command": command,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jobs": jobs,
        "threads_per_job": 1,
        "commit": _commit(),
        "root": root,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "wall_seconds": time.perf_counter() - start,
    }


def write_json(path: Path, results: dict[str, Any]) -> None:
    """``results`` as indented JSON (``NaN`` and ``Infinity`` allowed), with a final newline."""
    path.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")


def main(argv: Optional[Sequence[str]], study: Any, doc: str, quick_help: str) -> int:
    """The command line of both scripts; ``study`` is the module with ``STEM``, ``KEY``, ``QUICK`` and so on.

    Flags: ``--root --quick --out --jobs --seeds --report-only``.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, help="output folder (default benchmarks/results; --quick: a new temp one)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; --quick 2)")
    parser.add_argument("--report-only", action="store_true", help="rebuild Markdown and plots from the JSON in --out")
    if hasattr(study, "merge"):
        parser.add_argument(
            "--rows", help="run only these rows (comma-separated) and merge them into the JSON in --out"
        )
        parser.add_argument("--ifs", help="with --rows: only these imbalance factors (comma-separated)")
    args = parser.parse_args(argv)
    stem = study.STEM
    out = args.out or (Path(tempfile.mkdtemp(prefix=f"{stem}_quick_")) if args.quick else RESULTS)
    if args.report_only:
        results = json.loads((out / f"{stem}.json").read_text())
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in results[study.KEY].items()}
        study.report(results, type(study.QUICK)(**settings), out)
        print(f"rebuilt the report in {out}")
        return 0
    if getattr(args, "rows", None):
        return add_rows(args, study, argv, out)
    settings = study.QUICK if args.quick else type(study.QUICK)()
    if args.seeds is not None:
        settings = replace(settings, seeds=tuple(range(args.seeds)))
    command = f"python benchmarks/{stem}.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{stem}: {len(study.task_list(settings))} tasks on {args.jobs} workers -> {out}", flush=True)
    start, load_start = time.perf_counter(), os.getloadavg()
    fashion_mnist_lt(args.root, 1, train=False)  # fail early, with the reader's message, if the data are missing
    results = study.run_study(args.root, settings, args.jobs)
    meta = run_meta(command=command.strip(), jobs=args.jobs, root=args.root, load_start=load_start, start=start)
    results = {"meta": meta, study.KEY: asdict(settings), **results}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", results)  # the raw runs first
    study.report(results, settings, out)
    print(f"wrote {out / (stem + '.json')}, {stem}.md and plots in {meta['wall_seconds']:.0f} s")
    for line in study.headline(results):
        print(f"  {line}")
    return 0


def add_rows(args: argparse.Namespace, study: Any, argv: Optional[Sequence[str]], out: Path) -> int:
    """Run only ``--rows`` (at ``--ifs``) with the design of the JSON in ``out``; merge the runs; rebuild the report."""
    rows = tuple(r.strip() for r in args.rows.split(","))
    unknown = [r for r in rows if r not in study.NEW_ROWS]
    if unknown:
        raise SystemExit(f"--rows: expected rows of {study.NEW_ROWS}, but got {unknown}")
    old = json.loads((out / f"{study.STEM}.json").read_text())
    known = {f.name for f in fields(type(study.QUICK))}
    stored = {k: tuple(v) if isinstance(v, list) else v for k, v in old[study.KEY].items() if k in known}
    design = type(study.QUICK)(**stored)
    settings = design
    if args.ifs:
        ifs = (float(f) for f in args.ifs.split(","))
        settings = replace(design, imbalance_factors=tuple(int(f) if f.is_integer() else f for f in ifs))
    command = f"python benchmarks/{study.STEM}.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{study.STEM}: {len(study.task_list(settings, rows))} tasks on {args.jobs} workers -> {out}", flush=True)
    start, load_start = time.perf_counter(), os.getloadavg()
    new = study.run_study(args.root, settings, args.jobs, rows)
    meta = run_meta(command=command.strip(), jobs=args.jobs, root=args.root, load_start=load_start, start=start)
    merged = study.merge(old, new, rows, {**meta, "rows": list(rows), "imbalance_factors": settings.imbalance_factors})
    merged[study.KEY] = asdict(design)
    write_json(out / f"{study.STEM}.json", merged)
    study.report(merged, design, out)
    print(f"merged {len(new['runs'])} runs into {out / (study.STEM + '.json')} in {meta['wall_seconds']:.0f} s")
    return 0


# Report helpers.


def fmt(ms: Sequence[float], digits: int = 1) -> str:
    """``mean ± std`` with ``digits`` decimals; an en dash for ``nan``."""
    m, s = ms
    return "–" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


COMPARISON_HEADER = ("Comparison", "A", "B", "A − B", "seeds A > B", "t (df)", "p")


def comparison_cells(s: dict[str, Any], digits: int = 1) -> list[str]:
    """The cells of :data:`COMPARISON_HEADER` for the statistics ``s`` of :func:`.stats.compare`."""
    a, b, d = fmt(s["a_mean_std"], digits), fmt(s["b_mean_std"], digits), fmt((s["mean_diff"], s["std_diff"]), digits)
    return [s["label"], a, b, d, f"{s['wins']}/{s['n']}", f"{s['t']:.2f} ({s['df']})", f"{s['p']:.3f}"]


def pyplot() -> Any:
    """The pyplot of matplotlib on the Agg backend (imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> None:
    """Write ``fig`` as PNG and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def plot_accuracy_vs_if(
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


def plot_per_class(ax: Any, runs: list[dict[str, Any]], rows: Sequence[str], f: float, style: dict[str, Any]) -> None:
    """Per-class accuracy (%) of each row at IF ``f``, mean ± std over seeds."""
    for row in rows:
        per = [r["per_class_accuracy"] for r in runs if r["row"] == row and r["imbalance_factor"] == f]
        if per:
            ms = [mean_std([100 * p[c] for p in per]) for c in range(NUM_CLASSES)]
            ax.errorbar(range(NUM_CLASSES), [v[0] for v in ms], yerr=[v[1] for v in ms], label=row, **style[row])
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
