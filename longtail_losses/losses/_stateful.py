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

import math
import numbers
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from longtail_losses.losses import _engine

# ----------------------------------------------------------------------------------------------------------------
# Checks (same wording as longtail_losses._validation, which holds none of these rules).


def _check_number(name: str, value: object, *, low: float, low_inclusive: bool = True, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Expected `{name}` to be a real number, but got {value!r} of type {type(value).__name__}")
    result = float(value)
    above = result >= low if low_inclusive else result > low
    if not (above and result <= high and math.isfinite(result)):
        bound = "" if low == -math.inf else f" {'>=' if low_inclusive else '>'} {low:g}"
        bound += "" if high == math.inf else f" and <= {high:g}"
        raise ValueError(f"Expected `{name}` to be a finite number{bound}, but got {value}")
    return result


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"Expected `num_classes` to be an int, but got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"Expected `num_classes` to be >= 1, but got {num_classes}")
    return num_classes


_NO_PROBABILITIES = {
    "Seesaw": "Seesaw's factors compare every class with the one target class",
    "EQLv2": "EQLv2 accumulates positives and negatives per class from one label",
}


def _check_inputs(logits: object, target: object, num_columns: int, loss: str) -> None:
    """The checks whose engine wording speaks of class counts: the number of columns; class indices only."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"Expected `logits` to be a torch.Tensor, but got {type(logits).__name__}")
    if not isinstance(target, Tensor):
        raise TypeError(f"Expected `target` to be a torch.Tensor, but got {type(target).__name__}")
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


def _check_statistic(value: object, name: str, num_classes: int, *, dtype: torch.dtype, check_values: bool) -> Tensor:
    """A (C,) tensor of finite values >= 0 (whole numbers for integer ``dtype``), returned in ``dtype``."""
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"Expected `{name}` to be a sequence or tensor of numbers, but got {type(value).__name__}"
            ) from None
    tensor = value.detach()
    if tensor.dtype == torch.bool or tensor.dtype.is_complex:
        raise TypeError(f"Expected `{name}` to hold real numbers, but got dtype {tensor.dtype}")
    if tuple(tensor.shape) != (num_classes,):
        raise ValueError(f"Expected `{name}` to have shape ({num_classes},), but got {tuple(tensor.shape)}")
    if check_values and tensor.numel() > 0:
        bad = tensor < 0
        if tensor.dtype.is_floating_point:
            bad = bad | ~torch.isfinite(tensor)
            if not dtype.is_floating_point:
                bad = bad | (tensor != torch.round(tensor))
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            kind = "finite numbers >= 0" if dtype.is_floating_point else "whole numbers >= 0"
            raise ValueError(f"Expected `{name}` to hold {kind}, but got {tensor[j].item()} for class {j}")
    return tensor.to(dtype)


def _check_loaded(
    state_dict: dict[str, Any], prefix: str, names: tuple[str, ...], num_classes: int, dtype: torch.dtype
) -> None:
    """Check (and cast to ``dtype``) the statistics a ``state_dict`` brings, as ``__init__`` checks its arguments."""
    for name in names:
        key = prefix + name
        if key in state_dict:
            state_dict[key] = _check_statistic(
                state_dict[key], f"state_dict[{key!r}]", num_classes, dtype=dtype, check_values=True
            )


def _class_indices(
    logits: Tensor,
    target: Tensor,
    num_columns: int,
    *,
    ignore_index: int,
    reduction: str,
    validate_args: bool,
    loss: str,
) -> _engine.Rows:
    """Rows of the engine for class-index targets (``label_smoothing`` has no meaning here)."""
    _check_inputs(logits, target, num_columns, loss)
    rows = _engine.prepare(
        logits,
        target,
        torch.ones(num_columns, dtype=torch.int64, device=logits.device),  # the engine's counts: unused here
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=0.0,
        validate_args=validate_args,
        check_counts=False,
    )
    assert rows.labels is not None
    return rows


def _valid(rows: _engine.Rows) -> Tensor:
    """(M,) bool: rows whose label is a class (not ``ignore_index``, not an unchecked invalid label)."""
    assert rows.keep is not None
    return rows.keep if rows.invalid is None else rows.keep & ~rows.invalid


def _all_reduce(tensor: Tensor, group: Optional[Any]) -> Tensor:
    """Sum ``tensor`` over the ranks of ``group`` in place when :mod:`torch.distributed` runs with several."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor
