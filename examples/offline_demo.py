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
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))  # longtail_losses from a clone, if not installed

import _cli
import _digits
import _plots
import _report
import torch
from _batches import TensorData

from longtail_losses import metrics, paper


def build_parser() -> argparse.ArgumentParser:
    p = paper.RECIPE
    parser = argparse.ArgumentParser(
        prog="offline_demo.py", description=_cli.plain(__doc__), formatter_class=_cli.HelpFormatter
    )
    parser.add_argument("--imbalance-factor", type=float, default=50, help="head / tail training images")
    parser.add_argument("--seeds", type=int, default=2, help="independent runs (seeds 0..N-1); the table shows mean")
    parser.add_argument("--epochs", type=int, default=p.epochs, help="stage-1 and naive epochs (paper: 320)")
    parser.add_argument("--stage2-epochs", type=int, default=p.epochs, help="stage-2 epochs (paper: 320)")
    parser.add_argument("--batch-size", type=int, default=p.batch_size, help="batch size (paper: 64)")
    parser.add_argument("--lr", type=float, default=p.lr, help="initial lr, cosine to 0 (paper: 0.01)")
    parser.add_argument("--momentum", type=float, default=p.momentum, help="SGD momentum (paper: 0.9)")
    parser.add_argument("--alpha", type=float, default=p.alpha, help="BFS/BWLM alpha (paper: 0.1)")
    parser.add_argument("--weight-decay", type=float, default=p.weight_decay, help="W rows' lambda (paper: 5e-3)")
    parser.add_argument(
        "--stage1-weight-decay", type=float, default=p.stage1_weight_decay, help="stage-1 SGD weight decay"
    )
    parser.add_argument("--width", type=int, default=16, help="channels of the CNN's first convolution")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a tiny CNN runs fastest on one)")
    parser.add_argument("--output", type=Path, default=None, help="also write results.json and the plots here")
    return parser


def intro(args: argparse.Namespace, train: TensorData, test: TensorData, counts: torch.Tensor) -> str:
    many_t, few_t = _digits.thresholds(counts)
    groups = metrics.shot_groups(counts, many_threshold=many_t, few_threshold=few_t)
    return (
        f"Digits-LT, IF={args.imbalance_factor:g}: {len(train)} training images, counts {counts.tolist()}; "
        f"balanced test set of {len(test)}.\n"
        f"Thresholds scaled from the paper's (100 / 20 of a head class of 500) to this head class of "
        f"{int(counts.max())}: Many n > {many_t:g} ({len(groups['many'])} classes), Medium "
        f"({len(groups['medium'])}), Few n < {few_t:g} ({len(groups['few'])}).\n"
        f"Paper recipe: batch {args.batch_size}, SGD momentum {args.momentum}, cosine lr {args.lr} -> 0, "
        f"{args.epochs} + {args.stage2_epochs} epochs, alpha {args.alpha}, lambda {args.weight_decay:g}; "
        f"{args.seeds} seed(s)."
    )


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    study = _digits.run_study(
        args,
        lambda train, test, counts: intro(args, train, test, counts),
        lambda seed, train, test, d: _digits.paper_rows(seed, train, test, args, d, weight_norms=True)[0],
    )
    per_seed, table, wall = study.per_seed, study.table, study.wall_time_s
    many_t, few_t = _digits.thresholds(study.counts)
    if args.output is not None:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        results = {
            "config": vars(args),
            "data": {
                "name": f"Digits-LT IF={args.imbalance_factor:g}",
                "train_counts": study.counts.tolist(),
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
        _report.write_json(results, out / "results.json")
        _plots.plot_outputs(_report.clean(results), out)
        print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
