"""The command line shared by the reproduction scripts: the paper's flags, ``--row``, help text, exit statuses."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from _checkpoints import InputError, StopRun

from longtail_losses import paper


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the description's line breaks; add ``(default: X)`` only where the help does not already say it.

    No default is shown for ``None`` or ``False`` (the help says what happens then), nor where the help gives the
    paper's value and that value is the default (``(paper: 64)`` says it once).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or not action.option_strings:
            return text
        if "default" in text.lower():  # said in the help (BooleanOptionalAction adds its own on Python < 3.12)
            return text
        stated = re.search(r"paper: ([-+0-9.eE]+)\)", text)
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if stated is not None and numeric and float(stated.group(1)) == float(default):
            return text
        return f"{text} (default: {default})"


def plain(doc: Optional[str]) -> str:
    """A module docstring as plain text for ``--help``: no Sphinx roles or double backquotes."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc or "")
    return re.sub(r"``([^`]+)``", r"\1", text)


def add_common_args(parser: argparse.ArgumentParser, *, epochs: int, output: str = "runs/...") -> None:
    """Flags shared by both reproduction scripts; every help text gives the paper's value."""
    p = paper.RECIPE
    g = parser.add_argument_group("paper recipe (section 4.2)")
    g.add_argument(
        "--row",
        choices=[r.short for r in paper.ROWS.values()],
        default=None,
        help="a row of the paper's Tables 2-4; sets --naive, --loss and --weight-decay together "
        "(e.g. --row BWLM = --loss bwlm --weight-decay 5e-3; --row CE = --loss ce --weight-decay 0)",
    )
    g.add_argument(
        "--naive",
        action="store_true",
        help="the paper's 'naive' row: one stage, CE, on the whole long-tailed training set (no stage 2)",
    )
    g.add_argument("--loss", choices=paper.LOSSES, default="bwlm", help="stage-2 loss (paper: BWLM)")
    g.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="stage-2 classifier-norm penalty lambda (the 'W' rows; paper: 5e-3). Applied as "
        "lambda/2*sum_j ||theta_j||^2 in the loss (longtail_losses.BWLM's penalty, and the same "
        "LF.classifier_norm_penalty for ce/cb/bs/bfs). Default: 5e-3 for --loss bwlm, 0 for the others",
    )
    g.add_argument("--alpha", type=float, default=p.alpha, help="BFS/BWLM weight of the CB term (paper: 0.1)")
    g.add_argument(
        "--beta", type=float, default=p.beta, help="CB effective-number beta (paper: not stated; Cui et al.)"
    )
    g.add_argument("--gamma", type=float, default=p.gamma, help="focal gamma (paper: not stated; Cui et al.)")
    g.add_argument("--epochs", type=int, default=epochs, help=f"stage-1 (or naive) epochs (paper: {epochs})")
    g.add_argument(
        "--stage2-epochs",
        type=int,
        default=None,
        help=f"stage-2 epochs (paper: not stated separately; default: --epochs, i.e. {epochs})",
    )
    g.add_argument("--batch-size", type=int, default=p.batch_size, help="global batch size (paper: 64)")
    g.add_argument("--lr", type=float, default=p.lr, help="initial lr, cosine-decayed to 0 per step (paper: 0.01)")
    g.add_argument("--momentum", type=float, default=p.momentum, help="SGD momentum (paper: 0.9)")
    g.add_argument(
        "--stage1-weight-decay",
        type=float,
        default=p.stage1_weight_decay,
        help="SGD weight decay of stage 1 / naive, on all parameters ('we also include weight decay in the first "
        "stage', with the lambda of Alshammari et al. 2022; paper: 5e-3)",
    )
    g.add_argument(
        "--stage2-counts",
        choices=("stage2", "full"),
        default="stage2",
        help="class counts given to the CB/BS/BFS/BWLM losses: those of the stage-2 (data balanced review) set "
        "the classifier is trained on, or of the whole long-tailed set (paper: not stated)",
    )
    g.add_argument(
        "--stage2-augment",
        action="store_true",
        help="augment in stage 2 and run the frozen backbone every step (slow path). Default: no stage-2 "
        "augmentation, features of the frozen backbone cached once (fast path; paper: not stated)",
    )
    r = parser.add_argument_group("run")
    r.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"output folder: results.json, plots, checkpoints, train.log (default: {output})",
    )
    r.add_argument("--seed", type=int, default=0, help="seed of the model, the batches and the review subsample")
    r.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="where to train")
    r.add_argument(
        "--amp",
        choices=("bf16", "fp16", "off"),
        default="bf16",
        help="autocast dtype on CUDA (bf16 falls back to fp16 where unsupported); the CPU always runs float32",
    )
    r.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last memory format on CUDA",
    )
    r.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="deterministic algorithms where torch has them (cudnn.benchmark off)",
    )
    r.add_argument("--compile", action="store_true", help="torch.compile the stage-1 model (CUDA speed-up)")
    r.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint.pt if present")
    r.add_argument(
        "--stage1-weights",
        type=Path,
        default=None,
        help="skip stage 1 and load its model from this file (a stage1_model.pt of an earlier run with the same "
        "data and seed), to run several stage-2 rows on one stage 1",
    )
    r.add_argument(
        "--no-progress",
        action="store_true",
        help="no tqdm progress bar (one is shown only on a terminal; the per-epoch log lines are always written)",
    )
    r.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="testing aid: exit after this many epochs (stage 1 then stage 2) have been checkpointed, as if killed",
    )


def resolve_row(args: argparse.Namespace) -> None:
    """Apply ``--row`` (a row of :data:`longtail_losses.paper.ROWS`) and the flags' defaults in place.

    Without ``--row``, ``args.row`` becomes the paper row of ``--naive``, ``--loss`` and ``--weight-decay``: a
    positive lambda makes it a "W" row (BFS with the penalty is BWLM, BWLM without it BFS).
    """
    if args.row is not None:
        row = paper.row(args.row)
        args.naive, args.loss = not row.two_stage, row.loss
        args.weight_decay = paper.RECIPE.weight_decay if row.penalty else 0.0
    if args.weight_decay is None:
        args.weight_decay = paper.RECIPE.weight_decay if args.loss == "bwlm" else 0.0
    if args.stage2_epochs is None:
        args.stage2_epochs = args.epochs
    if args.row is None:
        if args.naive:
            args.row = "naive"
        else:
            penalty = args.weight_decay > 0
            loss = ("bwlm" if penalty else "bfs") if args.loss in ("bfs", "bwlm") else args.loss
            args.row = next(
                r.short for r in paper.ROWS.values() if r.two_stage and r.loss == loss and r.penalty == penalty
            )


def main_wrapper(run: Callable[[], Any], out: Optional[Path] = None) -> int:
    """Run ``run``; exit statuses: 0 done, 2 an input error (told in the script's flags), 3 ``--stop-after``.

    After a crash the traceback is shown as usual, preceded by a line that says how to continue from the last
    checkpoint with ``--resume``.
    """
    try:
        run()
    except StopRun:
        print("stopped after the requested number of epochs (--stop-after)", file=sys.stderr, flush=True)
        return 3
    except InputError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except BaseException:
        if out is not None and (out / "checkpoint.pt").is_file():
            print(
                f"\nThe run stopped with the error below. The last finished epoch is saved in {out / 'checkpoint.pt'}: "
                "run the same command with --resume to continue from it.\n",
                file=sys.stderr,
                flush=True,
            )
        raise
    return 0
