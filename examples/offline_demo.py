"""The whole BWLM method on a CPU in about a minute, offline: scikit-learn's bundled digits, made long-tailed.

Runs every row of the paper's ablation (Table 2) with the paper's recipe (batch 64, SGD momentum 0.9, cosine lr
0.01 -> 0, 320 epochs per stage, alpha = 0.1, lambda = 5e-3) on Digits-LT, and prints the Many/Medium/Few/All
table, mean +- std over seeds:

* naive: one stage, cross-entropy on the whole long-tailed training set;
* stage 1 (shared by the other rows): cross-entropy on the head half of the classes;
* +CE, +CB, +BS, +BFS, +CEW, +CBW, +BSW, +BWLM: the frozen stage-1 backbone, a new classifier over all classes,
  trained on the data-balanced-review subset with that loss (W: plus the classifier-norm penalty lambda = 5e-3).

Digits-LT (:func:`longtail_losses.data.digits_lt`): 10 classes, 124 training images for the head class down to
124 / IF for the tail; a balanced test set of 50 images per class. The paper's Many/Medium/Few thresholds
(100 / 20 training images, for a head class of 500 on CIFAR) are scaled to the head class of 124: Many is
n > 124/5, Few is n < 124/25. The network is a small CNN for 8x8 images (:class:`longtail_losses.models.DigitsCNN`)
instead of ResNet-32; the augmentation a 1-pixel zero-padded random crop (digits are not flipped).

Run:  python examples/offline_demo.py            (needs `pip install -e ".[examples]"`; no network, no GPU)
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C
import torch

from longtail_losses import data as ltd
from longtail_losses import metrics, twostage
from longtail_losses.models import DigitsCNN

STAGE2_ROWS = ("CE", "CB", "BS", "BFS", "CEW", "CBW", "BSW", "BWLM")
MEAN, STD = (0.5,), (0.5,)


def build_parser() -> argparse.ArgumentParser:
    p = C.PAPER
    parser = argparse.ArgumentParser(
        prog="offline_demo.py", description=C.plain(__doc__), formatter_class=C.HelpFormatter
    )
    parser.add_argument("--imbalance-factor", type=float, default=50, help="head / tail training images")
    parser.add_argument("--seeds", type=int, default=2, help="independent runs (seeds 0..N-1); the table shows mean")
    parser.add_argument("--epochs", type=int, default=320, help="stage-1 and naive epochs (paper: 320)")
    parser.add_argument("--stage2-epochs", type=int, default=320, help="stage-2 epochs (paper: 320)")
    parser.add_argument("--batch-size", type=int, default=p["batch_size"], help="batch size (paper: 64)")
    parser.add_argument("--lr", type=float, default=p["lr"], help="initial lr, cosine to 0 (paper: 0.01)")
    parser.add_argument("--momentum", type=float, default=p["momentum"], help="SGD momentum (paper: 0.9)")
    parser.add_argument("--alpha", type=float, default=p["alpha"], help="BFS/BWLM alpha (paper: 0.1)")
    parser.add_argument("--weight-decay", type=float, default=p["weight_decay"], help="W rows' lambda (paper: 5e-3)")
    parser.add_argument(
        "--stage1-weight-decay", type=float, default=p["stage1_weight_decay"], help="stage-1 SGD weight decay"
    )
    parser.add_argument("--width", type=int, default=16, help="channels of the CNN's first convolution")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a tiny CNN runs fastest on one)")
    parser.add_argument("--output", type=Path, default=None, help="also write results.json and the plots here")
    return parser


def train_backbone(
    model: torch.nn.Module, train: C.TensorData, epochs: int, args: argparse.Namespace, seed: int, d: C.Dist
) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.stage1_weight_decay)
    steps = len(C.epoch_batches(len(train), args.batch_size, seed=seed, epoch=0, d=d))
    sched = C.cosine(opt, epochs * steps)
    crop = C.CropFlip(len(train), padding=1, flip=False, seed=seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    history = []
    for epoch in range(epochs):
        batches = train.train_batches(args.batch_size, seed=seed, epoch=epoch, d=d, augment=crop)
        history.append(C.train_epoch(model, batches, loss_fn, opt, sched, d))
    return history


def run_seed(seed: int, train: C.TensorData, test: C.TensorData, args: argparse.Namespace, d: C.Dist) -> dict:
    counts = torch.bincount(train.labels, minlength=10)
    thresholds = (float(counts.max()) / 5, float(counts.max()) / 25)
    rows: dict[str, Any] = {}

    def score(preds: torch.Tensor) -> dict[str, Any]:
        return C.evaluate(preds, test.labels, counts, thresholds)

    torch.manual_seed(seed)
    naive = DigitsCNN(10, width=args.width)
    train_backbone(naive, train, args.epochs, args, seed, d)
    rows["naive"] = score(C.predict(naive, test.eval_batches(d), d)[0])
    rows["naive"]["weight_norms"] = metrics.classifier_weight_norms(naive.fc).tolist()

    stage1_idx, stage2_idx = twostage.data_balanced_review(train.labels, seed=seed)
    torch.manual_seed(seed)
    stage1 = DigitsCNN(10, width=args.width)
    train_backbone(stage1, train.subset(stage1_idx), args.epochs, args, seed, d)
    rows["stage1"] = score(C.predict(stage1, test.eval_batches(d), d)[0])
    rows["stage1"]["weight_norms"] = metrics.classifier_weight_norms(stage1.fc).tolist()

    sub = train.subset(stage2_idx)
    stage2_counts = torch.bincount(sub.labels, minlength=10)
    feats, labels = twostage.extract_features(stage1, (sub.normalize(sub.images), sub.labels))
    test_feats, _ = twostage.extract_features(stage1, (test.normalize(test.images), test.labels))
    for row in STAGE2_ROWS:
        _, loss, wd = C.ROWS[row]
        model = copy.deepcopy(stage1)
        torch.manual_seed(seed + C.STAGE2_SEED_OFFSET)
        fc = twostage.replace_classifier(model, 10)
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
        rows[f"+{row}"]["weight_norms"] = metrics.classifier_weight_norms(fc).tolist()
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    C.seed_everything(0, deterministic=True)
    d = C.Dist()  # one CPU process
    start = time.time()

    def tensors(ds: Any) -> C.TensorData:
        images = torch.as_tensor(ds.data).unsqueeze(1).contiguous()  # uint8 (N, 1, 8, 8)
        return C.TensorData(images, torch.tensor(ds.targets, dtype=torch.int64), MEAN, STD)

    train = tensors(ltd.digits_lt(args.imbalance_factor, train=True))
    test = tensors(ltd.digits_lt(args.imbalance_factor, train=False))
    counts = torch.bincount(train.labels, minlength=10)
    many_t, few_t = float(counts.max()) / 5, float(counts.max()) / 25
    groups = metrics.shot_groups(counts, many_threshold=many_t, few_threshold=few_t)
    print(
        f"Digits-LT, IF={args.imbalance_factor:g}: {len(train)} training images, counts {counts.tolist()}; "
        f"balanced test set of {len(test)}.\n"
        f"Thresholds scaled from the paper's (100 / 20 of a head class of 500) to this head class of "
        f"{int(counts.max())}: Many n > {many_t:g} ({len(groups['many'])} classes), Medium "
        f"({len(groups['medium'])}), Few n < {few_t:g} ({len(groups['few'])}).\n"
        f"Paper recipe: batch {args.batch_size}, SGD momentum {args.momentum}, cosine lr {args.lr} -> 0, "
        f"{args.epochs} + {args.stage2_epochs} epochs, alpha {args.alpha}, lambda {args.weight_decay:g}; "
        f"{args.seeds} seed(s).",
        flush=True,
    )
    per_seed = []
    for seed in range(args.seeds):
        t0 = time.time()
        per_seed.append(run_seed(seed, train, test, args, d))
        print(f"  seed {seed} done in {time.time() - t0:.0f} s", flush=True)

    names = list(per_seed[0])
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        table[name] = {}
        for k in metrics.SHOT_KEYS:
            vals = torch.tensor([math.nan if r[name][k] is None else r[name][k] for r in per_seed], dtype=torch.float64)
            std = float(vals.std()) if len(per_seed) > 1 else 0.0
            table[name][k] = (float(vals.mean()), std) if len(per_seed) > 1 else float(vals.mean())
    print(metrics.format_shot_table(table, header=f"Digits-LT IF={args.imbalance_factor:g}"))
    wall = time.time() - start
    print(f"accuracy in % on the balanced test set, mean ± std over {args.seeds} seed(s); wall time {wall:.0f} s")
    if args.output is not None:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        results = {
            "config": vars(args),
            "data": {
                "name": f"Digits-LT IF={args.imbalance_factor:g}",
                "train_counts": counts.tolist(),
                "thresholds": {"many": f"n > {many_t:g}", "few": f"n < {few_t:g}"},
            },
            "table": table,
            "stages": {
                n: {"label": n, "test": per_seed[0][n], "weight_norms": per_seed[0][n]["weight_norms"]}
                for n in ("naive", "+CE", "+BWLM")
            },
            "per_seed": per_seed,
            "wall_time_s": wall,
        }
        C.write_json(results, out / "results.json")
        C.plot_outputs(C._clean(results), out)
        print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
