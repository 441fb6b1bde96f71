"""Digits-LT on the CPU, shared by ``offline_demo.py`` and ``offline_toolbox_demo.py``.

The data (:func:`longtail_losses.data.digits_lt`, held as ``uint8`` tensors), the backbone training (the paper's
recipe with a 1-pixel zero-padded random crop), the one-stage rows (one loss each on the whole long-tailed set:
:data:`ONE_STAGE_ROWS`), the paper's rows on one seed (naive, stage 1 and every two-stage row of
:data:`longtail_losses.paper.STAGE2_ROWS`), the seeds run one after the other or in worker processes, and the
mean +- std table over seeds.
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from _batches import CropFlip, TensorData, epoch_batches
from _distributed import Dist, seed_everything
from _loops import STAGE2_SEED_OFFSET, cosine, evaluate, predict, train_epoch
from torch import Tensor, nn

import longtail_losses as ltl
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
    *,
    no_decay: Sequence[Tensor] = (),
) -> list[float]:
    """``args.epochs`` epochs of SGD with cosine lr and random crops; the loss of epoch e is ``criterion_at(e)``.

    The optimizer's weight decay is ``args.stage1_weight_decay`` on every parameter but those of ``no_decay``
    (a classifier that BWLM's penalty decays). Returns the per-epoch losses. Default loss: cross-entropy.
    """
    decayed = [p for p in model.parameters() if all(p is not q for q in no_decay)]
    groups = [{"params": decayed}, {"params": list(no_decay), "weight_decay": 0.0}] if no_decay else decayed
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.stage1_weight_decay)
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


#: The one-stage rows: the same network, recipe and loop as naive, on the whole long-tailed set; only the loss differs.
ONE_STAGE_ROWS = ("CE", "BalancedSoftmax", "LogitAdjusted", "BFS", "BWLM", "LDAM-DRW")


class CosineLinear(nn.Module):
    """Cosine classifier of LDAM-DRW: normalised features times normalised class weights, in [-1, 1]."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Cosine similarities of the features to the class weights."""
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


def train_one_stage(name: str, seed: int, train: TensorData, args: argparse.Namespace, d: Dist) -> DigitsCNN:
    """A :class:`DigitsCNN` trained in one stage on the whole long-tailed ``train`` with the loss of row ``name``.

    * CE: cross-entropy (the paper's naive row);
    * BalancedSoftmax, LogitAdjusted (tau = ``args.tau``), BFS (alpha = ``args.alpha``): the library's losses,
      dropped in for cross-entropy;
    * BWLM: BFS plus the classifier-norm penalty (lambda = ``args.weight_decay``) on ``model.fc``, which the
      optimizer then leaves out of its weight decay (as ``training.warn_double_decay`` asks);
    * LDAM-DRW: LDAM (max margin ``args.ldam_max_margin``, scale ``args.ldam_scale``) on a cosine classifier,
      class-balanced DRW weights (beta 0.9999) from ``args.drw_start`` of the epochs on (Cao et al. 2019).
    """
    if name not in ONE_STAGE_ROWS:
        raise ValueError(f"Expected `name` to be one of {ONE_STAGE_ROWS}, but got {name!r}")
    counts = torch.bincount(train.labels, minlength=NUM_CLASSES)
    torch.manual_seed(seed)
    model = DigitsCNN(NUM_CLASSES, width=args.width)
    criterion_at: Optional[Callable[[int], nn.Module]] = None
    no_decay: tuple[Tensor, ...] = ()
    if name == "LDAM-DRW":
        model.fc = CosineLinear(model.fc.in_features, NUM_CLASSES)  # type: ignore[assignment]
        ldam = ltl.LDAMLoss(counts, max_margin=args.ldam_max_margin, scale=args.ldam_scale)
        drw_start = int(args.drw_start * args.epochs)

        def ldam_at(epoch: int) -> nn.Module:
            ldam.class_weights = ltl.drw_weights(counts, epoch, drw_start, beta=paper.RECIPE.beta)
            return ldam

        criterion_at = ldam_at
    elif name != "CE":
        criterion: nn.Module = {
            "BalancedSoftmax": lambda: ltl.BalancedSoftmax(counts),
            "LogitAdjusted": lambda: ltl.LogitAdjustedLoss(counts, tau=args.tau),
            "BFS": lambda: ltl.BFS(counts, alpha=args.alpha),
            "BWLM": lambda: ltl.BWLM(counts, classifier=model.fc, alpha=args.alpha, weight_decay=args.weight_decay),
        }[name]()
        criterion_at = lambda epoch: criterion  # noqa: E731
        if name == "BWLM":
            no_decay = (model.fc.weight,)
    train_backbone(model, train, args, seed, d, criterion_at, no_decay=no_decay)
    return model


@dataclass
class PaperModels:
    """What :func:`paper_rows` trained, for further rows built on it."""

    naive: DigitsCNN
    stage1: DigitsCNN
    test_features: Tensor  # of the frozen stage-1 backbone


def paper_rows(
    seed: int,
    train: TensorData,
    test: TensorData,
    args: argparse.Namespace,
    d: Dist,
    *,
    weight_norms: bool,
    naive: Optional[DigitsCNN] = None,
) -> tuple[dict[str, Any], PaperModels]:
    """The test scores of the paper's rows (naive, stage1, +CE, ..., +BWLM) on one seed, and the models.

    Each score is the dict of :func:`_loops.evaluate`, with the classifier's ``weight_norms`` if asked. ``naive``:
    the one-stage cross-entropy model, if it is trained already (``train_one_stage("CE", ...)`` is that model).
    """
    counts = torch.bincount(train.labels, minlength=NUM_CLASSES)
    rows: dict[str, Any] = {}

    def score(name: str, preds: Tensor, classifier: nn.Module) -> None:
        rows[name] = evaluate(preds, test.labels, counts, thresholds(counts))
        if weight_norms:
            rows[name]["weight_norms"] = metrics.classifier_weight_norms(classifier).tolist()

    if naive is None:
        naive = train_one_stage("CE", seed, train, args, d)
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


def demo_rows(seed: int, train: TensorData, test: TensorData, args: argparse.Namespace, d: Dist) -> dict[str, Any]:
    """The scores of ``offline_demo.py``'s rows on one seed: :data:`ONE_STAGE_ROWS`, then the paper's rows.

    The paper's naive row is the one-stage CE model itself (trained once); the paper's rows carry the classifier's
    ``weight_norms``.
    """
    counts = torch.bincount(train.labels, minlength=NUM_CLASSES)
    rows: dict[str, Any] = {}
    models = {}
    for name in ONE_STAGE_ROWS:
        models[name] = train_one_stage(name, seed, train, args, d)
        rows[name] = evaluate(
            predict(models[name], test.eval_batches(d), d)[0], test.labels, counts, thresholds(counts)
        )
    two_stage, _ = paper_rows(seed, train, test, args, d, weight_norms=True, naive=models["CE"])
    return {**rows, **two_stage}


@dataclass
class Study:
    """What :func:`run_study` produced."""

    train: TensorData
    test: TensorData
    counts: Tensor
    per_seed: list[dict[str, Any]]
    table: dict[str, dict[str, Any]]
    wall_time_s: float


RunSeed = Callable[[int, TensorData, TensorData, argparse.Namespace, Dist], dict[str, Any]]


def _one_seed(run_seed: RunSeed, seed: int, train: TensorData, test: TensorData, args: argparse.Namespace) -> Any:
    # One seed on one CPU process with args.threads threads and deterministic algorithms, in this process or a
    # worker: the same scores either way, since every model, batch order and crop is seeded from `seed`.
    torch.set_num_threads(args.threads)
    seed_everything(0, deterministic=True)
    t0 = time.time()
    return run_seed(seed, train, test, args, Dist()), time.time() - t0


def run_seeds(args: argparse.Namespace, train: TensorData, test: TensorData, run_seed: RunSeed) -> list[dict[str, Any]]:
    """``run_seed(seed, train, test, args, d)`` for every seed, in ``args.jobs`` worker processes; in seed order.

    ``run_seed`` must be a module-level function (the workers are started with ``spawn`` and import it). One job
    runs the seeds one after the other in this process. Prints a line as each seed finishes.
    """
    jobs = max(1, min(getattr(args, "jobs", 1), args.seeds))
    results: dict[int, dict[str, Any]] = {}

    def done(seed: int, rows: dict[str, Any], seconds: float) -> None:
        results[seed] = rows
        print(f"  seed {seed} done in {seconds:.0f} s", flush=True)

    if jobs == 1:
        threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        for seed in range(args.seeds):
            done(seed, *_one_seed(run_seed, seed, train, test, args))
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=True)
    else:
        context = multiprocessing.get_context("spawn")  # fork after torch has started its threads is unsafe
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(_one_seed, run_seed, seed, train, test, args): seed for seed in range(args.seeds)}
            for future in as_completed(futures):
                done(futures[future], *future.result())
    return [results[seed] for seed in range(args.seeds)]


def run_study(
    args: argparse.Namespace,
    intro: Callable[[TensorData, TensorData, Tensor], str],
    run_seed: RunSeed,
) -> Study:
    """Load Digits-LT, print ``intro(train, test, counts)``, run every seed, print the table of means and stds.

    Each seed runs on one CPU process with ``args.threads`` threads and deterministic algorithms (see
    :func:`run_seeds`); ``run_seed(seed, train, test, args, d)`` returns the scores of each row on that seed (the
    dicts of :func:`_loops.evaluate`).
    """
    start = time.time()
    train, test = load(args.imbalance_factor)
    counts = torch.bincount(train.labels, minlength=NUM_CLASSES)
    print(intro(train, test, counts), flush=True)
    per_seed = run_seeds(args, train, test, run_seed)
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
