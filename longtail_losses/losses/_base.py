"""The base of every loss module: checked per-class buffers, the call options, the repr, the shared statistics."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from longtail_losses._validation import CountsLike, as_counts, check_int
from longtail_losses.losses._engine import CallOptions, LossOptions, Unpack, check_options

__all__ = ["CountsLoss", "LossOptions", "Unpack", "WeightedLoss", "all_reduce"]


class CountsLoss(nn.Module):
    """Base of the loss modules: per-class buffers checked where they enter, the call options and the repr.

    Every per-class buffer is listed in ``_per_class`` with the rule of :func:`~longtail_losses._validation.as_counts`
    it follows (minimum and dtype) and is checked in ``__init__`` (:meth:`_register_per_class`) and again by
    ``load_state_dict``, so ``forward`` never checks it (no device sync). Training counts ``class_counts`` (int64,
    ``> 0``) are the default; losses without them (Seesaw, EQLv2) pass ``num_classes`` instead, and a loss with no
    per-class buffer at all (``_per_class = {}``, the asymmetric loss) may pass neither: it takes any C
    (``num_classes`` is then 0). Buffers listed
    in ``_optional`` may be None, and a ``state_dict`` with or without them loads either way. Buffers listed in
    ``_float64`` stay float64 under ``.half()``/``.to(dtype)``. The call options are checked once, here;
    subclasses list their scalar hyperparameters in ``_hyperparameters`` for :meth:`extra_repr`.
    """

    class_counts: Tensor
    _num_classes: int
    _per_class: ClassVar[dict[str, tuple[int, torch.dtype]]] = {"class_counts": (1, torch.int64)}
    _optional: ClassVar[tuple[str, ...]] = ()
    _float64: ClassVar[tuple[str, ...]] = ()
    _hyperparameters: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, class_counts: Optional[CountsLike] = None, *, num_classes: Optional[int] = None, **options: Any
    ) -> None:
        super().__init__()
        if num_classes is None and class_counts is None and not self._per_class:
            self._num_classes = 0  # a loss without per-class statistics: any C (shown as such in repr)
        elif num_classes is None:
            self._register_per_class("class_counts", class_counts)
            self._num_classes = self.class_counts.shape[0]
        else:
            self._num_classes = check_int("num_classes", num_classes, 1)
        self.reduction, self.ignore_index, self.label_smoothing, self.validate_args = check_options(**options)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self._num_classes

    @property
    def options(self) -> CallOptions:
        """The call options, as checked in ``__init__``."""
        return CallOptions(self.reduction, self.ignore_index, self.label_smoothing, self.validate_args)

    def _register_per_class(self, name: str, value: Optional[CountsLike]) -> None:
        """Register ``value`` as the per-class buffer ``name``, checked by its rule in ``_per_class``."""
        none = value is None and name in self._optional
        self.register_buffer(name, None if none else self._checked(name, value, name))

    def _checked(self, name: str, value: Any, label: str) -> Tensor:
        minimum, dtype = self._per_class[name]
        length = getattr(self, "_num_classes", None)
        return as_counts(value, label, num_classes=length, minimum=minimum, dtype=dtype).detach().clone()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Per-class buffers are checked once, here and in __init__, so forward can skip the check that syncs.
        for name in self._per_class:
            key = prefix + name
            if key in state_dict:
                state_dict[key] = self._checked(name, state_dict[key], f"state_dict[{key!r}]")
                if self._buffers.get(name) is None and name in self._optional:
                    self._buffers[name] = torch.empty_like(state_dict[key])
            elif name in self._optional:  # saved without it: load as None
                self._buffers[name] = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> CountsLoss:
        # .half() and .to(dtype) cast every floating-point buffer: keep the float64 statistics, move them only.
        kept = {name: self._buffers[name] for name in self._float64}
        super()._apply(fn, recurse)
        for name, old in kept.items():
            new = self._buffers[name]
            if new is not None and old is not None and new.dtype != old.dtype:
                self._buffers[name] = old.to(device=new.device)
        return self

    def extra_repr(self) -> str:
        """Show the number of classes and the hyperparameters in ``repr``."""
        fields = [f"num_classes={self.num_classes}"] if self.num_classes else []
        values = {name: getattr(self, name) for name in self._hyperparameters}
        fields += [
            f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}" for name, value in values.items()
        ]
        fields += [f"reduction={self.reduction!r}", f"ignore_index={self.ignore_index}"]
        if self.label_smoothing:
            fields.append(f"label_smoothing={self.label_smoothing}")
        return ", ".join(fields)


class WeightedLoss(CountsLoss):
    """A :class:`CountsLoss` with optional per-class loss weights ``class_weights`` (a float64 buffer, or None).

    The weights follow ``.to(device)`` and ``state_dict()``, stay float64 under ``.half()``, may be reassigned
    between epochs (e.g. to :func:`~longtail_losses.drw_weights`) and load with or without them in the checkpoint.
    """

    class_weights: Optional[Tensor]
    _per_class: ClassVar[dict[str, tuple[int, torch.dtype]]] = {
        "class_counts": (1, torch.int64),
        "class_weights": (0, torch.float64),
    }
    _optional = ("class_weights",)
    _float64 = ("class_weights",)

    def __init__(self, class_counts: CountsLike, class_weights: Optional[CountsLike], **options: Any) -> None:
        super().__init__(class_counts, **options)
        self._register_per_class("class_weights", class_weights)

    @property
    def weighted(self) -> bool:
        """Whether ``class_weights`` are set."""
        return self.class_weights is not None


def all_reduce(tensor: Tensor, group: Optional[Any]) -> Tensor:
    """Sum ``tensor`` over the ranks of ``group`` in place when :mod:`torch.distributed` runs with several."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor
