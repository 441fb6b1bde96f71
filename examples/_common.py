"""Shared training driver of the reference examples (not part of the installed package).

``reproduce_cifar_lt.py``, ``reproduce_imagenet_lt.py`` and ``offline_demo.py`` import this file from their own
folder (they put it on ``sys.path``), so they run from a clone without installing ``examples`` as a package.

What lives here:

* distributed set-up for ``torchrun`` (NCCL on CUDA, gloo on CPU), seeding and deterministic settings;
* batches that are a pure function of ``(seed, epoch)`` and are cut into one shard per rank, so that a run on
  N processes sees the same global batches as a run on one, and a resumed run the same as an uninterrupted one;
* CIFAR-style augmentation as batched tensor ops (4-pixel zero-padded random crop + horizontal flip) on
  device-held ``uint8`` images;
* the two-stage driver (:func:`run_two_stage`): stage 1 (or the one-stage "naive" row), data balanced review,
  frozen backbone with a new classifier, stage 2 on cached features or on the live frozen backbone, with a
  checkpoint after every epoch and ``--resume``;
* ``results.json`` and the two figures (per-class accuracy, paper Fig. 7; classifier weight norms, Fig. 5a).

Loss of an uneven last batch under DDP: DDP averages gradients over ranks, so each rank multiplies its mean
loss by ``local_batch * world_size / global_batch``; the averaged gradient is then exactly the gradient of the
mean loss over the global batch (and of a classifier-norm penalty added once), as on one process.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

try:
    import longtail_losses as ltl
except ImportError:  # running from a clone without `pip install -e .`: use the package next to examples/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import longtail_losses as ltl
from longtail_losses import functional as LF
from longtail_losses import data, metrics, training, twostage

# The recipe of the paper, section 4.2 (and of Alshammari et al. 2022, whose lambda it adopts).
PAPER = {
    "batch_size": 64,
    "lr": 0.01,
    "momentum": 0.9,
    "alpha": 0.1,
    "beta": 0.9999,
    "gamma": 1.0,
    "weight_decay": 5e-3,
    "stage1_weight_decay": 5e-3,
}

LOSSES = ("ce", "cb", "bs", "bfs", "bwlm")
# The paper's rows (Tables 2-4): row name -> (naive, stage-2 loss, classifier weight decay lambda).
ROWS = {
    "naive": (True, "ce", 0.0),
    "CE": (False, "ce", 0.0),
    "CB": (False, "cb", 0.0),
    "BS": (False, "bs", 0.0),
    "BFS": (False, "bfs", 0.0),
    "CEW": (False, "ce", PAPER["weight_decay"]),
    "CBW": (False, "cb", PAPER["weight_decay"]),
    "BSW": (False, "bs", PAPER["weight_decay"]),
    "BWLM": (False, "bwlm", PAPER["weight_decay"]),
}
STAGE2_SEED_OFFSET = 1_000_003  # stage 2 draws its batches from a different stream than stage 1


# --------------------------------------------------------------------------------------------------------------------
# Distributed set-up, seeding, precision
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Dist:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group that ``torchrun`` describes in the environment (or run alone).

    Args:
        device: ``"auto"`` (CUDA if available, else CPU), ``"cuda"`` or ``"cpu"``.
    """
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"Expected `device` to be one of ('auto', 'cuda', 'cpu'), but got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("Expected a CUDA device for `--device cuda`, but torch.cuda.is_available() is False")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, dev)
    return Dist(0, 1, 0, dev)


def cleanup_distributed(d: Dist) -> None:
    """Leave the process group: collect garbage, wait for every rank, then destroy the group.

    A DistributedDataParallel wrapper sits in reference cycles, so it is freed only by the garbage collector, at
    a moment nobody chooses; its reducer keeps the process group alive until then. Left to chance, that moment
    can come after ``destroy_process_group`` or during interpreter shutdown, when Gloo's threads are torn down
    from a finalizer and the process aborts ("terminate called without an active exception", SIGABRT; the DDP
    test once failed so). Collecting first frees every wrapper while the group is still whole.
    """
    if d.distributed and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.distributed:
        dist.barrier()


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed torch (CPU and CUDA) and, if asked, make torch choose deterministic algorithms where it has them."""
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this before its first call to be deterministic; harmless on the CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


def amp_dtype(d: Dist, amp: str) -> Optional[torch.dtype]:
    """The autocast dtype for ``--amp`` (``bf16``, ``fp16``, ``off``); always ``None`` (float32) on the CPU."""
    if d.device.type != "cuda" or amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16


def make_grad_scaler(dtype: Optional[torch.dtype]) -> Any:
    """A GradScaler for float16 autocast, else ``None`` (bfloat16 and float32 need none)."""
    if dtype != torch.float16:
        return None
    try:  # torch >= 2.3
        return torch.amp.GradScaler("cuda")
    except (AttributeError, TypeError):
        return torch.cuda.amp.GradScaler()


def autocast(d: Dist, dtype: Optional[torch.dtype]) -> Any:
    if dtype is None:
        return torch.autocast(device_type=d.device.type, enabled=False)
    return torch.autocast(device_type=d.device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------------------------------
# Batches: a pure function of (seed, epoch), one shard per rank
# --------------------------------------------------------------------------------------------------------------------


def epoch_batches(
    num_samples: int, batch_size: int, *, seed: int, epoch: int, d: Dist, drop_last: bool = False
) -> list[tuple[Tensor, int]]:
    """This rank's part of every global batch of an epoch, as ``(positions, global_batch_size)`` pairs.

    The global batches are those of :class:`longtail_losses.data.SeededBatchSampler` (so one process sees
    exactly the batches of :func:`longtail_losses.twostage.train_classifier`); each is split into
    ``world_size`` nearly equal contiguous shards. A last batch smaller than ``world_size`` is dropped.
    """
    sampler = data.SeededBatchSampler(num_samples, batch_size, seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    order = sampler.permutation()
    out = []
    for start in range(0, len(sampler) * batch_size, batch_size):
        idx = order[start : start + batch_size]
        if idx.numel() < d.world_size:
            break
        out.append((torch.tensor_split(idx, d.world_size)[d.rank], int(idx.numel())))
    return out


def eval_shard(num_samples: int, d: Dist) -> Tensor:
    """Positions ``0..num_samples-1`` that this rank evaluates (contiguous; rank order = data order)."""
    return torch.tensor_split(torch.arange(num_samples), d.world_size)[d.rank]


def gather_cat(t: Tensor, d: Dist) -> Tensor:
    """Concatenate ``t`` (first dimension may differ per rank) from every rank, in rank order."""
    if not d.distributed:
        return t
    t = t.contiguous()
    sizes = [torch.zeros(1, dtype=torch.int64, device=t.device) for _ in range(d.world_size)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device))
    n_max = int(max(int(s) for s in sizes))
    padded = torch.zeros((n_max, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(d.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])


def all_reduce_sum(values: Sequence[float], d: Dist) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=d.device)
    if d.distributed:
        dist.all_reduce(t)
    return t.tolist()


class CropFlip:
    """CIFAR augmentation as batched tensor ops: zero-padded random crop (``padding`` pixels) and h-flip.

    The random draws of epoch ``e`` are made once for all ``N`` samples from a generator seeded with
    ``(seed, e)``, so a sample's augmentation does not depend on the batch order, the rank, or a resume.

    Args:
        num_samples: N.
        padding: Pixels of zero padding on every side before the crop (CIFAR: 4).
        flip: Flip horizontally with probability 1/2.
        seed: Base seed.
    """

    def __init__(self, num_samples: int, *, padding: int = 4, flip: bool = True, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.padding = padding
        self.flip = flip
        self.seed = seed
        self.offsets = torch.zeros(num_samples, 2, dtype=torch.int64)
        self.flips = torch.zeros(num_samples, dtype=torch.bool)

    def set_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        self.offsets = torch.randint(0, 2 * self.padding + 1, (self.num_samples, 2), generator=g)
        self.flips = torch.rand(self.num_samples, generator=g) < 0.5 if self.flip else torch.zeros_like(self.flips)

    def __call__(self, images: Tensor, positions: Tensor) -> Tensor:
        """Augment ``images`` (N_b, C, H, W), the samples at ``positions`` of the data set."""
        n, c, h, w = images.shape
        dev = images.device
        p = self.padding
        padded = F.pad(images, (p, p, p, p)) if p else images
        off = self.offsets[positions].to(dev)
        rows = off[:, 0:1] + torch.arange(h, device=dev)  # (n, h)
        cols = off[:, 1:2] + torch.arange(w, device=dev)  # (n, w)
        flips = self.flips[positions].to(dev)
        cols = torch.where(flips[:, None], cols.flip(1), cols)
        b = torch.arange(n, device=dev)[:, None, None, None]
        ch = torch.arange(c, device=dev)[None, :, None, None]
        return padded[b, ch, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass
class TensorData:
    """A data set held as one ``uint8`` tensor on the training device (CIFAR, digits): no DataLoader needed.

    Attributes:
        images: ``uint8`` :math:`(N, C, H, W)` on the device.
        labels: ``int64`` :math:`(N)` on the device.
        mean, std: Per-channel normalisation (applied after augmentation, on the device).
    """

    images: Tensor
    labels: Tensor
    mean: Sequence[float]
    std: Sequence[float]
    channels_last: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def normalize(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x = (x.float() / 255.0 - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def subset(self, positions: Tensor) -> TensorData:
        idx = positions.to(self.images.device)
        return TensorData(self.images[idx], self.labels[idx], self.mean, self.std, self.channels_last)

    def train_batches(
        self, batch_size: int, *, seed: int, epoch: int, d: Dist, augment: Optional[CropFlip]
    ) -> Iterator[tuple[Tensor, Tensor, int]]:
        if augment is not None:
            augment.set_epoch(epoch)
        for pos, global_n in epoch_batches(len(self), batch_size, seed=seed, epoch=epoch, d=d):
            idx = pos.to(self.images.device)
            x = self.images[idx]
            if augment is not None:
                x = augment(x, pos)
            yield self.normalize(x), self.labels[idx], global_n

    def eval_batches(self, d: Dist, batch_size: int = 1000) -> Iterator[tuple[Tensor, Tensor]]:
        shard = eval_shard(len(self), d).to(self.images.device)
        for start in range(0, shard.numel(), batch_size):
            idx = shard[start : start + batch_size]
            yield self.normalize(self.images[idx]), self.labels[idx]


# --------------------------------------------------------------------------------------------------------------------
# Loops
# --------------------------------------------------------------------------------------------------------------------


def progress(iterable: Iterable[Any], d: Dist, enabled: bool, **kwargs: Any) -> Iterable[Any]:
    """Wrap in a tqdm progress bar on rank 0 if ``enabled``, tqdm is installed and a terminal is attached.

    Elsewhere (other ranks, a log file, ``--no-progress``) the bare iterable: the per-epoch log lines of
    :class:`RunLog` say everything a bar would, in a form that reads well in a file.
    """
    if not (enabled and d.is_main and sys.stderr.isatty()):
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, leave=False, dynamic_ncols=True, **kwargs)


class RunLog:
    """Rank 0's messages: printed (above a progress bar, if one is shown) and appended to ``path``.

    Every line in the file starts with a timestamp, so that a log of a long run reads on its own.
    """

    def __init__(self, path: Optional[Path], d: Dist) -> None:
        self.path = path
        self.enabled = d.is_main

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stdout)
        except ImportError:
            print(message, flush=True)
        sys.stdout.flush()
        if self.path is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.path, "a", encoding="utf-8") as f:
                for line in message.splitlines():
                    f.write(f"{stamp} {line}\n")


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``'1:02:05'``; under a minute ``'12.3 s'``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def epoch_line(
    stage: str, epoch: int, epochs: int, loss: float, lr: float, seconds: float, eta: float, acc: Optional[str] = None
) -> str:
    """One log line per epoch: ``stage1 epoch  3/20 | loss 2.3026 | lr 9.51e-03 | 1.2 s | ETA 21.6 s``."""
    width = len(str(epochs))
    parts = [f"{stage} epoch {epoch:>{width}}/{epochs}", f"loss {loss:.4f}", f"lr {lr:.2e}"]
    if acc:
        parts.append(acc)
    parts += [format_duration(seconds), f"ETA {format_duration(eta)}"]
    return " | ".join(parts)


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, int]],
    criterion: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    d: Dist,
    *,
    dtype: Optional[torch.dtype] = None,
    scaler: Any = None,
) -> float:
    """One epoch over ``(inputs, targets, global_batch_size)`` batches; returns the mean loss over all ranks.

    Each rank scales its mean loss by ``local * world_size / global`` (see the module docstring), steps the
    optimizer and then the scheduler (once per batch: build it over all steps).
    """
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=d.device)
    seen = 0
    postfix = getattr(batches, "set_postfix_str", None)  # a tqdm bar: show the running loss in it
    for step, (x, y, global_n) in enumerate(batches):
        x = x.to(d.device, non_blocking=True)
        y = y.to(d.device, non_blocking=True)
        with autocast(d, dtype):
            logits = model(x)
        loss = criterion(logits.float(), y)
        factor = y.shape[0] * d.world_size / global_n
        scaled = loss * factor if factor != 1.0 else loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(scaled).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            scaled.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach().double() * y.shape[0]
        seen += int(y.shape[0])
        if postfix is not None and step % 10 == 0:  # a device sync every 10 steps, only with a bar on screen
            postfix(f"loss {float(total) / max(seen, 1):.4f}", refresh=False)
    loss_sum, count = all_reduce_sum([float(total), seen], d)
    return loss_sum / max(count, 1.0)


@torch.no_grad()
def predict(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], d: Dist, *, dtype: Optional[torch.dtype] = None
) -> tuple[Tensor, Tensor]:
    """Predicted classes (argmax of the **raw** logits) and targets of all ranks, on the CPU, in data order."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for x, y in batches:
        with autocast(d, dtype):
            logits = model(x.to(d.device, non_blocking=True))
        preds.append(logits.float().argmax(1))
        targets.append(y.to(d.device))
    model.train(was_training)
    p = torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64, device=d.device)
    t = torch.cat(targets) if targets else torch.empty(0, dtype=torch.int64, device=d.device)
    return gather_cat(p, d).cpu(), gather_cat(t, d).cpu()


def evaluate(preds: Tensor, targets: Tensor, train_counts: Tensor, thresholds: tuple[float, float]) -> dict[str, Any]:
    """Many/Medium/Few/All (from :func:`longtail_losses.metrics.shot_accuracy`) and per-class accuracy."""
    many_t, few_t = thresholds
    with warnings.catch_warnings():  # an empty group is announced once, in the start banner
        warnings.filterwarnings("ignore", message="shot_accuracy: no class in the", category=UserWarning)
        shot = metrics.shot_accuracy(preds, targets, train_counts, many_threshold=many_t, few_threshold=few_t)
    per_class = metrics.per_class_accuracy(preds, targets, int(train_counts.numel()))
    return {**{k: _clean(v) for k, v in shot.items()}, "per_class_accuracy": [_clean(v) for v in per_class.tolist()]}


class PenalizedLoss(nn.Module):
    """``base(logits, target) + classifier_norm_penalty(classifier.weight, weight_decay)``: the paper's "W" rows.

    The same penalty as inside :class:`longtail_losses.BWLM` (gradient exactly ``weight_decay * theta``), so
    +CEW, +CBW, +BSW and +BWLM regularise the classifier identically.
    """

    def __init__(self, base: nn.Module, classifier: nn.Module, weight_decay: float) -> None:
        super().__init__()
        self.base = base
        self._classifier = (classifier,)  # referenced, not owned
        self.weight_decay = weight_decay

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        penalty = LF.classifier_norm_penalty(self._classifier[0].weight, weight_decay=self.weight_decay)
        return self.base(logits, target) + penalty


def make_stage2_criterion(
    loss: str, counts: Tensor, classifier: nn.Module, *, alpha: float, beta: float, gamma: float, weight_decay: float
) -> nn.Module:
    """The stage-2 loss of a paper row; ``weight_decay > 0`` adds the classifier-norm penalty (the "W" rows).

    ``bwlm`` is :class:`longtail_losses.BWLM` (BFS + penalty in one module); ``ce``, ``cb``, ``bs`` and ``bfs``
    get the same penalty through :class:`PenalizedLoss`.
    """
    if loss not in LOSSES:
        raise ValueError(f"Expected `loss` to be one of {LOSSES}, but got {loss!r}")
    if loss == "bwlm":
        return ltl.BWLM(
            counts, classifier=classifier, alpha=alpha, beta=beta, gamma=gamma, weight_decay=weight_decay
        ).to(counts.device)
    base: nn.Module
    if loss == "ce":
        base = nn.CrossEntropyLoss()
    elif loss == "cb":
        base = ltl.ClassBalancedFocal(counts, beta=beta, gamma=gamma)
    elif loss == "bs":
        base = ltl.BalancedSoftmax(counts)
    else:
        base = ltl.BFS(counts, alpha=alpha, beta=beta, gamma=gamma)
    base = base.to(counts.device)
    return PenalizedLoss(base, classifier, weight_decay) if weight_decay > 0 else base


def cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay per step from the optimizer's lr to 0 over ``total_steps`` (paper: 0.01 -> 0)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=0.0)


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints and outputs
# --------------------------------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """Make ``value`` strict JSON: nan/inf -> None, tensors -> lists, paths -> str."""
    if isinstance(value, Tensor):
        return _clean(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path, d: Dist) -> Any:
    return torch.load(path, map_location=d.device, weights_only=True)


class InputError(ValueError):
    """A missing or mismatched input found before training, worded in the script's flags (exit status 2)."""


def save_stage1(model: nn.Module, path: Path, fingerprint: dict[str, Any]) -> None:
    """Write ``stage1_model.pt``: ``{"model": state_dict, "fingerprint": ...}`` (data set, IF, seeds, counts)."""
    save_atomic({"model": model.state_dict(), "fingerprint": _clean(fingerprint)}, path)


def load_stage1(path: Path, d: Dist, fingerprint: dict[str, Any]) -> dict[str, Tensor]:
    """The state dict of a ``stage1_model.pt``, after checking that its fingerprint matches this run's.

    Raises:
        InputError: If the fingerprints differ (another data set, IF, data seed, seed or class counts).
    """
    payload = load(path, d)
    if not (isinstance(payload, dict) and "model" in payload and "fingerprint" in payload):
        print(
            f"warning: {path} has no fingerprint (written by an older version): cannot check that it comes from a "
            "run with the same data and seed",
            file=sys.stderr,
            flush=True,
        )
        return payload
    theirs, ours = payload["fingerprint"], _clean(fingerprint)
    diff = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    if diff:

        def show(v: Any) -> str:
            text = json.dumps(v)
            return text if len(text) <= 40 else text[:37] + "..."

        details = "; ".join(f"{k}: {show(theirs.get(k))} there, {show(ours.get(k))} here" for k in diff)
        raise InputError(
            f"Expected --stage1-weights {path} to come from a run with the same data and seed, but it differs in "
            f"{details}. Train stage 1 with these settings (drop --stage1-weights), or pass the flags of that run."
        )
    return payload["model"]


def check_output_folder(out: Path, d: Dist) -> None:
    """Create ``--output`` and check that this process can write there, before anything is trained."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{d.rank}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise InputError(
            f"Expected --output {out} to be a folder this process can write, but {err.strerror or err}"
            f"{f' ({err.filename})' if err.filename else ''}"
        ) from None


def written_files(out: Path) -> list[str]:
    """``name (size)`` of every file in ``out``, for the list printed at the end of a run."""
    rows = []
    for path in sorted(out.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            size = path.stat().st_size
            unit = next(u for u, limit in (("B", 1 << 10), ("KiB", 1 << 20), ("MiB", 1 << 30), ("GiB", 1 << 62))
                        if size < limit)  # fmt: skip
            scaled = size / {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
            rows.append(f"{path} ({scaled:.0f} {unit})" if unit == "B" else f"{path} ({scaled:.1f} {unit})")
    return rows


def write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def plot_outputs(results: dict[str, Any], out_dir: Path) -> list[str]:
    """Write ``per_class_accuracy.png`` (paper Fig. 7) and ``weight_norms.png`` (Fig. 5a); return their names.

    Classes are ordered by training count, descending (for CIFAR-LT this is the class index).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(results["data"]["train_counts"])
    order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
    x = list(range(len(order)))
    stages = [(name, s) for name, s in results["stages"].items() if s.get("test")]
    names = []

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, s in stages:
        acc = [s["test"]["per_class_accuracy"][c] for c in order]
        ax.plot(x, [float("nan") if a is None else 100 * a for a in acc], label=s.get("label", name), lw=1.2)
    ax.set_xlabel("class index (sorted by training samples, descending)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Per-class accuracy, {results['data']['name']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "per_class_accuracy.png", dpi=120)
    plt.close(fig)
    names.append("per_class_accuracy.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, s in results["stages"].items():
        if s.get("weight_norms"):
            ax.plot(x, [s["weight_norms"][c] for c in order], label=s.get("label", name), lw=1.2)
    ax.set_xlabel("class index (sorted by training samples, descending)")
    ax.set_ylabel("classifier weight norm")
    ax2 = ax.twinx()
    ax2.plot(x, [int(counts[c]) for c in order], "k--", lw=1, label="training samples")
    ax2.set_ylabel("training samples")
    ax.set_title(f"Classifier weight norms, {results['data']['name']}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out_dir / "weight_norms.png", dpi=120)
    plt.close(fig)
    names.append("weight_norms.png")
    return names


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


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
        paper = re.search(r"paper: ([-+0-9.eE]+)\)", text)
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if paper is not None and numeric and float(paper.group(1)) == float(default):
            return text
        return f"{text} (default: {default})"


def plain(doc: Optional[str]) -> str:
    """A module docstring as plain text for ``--help``: no Sphinx roles or double backquotes."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc or "")
    return re.sub(r"``([^`]+)``", r"\1", text)


def add_common_args(parser: argparse.ArgumentParser, *, epochs: int, output: str = "runs/...") -> None:
    """Flags shared by both reproduction scripts; every help text gives the paper's value."""
    p = PAPER
    g = parser.add_argument_group("paper recipe (section 4.2)")
    g.add_argument(
        "--row",
        choices=list(ROWS),
        default=None,
        help="a row of the paper's Tables 2-4; sets --naive, --loss and --weight-decay together "
        "(e.g. --row BWLM = --loss bwlm --weight-decay 5e-3; --row CE = --loss ce --weight-decay 0)",
    )
    g.add_argument(
        "--naive",
        action="store_true",
        help="the paper's 'naive' row: one stage, CE, on the whole long-tailed training set (no stage 2)",
    )
    g.add_argument("--loss", choices=LOSSES, default="bwlm", help="stage-2 loss (paper: BWLM)")
    g.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="stage-2 classifier-norm penalty lambda (the 'W' rows; paper: 5e-3). Applied as "
        "lambda/2*sum_j ||theta_j||^2 in the loss (longtail_losses.BWLM's penalty, and the same "
        "LF.classifier_norm_penalty for ce/cb/bs/bfs). Default: 5e-3 for --loss bwlm, 0 for the others",
    )
    g.add_argument("--alpha", type=float, default=p["alpha"], help="BFS/BWLM weight of the CB term (paper: 0.1)")
    g.add_argument(
        "--beta", type=float, default=p["beta"], help="CB effective-number beta (paper: not stated; Cui et al.)"
    )
    g.add_argument("--gamma", type=float, default=p["gamma"], help="focal gamma (paper: not stated; Cui et al.)")
    g.add_argument("--epochs", type=int, default=epochs, help=f"stage-1 (or naive) epochs (paper: {epochs})")
    g.add_argument(
        "--stage2-epochs",
        type=int,
        default=None,
        help=f"stage-2 epochs (paper: not stated separately; default: --epochs, i.e. {epochs})",
    )
    g.add_argument("--batch-size", type=int, default=p["batch_size"], help="global batch size (paper: 64)")
    g.add_argument("--lr", type=float, default=p["lr"], help="initial lr, cosine-decayed to 0 per step (paper: 0.01)")
    g.add_argument("--momentum", type=float, default=p["momentum"], help="SGD momentum (paper: 0.9)")
    g.add_argument(
        "--stage1-weight-decay",
        type=float,
        default=p["stage1_weight_decay"],
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
    """Apply ``--row`` and the ``--weight-decay`` / ``--stage2-epochs`` defaults in place."""
    if args.row is not None:
        args.naive, args.loss, args.weight_decay = ROWS[args.row]
    if args.weight_decay is None:
        args.weight_decay = PAPER["weight_decay"] if args.loss == "bwlm" else 0.0
    if args.stage2_epochs is None:
        args.stage2_epochs = args.epochs
    if args.row is None:
        if args.naive:
            args.row = "naive"
        else:
            w = args.weight_decay > 0
            args.row = {"ce": "CE", "cb": "CB", "bs": "BS", "bfs": "BFS", "bwlm": "BFS"}[args.loss] + ("W" * w)
            args.row = {"BFSW": "BWLM"}.get(args.row, args.row)


# --------------------------------------------------------------------------------------------------------------------
# The two-stage driver
# --------------------------------------------------------------------------------------------------------------------


class StopRun(Exception):
    """Raised by ``--stop-after`` to end a run after a checkpoint, as a crash would."""


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


def _state_of(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_two_stage(task: Task, args: argparse.Namespace, d: Dist) -> dict[str, Any]:
    """Run one paper row end to end and return the results dict (also written to ``results.json`` by rank 0)."""
    start_wall = time.time()
    out = Path(args.output)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(d)
    log = RunLog(out / "train.log", d)
    ckpt_path = out / "checkpoint.pt"
    stage1_path = out / "stage1_model.pt"
    seed_everything(args.seed, args.deterministic)
    dtype = amp_dtype(d, args.amp)
    channels_last = bool(args.channels_last and d.device.type == "cuda")
    show = not args.no_progress
    labels = task.train_labels
    counts = ltl.class_counts(labels, num_classes=task.num_classes)
    if args.naive:
        stage1_idx, stage2_idx = torch.arange(labels.numel()), torch.empty(0, dtype=torch.int64)
    else:
        stage1_idx, stage2_idx = twostage.data_balanced_review(labels, seed=args.seed)
    stage2_counts = ltl.class_counts(labels[stage2_idx], num_classes=task.num_classes) if not args.naive else None
    groups = metrics.shot_groups(counts, many_threshold=task.thresholds[0], few_threshold=task.thresholds[1])
    fingerprint = {**task.fingerprint, "seed": args.seed, "class_counts": counts.tolist()}
    if args.stage1_weights is not None:  # checked before anything trains
        stage1_weights = load_stage1(Path(args.stage1_weights), d, fingerprint)
    dtype_name = str(dtype).replace("torch.", "") if dtype is not None else "float32"
    eval_sizes = task.extra.get("eval_sizes") or {"test": task.extra.get("test_size", "?")}
    log(
        f"=== {Path(sys.argv[0]).name}: {task.name}, row {args.row} (stage-2 loss {args.loss}, lambda "
        f"{args.weight_decay:g}), seed {args.seed}\n"
        f"device {d.device} ({dtype_name}), {d.world_size} process(es); torch {torch.__version__}\n"
        f"data: {labels.numel()} training images in {task.num_classes} classes (largest {int(counts.max())}, "
        f"smallest {int(counts.min())}); stage 1: {stage1_idx.numel()}; stage 2: {stage2_idx.numel()}; "
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
        + f"\noutput: {out} (this log: {out / 'train.log'}; full config in results.json)"
    )

    config = {k: _clean(v) for k, v in vars(args).items()}
    results: dict[str, Any] = {
        "config": config,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(d.device) + (f" ({torch.cuda.get_device_name(d.device)})" if d.device.type == "cuda" else ""),
            "world_size": d.world_size,
            "autocast": str(dtype) if dtype is not None else "off (float32)",
            "channels_last": channels_last,
        },
        "data": {
            "name": task.name,
            "num_classes": task.num_classes,
            "train_counts": counts.tolist(),
            "num_train": int(labels.numel()),
            "stage1_size": int(stage1_idx.numel()),
            "stage2_size": int(stage2_idx.numel()),
            "stage2_counts": stage2_counts.tolist() if stage2_counts is not None else None,
            "thresholds": {"many": f"n > {task.thresholds[0]:g}", "few": f"n < {task.thresholds[1]:g}"},
            "groups": {k: len(v) for k, v in groups.items()},
            **task.extra,
        },
        "row": args.row,
        "fingerprint": fingerprint,
        "stages": {},
        "wall_time_s": {},
        "model_selection": "last epoch"
        + (" (and, separately, the epoch best on val)" if "val" in task.splits else "; the test set selects nothing"),
    }

    state: dict[str, Any] = {"phase": "stage1", "epoch": 0}
    if args.resume and ckpt_path.exists():
        state = load(ckpt_path, d)
        results["stages"] = state["results_stages"]
        results["wall_time_s"] = state["wall_time_s"]
        if d.is_main:
            log(f"resuming from {ckpt_path}: {state['phase']}, {state['epoch']} epochs done")
    epochs_done_here = 0

    def checkpoint(payload: dict[str, Any]) -> None:
        nonlocal epochs_done_here
        payload["results_stages"] = results["stages"]
        payload["wall_time_s"] = results["wall_time_s"]
        if d.is_main:
            save_atomic(payload, ckpt_path)
        barrier(d)
        epochs_done_here += 1
        if args.stop_after is not None and epochs_done_here >= args.stop_after:
            raise StopRun

    def eval_split(model: nn.Module, split: str) -> dict[str, Any]:
        preds, targets = predict(model, task.eval_batches(split), d, dtype=dtype)
        return evaluate(preds, targets, counts, task.thresholds)

    # ---------------------------------------------------------------- stage 1 (or naive)
    stage1_name = "naive" if args.naive else "stage1"
    model = task.build_model().to(d.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if state["phase"] == "stage1" and args.stage1_weights is not None:
        model.load_state_dict(stage1_weights)
        results["stages"][stage1_name] = {"label": stage1_name, "loaded_from": str(args.stage1_weights)}
        state = {"phase": "stage1_done", "epoch": 0}
    if state["phase"] == "stage1":
        t0 = time.time() - state.get("phase_time", 0.0)
        if d.distributed and d.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN statistics of the global batch
        train_model: nn.Module = model
        if d.distributed:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[d.device.index] if d.device.type == "cuda" else None
            )
        if args.compile:
            train_model = torch.compile(train_model)  # type: ignore[assignment]
        opt = torch.optim.SGD(
            model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.stage1_weight_decay
        )
        steps = len(epoch_batches(stage1_idx.numel(), args.batch_size, seed=args.seed, epoch=0, d=d))
        sched = cosine(opt, args.epochs * steps)
        scaler = make_grad_scaler(dtype)
        history: list[float] = list(state.get("history", []))
        val_best: dict[str, Any] = state.get("val_best", {})
        if state["epoch"] > 0:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        criterion = nn.CrossEntropyLoss()
        epoch_times: list[float] = []
        for epoch in range(state["epoch"], args.epochs):
            te = time.time()
            batches = task.train_batches(stage1_idx, args.batch_size, args.seed, epoch, True)
            bar = progress(batches, d, show, total=steps, desc=f"{stage1_name} {epoch + 1}/{args.epochs}")
            loss = train_epoch(train_model, bar, criterion, opt, sched, d, dtype=dtype, scaler=scaler)
            history.append(loss)
            acc = None
            if "val" in task.splits:
                val = eval_split(model, "val")
                acc = _acc_text("val", val)
                if not val_best or (val["all"] or 0.0) > val_best["val"]["all"]:
                    val_best = {"epoch": epoch + 1, "val": {k: val[k] for k in metrics.SHOT_KEYS}}
                    if d.is_main:
                        save_atomic(_state_of(model), out / f"best_{stage1_name}_model.pt")
            epoch_times.append(time.time() - te)
            eta = sum(epoch_times) / len(epoch_times) * (args.epochs - epoch - 1)
            lr_now = opt.param_groups[0]["lr"]
            log(epoch_line(stage1_name, epoch + 1, args.epochs, loss, lr_now, epoch_times[-1], eta, acc))
            results["wall_time_s"][stage1_name] = time.time() - t0
            checkpoint(
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
            save_stage1(model, stage1_path, fingerprint)
        s1: dict[str, Any] = {"label": stage1_name, "epochs": args.epochs, "loss_history": history}
        for split in task.splits:
            s1[split] = eval_split(model, split)
        if val_best:
            best_model = task.build_model().to(d.device)
            best_model.load_state_dict(load(out / f"best_{stage1_name}_model.pt", d))
            s1["best_on_val"] = {**val_best, "test": eval_split(best_model, "test")}
            del best_model
        s1["weight_norms"] = metrics.classifier_weight_norms(model.fc).cpu().tolist()
        results["stages"][stage1_name] = s1
        results["wall_time_s"][stage1_name] = time.time() - t0
        log(f"{stage1_name} done in {format_duration(time.time() - t0)}: {_acc_text('test', s1['test'], full=True)}")
        state = {"phase": "stage1_done", "epoch": 0}
        checkpoint_payload = {"phase": "stage1_done", "epoch": 0}
        if d.is_main:
            checkpoint_payload["results_stages"] = results["stages"]
            checkpoint_payload["wall_time_s"] = results["wall_time_s"]
            save_atomic(checkpoint_payload, ckpt_path)
        barrier(d)
    else:
        if args.stage1_weights is not None:
            model.load_state_dict(stage1_weights)
        else:
            model.load_state_dict(load_stage1(stage1_path, d, fingerprint))
        s1 = results["stages"].setdefault(stage1_name, {"label": stage1_name})
        if "test" not in s1:  # loaded weights: evaluate them once
            for split in task.splits:
                s1[split] = eval_split(model, split)
            s1["weight_norms"] = metrics.classifier_weight_norms(model.fc).cpu().tolist()

    # ---------------------------------------------------------------- stage 2
    if not args.naive:
        t0 = time.time() - (state.get("phase_time", 0.0) if state["phase"] == "stage2" else 0.0)
        fc = twostage.replace_classifier(model, task.num_classes, attr="fc")  # frozen backbone, BN in eval mode
        if stage2_counts is None:  # unreachable: set whenever not naive
            raise RuntimeError("stage-2 counts are missing")
        loss_counts = (stage2_counts if args.stage2_counts == "stage2" else counts).to(d.device)
        if int((loss_counts == 0).sum()):
            raise ValueError("Expected every class to have stage-2 samples, but some have none")
        torch.manual_seed(args.seed + STAGE2_SEED_OFFSET)
        fc.reset_parameters()  # a seeded initialisation, independent of the stage-1 RNG history
        criterion = make_stage2_criterion(
            args.loss,
            loss_counts,
            fc,
            alpha=args.alpha,
            beta=args.beta,
            gamma=args.gamma,
            weight_decay=args.weight_decay,
        )
        stage2_seed = args.seed + STAGE2_SEED_OFFSET
        feats: dict[str, tuple[Tensor, Tensor]] = {}
        if args.stage2_augment:
            train_module: nn.Module = model
        else:
            tf = time.time()
            for key in ("train", *task.splits):
                source = task.feature_data(stage2_idx if key == "train" else key)
                f, y = twostage.extract_features(
                    model, source, device=d.device, autocast_dtype=dtype, channels_last=channels_last
                )
                feats[key] = (gather_cat(f, d), gather_cat(y, d))
            results["wall_time_s"]["feature_extraction"] = time.time() - tf
            train_module = fc
        ddp_module = train_module
        if d.distributed:
            ddp_module = nn.parallel.DistributedDataParallel(
                train_module, device_ids=[d.device.index] if d.device.type == "cuda" else None
            )
        opt = torch.optim.SGD(fc.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=0.0)
        training.warn_double_decay(criterion, opt)  # BWLM's penalty is the classifier's only weight decay
        n2 = stage2_idx.numel()
        steps = len(epoch_batches(n2, args.batch_size, seed=stage2_seed, epoch=0, d=d))
        sched = cosine(opt, args.stage2_epochs * steps)
        scaler = make_grad_scaler(dtype) if args.stage2_augment else None
        history = []
        val_best = {}
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
                return eval_split(model, split)
            f, y = feats[split]
            with torch.no_grad():
                preds = fc(f).float().argmax(1).cpu()
            return evaluate(preds, y.cpu(), counts, task.thresholds)

        epoch_times = []
        for epoch in range(start_epoch, args.stage2_epochs):
            te = time.time()
            if args.stage2_augment:
                batches = task.train_batches(stage2_idx, args.batch_size, stage2_seed, epoch, True)
            else:
                batches = cached_batches(epoch)
            bar = progress(batches, d, show, total=steps, desc=f"stage2 {epoch + 1}/{args.stage2_epochs}")
            # The cached path trains a linear layer on float32 features: no autocast needed.
            step_dtype = dtype if args.stage2_augment else None
            loss = train_epoch(ddp_module, bar, criterion, opt, sched, d, dtype=step_dtype, scaler=scaler)
            history.append(loss)
            acc = None
            if "val" in task.splits:
                val = eval_stage2("val")
                acc = _acc_text("val", val)
                if not val_best or (val["all"] or 0.0) > val_best["val"]["all"]:
                    val_best = {
                        "epoch": epoch + 1,
                        "val": {k: val[k] for k in metrics.SHOT_KEYS},
                        "classifier": _state_of(fc),
                    }
            epoch_times.append(time.time() - te)
            eta = sum(epoch_times) / len(epoch_times) * (args.stage2_epochs - epoch - 1)
            lr_now = opt.param_groups[0]["lr"]
            log(epoch_line("stage2", epoch + 1, args.stage2_epochs, loss, lr_now, epoch_times[-1], eta, acc))
            results["wall_time_s"]["stage2"] = time.time() - t0
            checkpoint(
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
            last = _state_of(fc)
            fc.load_state_dict(val_best["classifier"])
            s2["best_on_val"] = {"epoch": val_best["epoch"], "val": val_best["val"], "test": eval_stage2("test")}
            fc.load_state_dict(last)
        s2["weight_norms"] = metrics.classifier_weight_norms(fc).cpu().tolist()
        results["stages"]["stage2"] = s2
        results["wall_time_s"]["stage2"] = time.time() - t0
        took = format_duration(time.time() - t0)
        log(f"stage2 (+{args.row}) done in {took}: {_acc_text('test', s2['test'], full=True)}")
        if d.is_main:
            save_atomic(model.state_dict(), out / "final_model.pt")

    final = "naive" if args.naive else "stage2"
    results["final_stage"] = final
    results["final"] = {k: results["stages"][final]["test"][k] for k in metrics.SHOT_KEYS}
    results["wall_time_s"]["total_this_invocation"] = time.time() - start_wall
    results["wall_time_s"]["total"] = sum(
        v for k, v in results["wall_time_s"].items() if k in ("naive", "stage1", "stage2", "feature_extraction")
    )
    if d.is_main:
        write_json(results, out / "results.json")
        results["plots"] = plot_outputs(_clean(results), out)
        write_json(results, out / "results.json")
        rows = {f"{s.get('label', n)}": s["test"] for n, s in results["stages"].items() if s.get("test")}
        log(metrics.format_shot_table(_nan(rows), header=task.name))
        log(f"finished in {format_duration(time.time() - start_wall)}; written to {out}:")
        log("\n".join(f"  {row}" for row in written_files(out)))
    barrier(d)
    return results


def _acc_text(split: str, r: dict[str, Any], *, full: bool = False) -> str:
    """``val all 45.2%`` or, with ``full``, ``test many 70.1% | medium 40.3% | few 10.0% | all 41.2%``."""

    def pct(v: Optional[float]) -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"

    if not full:
        return f"{split} all {pct(r['all'])}"
    return f"{split} " + " | ".join(f"{k} {pct(r[k])}" for k in metrics.SHOT_KEYS)


def _nan(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {n: {k: math.nan if r[k] is None else r[k] for k in metrics.SHOT_KEYS} for n, r in rows.items()}


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


def run_main(
    args: argparse.Namespace, make_task: Callable[[argparse.Namespace, Dist], Task], default_output: str
) -> int:
    """The body of every example's ``main``: resolve ``--row``, set up (torchrun) processes, run both stages.

    Inputs are checked before anything trains: the output folder is writable, ``--stage1-weights`` exists,
    and ``make_task`` checks the data (and says which flag to change).
    """
    resolve_row(args)
    if args.output is None:
        args.output = Path("runs") / default_output.format(row=args.row, seed=args.seed)
    out = Path(args.output)
    d = init_distributed(args.device)

    def run() -> None:
        check_output_folder(out, d)
        if args.stage1_weights is not None and not Path(args.stage1_weights).is_file():
            raise InputError(
                f"Expected --stage1-weights {args.stage1_weights} to be the stage1_model.pt of an earlier run, "
                "but there is no such file"
            )
        run_two_stage(make_task(args, d), args, d)

    try:
        return main_wrapper(run, out)
    finally:
        cleanup_distributed(d)
