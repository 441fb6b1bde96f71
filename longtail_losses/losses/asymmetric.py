r"""Asymmetric loss (ASL, Ridnik et al. 2021) for multi-label targets."""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import check_bool, check_int, check_mean_over, check_number
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["AsymmetricLoss", "asymmetric_loss"]


def _check_asl(gamma_neg: object, gamma_pos: object, clip: object, detach: object) -> tuple[float, float, float, bool]:
    return (
        check_number("gamma_neg", gamma_neg, low=0.0),
        check_number("gamma_pos", gamma_pos, low=0.0),
        check_number("clip", clip, low=0.0, high=1.0, strict_high=True, interval=True),
        check_bool("detach_focal_weight", detach),
    )


@fill
def asymmetric_loss(  # noqa: D417 (weight, mean_over and options are the multihot_args fragment)
    logits: Tensor, target: Tensor, *,
    gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05, detach_focal_weight: bool = False,
    weight: Optional[Tensor] = None, mean_over: str = "elements",
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Asymmetric loss :cite:`ridnik2021asl` for multi-hot targets, per element like ``BCEWithLogitsLoss``.

    With :math:`p = \sigma(z)` and the shifted probability :math:`p_m = \max(p - m, 0)` of the negatives
    (``clip`` :math:`m`), eq. (7) of the paper:

    .. math::
        \ell(z, t) = -t\, (1-p)^{\gamma_+} \log p - (1-t)\, p_m^{\gamma_-} \log(1 - p_m).

    A soft label :math:`t \in [0, 1]` gives the expectation of the two terms, each with its own exponent and
    shift. Both terms are the library's one sigmoid focal kernel on signed logits (log-sigmoid form, with the
    shift applied there), finite for any finite logit; ``gamma_neg = gamma_pos = clip = 0`` is exactly
    :func:`~torch.nn.functional.binary_cross_entropy_with_logits`, gradients included.

    ``detach_focal_weight=True`` treats the focusing weights :math:`(1-p)^{\gamma_+}` and :math:`p_m^{\gamma_-}` as
    constants in the gradient, as the official code's ``disable_torch_grad_focal_loss``; the default keeps the
    gradient of the formula above (the paper's gradient analysis).

    **Reduction.** ``'mean'`` averages over the known elements, as ``BCEWithLogitsLoss``; the official code
    *sums* over the batch and the classes (hence the large values its users see early in training), which
    ``reduction='sum'`` gives, and ``mean_over='samples'`` gives the per-sample sum averaged over samples
    (learning-rate scale independent of the batch size, :math:`C` times the element mean). The element mean is
    the default so that the loss is a drop-in for ``BCEWithLogitsLoss`` at its learning rates.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Multi-hot labels in ``[0, 1]`` (soft labels allowed), or ``ignore_index`` where unknown.
        gamma_neg: Focusing exponent :math:`\gamma_- \ge 0` of the negatives.
        gamma_pos: Focusing exponent :math:`\gamma_+ \ge 0` of the positives.
        clip: Probability shift :math:`m \in [0, 1)` of the negatives.
        detach_focal_weight: Stop the gradient through the focusing weights.
        {multihot_args}

    Shape:
        {multihot_shape}

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the shapes disagree, a target value is outside ``[0, 1]`` and not ``ignore_index``, or a
            hyperparameter is out of range.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]])
        >>> target = torch.tensor([[1, 0, 0], [0, 1, 1]])
        >>> asymmetric_loss(logits, target)
        tensor(0.5088)
        >>> torch.nn.functional.binary_cross_entropy_with_logits(logits, target.float())
        tensor(0.8647)
        >>> asymmetric_loss(logits, target, gamma_neg=0, gamma_pos=0, clip=0)
        tensor(0.8647)
    """
    gamma_neg, gamma_pos, clip, detach = _check_asl(gamma_neg, gamma_pos, clip, detach_focal_weight)
    mean_over = check_mean_over(mean_over)
    checked = _engine.check_options(**options)
    ml = _engine.prepare_multihot(logits, target, None, checked, weight=weight)
    per = _engine.multihot_elements(ml, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, detach=detach)
    return _engine.finish_elements(per, ml, checked.reduction, mean_over)


@fill
class AsymmetricLoss(CountsLoss):
    r"""Module form of :func:`asymmetric_loss`: :math:`-t(1-p)^{\gamma_+}\log p - (1-t)p_m^{\gamma_-}\log(1-p_m)`.

    It holds no per-class statistics; ``num_classes``, if given, is checked against the logits.

    Args:
        gamma_neg: Focusing exponent of the negatives. Default: ``4.0``.
        gamma_pos: Focusing exponent of the positives. Default: ``1.0``.
        clip: Probability shift of the negatives, in ``[0, 1)``. Default: ``0.05``.
        detach_focal_weight: Stop the gradient through the focusing weights. Default: ``False``.
        mean_over: ``'elements'`` (default) or ``'samples'``, as for the function.
        num_classes: The number of classes C to expect, or None (the default) for any.
        {module_options}

    Shape:
        {multihot_shape}

    Example:
        >>> criterion = AsymmetricLoss()
        >>> criterion
        AsymmetricLoss(gamma_neg=4.0, gamma_pos=1.0, clip=0.05, detach_focal_weight=False, mean_over='elements',
        reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]]), torch.tensor([[1, 0, 0], [0, 1, 1]]))
        tensor(0.5088)
    """

    _per_class: ClassVar[dict[str, tuple[int, torch.dtype]]] = {}
    _hyperparameters = ("gamma_neg", "gamma_pos", "clip", "detach_focal_weight", "mean_over")

    def __init__(
        self, *,
        gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05, detach_focal_weight: bool = False,
        mean_over: str = "elements", num_classes: Optional[int] = None,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(num_classes=check_int("num_classes", num_classes, 1, optional=True), **options)
        self.gamma_neg, self.gamma_pos, self.clip, self.detach_focal_weight = _check_asl(
            gamma_neg, gamma_pos, clip, detach_focal_weight
        )
        self.mean_over = check_mean_over(mean_over)

    def forward(self, logits: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """Compute the loss; see :func:`asymmetric_loss` (``weight``: per element, or None)."""
        ml = _engine.prepare_multihot(logits, target, self.num_classes or None, self.options, weight=weight)
        per = _engine.multihot_elements(
            ml, gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg, clip=self.clip, detach=self.detach_focal_weight
        )
        return _engine.finish_elements(per, ml, self.reduction, self.mean_over)
