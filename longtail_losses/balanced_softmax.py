"""Balanced softmax (Ren et al. 2020): cross-entropy on logits shifted by the log class prior."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from longtail_losses import _fused
from longtail_losses._common import CountsLoss, check_inputs, run_loss
from longtail_losses._fused import fused_loss, use_fast_path
from longtail_losses._validation import CountsLike

__all__ = ["BalancedSoftmax", "balanced_softmax_loss"]


def _balanced_softmax_per_sample(logits: Tensor, target: Tensor, keep: Tensor, class_counts: Tensor) -> Tensor:
    """Per-sample balanced softmax on prepared inputs; zero where ``keep`` is False.

    Dispatches to the fused fast path (:mod:`longtail_losses._fused`) when it applies, else to
    :func:`_reference_balanced_softmax_per_sample`, which defines the values.
    """
    if not use_fast_path(logits):
        return _reference_balanced_softmax_per_sample(logits, target, keep, class_counts)
    per_sample = fused_loss(
        logits,
        target,
        log_counts=class_counts.to(logits.dtype).log(),
        weights=None,
        alpha=0.0,
        gamma=0.0,
        reference=lambda z: _reference_balanced_softmax_per_sample(z, target, keep, class_counts),
    )
    return torch.where(keep, per_sample, 0.0)


def _reference_balanced_softmax_per_sample(
    logits: Tensor, target: Tensor, keep: Tensor, class_counts: Tensor
) -> Tensor:
    """Reference path: ``F.cross_entropy`` of the shifted logits, zero where ``keep`` is False."""
    shifted = logits + class_counts.to(logits.dtype).log()
    per_sample = F.cross_entropy(shifted, target, reduction="none")
    return torch.where(keep, per_sample, 0.0)


def balanced_softmax_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    *,
    reduction: str = "mean",
    ignore_index: int = -100,
    validate_args: bool = True,
) -> Tensor:
    r"""Balanced softmax loss :cite:`ren2020balanced`, eq. (9)–(10) of the BWLM paper :cite:`fan2024bwlm`.

    The softmax is reweighted by the training prior of each class,

    .. math::
        \phi_j = \frac{n_j e^{z_j}}{\sum_{i=1}^{C} n_i e^{z_i}}, \qquad
        \ell_{BS}(z, y) = -\log \phi_y = -\log \frac{n_y e^{z_y}}{\sum_{i=1}^{C} n_i e^{z_i}},

    which is the cross-entropy of the shifted logits :math:`z_j + \log n_j`. The shift is a training-time
    correction only: evaluate and predict with the raw logits :math:`z`.

    With equal counts it is exactly :func:`~torch.nn.functional.cross_entropy`; multiplying every count by the
    same factor, or adding a constant to a row of logits, leaves it unchanged.

    Half and bfloat16 logits are computed (and returned) in float32; float64 stays float64.
    ``'mean'`` divides the sum by the number of samples whose label is not ``ignore_index``, as
    :func:`~torch.nn.functional.cross_entropy` does (``nan`` if every sample is ignored).

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)``, or ``ignore_index``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0`` (a sequence, array or tensor).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        ignore_index: Label whose samples contribute nothing (and are not counted by ``'mean'``).
        validate_args: Check tensor values: counts positive, labels in range. This synchronises with the device;
            pass ``False`` in a hot loop once the inputs are known to be valid.

    Shape:
        logits: :math:`(N, C)`.
        target: :math:`(N)`.
        class_counts: :math:`(C)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'`` (zero for ignored samples).

    Raises:
        TypeError: If ``logits`` is not floating point or ``target`` is not an integer tensor.
        ValueError: If the shapes disagree, a count is not a positive whole number, a label is out of range, or
            ``reduction`` is unknown.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> target = torch.tensor([0, 1])
        >>> balanced_softmax_loss(logits, target, torch.tensor([90, 10]))
        tensor(0.7380)
        >>> balanced_softmax_loss(logits, target, torch.tensor([50, 50]))  # equal counts: plain cross-entropy
        tensor(0.2201)
    """
    return _balanced_softmax(logits, target, class_counts, reduction, ignore_index, validate_args, validate_args)


def _balanced_softmax(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    reduction: str,
    ignore_index: int,
    check_labels: bool,
    check_counts: bool,
) -> Tensor:
    if isinstance(logits, Tensor) and logits.numel() < _fused.BALANCED_SOFTMAX_MIN_ELEMENTS:
        # Small inputs: the fused kernel's fixed cost does not pay off, and F.cross_entropy of the shifted logits
        # has the fewest ops. It applies the same ignore_index and reduction rules as the other path.
        z, counts = check_inputs(
            logits,
            target,
            class_counts,
            reduction=reduction,
            ignore_index=ignore_index,
            check_labels=check_labels,
            check_counts=check_counts,
        )
        shifted = z + counts.to(z.dtype).log()
        return F.cross_entropy(shifted, target.long(), ignore_index=ignore_index, reduction=reduction)
    return run_loss(
        _balanced_softmax_per_sample,
        logits,
        target,
        class_counts,
        reduction,
        ignore_index,
        check_labels,
        check_counts,
    )


class BalancedSoftmax(CountsLoss):
    r"""Module form of :func:`balanced_softmax_loss`: cross-entropy of :math:`z + \log n`.

    A drop-in replacement for :class:`~torch.nn.CrossEntropyLoss` when the training set is long-tailed.
    The counts are kept as an ``int64`` buffer, so ``.to()``, ``.cuda()``, ``state_dict()`` and ``deepcopy``
    carry them and ``.half()`` cannot round them.

    Args:
        class_counts: Training samples per class, all ``> 0`` (a sequence, NumPy array or tensor).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        ignore_index: Label to ignore. Default: ``-100``.
        validate_args: Check the label range on every call (a device sync). Default: ``True``.

    Shape:
        logits: :math:`(N, C)`.
        target: :math:`(N)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Example:
        >>> criterion = BalancedSoftmax([90, 10])
        >>> criterion
        BalancedSoftmax(num_classes=2, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.7380)
    """

    def __init__(
        self,
        class_counts: CountsLike,
        *,
        reduction: str = "mean",
        ignore_index: int = -100,
        validate_args: bool = True,
    ) -> None:
        super().__init__(class_counts, reduction=reduction, ignore_index=ignore_index, validate_args=validate_args)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`balanced_softmax_loss`."""
        return _balanced_softmax(
            logits, target, self.class_counts, self.reduction, self.ignore_index, self.validate_args, False
        )
