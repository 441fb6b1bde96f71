r"""What Seesaw and EQLv2 share: losses whose statistics accumulate over the training stream.

Both keep statistics of the training stream in buffers and reweight the loss from them, so they need no class
counts up front: Seesaw :cite:`wang2021seesaw` accumulates the class counts, EQLv2 :cite:`tan2021eqlv2` each
class's accumulated positive and negative gradient magnitudes. The functions hold the maths and take the
statistics as arguments (pure); the modules own the statistics and update them.

The statistics are updated in training mode only and, when :mod:`torch.distributed` is initialised, summed over
the ranks of ``process_group`` before they are used: every rank then holds the statistics of the global batch,
and two processes on half batches follow the trajectory of one process on the whole batch. Every rank must
therefore call ``forward`` of the module the same number of times (the update is a collective).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from longtail_losses._validation import as_per_class, check_tensor
from longtail_losses.losses import _engine

_NO_PROBABILITIES = {
    "Seesaw": "Seesaw's factors compare every class with the one target class",
    "EQLv2": "EQLv2 accumulates positives and negatives per class from one label",
}


def check_inputs(logits: Any, target: Any, num_columns: int, loss: str) -> None:
    """The checks whose engine wording speaks of class counts: the number of columns; class indices only."""
    check_tensor("logits", logits)
    check_tensor("target", target)
    class_dim = 0 if logits.ndim == 1 else 1
    if logits.ndim >= 1 and logits.shape[class_dim] != num_columns:
        raise ValueError(
            f"Expected `logits` to have {num_columns} columns on dimension {class_dim}, "
            f"but got shape {tuple(logits.shape)}"
        )
    if target.dtype.is_floating_point:
        raise TypeError(
            f"Expected `target` to hold integer class indices ({_NO_PROBABILITIES[loss]}; class probabilities are "
            f"not defined for it), but got dtype {target.dtype}"
        )


def check_loaded(
    state_dict: dict[str, Any], prefix: str, names: tuple[str, ...], num_classes: int, dtype: torch.dtype
) -> None:
    """Check (and cast to ``dtype``) the statistics a ``state_dict`` brings, as ``__init__`` checks its arguments."""
    for name in names:
        key = prefix + name
        if key in state_dict:
            state_dict[key] = as_per_class(f"state_dict[{key!r}]", state_dict[key], num_classes, dtype=dtype)


def call_options(options: Mapping[str, Any], loss: str) -> _engine.Options:
    """The call options of every loss (:class:`~longtail_losses.LossOptions`), checked; ``label_smoothing`` must be 0.

    Seesaw and EQLv2 accumulate statistics of one class per sample, so a smoothed target has no meaning for them.
    """
    checked = _engine.check_options(**options)
    if checked.label_smoothing != 0.0:
        raise ValueError(
            f"Expected `label_smoothing` to be 0 for {loss}, whose statistics need one class per sample, "
            f"but got {checked.label_smoothing}"
        )
    return checked


def class_indices(
    logits: Tensor, target: Tensor, num_columns: int, options: _engine.Options, loss: str
) -> _engine.Rows:
    """Rows of the engine for class-index targets."""
    check_inputs(logits, target, num_columns, loss)
    rows = _engine.prepare(
        logits,
        target,
        torch.ones(num_columns, dtype=torch.int64, device=logits.device),  # the engine's counts: unused here
        options,
        check_counts=False,
    )
    assert rows.labels is not None
    return rows


def valid(rows: _engine.Rows) -> Tensor:
    """(M,) bool: rows whose label is a class (not ``ignore_index``, not an unchecked invalid label)."""
    assert rows.keep is not None
    return rows.keep if rows.invalid is None else rows.keep & ~rows.invalid


def all_reduce(tensor: Tensor, group: Optional[Any]) -> Tensor:
    """Sum ``tensor`` over the ranks of ``group`` in place when :mod:`torch.distributed` runs with several."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor
