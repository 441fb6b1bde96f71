"""The paper's study (``benchmarks/real_data_lt.py``): its recipe and one job, the naive model and every row."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from longtail_losses import class_counts, paper
from longtail_losses.data import fashion_mnist_lt
from longtail_losses.twostage import data_balanced_review

from .common import NUM_CLASSES, Settings, criterion, evaluate, load_full, normalise
from .runner import run_all, run_meta
from .training import TinyCNN, logits_of, run_stage2, train_sgd

STEM = "real_data_lt"
ROWS = tuple(paper.ROWS)  # naive, then the two-stage rows paper.STAGE2_ROWS, in the paper's order


@dataclass(frozen=True)
class Recipe(Settings):
    """The study's settings; one recipe for every row, fixed before looking at any result."""

    stage1_epochs: int = 30
    stage1_lr: float = 0.05
    stage1_weight_decay: float = paper.RECIPE.stage1_weight_decay
    stage2_lr: float = 0.05
    alpha_sweep: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    alpha_sweep_if: float = 100


QUICK = Recipe(
    imbalance_factors=(100,), seeds=(0, 1), stage1_epochs=2, stage2_steps=150, alpha_sweep=(0.1, 0.5, 0.9), quick=True
)


def train_cnn(model: TinyCNN, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int) -> float:
    """One-stage / stage-1 recipe: SGD(0.9), cosine lr per step to 0, weight decay, cross-entropy. Seconds."""
    return train_sgd(
        model,
        x,
        y,
        criterion("naive", class_counts(y, num_classes=NUM_CLASSES), model.fc, recipe),  # cross-entropy
        epochs=recipe.stage1_epochs,
        lr=recipe.stage1_lr,
        weight_decay=recipe.stage1_weight_decay,
        batch_size=recipe.batch_size,
        seed=seed,
    )


def run_job(root: str, imbalance_factor: float, seed: int, recipe: Recipe) -> dict[str, Any]:
    """Naive model, stage 1 and every stage-2 row for one (IF, seed); deterministic given the seed."""
    torch.set_num_threads(1)
    job_start, cpu_start = time.perf_counter(), time.process_time()
    train = fashion_mnist_lt(root, imbalance_factor, train=True, max_count=recipe.max_count, seed=seed)
    x, y = train.as_tensors()
    x = normalise(x)
    x_test, y_test = load_full(root, train=False)
    data_seconds = time.perf_counter() - job_start
    counts = class_counts(y, num_classes=NUM_CLASSES)
    base_seed = 1000 * seed + int(imbalance_factor)

    # One-stage ("naive") cross-entropy on the whole long-tailed set.
    torch.manual_seed(base_seed)
    naive = TinyCNN()
    naive_seconds = train_cnn(naive, x, y, recipe, seed)
    logits = logits_of(naive, x_test, y_test)
    runs = [{"row": "naive", **evaluate(logits, y_test, counts, naive.fc.weight, recipe)}]

    # Stage 1: cross-entropy on the head classes (data balanced review, eq. 2).
    stage1_idx, stage2_idx = data_balanced_review(y, seed=seed)
    torch.manual_seed(base_seed + 1)
    model = TinyCNN()
    stage1_seconds = train_cnn(model, x[stage1_idx], y[stage1_idx], recipe, seed)

    # Stage 2: frozen backbone (eval mode), new classifier, features cached once; every row one head.
    specs: list[tuple[str, Optional[float]]] = [(row, None) for row in paper.STAGE2_ROWS]
    if imbalance_factor == recipe.alpha_sweep_if:
        specs += [("+BWLM", a) for a in recipe.alpha_sweep if a != recipe.alpha]
    stage2 = run_stage2(
        model,
        (x[stage2_idx], y[stage2_idx]),
        (x_test, y_test),
        specs,
        recipe,
        lr=recipe.stage2_lr,
        seed=seed,
        init_seed=base_seed + 2,
    )
    alpha_runs = []
    for (row, a), head, z in zip(specs, stage2["heads"], stage2["logits"]):
        record = {"row": row, **evaluate(z, y_test, counts, head.weight, recipe)}
        if a is None:
            runs.append(record)
        if row == "+BWLM" and imbalance_factor == recipe.alpha_sweep_if:
            alpha_runs.append({**record, "alpha": recipe.alpha if a is None else a})
    alpha_runs.sort(key=lambda r: r["alpha"])
    for r in (*runs, *alpha_runs):
        r.update(imbalance_factor=imbalance_factor, seed=seed)
    return {
        "job": {
            "imbalance_factor": imbalance_factor,
            "seed": seed,
            "train_counts": counts.tolist(),
            "stage1_samples": len(stage1_idx),
            "stage2_counts": stage2["counts"].tolist(),
            "stage2_epochs": stage2["epochs"],
            "stage2_steps": stage2["steps"],
            "stage2_heads": len(specs),
            "seconds": {
                "data": data_seconds,
                "naive": naive_seconds,
                "stage1": stage1_seconds,
                "extract": stage2["extract_seconds"],
                "stage2_all_heads": stage2["train_seconds"],
                "job": time.perf_counter() - job_start,
                "job_cpu": time.process_time() - cpu_start,
            },
        },
        "runs": runs,
        "alpha_runs": alpha_runs,
    }


def run_study(root: str, recipe: Recipe, jobs: int, command: str) -> dict[str, Any]:
    """Every job of ``recipe`` on ``jobs`` workers; the run record, the recipe, the jobs and the sorted runs."""
    start, load_start = time.perf_counter(), os.getloadavg()
    fashion_mnist_lt(root, 1, train=False)  # fail early, with the reader's message, if the data are missing
    # Longest jobs first (low IF = more images; the sweep IF trains more heads).
    order = sorted(
        ((f, s) for f in recipe.imbalance_factors for s in recipe.seeds),
        key=lambda fs: (-(fs[0] == recipe.alpha_sweep_if), fs[0], fs[1]),
    )
    done = run_all(
        run_job,
        [(root, f, s, recipe) for f, s in order],
        jobs,
        lambda call, d: f"IF={call[1]:g} seed={call[2]}: {d['job']['seconds']['job']:.0f} s",
    )
    key = lambda r: (r["imbalance_factor"], r["seed"], ROWS.index(r["row"]))  # noqa: E731
    return {
        "meta": run_meta(command=command, jobs=jobs, root=root, load_start=load_start, start=start),
        "recipe": asdict(recipe),
        "jobs": sorted((d["job"] for d in done), key=lambda j: (j["imbalance_factor"], j["seed"])),
        "runs": sorted((r for d in done for r in d["runs"]), key=key),
        "alpha_runs": sorted((r for d in done for r in d["alpha_runs"]), key=lambda r: (r["seed"], r["alpha"])),
    }
