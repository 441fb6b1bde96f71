"""The method study (``benchmarks/choosing_a_method.py``): its design, data split and one task (one model)."""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses import paper
from longtail_losses.data import ClassAwareSampler, fashion_mnist_lt, longtail_counts, longtail_indices
from longtail_losses.losses.logit_adjustment import posthoc_adjust, tune_tau
from longtail_losses.training import train_one_epoch
from longtail_losses.twostage import data_balanced_review, extract_features
from longtail_losses.twostage.decoupled import LearnableWeightScaling, nearest_class_mean, tau_normalize

from .common import NUM_CLASSES, Settings, criterion, evaluate, load_full
from .runner import run_all, run_meta
from .training import TinyCNN, logits_of, run_stage2, train_sgd

STEM = "choosing_a_method"
ONE_STAGE = (
    "CE",
    "BalancedSoftmax",
    "LogitAdjusted",
    "ClassBalancedFocal",
    "BFS",
    "BWLM",
    "LDAM-DRW",
    "CE + post-hoc",
)
DECOUPLED = ("cRT", "LWS", "tau-norm", "NCM")
TWO_STAGE = paper.STAGE2_ROWS
ROWS = (*ONE_STAGE, *DECOUPLED, *TWO_STAGE)
GROUP = {**dict.fromkeys(ONE_STAGE, "one-stage"), **dict.fromkeys(DECOUPLED, "decoupled (CE backbone)")}
GROUP.update(dict.fromkeys(TWO_STAGE, "two-stage (paper)"))
# The paper's rows behind the one-stage loss rows (paper.criterion, same hyperparameters as the two-stage rows).
PAPER_LOSS = {"CE": "+CE", "BalancedSoftmax": "+BS", "ClassBalancedFocal": "+CB", "BFS": "+BFS", "BWLM": "+BWLM"}
EXTRA_PAIRS = (
    ("LogitAdjusted", "CE + post-hoc"),
    ("BalancedSoftmax", "CE + post-hoc"),
    ("cRT", "CE + post-hoc"),
    ("BWLM", "+BWLM"),
)
PLOT_ROWS = ("CE", "CE + post-hoc", "BalancedSoftmax", "LogitAdjusted", "BWLM", "LDAM-DRW", "cRT", "+BWLM")


@dataclass(frozen=True)
class Design(Settings):
    """The study's settings, fixed before looking at any result."""

    imbalance_factors: tuple[float, ...] = (10, 50, 100, 200)
    val_per_class: int = 30
    epochs: int = 20
    lr: float = 0.05
    la_taus: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    posthoc_taus: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(31))
    tau_norm_taus: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(21))
    ldam_max_margin: float = 0.5
    ldam_scale: float = 1.0
    drw_start_epoch: int = 16
    decoupled_steps: int = 500
    decoupled_lr: float = 0.05


QUICK = Design(
    imbalance_factors=(100,),
    seeds=(0, 1),
    epochs=1,
    la_taus=(1.0, 2.0),
    drw_start_epoch=0,
    decoupled_steps=30,
    stage2_steps=40,
    quick=True,
)


def class_order(seed: int) -> list[int]:
    """Fashion-MNIST class of each frequency rank (rank 0 = head) for ``seed``."""
    return torch.randperm(NUM_CLASSES, generator=torch.Generator().manual_seed(10_000 + seed)).tolist()


def make_split(root: str, imbalance_factor: float, seed: int, design: Design) -> dict[str, Tensor]:
    """Training, validation and test tensors of one (IF, seed), labels relabelled by frequency rank.

    Also returns the indices into the 60,000 training images of the training and validation images.
    """
    x_all, y_all = load_full(root, train=True)
    x_test, y_test = load_full(root, train=False)
    rank = torch.empty(NUM_CLASSES, dtype=torch.int64)
    rank[torch.tensor(class_order(seed))] = torch.arange(NUM_CLASSES)
    y_ranked = rank[y_all]
    counts = longtail_counts(NUM_CLASSES, design.max_count, imbalance_factor)
    train_idx = longtail_indices(y_ranked, counts, seed=seed)
    unused = torch.ones(len(y_all), dtype=torch.bool)
    unused[train_idx] = False
    rest = unused.nonzero().squeeze(1)
    rest = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(20_000 + seed))]
    val_idx = torch.cat([rest[y_ranked[rest] == c][: design.val_per_class] for c in range(NUM_CLASSES)])
    return {
        "x": x_all[train_idx],
        "y": y_ranked[train_idx],
        "x_val": x_all[val_idx],
        "y_val": y_ranked[val_idx],
        "x_test": x_test,
        "y_test": rank[y_test],
        "train_index": train_idx,
        "val_index": val_idx,
    }


def train_one_stage(model: nn.Module, x: Tensor, y: Tensor, loss: Any, design: Design, seed: int, **kw: Any) -> float:
    """The one-stage recipe with any loss (``before_epoch=``: a hook at the start of each epoch, for DRW)."""
    return train_sgd(
        model, x, y, loss, epochs=design.epochs, lr=design.lr, weight_decay=design.weight_decay,
        batch_size=design.batch_size, seed=seed, **kw,
    )  # fmt: skip


def train_balanced(
    params: list[nn.Parameter], module: nn.Module, feats: Tensor, labels: Tensor, design: Design, seed: int
) -> None:
    """Train cRT / LWS: CE on class-balanced batches of cached features, SGD 0.9, cosine to 0, no weight decay."""
    steps, size = design.decoupled_steps, design.batch_size
    draws = list(ClassAwareSampler(labels, power=0.0, num_samples=steps * size, seed=seed))
    optimizer = torch.optim.SGD(params, lr=design.decoupled_lr, momentum=paper.RECIPE.momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    indices = (torch.tensor(draws[step * size : (step + 1) * size]) for step in range(steps))
    batches = ((feats[index], labels[index]) for index in indices)
    train_one_epoch(module, batches, torch.nn.functional.cross_entropy, optimizer, scheduler=scheduler)


def balanced_accuracy(logits: Tensor, target: Tensor) -> float:
    """Mean per-class accuracy."""
    hit = (logits.argmax(1) == target).double()
    return float(torch.stack([hit[target == c].mean() for c in range(NUM_CLASSES)]).mean())


def record(
    row: str, logits: Tensor, data: dict[str, Tensor], counts: Tensor, weight: Tensor, design: Design, **extra: Any
) -> dict[str, Any]:
    """Test metrics of one row (``logits`` on the test set)."""
    return {"row": row, **evaluate(logits, data["y_test"], counts, weight, design), **extra}


def one_stage_criterion(row: str, model: TinyCNN, counts: Tensor, design: Design, tau: float) -> Any:
    """The loss of a one-stage row: the paper's loss of :data:`PAPER_LOSS`, LogitAdjusted or LDAM."""
    if row in PAPER_LOSS:
        return criterion(PAPER_LOSS[row], counts, model.fc, design)
    if row == "LogitAdjusted":
        return ltl.LogitAdjustedLoss(counts, tau=tau, validate_args=False)
    if row == "LDAM-DRW":
        return ltl.LDAMLoss(counts, max_margin=design.ldam_max_margin, scale=design.ldam_scale, validate_args=False)
    raise ValueError(f"Expected a one-stage loss row, but got {row!r}")


def run_task(root: str, imbalance_factor: float, seed: int, kind: str, tau: float, design: Design) -> dict[str, Any]:
    """One model of one (IF, seed) and the rows read from it.

    ``kind`` is a one-stage loss row (``'CE'`` adds the decoupled rows and the post-hoc adjustment) or
    ``'two-stage'``; ``tau`` is LogitAdjusted's.
    """
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    data = make_split(root, imbalance_factor, seed, design)
    x, y = data["x"], data["y"]
    counts = ltl.class_counts(y, num_classes=NUM_CLASSES)
    base_seed = 1000 * seed + int(imbalance_factor)
    torch.manual_seed(base_seed)
    model = TinyCNN()  # the same initial weights for every one-stage row of this (IF, seed)
    runs: list[dict[str, Any]] = []
    if kind == "two-stage":
        runs = two_stage_rows(model, data, counts, design, seed, base_seed)
    else:
        loss = one_stage_criterion(kind, model, counts, design, tau)
        before_epoch = None
        if kind == "LDAM-DRW":

            def before_epoch(epoch: int) -> None:
                loss.weight = ltl.drw_weights(counts, epoch, design.drw_start_epoch, beta=design.beta)

        train_one_stage(model, x, y, loss, design, seed, before_epoch=before_epoch)
        logits = logits_of(model, data["x_test"], data["y_test"])
        val_logits = logits_of(model, data["x_val"], data["y_val"])
        runs.append(
            record(
                kind,
                logits,
                data,
                counts,
                model.fc.weight,
                design,
                tau=tau if kind == "LogitAdjusted" else None,
                val_balanced_accuracy=balanced_accuracy(val_logits, data["y_val"]),
            )
        )
        if kind == "CE":
            runs += decoupled_rows(model, logits, val_logits, data, counts, design, seed, base_seed)
    for r in runs:
        r.update(imbalance_factor=imbalance_factor, seed=seed, task=kind)
    seconds = {"task": time.perf_counter() - start, "task_cpu": time.process_time() - cpu}
    return {
        "task": {
            "imbalance_factor": imbalance_factor,
            "seed": seed,
            "kind": kind,
            "tau": tau,
            "train_counts": counts.tolist(),
            "class_order": class_order(seed),
            "seconds": seconds,
        },
        "runs": runs,
    }


def decoupled_rows(
    model: TinyCNN,
    logits: Tensor,
    val_logits: Tensor,
    data: dict[str, Tensor],
    counts: Tensor,
    design: Design,
    seed: int,
    base_seed: int,
) -> list[dict[str, Any]]:
    """CE + post-hoc, cRT, LWS, tau-norm and NCM on the trained CE model."""
    runs = []
    tau = tune_tau(val_logits, data["y_val"], counts, taus=list(design.posthoc_taus))
    runs.append(
        record("CE + post-hoc", posthoc_adjust(logits, counts, tau=tau), data, counts, model.fc.weight, design, tau=tau)
    )
    feats, labels = extract_features(model, (data["x"], data["y"]), classifier_attr="fc", batch_size=1000)
    val_feats, _ = extract_features(model, (data["x_val"], data["y_val"]), classifier_attr="fc", batch_size=1000)
    test_feats, _ = extract_features(model, (data["x_test"], data["y_test"]), classifier_attr="fc", batch_size=2000)

    torch.manual_seed(base_seed + 3)
    crt = nn.Linear(feats.shape[1], NUM_CLASSES)
    train_balanced(list(crt.parameters()), crt, feats, labels, design, seed)
    lws = LearnableWeightScaling(copy.deepcopy(model.fc))
    train_balanced([lws.scales], lws, feats, labels, design, seed)
    with torch.no_grad():
        runs.append(record("cRT", crt(test_feats), data, counts, crt.weight, design))
        runs.append(record("LWS", lws(test_feats), data, counts, model.fc.weight * lws.scales[:, None], design))
        scores = [balanced_accuracy(tau_normalize(model.fc, t)(val_feats), data["y_val"]) for t in design.tau_norm_taus]
        best = design.tau_norm_taus[max(range(len(scores)), key=lambda i: (scores[i], -i))]
        normed = tau_normalize(model.fc, best)
        runs.append(record("tau-norm", normed(test_feats), data, counts, normed.weight, design, tau=best))
        ncm = nearest_class_mean(feats, labels, NUM_CLASSES)
        runs.append(record("NCM", ncm(test_feats), data, counts, ncm.means, design))
    return runs


def two_stage_rows(
    model: TinyCNN, data: dict[str, Tensor], counts: Tensor, design: Design, seed: int, base_seed: int
) -> list[dict[str, Any]]:
    """The paper's rows: stage 1 (CE, head half), then every stage-2 loss as one head on cached features."""
    head_idx, review_idx = data_balanced_review(data["y"], seed=seed)
    train_one_stage(model, data["x"][head_idx], data["y"][head_idx], torch.nn.functional.cross_entropy, design, seed)
    specs: list[tuple[str, Optional[float]]] = [(row, None) for row in TWO_STAGE]
    stage2 = run_stage2(
        model,
        (data["x"][review_idx], data["y"][review_idx]),
        (data["x_test"], data["y_test"]),
        specs,
        design,
        lr=design.lr,
        seed=seed,
        init_seed=base_seed + 2,
    )
    return [
        record(row, z, data, counts, h.weight, design, stage2_steps=stage2["steps"])
        for row, h, z in zip(TWO_STAGE, stage2["heads"], stage2["logits"])
    ]


def task_list(design: Design) -> list[tuple[float, int, str, float]]:
    """Every task, the costly ones (low IF = more images; CE and two-stage do more) first."""
    kinds: list[tuple[str, float]] = [("two-stage", math.nan), ("CE", math.nan)]
    kinds += [(row, math.nan) for row in ("BalancedSoftmax", "ClassBalancedFocal", "BFS", "BWLM", "LDAM-DRW")]
    kinds += [("LogitAdjusted", t) for t in design.la_taus if t != 1.0]
    return [(f, s, k, t) for f in sorted(design.imbalance_factors) for k, t in kinds for s in design.seeds]


def select_logit_adjusted(runs: list[dict[str, Any]], design: Design) -> list[dict[str, Any]]:
    """Replace the LogitAdjusted candidates of each (IF, seed) by the one of best validation balanced accuracy.

    The tau = 1 candidate is the BalancedSoftmax model (the same loss).
    """
    out = [r for r in runs if r["row"] != "LogitAdjusted"]
    for key in sorted({(r["imbalance_factor"], r["seed"]) for r in runs}):
        cands = {r["tau"]: r for r in runs if r["row"] == "LogitAdjusted" and (r["imbalance_factor"], r["seed"]) == key}
        bs = [r for r in runs if r["row"] == "BalancedSoftmax" and (r["imbalance_factor"], r["seed"]) == key]
        if bs and 1.0 in design.la_taus:
            cands[1.0] = {**bs[0], "row": "LogitAdjusted", "tau": 1.0}
        ordered = [cands[t] for t in design.la_taus if t in cands]
        if ordered:
            best = max(ordered, key=lambda r: r["val_balanced_accuracy"])  # max keeps the first of ties
            out.append(
                {
                    **best,
                    "row": "LogitAdjusted",
                    "tau_candidates_val": {f"{r['tau']:g}": r["val_balanced_accuracy"] for r in ordered},
                }
            )
    return out


def run_study(root: str, design: Design, jobs: int, command: str) -> dict[str, Any]:
    """Every task of ``design`` on ``jobs`` workers; the run record, the design, the tasks and the sorted runs."""
    start, load_start = time.perf_counter(), os.getloadavg()
    fashion_mnist_lt(root, 1, train=False)  # fail early, with the reader's message, if the data are missing

    def describe(call: tuple[Any, ...], done: dict[str, Any]) -> str:
        _, f, s, k, t, _ = call
        tau = "" if math.isnan(t) else f" tau={t:g}"
        return f"IF={f:g} seed={s} {k}{tau}: {done['task']['seconds']['task']:.0f} s"

    done = run_all(run_task, [(root, f, s, k, t, design) for f, s, k, t in task_list(design)], jobs, describe)
    runs = select_logit_adjusted([r for d in done for r in d["runs"]], design)
    return {
        "meta": run_meta(command=command, jobs=jobs, root=root, load_start=load_start, start=start),
        "design": asdict(design),
        "tasks": sorted((d["task"] for d in done), key=lambda t: (t["imbalance_factor"], t["seed"], t["kind"])),
        "runs": sorted(runs, key=lambda r: (r["imbalance_factor"], r["seed"], ROWS.index(r["row"]))),
    }
