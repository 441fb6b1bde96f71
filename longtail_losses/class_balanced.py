"""Class-balanced sigmoid focal loss (Cui et al. 2019), as their released code computes it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from longtail_losses._common import CountsLoss, run_loss
from longtail_losses._fused import fused_loss, use_fast_path
from longtail_losses._validation import (
    CountsLike,
    as_class_counts,
    check_beta,
    check_gamma,
)

__all__ = ["ClassBalancedFocal", "class_balanced_focal_loss", "class_balanced_weights"]


def class_balanced_weights(
    class_counts: CountsLike, beta: float = 0.9999, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Class-balanced weights from the effective number of samples :cite:`cui2019class`, eq. (5).

    .. math::
        w_j = C \, \frac{(1-\beta) / (1-\beta^{n_j})}{\sum_{i=1}^{C} (1-\beta) / (1-\beta^{n_i})}

    The raw factor :math:`(1-\beta)/(1-\beta^{n_j})` is the inverse of the effective number of samples
    :math:`E_{n_j} = (1-\beta^{n_j})/(1-\beta)`. As in Cui et al.'s released code the weights are **normalised
    so that they sum to C** (mean 1), so a balanced data set, or ``beta = 0``, gives all ones and the loss keeps
    the scale of its unweighted form. The normalisation cancels :math:`1-\beta`, and
    :math:`1-\beta^{n} = -\operatorname{expm1}(n \log\beta)` is evaluated without cancellation, so
    ``beta = 0.9999`` is accurate in float32.

    Args:
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        beta: Hyperparameter :math:`\beta \in [0, 1)`; ``0`` gives equal weights, ``beta -> 1`` approaches
            inverse class frequency.
        dtype: Floating-point dtype of the result.

    Returns:
        A tensor of shape :math:`(C)` on the device of ``class_counts`` that sums to :math:`C`.

    Raises:
        ValueError: If a count is not a positive whole number or ``beta`` is outside ``[0, 1)``.

    Example:
        >>> class_balanced_weights([100, 10, 1], beta=0.9)
        tensor([0.2393, 0.3674, 2.3932])
        >>> class_balanced_weights([100, 10, 1], beta=0.0)
        tensor([1., 1., 1.])
    """
    beta = check_beta(beta)
    return _class_balanced_weights(as_class_counts(class_counts), beta, dtype)


def _class_balanced_weights(counts: Tensor, beta: float, dtype: torch.dtype) -> Tensor:
    log_beta = math.log(beta) if beta > 0.0 else -math.inf  # in float64, then scaled by n in `dtype`
    inverse = -1.0 / torch.expm1(counts.to(dtype) * log_beta)  # (1 - beta**n)^-1, the (1 - beta) cancels below
    return inverse * (counts.shape[0] / inverse.sum())


def _sigmoid_focal_row_sum(logits: Tensor, target: Tensor, gamma: float) -> Tensor:
    r"""Reference path: :math:`\sum_j -(1-p^t_j)^\gamma \log p^t_j` per row, from log-sigmoid only.

    With the signed logit :math:`s_j = z_j` for the target class and :math:`-z_j` otherwise,
    :math:`\log p^t_j = \log\sigma(s_j)` and :math:`(1-p^t_j)^\gamma = \exp(\gamma \log\sigma(-s_j))`; no ``exp``
    of a positive argument appears, so saturated logits (:math:`|z| = 10^4`) stay finite with finite gradients.
    """
    is_target = F.one_hot(target, logits.shape[1]).bool()
    signed = torch.where(is_target, logits, -logits)
    log_p = F.logsigmoid(signed)
    if gamma == 0.0:
        return -log_p.sum(dim=1)  # exact binary cross-entropy
    return -(torch.exp(gamma * F.logsigmoid(-signed)) * log_p).sum(dim=1)


def _class_balanced_focal_per_sample(
    logits: Tensor, target: Tensor, keep: Tensor, counts: Tensor, beta: float, gamma: float
) -> Tensor:
    """Per-sample class-balanced focal loss; the fused fast path when it applies, else the reference."""
    if not use_fast_path(logits):
        return _reference_class_balanced_focal_per_sample(logits, target, keep, counts, beta, gamma)
    per_sample = fused_loss(
        logits,
        target,
        log_counts=None,
        weights=_class_balanced_weights(counts, beta, logits.dtype),
        alpha=1.0,
        gamma=gamma,
        reference=lambda z: _reference_class_balanced_focal_per_sample(z, target, keep, counts, beta, gamma),
    )
    return torch.where(keep, per_sample, 0.0)


def _reference_class_balanced_focal_per_sample(
    logits: Tensor, target: Tensor, keep: Tensor, counts: Tensor, beta: float, gamma: float
) -> Tensor:
    """Reference path: ``w_y`` times :func:`_sigmoid_focal_row_sum`, zero where ``keep`` is False."""
    weights = _class_balanced_weights(counts, beta, logits.dtype)
    per_sample = weights[target] * _sigmoid_focal_row_sum(logits, target, gamma)
    return torch.where(keep, per_sample, 0.0)


def class_balanced_focal_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    *,
    beta: float = 0.9999,
    gamma: float = 1.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    validate_args: bool = True,
) -> Tensor:
    r"""Class-balanced sigmoid focal loss :cite:`cui2019class`, eq. (6)–(8) of the BWLM paper :cite:`fan2024bwlm`.

    Each class is a binary problem with :math:`p^t_j = \sigma(z_j)` for the target class and
    :math:`1-\sigma(z_j)` for the others; the focal loss :cite:`lin2017focal` is summed over the C classes and
    weighted by the class-balanced weight of the sample's label (:func:`class_balanced_weights`, normalised to
    sum to C):

    .. math::
        \ell_{CB}(z, y) = -w_y \sum_{j=1}^{C} (1-p^t_j)^{\gamma} \log p^t_j,
        \qquad w_y \propto \frac{1-\beta}{1-\beta^{n_y}}.

    This is the sigmoid form of Cui et al.'s released code, the form their CIFAR and ImageNet results used.
    Computed from log-sigmoid only, it stays finite for any finite logits (the released code's
    ``exp(-gamma*y*z - gamma*log(1+exp(-z)))`` overflows in float32 for :math:`z < -89`); ``gamma = 0`` is
    exactly the class-weighted binary cross-entropy with logits, summed over classes.

    Defaults are Cui et al.'s CIFAR setting (``beta=0.9999``, ``gamma=1.0``); their ImageNet setting was
    ``beta=0.999``, ``gamma=0.5``. ``'mean'`` averages the per-sample values over the samples that are not
    ignored (it does not divide by the sum of weights). Half and bfloat16 logits are computed in float32.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)``, or ``ignore_index``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)`.
        gamma: Focusing parameter :math:`\gamma \ge 0`; ``0`` gives weighted binary cross-entropy.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        ignore_index: Label whose samples contribute nothing.
        validate_args: Check tensor values (counts, label range); this synchronises with the device.

    Shape:
        logits: :math:`(N, C)`.
        target: :math:`(N)`.
        class_counts: :math:`(C)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'`` (zero for ignored samples).

    Raises:
        TypeError: If ``logits`` is not floating point or ``target`` is not an integer tensor.
        ValueError: If the shapes disagree, a count or label is invalid, ``beta`` is outside ``[0, 1)`` or
            ``gamma < 0``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> target = torch.tensor([0, 1])
        >>> class_balanced_focal_loss(logits, target, [90, 10], beta=0.99, gamma=1.0)
        tensor(0.4213)
    """
    return _class_balanced_focal(
        logits, target, class_counts, beta, gamma, reduction, ignore_index, validate_args, validate_args
    )


def _class_balanced_focal(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    beta: float,
    gamma: float,
    reduction: str,
    ignore_index: int,
    check_labels: bool,
    check_counts: bool,
) -> Tensor:
    beta, gamma = check_beta(beta), check_gamma(gamma)

    def per_sample(z: Tensor, y: Tensor, keep: Tensor, counts: Tensor) -> Tensor:
        return _class_balanced_focal_per_sample(z, y, keep, counts, beta, gamma)

    return run_loss(per_sample, logits, target, class_counts, reduction, ignore_index, check_labels, check_counts)


class ClassBalancedFocal(CountsLoss):
    r"""Module form of :func:`class_balanced_focal_loss`: :math:`-w_y \sum_j (1-p^t_j)^\gamma \log p^t_j`.

    Defaults follow Cui et al.'s CIFAR setting (``beta=0.9999``, ``gamma=1.0``); for ImageNet they used
    ``beta=0.999``, ``gamma=0.5``. The counts are an ``int64`` buffer that moves with ``.to()`` and is saved in
    ``state_dict()``; the weights are derived from them in float32 on every call.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        beta: Effective-number hyperparameter in ``[0, 1)``. Default: ``0.9999``.
        gamma: Focusing parameter ``>= 0``. Default: ``1.0``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        ignore_index: Label to ignore. Default: ``-100``.
        validate_args: Check the label range on every call (a device sync). Default: ``True``.

    Shape:
        logits: :math:`(N, C)`.
        target: :math:`(N)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Example:
        >>> criterion = ClassBalancedFocal([90, 10], beta=0.99)
        >>> criterion
        ClassBalancedFocal(num_classes=2, beta=0.99, gamma=1.0, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.4213)
    """

    _hyperparameters = ("beta", "gamma")

    def __init__(
        self,
        class_counts: CountsLike,
        *,
        beta: float = 0.9999,
        gamma: float = 1.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        validate_args: bool = True,
    ) -> None:
        super().__init__(class_counts, reduction=reduction, ignore_index=ignore_index, validate_args=validate_args)
        self.beta = check_beta(beta)
        self.gamma = check_gamma(gamma)

    @property
    def weights(self) -> Tensor:
        """The class-balanced weights :math:`w_j` (float32, summing to C)."""
        return _class_balanced_weights(self.class_counts, self.beta, torch.float32)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`class_balanced_focal_loss`."""
        return _class_balanced_focal(
            logits,
            target,
            self.class_counts,
            self.beta,
            self.gamma,
            self.reduction,
            self.ignore_index,
            self.validate_args,
            False,
        )
