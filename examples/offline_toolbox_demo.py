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
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))  # longtail_losses from a clone, if not installed

import _digits
import _distributed
import _loops
import _report
import offline_demo
import torch
import torch.nn.functional as F
from _batches import TensorData
from _loops import STAGE2_SEED_OFFSET
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses import data as ltd
from longtail_losses import training, twostage

NUM_CLASSES = _digits.NUM_CLASSES


def build_parser() -> argparse.ArgumentParser:
    parser = offline_demo.build_parser()
    parser.prog = "offline_toolbox_demo.py"
    parser.description = __doc__
    parser.set_defaults(seeds=1, jobs=1)  # four backbones per seed: one seed keeps the default run under ~2 minutes
    return parser


def train_on_draws(
    module: nn.Module, features: Tensor, labels: Tensor, sampler: ltd.ClassAwareSampler, args: argparse.Namespace
) -> None:
    """Cross-entropy on cached features, batches cut from the sampler's draws; SGD, cosine lr, stage-2 epochs."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum)
    steps = math.ceil(len(sampler) / args.batch_size)
    sched = _loops.cosine(opt, args.stage2_epochs * steps)
    for epoch in range(args.stage2_epochs):
        sampler.set_epoch(epoch)
        draws = torch.tensor(list(sampler), dtype=torch.int64).split(args.batch_size)
        batches = [(features[index], labels[index]) for index in draws]
        training.train_one_epoch(module, batches, F.cross_entropy, opt, scheduler=sched)


def run_seed(seed: int, train: TensorData, test: TensorData, args: argparse.Namespace, d: _distributed.Dist) -> dict:
    counts = torch.bincount(train.labels, minlength=NUM_CLASSES)

    def score(preds: Tensor) -> dict[str, Any]:
        return _loops.evaluate(preds, test.labels, counts, _digits.thresholds(counts))

    def logits_of(model: nn.Module) -> Tensor:
        return training.predict(model, test.eval_batches(d))[0]

    # The paper's rows, exactly as offline_demo.py runs them.
    rows, models = _digits.paper_rows(seed, train, test, args, d, weight_norms=False)
    naive, stage1, test_feats = models.naive, models.stage1, models.test_features

    # One stage on the whole long-tailed set (as offline_demo.py): logit-adjusted loss; LDAM with deferred re-weighting.
    rows["LA"] = score(logits_of(_digits.train_one_stage("LogitAdjusted", seed, train, args, d)).argmax(1))
    rows["LDAM-DRW"] = score(logits_of(_digits.train_one_stage("LDAM-DRW", seed, train, args, d)).argmax(1))

    # Post-hoc corrections of the naive model.
    rows["naive+posthoc-LA"] = score(ltl.posthoc_adjust(logits_of(naive), counts, tau=args.tau).argmax(1))
    naive_feats, _ = twostage.extract_features(naive, (test.normalize(test.images), test.labels))
    with torch.no_grad():
        rows["naive+tau-norm"] = score(twostage.tau_normalize(naive.fc, args.tau)(naive_feats).argmax(1))

    # Decoupled classifiers on the frozen stage-1 backbone, on the whole training set's features.
    all_feats, all_labels = twostage.extract_features(stage1, (train.normalize(train.images), train.labels))
    torch.manual_seed(seed + STAGE2_SEED_OFFSET)
    ib = nn.Linear(all_feats.shape[1], NUM_CLASSES)
    twostage.train_classifier(
        ib, all_feats, all_labels, nn.CrossEntropyLoss(), epochs=args.stage2_epochs, batch_size=args.batch_size,
        lr=args.lr, momentum=args.momentum, seed=seed + STAGE2_SEED_OFFSET,
    )  # fmt: skip
    balanced = ltd.ClassAwareSampler(all_labels, power=0.0, seed=seed + STAGE2_SEED_OFFSET)
    torch.manual_seed(seed + STAGE2_SEED_OFFSET)
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

    def intro(train: TensorData, test: TensorData, counts: Tensor) -> str:
        return (
            f"Digits-LT, IF={args.imbalance_factor:g}: {len(train)} training images, counts {counts.tolist()}; "
            f"balanced test set of {len(test)}. Paper recipe: {args.epochs} + {args.stage2_epochs} epochs, "
            f"batch {args.batch_size}, lr {args.lr} cosine; tau {args.tau:g}; {args.seeds} seed(s)."
        )

    study = _digits.run_study(args, intro, run_seed)
    per_seed, table, wall = study.per_seed, study.table, study.wall_time_s
    if args.output is not None:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        _report.write_json(
            {"config": vars(args), "table": table, "per_seed": per_seed, "wall_time_s": wall}, out / "toolbox.json"
        )
        print(f"results: {out / 'toolbox.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
