"""A balanced loss against cross-entropy in the same one-stage loop, then the paper's two-stage method: offline, CPU.

Data: scikit-learn's bundled digits made long-tailed (Digits-LT, IF = 50). Network, loop and recipe are the
paper's (batch 64, SGD momentum 0.9, cosine lr 0.01 -> 0, weight decay 5e-3, 320 epochs per stage) with a small
CNN for 8x8 images. Two tables, Many/Medium/Few/All accuracy, mean +- std over seeds:

1. One stage, the whole long-tailed training set, the same loop; only the loss changes:
   * CE: cross-entropy (the paper's naive row);
   * BalancedSoftmax, LogitAdjusted (tau = 1), BFS (alpha = 0.1): the library's losses in place of CE
     (LogitAdjusted with tau = 1 is the balanced softmax up to a constant shift of the logits: the same numbers);
   * BWLM: BFS plus the classifier-norm penalty (lambda = 5e-3), which replaces the optimizer's weight decay on
     the classifier (so with equal lambdas it gives BFS's update: the row shows the identity);
   * LDAM-DRW: LDAM on a cosine classifier, deferred re-weighting over the last 20 % of the epochs.
2. The paper's two-stage rows (Table 2): naive (= CE above); stage 1: cross-entropy on the head half of the classes;
   +CE, +CB, +BS, +BFS, +CEW, +CBW, +BSW, +BWLM: the frozen stage-1 backbone, a new classifier over all classes,
   trained on the data-balanced-review subset with that loss (W: plus the classifier-norm penalty lambda = 5e-3).

Digits-LT (:func:`longtail_losses.data.digits_lt`): 10 classes, 124 training images for the head class down to
124 / IF for the tail; a balanced test set of 50 images per class. The paper's Many/Medium/Few thresholds
(100 / 20 training images, for a head class of 500 on CIFAR) are scaled to the head class of 124: Many is
n > 124/5, Few is n < 124/25. The network is a small CNN for 8x8 images (:class:`longtail_losses.models.DigitsCNN`)
instead of ResNet-32; the augmentation a 1-pixel zero-padded random crop (digits are not flipped). The seeds run
in parallel worker processes (``--jobs``), each on one thread; the scores do not depend on ``--jobs``.

Run:  python examples/offline_demo.py            (needs `pip install -e ".[examples]"`; no network, no GPU)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

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
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes, one seed at a time each"
    )
    parser.add_argument("--epochs", type=int, default=p.epochs, help="stage-1 and one-stage epochs (paper: 320)")
    parser.add_argument("--stage2-epochs", type=int, default=p.epochs, help="stage-2 epochs (paper: 320)")
    parser.add_argument("--batch-size", type=int, default=p.batch_size, help="batch size (paper: 64)")
    parser.add_argument("--lr", type=float, default=p.lr, help="initial lr, cosine to 0 (paper: 0.01)")
    parser.add_argument("--momentum", type=float, default=p.momentum, help="SGD momentum (paper: 0.9)")
    parser.add_argument("--alpha", type=float, default=p.alpha, help="BFS/BWLM alpha (paper: 0.1)")
    parser.add_argument("--weight-decay", type=float, default=p.weight_decay, help="W rows' lambda (paper: 5e-3)")
    parser.add_argument(
        "--stage1-weight-decay", type=float, default=p.stage1_weight_decay, help="SGD weight decay of the backbones"
    )
    parser.add_argument("--tau", type=float, default=1.0, help="tau of the logit-adjusted loss")
    parser.add_argument("--ldam-scale", type=float, default=30.0, help="LDAM scale s (cosine classifier)")
    parser.add_argument("--ldam-max-margin", type=float, default=0.5, help="LDAM margin of the rarest class")
    parser.add_argument("--drw-start", type=float, default=0.8, help="DRW starts after this fraction of the epochs")
    parser.add_argument("--width", type=int, default=16, help="channels of the CNN's first convolution")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (one is fastest here)")
    parser.add_argument("--output", type=Path, default=None, help="also write results.json and the plots here")
    return parser


def intro(args: argparse.Namespace, train: TensorData, test: TensorData, counts: torch.Tensor) -> str:
    many_t, few_t = _digits.thresholds(counts)
    groups = metrics.shot_groups(counts, many_threshold=many_t, few_threshold=few_t)
    jobs = max(1, min(args.jobs, args.seeds))
    return (
        f"Digits-LT, IF={args.imbalance_factor:g}: {len(train)} training images, counts {counts.tolist()}; "
        f"balanced test set of {len(test)}.\n"
        f"Thresholds scaled from the paper's (100 / 20 of a head class of 500) to this head class of "
        f"{int(counts.max())}: Many n > {many_t:g} ({len(groups['many'])} classes), Medium "
        f"({len(groups['medium'])}), Few n < {few_t:g} ({len(groups['few'])}).\n"
        f"Paper recipe: batch {args.batch_size}, SGD momentum {args.momentum}, cosine lr {args.lr} -> 0, "
        f"{args.epochs} + {args.stage2_epochs} epochs, alpha {args.alpha}, lambda {args.weight_decay:g}; "
        f"{args.seeds} seed(s) on {jobs} process(es)."
    )


def _all(table: dict[str, dict[str, Any]], name: str) -> float:
    value = table[name]["all"]
    return 100 * (value[0] if isinstance(value, tuple) else value)


def verdict(table: dict[str, dict[str, Any]]) -> str:
    """One line: how the balanced losses fare against CE in one stage, and the best two-stage row against CE."""
    ce = _all(table, "CE")
    balanced = [n for n in _digits.ONE_STAGE_ROWS if n != "CE"]
    gain = {n: _all(table, n) - ce for n in balanced}
    wins = sum(g > 0 for g in gain.values())
    top = max(balanced, key=gain.__getitem__)  # the first of the rows on a tie
    best = max(paper.STAGE2_ROWS, key=lambda n: _all(table, n))
    gap = _all(table, best) - ce
    return (
        f"What the numbers say: in the same one-stage loop, {wins} of {len(balanced)} balanced losses beat "
        f"cross-entropy on All accuracy ({min(gain.values()):+.1f} to {gain[top]:+.1f} points; {top} "
        f"{ce + gain[top]:.1f} % vs CE {ce:.1f} %); the paper's best two-stage row ({best}, "
        f"{_all(table, best):.1f} %) is {abs(gap):.1f} points {'below' if gap < 0 else 'above'} one-stage CE."
    )


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.time()
    train, test = _digits.load(args.imbalance_factor)
    counts = torch.bincount(train.labels, minlength=_digits.NUM_CLASSES)
    print(intro(args, train, test, counts), flush=True)
    per_seed = _digits.run_seeds(args, train, test, _digits.demo_rows)
    table = _digits.mean_table(per_seed)
    name = f"Digits-LT IF={args.imbalance_factor:g}"
    one_stage = {n: table[n] for n in _digits.ONE_STAGE_ROWS}
    two_stage = {n: table[n] for n in ("naive", "stage1", *paper.STAGE2_ROWS)}
    print("\nOne stage: the same loop on the whole long-tailed set, each loss in place of cross-entropy")
    print(metrics.format_shot_table(one_stage, header=f"{name}, one stage"))
    print("\nThe paper's two stages: a new classifier on the frozen stage-1 backbone (naive = CE above)")
    print(metrics.format_shot_table(two_stage, header=f"{name}, two stages"))
    wall = time.time() - start
    print(f"accuracy in % on the balanced test set, mean ± std over {args.seeds} seed(s); wall time {wall:.0f} s")
    print(verdict(table))
    many_t, few_t = _digits.thresholds(counts)
    if args.output is not None:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        results = {
            "config": vars(args),
            "data": {
                "name": name,
                "train_counts": counts.tolist(),
                "thresholds": {"many": f"n > {many_t:g}", "few": f"n < {few_t:g}"},
            },
            "one_stage": one_stage,
            "table": two_stage,
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
