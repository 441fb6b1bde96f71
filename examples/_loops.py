"""The examples' layer around the library's loops: a progress bar, the loss over all ranks, gathered predictions.

Training and prediction are :func:`longtail_losses.training.train_one_epoch` and
:func:`~longtail_losses.training.predict`; what is added here is specific to the examples' processes:

* batches are ``(inputs, targets, global_batch_size)`` shards (see :mod:`_batches`): the library loop scales each
  rank's loss by ``local * world_size / global`` so that DDP's averaged gradient is exactly that of the mean loss
  over the global batch (and of a classifier-norm penalty added once), as on one process;
* the epoch's loss is the mean over every rank's samples; predictions are the argmax of the raw logits,
  gathered from every rank in data order.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional

import torch
from _distributed import Dist, all_reduce_sum, gather_cat
from _report import clean
from torch import Tensor, nn

from longtail_losses import metrics, training

STAGE2_SEED_OFFSET = 1_000_003  # stage 2 draws its batches from a different stream than stage 1


def progress(d: Dist, enabled: bool, **kwargs: Any) -> Optional[Callable[[Iterable[Any]], Iterable[Any]]]:
    """A tqdm wrapper for rank 0 if ``enabled``, tqdm is installed and a terminal is attached, else ``None``.

    Elsewhere (other ranks, a log file, ``--no-progress``) no bar: the per-epoch log lines of
    :class:`_report.RunLog` say everything a bar would, in a form that reads well in a file.
    """
    if not (enabled and d.is_main and sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return lambda iterable: tqdm(iterable, leave=False, dynamic_ncols=True, **kwargs)


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
    bar: Optional[Callable[[Iterable[Any]], Iterable[Any]]] = None,
) -> float:
    """One epoch of :func:`~longtail_losses.training.train_one_epoch` on this rank's shards; the mean loss of all ranks.

    On one process this is the library's return value itself.
    """
    seen = 0

    def counted() -> Iterator[tuple[Tensor, Tensor, int]]:
        nonlocal seen
        for batch in batches:
            seen += int(batch[1].shape[0])
            yield batch

    loss = training.train_one_epoch(
        model, counted(), criterion, optimizer, scheduler=scheduler, device=d.device, autocast_dtype=dtype,
        grad_scaler=scaler, progress=bar, world_size=d.world_size,
    )  # fmt: skip
    if not d.distributed:
        return loss
    loss_sum, count = all_reduce_sum([loss * seen, seen], d)
    return loss_sum / max(count, 1.0)


def predict(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], d: Dist, *, dtype: Optional[torch.dtype] = None
) -> tuple[Tensor, Tensor]:
    """Predicted classes (argmax of the **raw** logits) and targets of all ranks, on the CPU, in data order."""
    it = iter(batches)
    first = next(it, None)
    if first is None:  # this rank's shard is empty
        preds = targets = torch.empty(0, dtype=torch.int64)
    else:
        logits, targets = training.predict(model, itertools.chain([first], it), device=d.device, autocast_dtype=dtype)
        preds = logits.float().argmax(1)
    return gather_cat(preds.to(d.device), d).cpu(), gather_cat(targets.to(d.device), d).cpu()


def evaluate(preds: Tensor, targets: Tensor, train_counts: Tensor, thresholds: tuple[float, float]) -> dict[str, Any]:
    """Many/Medium/Few/All (from :func:`longtail_losses.metrics.shot_accuracy`) and per-class accuracy."""
    many_t, few_t = thresholds
    with warnings.catch_warnings():  # an empty group is announced once, in the start banner
        warnings.filterwarnings("ignore", message="shot_accuracy: no class in the", category=UserWarning)
        shot = metrics.shot_accuracy(preds, targets, train_counts, many_threshold=many_t, few_threshold=few_t)
    per_class = metrics.per_class_accuracy(preds, targets, int(train_counts.numel()))
    return {**{k: clean(v) for k, v in shot.items()}, "per_class_accuracy": [clean(v) for v in per_class.tolist()]}


def cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay per step from the optimizer's lr to 0 over ``total_steps`` (paper: 0.01 -> 0)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=0.0)
