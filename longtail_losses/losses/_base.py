"""The base of every loss module: the ``int64`` counts buffer, the call options and the repr."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from longtail_losses._validation import CountsLike, as_class_counts
from longtail_losses.losses._engine import LossOptions, Unpack, check_options

__all__ = ["CountsLoss", "LossOptions", "Unpack"]


class CountsLoss(nn.Module):
    """Base of the loss modules: the ``int64`` counts buffer, the call options and :meth:`extra_repr`.

    The counts are checked in ``__init__`` and again by ``load_state_dict``; the options are ``reduction``,
    ``ignore_index``, ``label_smoothing`` and ``validate_args``.

    Subclasses list their scalar hyperparameters in ``_hyperparameters`` for :meth:`extra_repr`.
    """

    class_counts: Tensor
    _hyperparameters: tuple[str, ...] = ()

    def __init__(self, class_counts: CountsLike, **options: Unpack[LossOptions]) -> None:
        super().__init__()
        self.register_buffer("class_counts", as_class_counts(class_counts))
        self.reduction, self.ignore_index, self.label_smoothing, self.validate_args = check_options(**options)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.class_counts.shape[0]

    def _options(self) -> dict[str, Any]:
        """The call options of :func:`longtail_losses.losses._engine.mixture_loss`; the counts were checked already."""
        return {
            "reduction": self.reduction,
            "ignore_index": self.ignore_index,
            "label_smoothing": self.label_smoothing,
            "validate_args": self.validate_args,
            "check_counts": False,
        }

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Counts are checked once, here and in __init__, so forward can skip the check that syncs with the device.
        key = prefix + "class_counts"
        if key in state_dict:
            state_dict[key] = as_class_counts(state_dict[key], name=f"state_dict[{key!r}]")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        """Show the number of classes and the hyperparameters in ``repr``."""
        fields = [f"num_classes={self.num_classes}"]
        fields += [f"{name}={getattr(self, name)}" for name in self._hyperparameters]
        fields += [f"reduction={self.reduction!r}", f"ignore_index={self.ignore_index}"]
        if self.label_smoothing:
            fields.append(f"label_smoothing={self.label_smoothing}")
        return ", ".join(fields)
