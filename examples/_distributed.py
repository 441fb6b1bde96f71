"""Distributed set-up for ``torchrun`` (NCCL on CUDA, gloo on CPU), seeding, precision, and collectives.

Part of the reference examples (not of the installed package); the scripts put this folder on ``sys.path``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor


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
