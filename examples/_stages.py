"""The two stages of a paper row: stage 1 (or the one-stage naive row), then stage 2 on the frozen backbone.

Stage 2 puts a new classifier on the frozen stage-1 backbone (BatchNorm in eval mode) and trains it on the
data-balanced-review subset with the row's loss (:func:`longtail_losses.paper.criterion`), on features of the
backbone cached once or, with ``--stage2-augment``, on the live frozen backbone. Both stages write a checkpoint
after every epoch, from which ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import _checkpoints as ck
import torch
from _batches import epoch_batches
from _distributed import Dist, barrier, gather_cat, make_grad_scaler
from _loops import STAGE2_SEED_OFFSET, cosine, evaluate, predict, progress, train_epoch
from _report import RunLog, acc_text, epoch_line, format_duration
from torch import Tensor, nn

from longtail_losses import metrics, paper, training, twostage


@dataclass
class Task:
    """What the driver needs from a data set / model pair.

    Attributes:
        name: Shown in results and plots.
        num_classes: C.
        train_labels: ``int64`` labels of the long-tailed training set (CPU).
        build_model: Returns a fresh model with classifier ``model.fc``.
        train_batches: ``(positions, batch_size, seed, epoch, augment) -> (x, y, global_n)`` batches of this rank
            over the training samples at ``positions`` (positions into the long-tailed set).
        feature_data: ``(positions or split name) -> DataLoader-like`` of un-augmented ``(x, y)`` for this
            rank's shard (positions into the training set, or ``"test"`` / ``"val"``).
        eval_batches: ``split -> (x, y)`` batches of this rank's shard of ``"test"`` or ``"val"``.
        splits: The evaluation splits, ``("test",)`` or ``("val", "test")``; with ``"val"`` the best-on-val
            epoch is reported besides the last (the test set never selects anything).
        thresholds: ``(many, few)``: Many is ``n > many``, Few ``n < few`` (paper: 100, 20).
        fingerprint: What identifies the training data (data set, IF, data seed, ...); saved with the stage-1
            weights with the seed and the class counts, and checked by ``--stage1-weights``.
    """

    name: str
    num_classes: int
    train_labels: Tensor
    build_model: Callable[[], nn.Module]
    train_batches: Callable[..., Iterable[tuple[Tensor, Tensor, int]]]
    feature_data: Callable[[Any], Any]
    eval_batches: Callable[[str], Iterable[tuple[Tensor, Tensor]]]
    splits: tuple[str, ...] = ("test",)
    thresholds: tuple[float, float] = (100, 20)
    extra: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One invocation's state, shared by the stages: its inputs, the class counts, the results being written."""

    task: Task
    args: argparse.Namespace
    d: Dist
    out: Path
    log: RunLog
    counts: Tensor
    dtype: Optional[torch.dtype]
    results: dict[str, Any]
    epochs_done_here: int = 0

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def show(self) -> bool:
        return not self.args.no_progress

    def checkpoint(self, payload: dict[str, Any]) -> None:
        """Save ``payload`` with the results so far (rank 0), then stop if ``--stop-after`` says so."""
        payload["results_stages"] = self.results["stages"]
        payload["wall_time_s"] = self.results["wall_time_s"]
        if self.d.is_main:
            ck.save_atomic(payload, self.ckpt_path)
        barrier(self.d)
        self.epochs_done_here += 1
        if self.args.stop_after is not None and self.epochs_done_here >= self.args.stop_after:
            raise ck.StopRun

    def eval_split(self, model: nn.Module, split: str) -> dict[str, Any]:
        preds, targets = predict(model, self.task.eval_batches(split), self.d, dtype=self.dtype)
        return evaluate(preds, targets, self.counts, self.task.thresholds)

    def end_epoch(
        self, name: str, epoch: int, epochs: int, loss: float, lr: float, times: list[float], acc: Optional[str]
    ) -> None:
        """Log the line of epoch ``epoch`` (0-based) of ``epochs``; ``times`` are the epochs' durations so far."""
        eta = sum(times) / len(times) * (epochs - epoch - 1)
        self.log(epoch_line(name, epoch + 1, epochs, loss, lr, times[-1], eta, acc))


def _improves(val_best: dict[str, Any], val: dict[str, Any]) -> bool:
    return not val_best or (val["all"] or 0.0) > val_best["val"]["all"]


def _ddp(module: nn.Module, d: Dist) -> nn.Module:
    if not d.distributed:
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def run_stage1(run: Run, model: nn.Module, idx: Tensor, state: dict[str, Any], stage1_path: Path) -> nn.Module:
    """Train stage 1 (or naive) on the samples at ``idx`` from ``state``'s epoch; evaluate; save; return the model.

    On several CUDA processes the model returned has SyncBatchNorm layers.
    """
    task, args, d, results, out = run.task, run.args, run.d, run.results, run.out
    name = "naive" if args.naive else "stage1"
    t0 = time.time() - state.get("phase_time", 0.0)
    if d.distributed and d.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN statistics of the global batch
    train_model = _ddp(model, d)
    if args.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.stage1_weight_decay)
    steps = len(epoch_batches(idx.numel(), args.batch_size, seed=args.seed, epoch=0, d=d))
    sched = cosine(opt, args.epochs * steps)
    scaler = make_grad_scaler(run.dtype)
    history: list[float] = list(state.get("history", []))
    val_best: dict[str, Any] = state.get("val_best", {})
    if state["epoch"] > 0:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    criterion = nn.CrossEntropyLoss()
    times: list[float] = []
    for epoch in range(state["epoch"], args.epochs):
        te = time.time()
        batches = task.train_batches(idx, args.batch_size, args.seed, epoch, True)
        bar = progress(d, run.show, total=steps, desc=f"{name} {epoch + 1}/{args.epochs}")
        loss = train_epoch(train_model, batches, criterion, opt, sched, d, dtype=run.dtype, scaler=scaler, bar=bar)
        history.append(loss)
        acc = None
        if "val" in task.splits:
            val = run.eval_split(model, "val")
            acc = acc_text("val", val)
            if _improves(val_best, val):
                val_best = {"epoch": epoch + 1, "val": {k: val[k] for k in metrics.SHOT_KEYS}}
                if d.is_main:
                    ck.save_atomic(ck.state_of(model), out / f"best_{name}_model.pt")
        times.append(time.time() - te)
        run.end_epoch(name, epoch, args.epochs, loss, opt.param_groups[0]["lr"], times, acc)
        results["wall_time_s"][name] = time.time() - t0
        run.checkpoint(
            {
                "phase": "stage1",
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "history": history,
                "val_best": val_best,
                "phase_time": time.time() - t0,
            }
        )
    if d.is_main:
        ck.save_stage1(model, stage1_path, results["fingerprint"])
    s1: dict[str, Any] = {"label": name, "epochs": args.epochs, "loss_history": history}
    for split in task.splits:
        s1[split] = run.eval_split(model, split)
    if val_best:
        best_model = task.build_model().to(d.device)
        best_model.load_state_dict(ck.load(out / f"best_{name}_model.pt", d))
        s1["best_on_val"] = {**val_best, "test": run.eval_split(best_model, "test")}
        del best_model
    s1["weight_norms"] = metrics.classifier_weight_norms(model.fc).cpu().tolist()
    results["stages"][name] = s1
    results["wall_time_s"][name] = time.time() - t0
    run.log(f"{name} done in {format_duration(time.time() - t0)}: {acc_text('test', s1['test'], full=True)}")
    payload: dict[str, Any] = {"phase": "stage1_done", "epoch": 0}
    if d.is_main:
        payload["results_stages"] = results["stages"]
        payload["wall_time_s"] = results["wall_time_s"]
        ck.save_atomic(payload, run.ckpt_path)
    barrier(d)
    return model


def _stage2_features(run: Run, model: nn.Module, stage2_idx: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Features of the frozen backbone (all ranks' shards, gathered) of the stage-2 subset and the eval splits."""
    tf = time.time()
    feats = {}
    channels_last = bool(run.args.channels_last and run.d.device.type == "cuda")
    for key in ("train", *run.task.splits):
        source = run.task.feature_data(stage2_idx if key == "train" else key)
        f, y = twostage.extract_features(
            model, source, device=run.d.device, autocast_dtype=run.dtype, channels_last=channels_last
        )
        feats[key] = (gather_cat(f, run.d), gather_cat(y, run.d))
    run.results["wall_time_s"]["feature_extraction"] = time.time() - tf
    return feats


def run_stage2(run: Run, model: nn.Module, stage2_idx: Tensor, stage2_counts: Tensor, state: dict[str, Any]) -> None:
    """Train a new classifier on the frozen ``model`` with the row's loss, from ``state``; evaluate; save."""
    task, args, d, results = run.task, run.args, run.d, run.results
    t0 = time.time() - (state.get("phase_time", 0.0) if state["phase"] == "stage2" else 0.0)
    fc = twostage.replace_classifier(model, task.num_classes, classifier_attr="fc")  # frozen backbone, BN in eval mode
    loss_counts = (stage2_counts if args.stage2_counts == "stage2" else run.counts).to(d.device)
    if int((loss_counts == 0).sum()):
        raise ValueError("Expected every class to have stage-2 samples, but some have none")
    stage2_seed = args.seed + STAGE2_SEED_OFFSET
    torch.manual_seed(stage2_seed)
    fc.reset_parameters()  # a seeded initialisation, independent of the stage-1 RNG history
    hyper = {"alpha": args.alpha, "beta": args.beta, "gamma": args.gamma, "weight_decay": args.weight_decay}
    criterion = paper.criterion(args.row, loss_counts, fc, **hyper)
    feats = {} if args.stage2_augment else _stage2_features(run, model, stage2_idx)
    ddp_module = _ddp(model if args.stage2_augment else fc, d)
    opt = torch.optim.SGD(fc.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=0.0)
    training.warn_double_decay(criterion, opt)  # BWLM's penalty is the classifier's only weight decay
    n2 = stage2_idx.numel()
    steps = len(epoch_batches(n2, args.batch_size, seed=stage2_seed, epoch=0, d=d))
    sched = cosine(opt, args.stage2_epochs * steps)
    scaler = make_grad_scaler(run.dtype) if args.stage2_augment else None
    history: list[float] = []
    val_best: dict[str, Any] = {}
    start_epoch = 0
    if state["phase"] == "stage2":
        fc.load_state_dict(state["classifier"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, val_best, start_epoch = list(state["history"]), state["val_best"], state["epoch"]

    def cached_batches(epoch: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        f, y = feats["train"]
        for pos, global_n in epoch_batches(n2, args.batch_size, seed=stage2_seed, epoch=epoch, d=d):
            idx = pos.to(f.device)
            yield f[idx], y[idx], global_n

    def eval_stage2(split: str) -> dict[str, Any]:
        if args.stage2_augment:
            return run.eval_split(model, split)
        f, y = feats[split]
        with torch.no_grad():
            preds = fc(f).float().argmax(1).cpu()
        return evaluate(preds, y.cpu(), run.counts, task.thresholds)

    times: list[float] = []
    for epoch in range(start_epoch, args.stage2_epochs):
        te = time.time()
        if args.stage2_augment:
            batches: Iterable[tuple[Tensor, Tensor, int]] = task.train_batches(
                stage2_idx, args.batch_size, stage2_seed, epoch, True
            )
        else:
            batches = cached_batches(epoch)
        bar = progress(d, run.show, total=steps, desc=f"stage2 {epoch + 1}/{args.stage2_epochs}")
        # The cached path trains a linear layer on float32 features: no autocast needed.
        step_dtype = run.dtype if args.stage2_augment else None
        loss = train_epoch(ddp_module, batches, criterion, opt, sched, d, dtype=step_dtype, scaler=scaler, bar=bar)
        history.append(loss)
        acc = None
        if "val" in task.splits:
            val = eval_stage2("val")
            acc = acc_text("val", val)
            if _improves(val_best, val):
                val_best = {
                    "epoch": epoch + 1,
                    "val": {k: val[k] for k in metrics.SHOT_KEYS},
                    "classifier": ck.state_of(fc),
                }
        times.append(time.time() - te)
        run.end_epoch("stage2", epoch, args.stage2_epochs, loss, opt.param_groups[0]["lr"], times, acc)
        results["wall_time_s"]["stage2"] = time.time() - t0
        run.checkpoint(
            {
                "phase": "stage2",
                "epoch": epoch + 1,
                "classifier": fc.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "history": history,
                "val_best": val_best,
                "phase_time": time.time() - t0,
            }
        )
    s2: dict[str, Any] = {
        "label": f"+{args.row}",
        "loss": args.loss,
        "weight_decay": args.weight_decay,
        "epochs": args.stage2_epochs,
        "cached_features": not args.stage2_augment,
        "loss_history": history,
    }
    for split in task.splits:
        s2[split] = eval_stage2(split)
    if val_best:
        last = ck.state_of(fc)
        fc.load_state_dict(val_best["classifier"])
        s2["best_on_val"] = {"epoch": val_best["epoch"], "val": val_best["val"], "test": eval_stage2("test")}
        fc.load_state_dict(last)
    s2["weight_norms"] = metrics.classifier_weight_norms(fc).cpu().tolist()
    results["stages"]["stage2"] = s2
    results["wall_time_s"]["stage2"] = time.time() - t0
    run.log(
        f"stage2 (+{args.row}) done in {format_duration(time.time() - t0)}: {acc_text('test', s2['test'], full=True)}"
    )
    if d.is_main:
        ck.save_atomic(model.state_dict(), run.out / "final_model.pt")
