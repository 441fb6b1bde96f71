"""The two-stage driver of the reproduction scripts: one paper row end to end, resumable, with its outputs.

:func:`run_main` is the body of every script's ``main``: it resolves ``--row``, sets up the (torchrun) processes,
checks the inputs and calls :func:`run_two_stage`, which runs stage 1 (or the one-stage "naive" row), the data
balanced review and stage 2 (:mod:`_stages`), then writes ``results.json``, the two figures (per-class accuracy,
paper Fig. 7; classifier weight norms, Fig. 5a) and ``train.log``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import _checkpoints as ck
import _cli
import _plots
import torch
from _distributed import Dist, amp_dtype, barrier, cleanup_distributed, init_distributed, seed_everything
from _report import RunLog, clean, format_duration, nan_rows, write_json, written_files
from _stages import Run, Task, run_stage1, run_stage2
from torch import Tensor

import longtail_losses as ltl
from longtail_losses import metrics, twostage


def _banner(run: Run, stage1_size: int, stage2_size: int) -> str:
    """The start of ``train.log``: what runs where, on which data, with which recipe."""
    task, args, d, counts = run.task, run.args, run.d, run.counts
    groups = metrics.shot_groups(counts, many_threshold=task.thresholds[0], few_threshold=task.thresholds[1])
    dtype_name = str(run.dtype).replace("torch.", "") if run.dtype is not None else "float32"
    eval_sizes = task.extra.get("eval_sizes") or {"test": task.extra.get("test_size", "?")}
    return (
        f"=== {Path(sys.argv[0]).name}: {task.name}, row {args.row} (stage-2 loss {args.loss}, lambda "
        f"{args.weight_decay:g}), seed {args.seed}\n"
        f"device {d.device} ({dtype_name}), {d.world_size} process(es); torch {torch.__version__}\n"
        f"data: {task.train_labels.numel()} training images in {task.num_classes} classes (largest "
        f"{int(counts.max())}, smallest {int(counts.min())}); stage 1: {stage1_size}; stage 2: {stage2_size}; "
        + ", ".join(f"{k}: {v}" for k, v in eval_sizes.items())
        + f"\ngroups: many {len(groups['many'])} (n > {task.thresholds[0]:g}), medium {len(groups['medium'])}, "
        f"few {len(groups['few'])} (n < {task.thresholds[1]:g}) classes"
        + ("; an empty group's accuracy shows as –" if any(len(g) == 0 for g in groups.values()) else "")
        + "\n"
        f"recipe: {'naive, ' if args.naive else ''}{args.epochs} stage-1 epochs"
        + ("" if args.naive else f" + {args.stage2_epochs} stage-2 epochs")
        + f", batch {args.batch_size}, lr {args.lr:g} cosine to 0, momentum {args.momentum:g}, stage-1 weight decay "
        f"{args.stage1_weight_decay:g}"
        + (f"; stage 1 from {args.stage1_weights}" if args.stage1_weights is not None else "")
        + f"\noutput: {run.out} (this log: {run.out / 'train.log'}; full config in results.json)"
    )


def _results_header(
    run: Run, stage1_idx: Tensor, stage2_idx: Tensor, stage2_counts: Optional[Tensor], fingerprint: dict[str, Any]
) -> dict[str, Any]:
    """``results.json`` before any stage: the config, the environment, the data and the fingerprint."""
    task, d, counts, dtype = run.task, run.d, run.counts, run.dtype
    groups = metrics.shot_groups(counts, many_threshold=task.thresholds[0], few_threshold=task.thresholds[1])
    device_name = f" ({torch.cuda.get_device_name(d.device)})" if d.device.type == "cuda" else ""
    return {
        "config": {k: clean(v) for k, v in vars(run.args).items()},
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(d.device) + device_name,
            "world_size": d.world_size,
            "autocast": str(dtype) if dtype is not None else "off (float32)",
            "channels_last": bool(run.args.channels_last and d.device.type == "cuda"),
        },
        "data": {
            "name": task.name,
            "num_classes": task.num_classes,
            "train_counts": counts.tolist(),
            "num_train": int(task.train_labels.numel()),
            "stage1_size": int(stage1_idx.numel()),
            "stage2_size": int(stage2_idx.numel()),
            "stage2_counts": stage2_counts.tolist() if stage2_counts is not None else None,
            "thresholds": {"many": f"n > {task.thresholds[0]:g}", "few": f"n < {task.thresholds[1]:g}"},
            "groups": {k: len(v) for k, v in groups.items()},
            **task.extra,
        },
        "row": run.args.row,
        "fingerprint": fingerprint,
        "stages": {},
        "wall_time_s": {},
        "model_selection": "last epoch"
        + (" (and, separately, the epoch best on val)" if "val" in task.splits else "; the test set selects nothing"),
    }


def run_two_stage(task: Task, args: argparse.Namespace, d: Dist) -> dict[str, Any]:
    """Run one paper row end to end and return the results dict (also written to ``results.json`` by rank 0)."""
    start_wall = time.time()
    out = Path(args.output)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(d)
    stage1_path = out / "stage1_model.pt"
    seed_everything(args.seed, args.deterministic)
    labels = task.train_labels
    counts = ltl.class_counts(labels, num_classes=task.num_classes)
    run = Run(task, args, d, out, RunLog(out / "train.log", d), counts, amp_dtype(d, args.amp), {})
    if args.naive:
        stage1_idx, stage2_idx = torch.arange(labels.numel()), torch.empty(0, dtype=torch.int64)
    else:
        stage1_idx, stage2_idx = twostage.data_balanced_review(labels, seed=args.seed)
    stage2_counts = ltl.class_counts(labels[stage2_idx], num_classes=task.num_classes) if not args.naive else None
    fingerprint = {**task.fingerprint, "seed": args.seed, "class_counts": counts.tolist()}
    if args.stage1_weights is not None:  # checked before anything trains
        stage1_weights = ck.load_stage1(Path(args.stage1_weights), d, fingerprint)
    run.log(_banner(run, stage1_idx.numel(), stage2_idx.numel()))
    results = run.results = _results_header(run, stage1_idx, stage2_idx, stage2_counts, fingerprint)

    state: dict[str, Any] = {"phase": "stage1", "epoch": 0}
    if args.resume and run.ckpt_path.exists():
        state = ck.load(run.ckpt_path, d)
        results["stages"] = state["results_stages"]
        results["wall_time_s"] = state["wall_time_s"]
        if d.is_main:
            run.log(f"resuming from {run.ckpt_path}: {state['phase']}, {state['epoch']} epochs done")

    stage1_name = "naive" if args.naive else "stage1"
    model = task.build_model().to(d.device)
    if bool(args.channels_last and d.device.type == "cuda"):
        model = model.to(memory_format=torch.channels_last)
    if state["phase"] == "stage1" and args.stage1_weights is not None:
        model.load_state_dict(stage1_weights)
        results["stages"][stage1_name] = {"label": stage1_name, "loaded_from": str(args.stage1_weights)}
        state = {"phase": "stage1_done", "epoch": 0}
    if state["phase"] == "stage1":
        model = run_stage1(run, model, stage1_idx, state, stage1_path)
        state = {"phase": "stage1_done", "epoch": 0}
    else:
        model.load_state_dict(
            stage1_weights if args.stage1_weights is not None else ck.load_stage1(stage1_path, d, fingerprint)
        )
        s1 = results["stages"].setdefault(stage1_name, {"label": stage1_name})
        if "test" not in s1:  # loaded weights: evaluate them once
            for split in task.splits:
                s1[split] = run.eval_split(model, split)
            s1["weight_norms"] = metrics.classifier_weight_norms(model.fc).cpu().tolist()
    if stage2_counts is not None:
        run_stage2(run, model, stage2_idx, stage2_counts, state)
    _finish(run, start_wall)
    return results


def _finish(run: Run, start_wall: float) -> None:
    """The final numbers, ``results.json``, the plots and the closing lines of the log."""
    results, d, out = run.results, run.d, run.out
    final = "naive" if run.args.naive else "stage2"
    results["final_stage"] = final
    results["final"] = {k: results["stages"][final]["test"][k] for k in metrics.SHOT_KEYS}
    results["wall_time_s"]["total_this_invocation"] = time.time() - start_wall
    results["wall_time_s"]["total"] = sum(
        v for k, v in results["wall_time_s"].items() if k in ("naive", "stage1", "stage2", "feature_extraction")
    )
    if d.is_main:
        write_json(results, out / "results.json")
        results["plots"] = _plots.plot_outputs(clean(results), out)
        write_json(results, out / "results.json")
        rows = {f"{s.get('label', n)}": s["test"] for n, s in results["stages"].items() if s.get("test")}
        run.log(metrics.format_shot_table(nan_rows(rows), header=run.task.name))
        run.log(f"finished in {format_duration(time.time() - start_wall)}; written to {out}:")
        run.log("\n".join(f"  {row}" for row in written_files(out)))
    barrier(d)


def run_main(
    args: argparse.Namespace, make_task: Callable[[argparse.Namespace, Dist], Task], default_output: str
) -> int:
    """The body of every example's ``main``: resolve ``--row``, set up (torchrun) processes, run both stages.

    Inputs are checked before anything trains: the output folder is writable, ``--stage1-weights`` exists,
    and ``make_task`` checks the data (and says which flag to change).
    """
    _cli.resolve_row(args)
    if args.output is None:
        args.output = Path("runs") / default_output.format(row=args.row, seed=args.seed)
    out = Path(args.output)
    d = init_distributed(args.device)

    def run() -> None:
        ck.check_output_folder(out, d)
        if args.stage1_weights is not None and not Path(args.stage1_weights).is_file():
            raise ck.InputError(
                f"Expected --stage1-weights {args.stage1_weights} to be the stage1_model.pt of an earlier run, "
                "but there is no such file"
            )
        run_two_stage(make_task(args, d), args, d)

    try:
        return _cli.main_wrapper(run, out)
    finally:
        cleanup_distributed(d)
