"""The multi-label study (``benchmarks/multilabel.py``): design, data, one task (one model) and the report."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

import longtail_losses as ltl
from longtail_losses.data import (
    MultiLabelClassAwareSampler,
    SeededBatchSampler,
    fashion_mnist_mosaic,
    multilabel_counts,
)
from longtail_losses.metrics import per_class_average_precision, shot_map

from . import common
from .common import NUM_CLASSES, SHOTS, fmt, normalise
from .stats import compare, mean_std
from .training import TinyCNN, logits_of

STEM, KEY = "multilabel", "design"
ROWS = ("BCE", "Focal", "CB-Focal", "LA-BCE", "ASL", "DB", "BCE + sampler")
TUNED = ("LA-BCE",)


@dataclass(frozen=True)
class Design:
    """The study's settings, fixed before looking at any result."""

    imbalance_factors: tuple[float, ...] = (10, 50, 100)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_count: int = 1000
    val_per_class: int = 100
    test_per_class: int = 300
    many_threshold: float = 100
    few_threshold: float = 20
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    focal_gamma: float = 2.0
    cb_beta: float = 0.999
    la_taus: tuple[float, ...] = (0.5, 1.0, 2.0)
    quick: bool = False


QUICK = Design(
    imbalance_factors=(100,), seeds=(0, 1), max_count=100, val_per_class=20, test_per_class=12, epochs=1,
    la_taus=(1.0, 2.0), quick=True,
)  # fmt: skip


def class_order(seed: int) -> list[int]:
    """Fashion-MNIST class of each frequency rank (rank 0 = head) for ``seed`` (as the method study)."""
    return torch.randperm(NUM_CLASSES, generator=torch.Generator().manual_seed(10_000 + seed)).tolist()


_SPLITS: dict[tuple[str, float, int, Design], dict[str, Tensor]] = {}


def make_split(root: str, imbalance_factor: float, seed: int, design: Design) -> dict[str, Tensor]:
    """Training (long-tailed), validation and test (balanced) mosaics of ``seed``, normalised; cached per process."""
    key = (root, imbalance_factor, seed, design)
    if key not in _SPLITS:
        common_args = {"class_order": class_order(seed), "seed": seed, "max_count": design.max_count}
        out: dict[str, Tensor] = {}
        for split, per_class in (("train", 1), ("val", design.val_per_class), ("test", design.test_per_class)):
            data = fashion_mnist_mosaic(root, imbalance_factor, split, per_class=per_class, **common_args)
            x, y = data.as_tensors()
            suffix = "" if split == "train" else f"_{split}"
            out["x" + suffix], out["y" + suffix] = normalise(x), y
        _SPLITS[key] = out
    return _SPLITS[key]


def criterion(row: str, counts: Tensor, num_samples: int, design: Design, tau: float) -> Callable[..., Tensor]:
    """The loss of ``row`` (the library's modules; BCE is ``F.binary_cross_entropy_with_logits``)."""
    g = design.focal_gamma
    if row in ("BCE", "BCE + sampler"):
        return lambda z, t: F.binary_cross_entropy_with_logits(z, t.float())
    if row == "Focal":
        return ltl.AsymmetricLoss(gamma_neg=g, gamma_pos=g, clip=0.0, validate_args=False)
    if row == "CB-Focal":
        return ltl.MultiLabelClassBalancedFocal(counts, beta=design.cb_beta, gamma=g, validate_args=False)
    if row == "LA-BCE":
        return ltl.LogitAdjustedBCE(counts, num_samples, tau=tau, validate_args=False)
    if row == "ASL":
        return ltl.AsymmetricLoss(validate_args=False)
    if row == "DB":
        return ltl.DistributionBalancedLoss(counts, num_samples, validate_args=False)
    raise ValueError(f"unknown row {row!r}")


def batches(row: str, y: Tensor, design: Design, seed: int, epoch: int) -> list[list[int]]:
    """The batches of ``epoch``: seeded shuffles (the same for every row), or multi-label class-aware draws."""
    if row == "BCE + sampler":
        sampler = MultiLabelClassAwareSampler(y, seed=seed)
        sampler.set_epoch(epoch)
        draws = list(sampler)
        return [draws[i : i + design.batch_size] for i in range(0, len(draws), design.batch_size)]
    batch_sampler = SeededBatchSampler(len(y), design.batch_size, seed=seed)
    batch_sampler.set_epoch(epoch)
    return list(batch_sampler)


def run_task(root: str, imbalance_factor: float, seed: int, row: str, tau: float, design: Design) -> dict[str, Any]:
    """Train one model of ``row`` on the mosaics of (IF, seed); its validation and test mAP by shot."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = make_split(root, imbalance_factor, seed, design)
    x, y = data["x"], data["y"]
    counts, num_samples = multilabel_counts(y)
    torch.manual_seed(seed)  # every row of one (IF, seed) starts from the same weights
    model = TinyCNN(NUM_CLASSES)
    loss = criterion(row, counts, num_samples, design, tau)
    opt = torch.optim.SGD(model.parameters(), lr=design.lr, momentum=design.momentum, weight_decay=design.weight_decay)
    steps = [batches(row, y, design, seed, e) for e in range(design.epochs)]
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=sum(len(b) for b in steps))
    model.train()
    for epoch_batches in steps:
        for index in epoch_batches:
            i = torch.tensor(index)
            opt.zero_grad(set_to_none=True)
            loss(model(x[i]), y[i]).backward()
            opt.step()
            schedule.step()
    thresholds = {"many_threshold": design.many_threshold, "few_threshold": design.few_threshold}
    val = per_class_average_precision(logits_of(model, data["x_val"], data["y_val"]), data["y_val"])
    test_logits = logits_of(model, data["x_test"], data["y_test"])
    with warnings.catch_warnings():  # no Few class at IF 10: its mAP is nan, as the report says
        warnings.filterwarnings("ignore", "shot_map: no class", UserWarning)
        shots = shot_map(test_logits, data["y_test"], counts, **thresholds)
    return {
        "row": row,
        "imbalance_factor": imbalance_factor,
        "seed": seed,
        "tau": None if math.isnan(tau) else tau,
        "val_map": float(val.nanmean()),
        **shots,
        "per_class_ap": per_class_average_precision(test_logits, data["y_test"]).tolist(),
        "train_counts": counts.tolist(),
        "num_samples": num_samples,
        "seconds": time.perf_counter() - start,
    }


def task_list(design: Design) -> list[tuple[float, int, str, float]]:
    """One task per (IF, seed, row), and per candidate tau for LA-BCE."""
    tasks = []
    for f in design.imbalance_factors:
        for s in design.seeds:
            for row in ROWS:
                for t in design.la_taus if row == "LA-BCE" else (math.nan,):
                    tasks.append((f, s, row, t))
    return tasks


def select_tuned(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep, per (IF, seed), the LA-BCE model of best validation mAP (ties: the first tau of the grid)."""
    kept = [r for r in runs if r["row"] not in TUNED]
    for row in TUNED:
        groups: dict[tuple[float, int], list[dict[str, Any]]] = {}
        for r in runs:
            if r["row"] == row:
                groups.setdefault((r["imbalance_factor"], r["seed"]), []).append(r)
        for candidates in groups.values():
            best = max(candidates, key=lambda r: r["val_map"])  # max keeps the first of equal values
            kept.append({**best, "tau_candidates_val": {f"{r['tau']:g}": r["val_map"] for r in candidates}})
    return kept


def run_study(root: str, design: Design, jobs: int) -> dict[str, Any]:
    """Every task of ``design`` on ``jobs`` workers: the selected runs, sorted."""

    def describe(call: tuple[Any, ...], done: dict[str, Any]) -> str:
        _, f, s, row, t, _ = call
        return f"IF={f:g} seed={s} {row}{'' if math.isnan(t) else f' tau={t:g}'}: {done['seconds']:.0f} s"

    done = common.run_all(run_task, [(root, f, s, r, t, design) for f, s, r, t in task_list(design)], jobs, describe)
    runs = select_tuned(done)
    return {"runs": sorted(runs, key=lambda r: (r["imbalance_factor"], r["seed"], ROWS.index(r["row"])))}


# The report.


def values(runs: list[dict[str, Any]], row: str, metric: str, f: float, seeds: Any) -> list[float]:
    """Per-seed mAP (percent) of ``row`` at IF ``f``, ``nan`` where missing."""
    found = {r["seed"]: r[metric] for r in runs if r["row"] == row and r["imbalance_factor"] == f}
    return [100.0 * found[s] if found.get(s) is not None else math.nan for s in seeds]


def report(results: dict[str, Any], design: Design, out: Path) -> None:
    """Add the summary to ``results`` and write the JSON, the Markdown report and the plot to ``out``."""
    runs, seeds = results["runs"], design.seeds
    summary: dict[str, Any] = {"rows": {}, "vs_bce": {}, "ranking": {}, "tuned": {}}
    for f in design.imbalance_factors:
        key, v = f"{f:g}", partial(values, runs, f=f, seeds=seeds)
        present = [row for row in ROWS if any(r["row"] == row and r["imbalance_factor"] == f for r in runs)]
        summary["rows"][key] = {row: {m: mean_std(v(row, m)) for m in SHOTS} for row in present}
        summary["vs_bce"][key] = {
            row: {m: compare(f"{row} > BCE, {m}, IF={key}", v(row, m), v("BCE", m)) for m in SHOTS}
            for row in present
            if row != "BCE"
        }
        means = {row: summary["rows"][key][row]["all"][0] for row in present}
        summary["ranking"][key] = sorted(present, key=means.__getitem__, reverse=True)
        summary["tuned"][key] = {
            row: [r["tau"] for r in runs if r["row"] == row and r["imbalance_factor"] == f] for row in TUNED
        }
    results["summary"] = summary
    common.write_json(out / f"{STEM}.json", results)
    (out / f"{STEM}.md").write_text(markdown(results, design))
    plots(results, design, out)


def headline(results: dict[str, Any]) -> list[str]:
    """The ranking per IF, for the console."""
    return [f"IF={k}: " + " > ".join(ranking) for k, ranking in results["summary"]["ranking"].items()]


def mark(stats: dict[str, Any]) -> str:
    """Paired difference to BCE with its t-test: ``+3.1 ± 1.2 (5/5, better)``."""
    if stats["n"] == 0:
        return "–"
    verdict = {"replicates": "better", "contradicted": "worse"}.get(stats["verdict"], "n.s.")
    return f"{stats['mean_diff']:+.1f} ± {stats['std_diff']:.1f} ({stats['wins']}/{stats['n']}, {verdict})"


def results_table(results: dict[str, Any]) -> list[str]:
    """The main table: mAP All / Many / Medium / Few (mean ± std over seeds) and the paired differences to BCE."""
    summary = results["summary"]
    header = ["IF", "Method", "All", "Many", "Medium", "Few", "Δ All vs BCE", "Δ Few vs BCE"]
    rows = []
    for key, table in summary["rows"].items():
        for row, ms in table.items():
            diff = summary["vs_bce"][key].get(row)
            cells = [key, row, *(fmt(ms[m]) for m in SHOTS[3:] + SHOTS[:3])]
            cells += ["–", "–"] if diff is None else [mark(diff["all"]), mark(diff["few"])]
            rows.append(cells)
    return common.md_table(header, rows)


def markdown(results: dict[str, Any], design: Design) -> str:
    """The Markdown report."""
    meta, summary, d = results["meta"], results["summary"], design
    lines = [
        f"# Multi-label long tail on Fashion-MNIST mosaics{' — QUICK SMOKE RUN (not evidence)' if d.quick else ''}"
    ]
    lines += [
        "",
        f"Command: `{meta['command']}`; commit {meta['commit']}, torch {meta['torch']}, {meta['cpu_count']} CPUs, "
        f"{meta['jobs']} workers x 1 thread, wall time {meta['wall_seconds'] / 60:.1f} min, load average "
        f"{meta['loadavg_start'][0]:.2f} at the start and {meta['loadavg_end'][0]:.2f} at the end.",
        "",
        f"Test mAP (%) on balanced test mosaics ({d.test_per_class} positives per class), mean ± sample std over "
        f"{len(d.seeds)} seeds; Many > {d.many_threshold:g}, Medium {d.few_threshold:g}–{d.many_threshold:g}, "
        f"Few < {d.few_threshold:g} training positives (head class {d.max_count}). Δ: paired difference to BCE "
        "(same data, class order, initial weights and, except for the sampler row, batches), mean ± std, seeds "
        "better, and a two-sided paired t-test at 5% (better / worse / n.s.; no correction for multiple "
        "comparisons).",
        "",
        *results_table(results),
        "",
        "## Ranking per IF (mean All mAP)",
        "",
        *(f"- IF {k}: " + " > ".join(r) for k, r in summary["ranking"].items()),
        "",
        "## Tuned on the validation split",
        "",
        f"LA-BCE's tau per seed, chosen among {', '.join(f'{t:g}' for t in d.la_taus)} by validation mAP:",
        "",
        *(f"- IF {k}: {v['LA-BCE']}" for k, v in summary["tuned"].items()),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], design: Design, out: Path) -> None:
    """All and Few mAP against the imbalance factor, one line per row."""
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ifs = design.imbalance_factors
    for ax, metric in zip(axes, ("all", "few")):
        for row in ROWS:
            pts = [(f, results["summary"]["rows"][f"{f:g}"].get(row, {}).get(metric)) for f in ifs]
            pts = [(f, ms) for f, ms in pts if ms is not None and not math.isnan(ms[0])]
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], label=row)
        ax.set_xscale("log")
        ax.set_xticks(ifs, [f"{f:g}" for f in ifs])
        ax.set_xlabel("imbalance factor")
        ax.set_ylabel(f"{metric.capitalize()} mAP (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    common.save(fig, out / f"{STEM}.png")
