"""Private plumbing shared by the loss functions: argument preparation and the compute dtype."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from longtail_losses._reduction import reduce_loss
from longtail_losses._validation import (
    CountsLike,
    as_class_counts,
    check_ignore_index,
    check_logits_target,
    check_reduction,
    check_target_values,
)


class Prepared(NamedTuple):
    """Checked inputs of a loss: float logits, labels safe to index with, the kept-sample mask and the counts."""

    logits: Tensor  # (N, C) in the compute dtype (float32 for half inputs, float64 stays float64)
    target: Tensor  # (N,) int64 with ignored labels replaced by 0, safe for gather/one_hot
    keep: Tensor  # (N,) bool, False where target == ignore_index
    class_counts: Tensor  # (C,) int64 on the device of logits


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Losses compute in float32 for half/bfloat16 inputs and keep float32/float64 as they are."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def counts_tensor(class_counts: CountsLike, device: torch.device, validate_args: bool) -> Tensor:
    """Return ``class_counts`` as an int64 tensor on ``device``; values are checked if ``validate_args``."""
    if isinstance(class_counts, Tensor) and not validate_args:
        if class_counts.ndim != 1:
            raise ValueError(
                f"Expected `class_counts` to be 1-D (one count per class), but got shape {tuple(class_counts.shape)}"
            )
        return class_counts.to(device=device)
    return as_class_counts(class_counts).to(device=device)


def check_inputs(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    *,
    reduction: str,
    ignore_index: int,
    check_labels: bool,
    check_counts: bool,
) -> tuple[Tensor, Tensor]:
    """Check every argument of a loss; return the logits in the compute dtype and the counts on their device.

    Metadata (types, shapes, dtypes) is always checked; ``check_labels`` and ``check_counts`` switch the value
    checks that synchronise with the device (modules validate their counts once, in ``__init__``).
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    if not isinstance(logits, Tensor):
        raise TypeError(f"Expected `logits` to be a torch.Tensor, but got {type(logits).__name__}")
    counts = counts_tensor(class_counts, logits.device, check_counts)
    num_classes = counts.shape[0]
    check_logits_target(logits, target, num_classes)
    if check_labels:
        check_target_values(target, num_classes, ignore_index)
    return logits.to(compute_dtype(logits.dtype)), counts


def prepare(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    *,
    reduction: str,
    ignore_index: int,
    check_labels: bool,
    check_counts: bool,
) -> Prepared:
    """:func:`check_inputs`, plus the mask of kept samples and labels that are safe to index with."""
    z, counts = check_inputs(
        logits,
        target,
        class_counts,
        reduction=reduction,
        ignore_index=ignore_index,
        check_labels=check_labels,
        check_counts=check_counts,
    )
    keep = target != ignore_index
    safe_target = torch.where(keep, target, 0).long()
    return Prepared(z, safe_target, keep, counts)


PerSample = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def run_loss(
    per_sample: PerSample,
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    reduction: str,
    ignore_index: int,
    check_labels: bool,
    check_counts: bool,
) -> Tensor:
    """Prepare the inputs, apply ``per_sample(logits, target, keep, counts)`` and reduce."""
    z, y, keep, counts = prepare(
        logits,
        target,
        class_counts,
        reduction=reduction,
        ignore_index=ignore_index,
        check_labels=check_labels,
        check_counts=check_counts,
    )
    return reduce_loss(per_sample(z, y, keep, counts), keep, reduction)


class CountsLoss(nn.Module):
    """Base of the loss modules: the ``int64`` counts buffer, ``reduction``, ``ignore_index`` and the repr.

    Subclasses list their scalar hyperparameters in ``_hyperparameters`` for :meth:`extra_repr`.
    """

    class_counts: Tensor
    _hyperparameters: tuple[str, ...] = ()

    def __init__(self, class_counts: CountsLike, *, reduction: str, ignore_index: int, validate_args: bool) -> None:
        super().__init__()
        self.register_buffer("class_counts", as_class_counts(class_counts))
        self.reduction = check_reduction(reduction)
        self.ignore_index = check_ignore_index(ignore_index)
        self.validate_args = bool(validate_args)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.class_counts.shape[0]

    def extra_repr(self) -> str:
        """Show the number of classes and the hyperparameters in ``repr``."""
        fields = [f"num_classes={self.num_classes}"]
        fields += [f"{name}={getattr(self, name)}" for name in self._hyperparameters]
        fields += [f"reduction={self.reduction!r}", f"ignore_index={self.ignore_index}"]
        return ", ".join(fields)
