"""The long-tail toolbox next to the paper's rows, offline on a CPU: Digits-LT (scikit-learn's bundled digits).

Same data, network, recipe and seeds as ``offline_demo.py`` (batch 64, SGD momentum 0.9, cosine lr 0.01 -> 0,
320 epochs per stage, IF = 50), and the same Many/Medium/Few/All table, mean +- std over seeds. Rows:

* the paper's (``offline_demo.py``): naive, stage1, +CE, +CB, +BS, +BFS, +CEW, +CBW, +BSW, +BWLM;
* one stage, the whole long-tailed set, in place of naive's cross-entropy:
  - LA: logit-adjusted loss, tau = 1 (Menon et al. 2021);
  - LDAM-DRW: LDAM (max margin 0.5, scale 30) on a cosine classifier, class-balanced DRW weights
    (beta 0.9999) from 80 % of the epochs on (Cao et al. 2019; their CIFAR schedule is 160 of 200);
* post-hoc, on the naive model: naive+posthoc-LA (z - tau log pi, tau = 1) and naive+tau-norm (tau = 1,
  Kang et al. 2020's setting: the classifier of joint training);
* decoupled classifiers on the frozen stage-1 backbone, trained on the cached features of the whole
  long-tailed training set (Kang et al. 2020):
  - s1+IB: a new linear classifier, cross-entropy, instance-balanced batches (the classifier the next three
    start from); s1+cRT: a new classifier, class-balanced sampling (``ClassAwareSampler(power=0)``);
  - s1+tau-norm: IB's classifier with rows W_j / ||W_j|| (tau = 1, bias dropped);
  - s1+LWS: IB's classifier frozen, one learned scale per class, class-balanced sampling;
  - s1+NCM: cosine similarity to the class-mean features.

tau is fixed at 1 everywhere: Digits-LT has no validation split to tune it on, and tuning on the test set would
flatter the result (see ``ltl.tune_tau``). Nothing here is tuned for digits; the table shows the methods running
on real data, not which one wins at scale.

Cost: four backbone trainings per seed (naive, stage 1, LA, LDAM-DRW; about 25 s of CPU each on one core), so
one seed (the default) takes about 110 s of CPU time and ``--seeds 2`` (mean +- std) about 215 s.

Run:  python examples/offline_toolbox_demo.py [--seeds 2]   (needs `pip install -e ".[examples]"`; no network, no GPU)
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C
import offline_demo
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses import data as ltd
from longtail_losses import metrics, twostage
from longtail_losses.models import DigitsCNN

PAPER_STAGE2_ROWS = offline_demo.STAGE2_ROWS
NUM_CLASSES = 10


def build_parser() -> argparse.ArgumentParser:
    parser = offline_demo.build_parser()
    parser.prog = "offline_toolbox_demo.py"
    parser.description = __doc__
    parser.set_defaults(seeds=1)  # four backbones per seed: one seed keeps the default run under ~2 minutes
    parser.add_argument("--tau", type=float, default=1.0, help="tau of LA, post-hoc LA and tau-norm")
    parser.add_argument("--ldam-scale", type=float, default=30.0, help="LDAM scale s (cosine classifier)")
    parser.add_argument("--ldam-max-margin", type=float, default=0.5, help="LDAM margin of the rarest class")
    parser.add_argument("--drw-start", type=float, default=0.8, help="DRW starts after this fraction of the epochs")
    return parser


class CosineLinear(nn.Module):
    """Cosine classifier of LDAM-DRW: normalised features times normalised class weights, in [-1, 1]."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Cosine similarities of the features to the class weights."""
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


def train_one_stage(
    model: nn.Module,
    train: C.TensorData,
    args: argparse.Namespace,
    seed: int,
    d: C.Dist,
    criterion_at: Callable[[int], nn.Module],
) -> None:
    """``offline_demo.train_backbone`` with the loss of each epoch from ``criterion_at(epoch)``."""
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.stage1_weight_decay)
    steps = len(C.epoch_batches(len(train), args.batch_size, seed=seed, epoch=0, d=d))
    sched = C.cosine(opt, args.epochs * steps)
    crop = C.CropFlip(len(train), padding=1, flip=False, seed=seed)
    for epoch in range(args.epochs):
        batches = train.train_batches(args.batch_size, seed=seed, epoch=epoch, d=d, augment=crop)
        C.train_epoch(model, batches, criterion_at(epoch), opt, sched, d)


def train_on_draws(
    module: nn.Module, features: Tensor, labels: Tensor, sampler: ltd.ClassAwareSampler, args: argparse.Namespace
) -> None:
    """Cross-entropy on cached features, batches cut from the sampler's draws; SGD, cosine lr, stage-2 epochs."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum)
    steps = math.ceil(len(sampler) / args.batch_size)
    sched = C.cosine(opt, args.stage2_epochs * steps)
    for epoch in range(args.stage2_epochs):
        sampler.set_epoch(epoch)
        for index in torch.tensor(list(sampler), dtype=torch.int64).split(args.batch_size):
            loss = F.cross_entropy(module(features[index]), labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def run_seed(seed: int, train: C.TensorData, test: C.TensorData, args: argparse.Namespace, d: C.Dist) -> dict:
    counts = torch.bincount(train.labels, minlength=NUM_CLASSES)
    thresholds = (float(counts.max()) / 5, float(counts.max()) / 25)
    rows: dict[str, Any] = {}

    def score(preds: Tensor) -> dict[str, Any]:
        return C.evaluate(preds, test.labels, counts, thresholds)

    def logits_of(model: nn.Module) -> Tensor:
        model.eval()
        with torch.no_grad():
            return torch.cat([model(x) for x, _ in test.eval_batches(d)])

    # The paper's rows, exactly as offline_demo.py runs them.
    torch.manual_seed(seed)
    naive = DigitsCNN(NUM_CLASSES, width=args.width)
    offline_demo.train_backbone(naive, train, args.epochs, args, seed, d)
    naive_logits = logits_of(naive)
    rows["naive"] = score(naive_logits.argmax(1))

    stage1_idx, stage2_idx = twostage.data_balanced_review(train.labels, seed=seed)
    torch.manual_seed(seed)
    stage1 = DigitsCNN(NUM_CLASSES, width=args.width)
    offline_demo.train_backbone(stage1, train.subset(stage1_idx), args.epochs, args, seed, d)
    rows["stage1"] = score(logits_of(stage1).argmax(1))

    sub = train.subset(stage2_idx)
    stage2_counts = torch.bincount(sub.labels, minlength=NUM_CLASSES)
    feats, labels = twostage.extract_features(stage1, (sub.normalize(sub.images), sub.labels))
    test_feats, _ = twostage.extract_features(stage1, (test.normalize(test.images), test.labels))
    for row in PAPER_STAGE2_ROWS:
        _, loss, wd = C.ROWS[row]
        model = copy.deepcopy(stage1)
        torch.manual_seed(seed + C.STAGE2_SEED_OFFSET)
        fc = twostage.replace_classifier(model, NUM_CLASSES)
        criterion = C.make_stage2_criterion(
            loss, stage2_counts, fc, alpha=args.alpha, beta=C.PAPER["beta"], gamma=C.PAPER["gamma"],
            weight_decay=args.weight_decay if wd else 0.0,
        )  # fmt: skip
        twostage.train_classifier(
            fc, feats, labels, criterion, epochs=args.stage2_epochs, batch_size=args.batch_size, lr=args.lr,
            momentum=args.momentum, seed=seed + C.STAGE2_SEED_OFFSET,
        )  # fmt: skip
        with torch.no_grad():
            rows[f"+{row}"] = score(fc(test_feats).argmax(1))

    # One stage on the whole long-tailed set: logit-adjusted loss; LDAM with deferred re-weighting.
    torch.manual_seed(seed)
    la_model = DigitsCNN(NUM_CLASSES, width=args.width)
    la = ltl.LogitAdjustedLoss(counts, tau=args.tau)
    train_one_stage(la_model, train, args, seed, d, lambda epoch: la)
    rows["LA"] = score(logits_of(la_model).argmax(1))

    torch.manual_seed(seed)
    ldam_model = DigitsCNN(NUM_CLASSES, width=args.width)
    ldam_model.fc = CosineLinear(ldam_model.fc.in_features, NUM_CLASSES)
    ldam = ltl.LDAMLoss(counts, max_margin=args.ldam_max_margin, scale=args.ldam_scale)
    drw_start = int(args.drw_start * args.epochs)

    def ldam_at(epoch: int) -> nn.Module:
        ldam.weight = ltl.drw_weights(counts, epoch, drw_start, beta=C.PAPER["beta"])
        return ldam

    train_one_stage(ldam_model, train, args, seed, d, ldam_at)
    rows["LDAM-DRW"] = score(logits_of(ldam_model).argmax(1))

    # Post-hoc corrections of the naive model.
    rows["naive+posthoc-LA"] = score(ltl.posthoc_adjust(naive_logits, counts, tau=args.tau).argmax(1))
    naive_feats, _ = twostage.extract_features(naive, (test.normalize(test.images), test.labels))
    with torch.no_grad():
        rows["naive+tau-norm"] = score(twostage.tau_normalize(naive.fc, args.tau)(naive_feats).argmax(1))

    # Decoupled classifiers on the frozen stage-1 backbone, on the whole training set's features.
    all_feats, all_labels = twostage.extract_features(stage1, (train.normalize(train.images), train.labels))
    torch.manual_seed(seed + C.STAGE2_SEED_OFFSET)
    ib = nn.Linear(all_feats.shape[1], NUM_CLASSES)
    twostage.train_classifier(
        ib, all_feats, all_labels, nn.CrossEntropyLoss(), epochs=args.stage2_epochs, batch_size=args.batch_size,
        lr=args.lr, momentum=args.momentum, seed=seed + C.STAGE2_SEED_OFFSET,
    )  # fmt: skip
    balanced = ltd.ClassAwareSampler(all_labels, power=0.0, seed=seed + C.STAGE2_SEED_OFFSET)
    torch.manual_seed(seed + C.STAGE2_SEED_OFFSET)
    crt = nn.Linear(all_feats.shape[1], NUM_CLASSES)
    train_on_draws(crt, all_feats, all_labels, balanced, args)
    lws = twostage.LearnableWeightScaling(copy.deepcopy(ib))
    train_on_draws(lws, all_feats, all_labels, balanced, args)
    ncm = twostage.nearest_class_mean(all_feats, all_labels, NUM_CLASSES)
    with torch.no_grad():
        rows["s1+IB"] = score(ib(test_feats).argmax(1))
        rows["s1+cRT"] = score(crt(test_feats).argmax(1))
        rows["s1+tau-norm"] = score(twostage.tau_normalize(ib, args.tau)(test_feats).argmax(1))
        rows["s1+LWS"] = score(lws(test_feats).argmax(1))
        rows["s1+NCM"] = score(ncm(test_feats).argmax(1))
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    C.seed_everything(0, deterministic=True)
    d = C.Dist()  # one CPU process
    start = time.time()

    def tensors(ds: Any) -> C.TensorData:
        images = torch.as_tensor(ds.data).unsqueeze(1).contiguous()  # uint8 (N, 1, 8, 8)
        return C.TensorData(images, torch.tensor(ds.targets, dtype=torch.int64), offline_demo.MEAN, offline_demo.STD)

    train = tensors(ltd.digits_lt(args.imbalance_factor, train=True))
    test = tensors(ltd.digits_lt(args.imbalance_factor, train=False))
    counts = torch.bincount(train.labels, minlength=NUM_CLASSES)
    print(
        f"Digits-LT, IF={args.imbalance_factor:g}: {len(train)} training images, counts {counts.tolist()}; "
        f"balanced test set of {len(test)}. Paper recipe: {args.epochs} + {args.stage2_epochs} epochs, "
        f"batch {args.batch_size}, lr {args.lr} cosine; tau {args.tau:g}; {args.seeds} seed(s).",
        flush=True,
    )
    per_seed = []
    for seed in range(args.seeds):
        t0 = time.time()
        per_seed.append(run_seed(seed, train, test, args, d))
        print(f"  seed {seed} done in {time.time() - t0:.0f} s", flush=True)

    table: dict[str, dict[str, Any]] = {}
    for name in per_seed[0]:
        table[name] = {}
        for k in metrics.SHOT_KEYS:
            vals = torch.tensor([math.nan if r[name][k] is None else r[name][k] for r in per_seed], dtype=torch.float64)
            table[name][k] = (float(vals.mean()), float(vals.std())) if len(per_seed) > 1 else float(vals.mean())
    print(metrics.format_shot_table(table, header=f"Digits-LT IF={args.imbalance_factor:g}"))
    wall = time.time() - start
    print(f"accuracy in % on the balanced test set, mean ± std over {args.seeds} seed(s); wall time {wall:.0f} s")
    if args.output is not None:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        C.write_json(
            {"config": vars(args), "table": table, "per_seed": per_seed, "wall_time_s": wall}, out / "toolbox.json"
        )
        print(f"results: {out / 'toolbox.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
