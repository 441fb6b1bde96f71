"""Digits-LT on one CPU process, shared by ``offline_demo.py`` and ``offline_toolbox_demo.py``.

The data (:func:`longtail_losses.data.digits_lt`, held as ``uint8`` tensors), the backbone training (the paper's
recipe with a 1-pixel zero-padded random crop), the paper's rows on one seed (naive, stage 1 and every two-stage
row of :data:`longtail_losses.paper.STAGE2_ROWS`) and the mean +- std table over seeds.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from _batches import CropFlip, TensorData, epoch_batches
from _distributed import Dist, seed_everything
from _loops import STAGE2_SEED_OFFSET, cosine, evaluate, predict, train_epoch
from torch import Tensor, nn

from longtail_losses import data as ltd
from longtail_losses import metrics, paper, twostage
from longtail_losses.models import DigitsCNN

NUM_CLASSES = 10
MEAN, STD = (0.5,), (0.5,)


def load(imbalance_factor: float) -> tuple[TensorData, TensorData]:
    """The long-tailed training set and the balanced test set, as ``uint8`` (N, 1, 8, 8) tensors."""

    def tensors(ds: Any) -> TensorData:
        images = torch.as_tensor(ds.data).unsqueeze(1).contiguous()
        return TensorData(images, torch.tensor(ds.targets, dtype=torch.int64), MEAN, STD)

    return tensors(ltd.digits_lt(imbalance_factor, train=True)), tensors(ltd.digits_lt(imbalance_factor, train=False))


def thresholds(counts: Tensor) -> tuple[float, float]:
    """The paper's Many/Few thresholds (100 / 20 of a head class of 500) scaled to this head class."""
    return float(counts.max()) / 5, float(counts.max()) / 25


def train_backbone(
    model: nn.Module,
    train: TensorData,
    args: argparse.Namespace,
    seed: int,
    d: Dist,
    criterion_at: Optional[Callable[[int], nn.Module]] = None,
) -> list[float]:
    """``args.epochs`` epochs of SGD with cosine lr and random crops; the loss of epoch e is ``criterion_at(e)``.

    Returns the per-epoch losses. Default loss: cross-entropy.
    """
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.stage1_weight_decay)
    steps = len(epoch_batches(len(train), args.batch_size, seed=seed, epoch=0, d=d))
    sched = cosine(opt, args.epochs * steps)
    crop = CropFlip(len(train), padding=1, flip=False, seed=seed)
    ce = nn.CrossEntropyLoss()
    history = []
    for epoch in range(args.epochs):
        batches = train.train_batches(args.batch_size, seed=seed, epoch=epoch, d=d, augment=crop)
        loss_fn = criterion_at(epoch) if criterion_at is not None else ce
        history.append(train_epoch(model, batches, loss_fn, opt, sched, d))
    return history


@dataclass
class PaperModels:
    """What :func:`paper_rows` trained, for further rows built on it."""

    naive: DigitsCNN
    stage1: DigitsCNN
    test_features: Tensor  # of the frozen stage-1 backbone


def paper_rows(
    seed: int, train: TensorData, test: TensorData, args: argparse.Namespace, d: Dist, *, weight_norms: bool
) -> tuple[dict[str, Any], PaperModels]:
    """The test scores of the paper's rows (naive, stage1, +CE, ..., +BWLM) on one seed, and the models.

    Each score is the dict of :func:`_loops.evaluate`, with the classifier's ``weight_norms`` if asked.
    """
    counts = torch.bincount(train.labels, minlength=NUM_CLASSES)
    rows: dict[str, Any] = {}

    def score(name: str, preds: Tensor, classifier: nn.Module) -> None:
        rows[name] = evaluate(preds, test.labels, counts, thresholds(counts))
        if weight_norms:
            rows[name]["weight_norms"] = metrics.classifier_weight_norms(classifier).tolist()

    torch.manual_seed(seed)
    naive = DigitsCNN(NUM_CLASSES, width=args.width)
    train_backbone(naive, train, args, seed, d)
    score("naive", predict(naive, test.eval_batches(d), d)[0], naive.fc)

    stage1_idx, stage2_idx = twostage.data_balanced_review(train.labels, seed=seed)
    torch.manual_seed(seed)
    stage1 = DigitsCNN(NUM_CLASSES, width=args.width)
    train_backbone(stage1, train.subset(stage1_idx), args, seed, d)
    score("stage1", predict(stage1, test.eval_batches(d), d)[0], stage1.fc)

    sub = train.subset(stage2_idx)
    stage2_counts = torch.bincount(sub.labels, minlength=NUM_CLASSES)
    feats, labels = twostage.extract_features(stage1, (sub.normalize(sub.images), sub.labels))
    test_feats, _ = twostage.extract_features(stage1, (test.normalize(test.images), test.labels))
    for name in paper.STAGE2_ROWS:
        torch.manual_seed(seed + STAGE2_SEED_OFFSET)
        fc = twostage.replace_classifier(copy.deepcopy(stage1), NUM_CLASSES)
        criterion = paper.criterion(name, stage2_counts, fc, alpha=args.alpha, weight_decay=args.weight_decay)
        twostage.train_classifier(
            fc, feats, labels, criterion, epochs=args.stage2_epochs, batch_size=args.batch_size, lr=args.lr,
            momentum=args.momentum, seed=seed + STAGE2_SEED_OFFSET,
        )  # fmt: skip
        with torch.no_grad():
            score(name, fc(test_feats).argmax(1), fc)
    return rows, PaperModels(naive, stage1, test_feats)


@dataclass
class Study:
    """What :func:`run_study` produced."""

    train: TensorData
    test: TensorData
    counts: Tensor
    per_seed: list[dict[str, Any]]
    table: dict[str, dict[str, Any]]
    wall_time_s: float


def run_study(
    args: argparse.Namespace,
    intro: Callable[[TensorData, TensorData, Tensor], str],
    run_seed: Callable[[int, TensorData, TensorData, Dist], dict[str, Any]],
) -> Study:
    """Load Digits-LT, print ``intro(train, test, counts)``, run every seed, print the table of means and stds.

    One CPU process with ``args.threads`` threads and deterministic algorithms; ``run_seed(seed, train, test, d)``
    returns the scores of each row on that seed (the dicts of :func:`_loops.evaluate`).
    """
    torch.set_num_threads(args.threads)
    seed_everything(0, deterministic=True)
    d = Dist()  # one CPU process
    start = time.time()
    train, test = load(args.imbalance_factor)
    counts = torch.bincount(train.labels, minlength=NUM_CLASSES)
    print(intro(train, test, counts), flush=True)
    per_seed = []
    for seed in range(args.seeds):
        t0 = time.time()
        per_seed.append(run_seed(seed, train, test, d))
        print(f"  seed {seed} done in {time.time() - t0:.0f} s", flush=True)
    table = mean_table(per_seed)
    print(metrics.format_shot_table(table, header=f"Digits-LT IF={args.imbalance_factor:g}"))
    wall = time.time() - start
    print(f"accuracy in % on the balanced test set, mean ± std over {args.seeds} seed(s); wall time {wall:.0f} s")
    return Study(train, test, counts, per_seed, table, wall)


def mean_table(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Many/Medium/Few/All of every row: ``(mean, std)`` over the seeds, or the value itself for one seed."""
    table: dict[str, dict[str, Any]] = {}
    for name in per_seed[0]:
        table[name] = {}
        for k in metrics.SHOT_KEYS:
            vals = torch.tensor([math.nan if r[name][k] is None else r[name][k] for r in per_seed], dtype=torch.float64)
            table[name][k] = (float(vals.mean()), float(vals.std())) if len(per_seed) > 1 else float(vals.mean())
    return table
