"""Choosing a method: every long-tail method of the library side by side on Fashion-MNIST-LT (issue 13).

The question is the user's, not the paper's: which loss goes into my training loop, is a decoupled or two-stage
pipeline worth it, and when does a post-hoc logit adjustment of a plain cross-entropy model suffice? One command
regenerates everything (JSON of every run, a Markdown report, PNG plots)::

    python benchmarks/choosing_a_method.py           # full study: IF 10/50/100/200, 5 seeds (2 cores, ~15-30 min)
    python benchmarks/choosing_a_method.py --quick   # smoke test: IF 100, 2 seeds, 1 epoch, 2 taus (CI; not evidence)

Design (fixed in this docstring before any result was seen; the same recipe for every row of a group):

* Data: Fashion-MNIST from ``--root`` (Debian's ``dataset-fashion-mnist`` by default). **The class order is
  permuted per seed** (``torch.randperm(10)`` with generator seed ``10_000 + seed``): class of frequency rank
  ``r`` is Fashion-MNIST class ``order[r]``, so every seed has a different tail, and the labels are relabelled
  by rank (label 0 = head). The long-tailed training set keeps
  :func:`~longtail_losses.data.longtail_counts` ``(10, 500, IF)`` images per rank, chosen by
  :func:`~longtail_losses.data.longtail_indices` with the seed, for IF in {10, 50, 100, 200} and seeds 0-4.
  Many (> 100) / Medium (20-100) / Few (< 20) training images: the paper's thresholds (head class of 500 as in
  CIFAR-100-LT). **Validation split**: 30 images per class carved from the Fashion-MNIST training images that
  the long-tailed subsample did not take (class-balanced, seeded, disjoint from the training and test images);
  every tuned value below is chosen on it by balanced accuracy. **The test set (all 10,000 balanced test
  images) selects nothing**; it is evaluated once per model.
* Network: the tiny CNN of ``benchmarks/real_data_lt.py`` (imported, not copied), 64-d features, linear ``fc``.
* One-stage recipe (every one-stage row, the CE backbone of the decoupled rows, and stage 1 of the paper's
  two-stage rows): SGD, momentum 0.9, batch 64, lr 0.05 with per-step cosine decay to 0 over **20 epochs**,
  weight decay 5e-3 on every parameter, no augmentation. Every one-stage row of one (IF, seed) starts from the
  same initial weights and sees the same batches (paired design); only the loss differs. Rows:

  - ``CE``: :func:`~torch.nn.functional.cross_entropy`.
  - ``BalancedSoftmax``: :class:`~longtail_losses.BalancedSoftmax`.
  - ``LogitAdjusted``: :class:`~longtail_losses.LogitAdjustedLoss` with tau in {0.5, 1.0, 1.5, 2.0}, one model
    per tau, the tau of best validation balanced accuracy reported (ties: the first). Its tau = 1 candidate is
    the ``BalancedSoftmax`` model (the same loss: log prior and log counts differ by a constant).
  - ``ClassBalancedFocal``: beta 0.9999, gamma 1; ``BFS`` and ``BWLM``: alpha 0.1 with the same beta and gamma,
    BWLM's in-loss classifier penalty with lambda 5e-3 on ``fc`` (on top of the recipe's weight decay, which is
    what dropping BWLM into a loop with weight decay does). The criteria are those of ``real_data_lt.py``'s
    ``stage2_criterion``, so the hyperparameters are the paper's defaults used there.
  - ``LDAM-DRW``: :class:`~longtail_losses.LDAMLoss` with max margin 0.5 and scale 1 (raw linear logits, not
    Cao et al.'s cosine classifier with scale 30), deferred re-weighting
    (:func:`~longtail_losses.drw_weights`, beta 0.9999) from epoch 16 of 20 (Cao et al.: 160 of 200).
  - ``CE + post-hoc``: the CE model's logits adjusted by :func:`~longtail_losses.posthoc_adjust`, tau tuned with
    :func:`~longtail_losses.tune_tau` on the validation split over 0.0, 0.1, ..., 3.0.

* Decoupled rows on the CE model (Kang et al.), backbone frozen in eval mode, features of the training,
  validation and test images cached once with :func:`~longtail_losses.twostage.extract_features`:

  - ``cRT``: a new linear classifier trained on class-balanced batches
    (:class:`~longtail_losses.data.samplers.ClassAwareSampler`, power 0) with CE, SGD 0.9, lr 0.05 cosine to 0, 500 steps of
    64, no weight decay.
  - ``LWS``: :class:`~longtail_losses.LearnableWeightScaling` of the CE classifier, trained on the same batches
    with the same optimiser settings.
  - ``tau-norm``: :func:`~longtail_losses.tau_normalize` (bias dropped), tau in 0.0, 0.1, ..., 2.0 tuned on the
    validation split.
  - ``NCM``: :func:`~longtail_losses.nearest_class_mean` on the training features (cosine similarity).

* The paper's two-stage rows ``+CE`` ... ``+BWLM`` as in ``real_data_lt.py`` (its ``stage2_criterion``, ``Heads``
  and ``SumOfLosses`` are imported): stage 1 with the one-stage recipe and CE on the head half (data balanced
  review), frozen backbone, cached features, new 10-way classifier for every row from one initialisation, SGD
  0.9, lr 0.05 cosine to 0, batch 64, about 3,392 stage-2 steps as there. Only stage 1 is shorter (20 epochs, not
  30: the one-stage recipe of this study). ``real_data_lt.run_job`` itself is not reused: it loads the fixed
  class order and trains its own naive model.
* Statistics: mean +- sample std over seeds; every row is compared with ``CE`` on All and Few accuracy by
  paired differences over seeds (same data, class order, initialisation and batches) with a two-sided paired
  t-test at 5% (``real_data_lt.Comparison``; no correction for the number of comparisons). Four further pairs
  are fixed in advance (``EXTRA_PAIRS``): LogitAdjusted and BalancedSoftmax against CE + post-hoc, cRT against
  CE + post-hoc, and one-stage BWLM against two-stage +BWLM. Ranking per IF by mean All accuracy.

Parallelism: ``--jobs`` worker processes (default 2) with one intra-op thread each; one task is one model of one
(IF, seed) (the CE task also runs every decoupled row and the post-hoc adjustment, the two-stage task its stage
2). Every task is deterministic given its seed, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_data_lt import (
    DEFAULT_ROOT,
    NUM_CLASSES,
    RESULTS,
    SHOTS,
    STAGE2_ROWS,
    Comparison,
    Heads,
    SumOfLosses,
    TinyCNN,
    _save,
    batches,
    evaluate,
    fmt,
    mean_std,
    normalise,
    run_meta,
    stage2_criterion,
)
from real_data_lt import Recipe as PaperRecipe

import longtail_losses as ltl
from longtail_losses.data import fashion_mnist_lt, longtail_counts, longtail_indices
from longtail_losses.twostage.decoupled import LearnableWeightScaling, nearest_class_mean, tau_normalize
from longtail_losses.losses.logit_adjustment import posthoc_adjust, tune_tau
from longtail_losses.data.samplers import ClassAwareSampler
from longtail_losses.twostage import data_balanced_review, extract_features, replace_classifier, train_classifier
from longtail_losses.training import train_one_epoch
from longtail_losses.data import SeededBatchSampler

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
TWO_STAGE = STAGE2_ROWS
ROWS = (*ONE_STAGE, *DECOUPLED, *TWO_STAGE)
GROUP = {**dict.fromkeys(ONE_STAGE, "one-stage"), **dict.fromkeys(DECOUPLED, "decoupled (CE backbone)")}
GROUP.update(dict.fromkeys(TWO_STAGE, "two-stage (paper)"))
# Criteria of real_data_lt.stage2_criterion behind the one-stage loss rows (same hyperparameters).
PAPER_LOSS = {"CE": "+CE", "BalancedSoftmax": "+BS", "ClassBalancedFocal": "+CB", "BFS": "+BFS", "BWLM": "+BWLM"}
EXTRA_PAIRS = (
    ("LogitAdjusted", "CE + post-hoc"),
    ("BalancedSoftmax", "CE + post-hoc"),
    ("cRT", "CE + post-hoc"),
    ("BWLM", "+BWLM"),
)


@dataclass(frozen=True)
class Design:
    """The study's settings, fixed before looking at any result."""

    imbalance_factors: tuple[float, ...] = (10, 50, 100, 200)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_count: int = 500
    val_per_class: int = 30
    batch_size: int = 64
    epochs: int = 20
    lr: float = 0.05
    weight_decay: float = 5e-3
    alpha: float = 0.1
    beta: float = 0.9999
    gamma: float = 1.0
    la_taus: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    posthoc_taus: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(31))
    tau_norm_taus: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(21))
    ldam_max_margin: float = 0.5
    ldam_scale: float = 1.0
    drw_start_epoch: int = 16
    decoupled_steps: int = 500
    decoupled_lr: float = 0.05
    stage2_steps: int = 3_392
    quick: bool = False

    def paper(self) -> PaperRecipe:
        """The recipe object that ``real_data_lt.stage2_criterion`` and ``evaluate`` read."""
        return PaperRecipe(
            batch_size=self.batch_size,
            stage2_lr=self.lr,
            weight_decay=self.weight_decay,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
        )


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


# --------------------------------------------------------------------------------------------------------------------
# Data: permuted class order per seed, long-tailed training set, balanced validation split
# --------------------------------------------------------------------------------------------------------------------

_FULL: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}


def load_full(root: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """All 60,000 training and 10,000 test images (normalised) with their original labels; cached per process."""
    if root not in _FULL:
        x, y = fashion_mnist_lt(root, 1, train=True).as_tensors()
        xt, yt = fashion_mnist_lt(root, 1, train=False).as_tensors()
        _FULL[root] = (normalise(x), y, normalise(xt), yt)
    return _FULL[root]


def class_order(seed: int) -> list[int]:
    """Fashion-MNIST class of each frequency rank (rank 0 = head) for ``seed``."""
    return torch.randperm(NUM_CLASSES, generator=torch.Generator().manual_seed(10_000 + seed)).tolist()


def make_split(root: str, imbalance_factor: float, seed: int, design: Design) -> dict[str, Tensor]:
    """Training, validation and test tensors of one (IF, seed), labels relabelled by frequency rank.

    Also returns the indices into the 60,000 training images of the training and validation images.
    """
    x_all, y_all, x_test, y_test = load_full(root)
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


# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------


def train_one_stage(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    criterion: Callable[[Tensor, Tensor], Tensor],
    design: Design,
    seed: int,
    before_epoch: Optional[Callable[[int], None]] = None,
) -> float:
    """The one-stage recipe with any loss; ``before_epoch(e)`` runs at the start of epoch ``e`` (DRW)."""
    sampler = SeededBatchSampler(len(y), design.batch_size, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=design.lr, momentum=0.9, weight_decay=design.weight_decay)
    total = design.epochs * len(sampler)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    start = time.perf_counter()
    for epoch in range(design.epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        sampler.set_epoch(epoch)
        train_one_epoch(model, batches(x, y, sampler), criterion, optimizer, scheduler=scheduler)
    return time.perf_counter() - start


def train_balanced(
    params: list[nn.Parameter],
    forward: Callable[[Tensor], Tensor],
    feats: Tensor,
    labels: Tensor,
    design: Design,
    seed: int,
) -> None:
    """Train cRT / LWS: CE on class-balanced batches of cached features, SGD 0.9, cosine to 0, no weight decay."""
    steps, size = design.decoupled_steps, design.batch_size
    draws = list(ClassAwareSampler(labels, power=0.0, num_samples=steps * size, seed=seed))
    optimizer = torch.optim.SGD(params, lr=design.decoupled_lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for step in range(steps):
        index = torch.tensor(draws[step * size : (step + 1) * size])
        loss = torch.nn.functional.cross_entropy(forward(feats[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


@torch.no_grad()
def logits_of(model: nn.Module, x: Tensor, chunk: int = 2000) -> Tensor:
    """Eval-mode logits of ``model`` on ``x`` in chunks."""
    model.eval()
    return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def balanced_accuracy(logits: Tensor, target: Tensor) -> float:
    """Mean per-class accuracy."""
    hit = (logits.argmax(1) == target).double()
    return float(torch.stack([hit[target == c].mean() for c in range(NUM_CLASSES)]).mean())


def record(
    row: str, logits: Tensor, data: dict[str, Tensor], counts: Tensor, weight: Tensor, design: Design, **extra: Any
) -> dict[str, Any]:
    """Test metrics of one row (``logits`` on the test set)."""
    return {"row": row, **evaluate(logits, data["y_test"], counts, weight, design.paper()), **extra}


def one_stage_criterion(row: str, model: TinyCNN, counts: Tensor, design: Design, tau: float) -> Any:
    if row in PAPER_LOSS:
        return stage2_criterion(PAPER_LOSS[row], model.fc, counts, design.paper())
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
        criterion = one_stage_criterion(kind, model, counts, design, tau)
        before_epoch = None
        if kind == "LDAM-DRW":

            def before_epoch(epoch: int) -> None:
                criterion.weight = ltl.drw_weights(counts, epoch, design.drw_start_epoch, beta=design.beta)

        train_one_stage(model, x, y, criterion, design, seed, before_epoch)
        logits, val_logits = logits_of(model, data["x_test"]), logits_of(model, data["x_val"])
        row = "LogitAdjusted" if kind == "LogitAdjusted" else kind
        runs.append(
            record(
                row,
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
    torch.manual_seed(base_seed + 2)
    init = replace_classifier(model, NUM_CLASSES, attr="fc").state_dict()
    feats, labels = extract_features(model, (data["x"][review_idx], data["y"][review_idx]), batch_size=1000)
    test_feats, _ = extract_features(model, (data["x_test"], data["y_test"]), batch_size=2000)
    review_counts = ltl.class_counts(labels, num_classes=NUM_CLASSES)
    heads = [nn.Linear(feats.shape[1], NUM_CLASSES) for _ in TWO_STAGE]
    for head in heads:
        head.load_state_dict(init)
    criteria = [stage2_criterion(row, h, review_counts, design.paper()) for row, h in zip(TWO_STAGE, heads)]
    steps_per_epoch = len(SeededBatchSampler(len(labels), design.batch_size, seed=seed))
    epochs = max(1, round(design.stage2_steps / steps_per_epoch))
    train_classifier(
        Heads(heads),
        feats,
        labels,
        SumOfLosses(criteria, NUM_CLASSES),
        epochs=epochs,
        batch_size=design.batch_size,
        lr=design.lr,
        momentum=0.9,
        scheduler="cosine",
        seed=seed,
    )
    with torch.no_grad():
        return [
            record(row, h(test_feats), data, counts, h.weight, design, stage2_steps=epochs * steps_per_epoch)
            for row, h in zip(TWO_STAGE, heads)
        ]


# --------------------------------------------------------------------------------------------------------------------
# Selection of LogitAdjusted's tau, statistics, report
# --------------------------------------------------------------------------------------------------------------------


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


def values(runs: list[dict[str, Any]], row: str, metric: str, f: float, seeds: Sequence[int]) -> list[float]:
    """Per-seed values (percent for accuracies) of ``row`` at IF ``f``, ``nan`` where missing."""
    found = {r["seed"]: r[metric] for r in runs if r["row"] == row and r["imbalance_factor"] == f}
    scale = 100.0 if metric in SHOTS else 1.0
    return [scale * found[s] if found.get(s) is not None else math.nan for s in seeds]


def summarise(results: dict[str, Any], design: Design) -> dict[str, Any]:
    runs, seeds = results["runs"], design.seeds
    summary: dict[str, Any] = {"rows": {}, "vs_ce": {}, "pairs": {}, "ranking": {}, "tuned": {}}
    for f in design.imbalance_factors:
        key = f"{f:g}"
        present = [row for row in ROWS if any(r["row"] == row and r["imbalance_factor"] == f for r in runs)]
        summary["rows"][key] = {row: {m: mean_std(values(runs, row, m, f, seeds)) for m in SHOTS} for row in present}
        summary["vs_ce"][key] = {
            row: {
                m: Comparison(
                    f"{row} > CE, {m}, IF={key}", values(runs, row, m, f, seeds), values(runs, "CE", m, f, seeds)
                ).evaluate()
                for m in ("all", "few")
            }
            for row in present
            if row != "CE"
        }
        summary["pairs"][key] = [
            Comparison(
                f"{a} > {b}, all, IF={key}", values(runs, a, "all", f, seeds), values(runs, b, "all", f, seeds)
            ).evaluate()
            for a, b in EXTRA_PAIRS
            if a in present and b in present
        ]
        summary["ranking"][key] = sorted(present, key=lambda row: -summary["rows"][key][row]["all"][0])
        summary["tuned"][key] = {
            row: [r["tau"] for r in runs if r["row"] == row and r["imbalance_factor"] == f]
            for row in ("LogitAdjusted", "CE + post-hoc", "tau-norm")
            if row in present
        }
    return summary


def mark(stats: dict[str, Any]) -> str:
    """Paired difference to CE with its sign test result: ``+3.1 ± 1.2 (5/5, better)``."""
    if stats["n"] == 0:
        return "–"  # no such group at this IF (e.g. no Few class at IF = 10)
    verdict = {"replicates": "better", "contradicted": "worse"}.get(stats["verdict"], "n.s.")
    return f"{stats['mean_diff']:+.1f} ± {stats['std_diff']:.1f} ({stats['wins']}/{stats['n']}, {verdict})"


def markdown(results: dict[str, Any], design: Design) -> str:
    meta, summary = results["meta"], results["summary"]
    n = len(design.seeds)
    lines = [
        "# Choosing a method: Fashion-MNIST-LT" + (" (QUICK SMOKE RUN — not evidence)" if design.quick else ""),
        "",
        f"Generated by `{meta['command']}` in {meta['wall_seconds'] / 60:.1f} min on {meta['cpu_count']} CPU cores "
        f"({meta['jobs']} worker processes x 1 thread; load average {meta['loadavg_start'][0]:.1f} at start, "
        f"{meta['loadavg_end'][0]:.1f} at end), torch {meta['torch']}, commit `{meta['commit']}`. Every number "
        f"below comes from `{STEM}.json` in `benchmarks/results/`.",
        "",
        "## Setup",
        "",
        f"* Fashion-MNIST-LT with the class order permuted per seed (each seed a different tail), head class "
        f"{design.max_count} images, IF in {{{', '.join(f'{f:g}' for f in design.imbalance_factors)}}}, seeds "
        f"{list(design.seeds)}. Many > 100, Medium 20–100, Few < 20 training images. Validation: "
        f"{design.val_per_class} unused training images per class; it selects every tuned value. Test: the full "
        "balanced 10,000-image test set, which selects nothing.",
        f"* Tiny CNN, one recipe for every one-stage model: SGD 0.9, batch {design.batch_size}, lr {design.lr} "
        f"cosine to 0, {design.epochs} epochs, weight decay {design.weight_decay}; same initialisation and batches "
        "for every row of one (IF, seed).",
        f"* LogitAdjusted: tau in {list(design.la_taus)} (one model each). CE + post-hoc: tau in 0–3 by 0.1. "
        f"ClassBalancedFocal / BFS / BWLM: beta {design.beta}, gamma {design.gamma}, alpha {design.alpha}, BWLM "
        f"lambda {design.weight_decay}. LDAM-DRW: max margin {design.ldam_max_margin}, scale {design.ldam_scale}, "
        f"DRW from epoch {design.drw_start_epoch}.",
        f"* Decoupled rows on the CE model (frozen, cached features): cRT and LWS {design.decoupled_steps} steps of "
        f"class-balanced batches, lr {design.decoupled_lr}; tau-norm tau in 0–2 by 0.1 (validation); NCM cosine.",
        f"* The paper's two-stage rows: stage 1 on the head half, then about {design.stage2_steps} stage-2 steps on "
        "the review set (as in `real_data_lt.py`; stage 1 with this study's one-stage recipe).",
        "",
        f'Cells: mean ± std over {n} seeds, in %. "Δ vs CE": paired difference to the CE row of the same '
        f"(IF, seed), mean ± std, seeds with a positive difference, and a two-sided paired t-test at 5% "
        "(better / worse / n.s. = not significant; no correction for the number of comparisons).",
        "",
    ]
    lines += [
        "## At a glance: the best row of each group by mean All accuracy (%), and its paired difference to CE",
        "",
        "| IF | CE | CE + post-hoc | best one-stage loss | best decoupled | best two-stage (paper) |",
        "|---|---|---|---|---|---|",
    ]
    for f in design.imbalance_factors:
        key = f"{f:g}"
        rows, vs = summary["rows"][key], summary["vs_ce"][key]
        cells = [fmt(rows["CE"]["all"]) if "CE" in rows else "–"]
        cells.append(
            f"{fmt(rows['CE + post-hoc']['all'])}, Δ {mark(vs['CE + post-hoc']['all'])}"
            if "CE + post-hoc" in vs
            else "–"
        )
        for group in (
            ("BalancedSoftmax", "LogitAdjusted", "ClassBalancedFocal", "BFS", "BWLM", "LDAM-DRW"),
            DECOUPLED,
            TWO_STAGE,
        ):
            present = [row for row in group if row in rows]
            if present:
                best = max(present, key=lambda row: rows[row]["all"][0])
                cells.append(f"{best}: {fmt(rows[best]['all'])}, Δ {mark(vs[best]['all'])}")
            else:
                cells.append("–")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("")
    for f in design.imbalance_factors:
        key = f"{f:g}"
        rows, vs = summary["rows"][key], summary["vs_ce"][key]
        lines += [
            f"## IF = {key}",
            "",
            "| Method | Group | Many | Medium | Few | All | Δ All vs CE | Δ Few vs CE |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row, m in rows.items():
            cmp = vs.get(row)
            lines.append(
                f"| {row} | {GROUP[row]} | "
                + " | ".join(fmt(m[k]) for k in SHOTS)
                + (f" | {mark(cmp['all'])} | {mark(cmp['few'])} |" if cmp else " | – | – |")
            )
        lines.append("")
    lines += ["## Ranking per IF (mean All accuracy, best first)", ""]
    ifs = [f"{f:g}" for f in design.imbalance_factors]
    lines += ["| Rank | " + " | ".join(f"IF = {k}" for k in ifs) + " |", "|---|" + "---|" * len(ifs)]
    for i in range(len(ROWS)):
        cells = []
        for k in ifs:
            ranking = summary["ranking"][k]
            cells.append(f"{ranking[i]} ({summary['rows'][k][ranking[i]]['all'][0]:.1f})" if i < len(ranking) else "")
        if any(cells):
            lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Further paired comparisons (All accuracy, fixed in advance)",
        "",
        "| Comparison | A | B | A − B | seeds A > B | t | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in ifs:
        for s in summary["pairs"][k]:
            verdict = {"replicates": "A better", "contradicted": "B better"}.get(s["verdict"], "n.s.")
            lines.append(
                f"| {s['label']} | {fmt(s['a_mean_std'])} | {fmt(s['b_mean_std'])} | "
                f"{fmt((s['mean_diff'], s['std_diff']))} | {s['wins']}/{s['n']} | {s['t']:.2f} | {verdict} |"
            )
    lines += [
        "",
        "## Tuned values (chosen on the validation split, one per seed)",
        "",
        "| IF | " + " | ".join(("LogitAdjusted tau", "CE + post-hoc tau", "tau-norm tau")) + " |",
        "|---|---|---|---|",
    ]
    for k in ifs:
        tuned = summary["tuned"][k]
        cells = [
            ", ".join(f"{t:g}" for t in tuned.get(row, [])) or "–"
            for row in ("LogitAdjusted", "CE + post-hoc", "tau-norm")
        ]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    tasks = results["tasks"]
    by_kind: dict[str, list[float]] = {}
    for t in tasks:
        by_kind.setdefault(t["kind"], []).append(t["seconds"]["task"])
    cpu = sum(t["seconds"]["task_cpu"] for t in tasks)
    lines += [
        "",
        "## Run time",
        "",
        f"Total wall time {meta['wall_seconds']:.0f} s ({meta['wall_seconds'] / 60:.1f} min) for {len(tasks)} tasks; "
        f"CPU time of all tasks {cpu:.0f} s. Mean seconds per task (one worker, one thread): "
        + ", ".join(f"{k} {sum(v) / len(v):.1f}" for k, v in by_kind.items())
        + ". The CE task includes the post-hoc adjustment and the four decoupled rows; the two-stage task "
        "includes stage 1 and all eight stage-2 heads.",
        "",
        "## Plots",
        "",
        f"![Accuracy vs IF]({STEM}_accuracy_vs_if.png)",
        f"![Per-class accuracy]({STEM}_per_class.png)",
        "",
    ]
    return "\n".join(lines)


PLOT_ROWS = ("CE", "CE + post-hoc", "BalancedSoftmax", "LogitAdjusted", "BWLM", "LDAM-DRW", "cRT", "+BWLM")


def plots(results: dict[str, Any], design: Design, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, runs = results["summary"], results["runs"]
    ifs = list(design.imbalance_factors)
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, metric in zip(axes, ("all", "few")):
        for row in ROWS:
            pts = [(f, summary["rows"][f"{f:g}"][row][metric]) for f in ifs if row in summary["rows"][f"{f:g}"]]
            style = "-" if GROUP[row] == "one-stage" else ("--" if GROUP[row].startswith("decoupled") else ":")
            ax.errorbar(
                [p[0] for p in pts],
                [p[1][0] for p in pts],
                yerr=[p[1][1] for p in pts],
                label=row,
                capsize=2,
                ls=style,
                marker="o" if row in PLOT_ROWS else ".",
                lw=2 if row == "CE" else 1,
            )
        ax.set_xscale("log")
        ax.set_xticks(ifs, [f"{f:g}" for f in ifs])
        ax.set_xlabel("imbalance factor")
        ax.set_ylabel(f"{metric.capitalize()} accuracy (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"Fashion-MNIST-LT, permuted class order: accuracy vs IF (mean ± std, {len(design.seeds)} seeds); "
        "solid one-stage, dashed decoupled, dotted two-stage"
    )
    fig.tight_layout()
    written.append(_save(fig, out / f"{STEM}_accuracy_vs_if.png"))

    f_plot = 100 if 100 in ifs else max(ifs)
    fig, ax = plt.subplots(figsize=(8, 4.4))
    for row in PLOT_ROWS:
        per = [r["per_class_accuracy"] for r in runs if r["row"] == row and r["imbalance_factor"] == f_plot]
        if per:
            ms = [mean_std([100 * p[c] for p in per]) for c in range(NUM_CLASSES)]
            ax.errorbar(
                range(NUM_CLASSES), [v[0] for v in ms], yerr=[v[1] for v in ms], label=row, capsize=2, marker="o"
            )
    ax.set_xlabel("frequency rank (0 = head; a different Fashion-MNIST class per seed)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Per-class accuracy by frequency rank, IF = {f_plot:g} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    written.append(_save(fig, out / f"{STEM}_per_class.png"))
    return written


# --------------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------------


def task_list(design: Design) -> list[tuple[float, int, str, float]]:
    """Every task, the costly ones (low IF = more images; CE and two-stage do more) first."""
    kinds: list[tuple[str, float]] = [("two-stage", math.nan), ("CE", math.nan)]
    kinds += [(row, math.nan) for row in ("BalancedSoftmax", "ClassBalancedFocal", "BFS", "BWLM", "LDAM-DRW")]
    kinds += [("LogitAdjusted", t) for t in design.la_taus if t != 1.0]
    return [(f, s, k, t) for f in sorted(design.imbalance_factors) for k, t in kinds for s in design.seeds]


def report(results: dict[str, Any], design: Design, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["summary"] = summarise(results, design)
    (out / f"{STEM}.json").write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")
    (out / f"{STEM}.md").write_text(markdown(results, design))
    plots(results, design, out)


def run_study(root: str, design: Design, jobs: int, out: Path, command: str) -> dict[str, Any]:
    start, load_start = time.perf_counter(), os.getloadavg()
    fashion_mnist_lt(root, 1, train=False)  # fail early, with the reader's message, if the data are missing
    tasks = task_list(design)
    done: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_task, root, f, s, k, t, design): (f, s, k, t) for f, s, k, t in tasks}
        for fut in as_completed(futures):
            done.append(fut.result())
            f, s, k, t = futures[fut]
            print(
                f"  [{len(done)}/{len(tasks)}] IF={f:g} seed={s} {k}{'' if math.isnan(t) else f' tau={t:g}'}: "
                f"{done[-1]['task']['seconds']['task']:.0f} s ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    runs = select_logit_adjusted([r for d in done for r in d["runs"]], design)
    results: dict[str, Any] = {
        "meta": run_meta(command=command, jobs=jobs, root=root, load_start=load_start, start=start),
        "design": asdict(design),
        "tasks": sorted((d["task"] for d in done), key=lambda t: (t["imbalance_factor"], t["seed"], t["kind"])),
        "runs": sorted(runs, key=lambda r: (r["imbalance_factor"], r["seed"], ROWS.index(r["row"]))),
    }
    report(results, design, out)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--quick", action="store_true", help="smoke test: IF 100, 2 seeds, 1 epoch (not evidence)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default benchmarks/results; --quick: a new temporary folder)",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--report-only", action="store_true", help="rebuild Markdown and plots from the JSON in --out")
    args = parser.parse_args(argv)
    design = QUICK if args.quick else Design()
    out = args.out or (Path(tempfile.mkdtemp(prefix=f"{STEM}_quick_")) if args.quick else RESULTS)
    if args.report_only:
        results = json.loads((out / f"{STEM}.json").read_text())
        design = Design(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["design"].items()})
        report(results, design, out)
        print(f"rebuilt the report in {out}")
        return 0
    command = "python benchmarks/choosing_a_method.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{STEM}: {len(task_list(design))} tasks on {args.jobs} workers -> {out}", flush=True)
    results = run_study(args.root, design, args.jobs, out, command.strip())
    print(f"wrote {out / (STEM + '.json')}, {STEM}.md and plots in {results['meta']['wall_seconds']:.0f} s")
    for k, ranking in results["summary"]["ranking"].items():
        print(f"  IF={k}: " + " > ".join(ranking))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
