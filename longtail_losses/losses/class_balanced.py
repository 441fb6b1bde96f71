"""Class-balanced sigmoid focal loss (Cui et al. 2019), as their released code computes it."""

from __future__ import annotations

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import CountsLike, as_counts, check_beta, check_gamma
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack

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
    return _engine.class_balanced_weights(as_counts(class_counts), check_beta(beta), dtype)


def class_balanced_focal_loss(
    logits: Tensor, target: Tensor, class_counts: CountsLike, *,
    beta: float = 0.9999, gamma: float = 1.0,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
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

    **Probability targets** :math:`t` (mixup, cutmix, and the labels smoothed by ``label_smoothing``) give the
    expected loss over the target distribution, so mixing two targets mixes their losses:

    .. math::
        \ell_{CB}(z, t) = \sum_{k=1}^{C} t_k\, \ell_{CB}(z, k)
        = \sum_{j=1}^{C} \Bigl[(W - t_j w_j)\, f(-z_j) + t_j w_j\, f(z_j)\Bigr],
        \qquad W = \sum_k t_k w_k,

    with :math:`f(s) = -\sigma(-s)^\gamma \log\sigma(s)`; a one-hot :math:`t` gives the class-index loss.

    Defaults are Cui et al.'s CIFAR setting (``beta=0.9999``, ``gamma=1.0``); their ImageNet setting was
    ``beta=0.999``, ``gamma=0.5``. ``'mean'`` averages the per-sample values over the samples that are not
    ignored (it does not divide by the sum of weights). Half and bfloat16 logits are computed in float32.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities of the shape of
            ``logits``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)`.
        gamma: Focusing parameter :math:`\gamma \ge 0`; ``0`` gives weighted binary cross-entropy.
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).
        output: a scalar, or the shape of the class-index target if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``logits`` is not floating point or ``target`` is neither integer nor floating point.
        ValueError: If the shapes disagree, a count or label is invalid, ``beta`` is outside ``[0, 1)`` or
            ``gamma < 0``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> target = torch.tensor([0, 1])
        >>> class_balanced_focal_loss(logits, target, [90, 10], beta=0.99, gamma=1.0)
        tensor(0.4213)
    """
    beta, gamma = check_beta(beta), check_gamma(gamma)
    counts, checked = _engine.function_args(logits, class_counts, options)
    return _engine.mixture_loss(logits, target, counts, checked, alpha=1.0, beta=beta, gamma=gamma, tau=0.0)


@fill
class ClassBalancedFocal(CountsLoss):
    r"""Module form of :func:`class_balanced_focal_loss`: :math:`-w_y \sum_j (1-p^t_j)^\gamma \log p^t_j`.

    Defaults follow Cui et al.'s CIFAR setting (``beta=0.9999``, ``gamma=1.0``); for ImageNet they used
    ``beta=0.999``, ``gamma=0.5``. The counts are an ``int64`` buffer that moves with ``.to()`` and is saved in
    ``state_dict()``; the weights are derived from them in float32 on every call.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        beta: Effective-number hyperparameter in ``[0, 1)``. Default: ``0.9999``.
        gamma: Focusing parameter ``>= 0``. Default: ``1.0``.
        {module_options}

    Shape:
        {logits_shape}

    Example:
        >>> criterion = ClassBalancedFocal([90, 10], beta=0.99)
        >>> criterion
        ClassBalancedFocal(num_classes=2, beta=0.99, gamma=1.0, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.4213)
    """

    _hyperparameters = ("beta", "gamma")

    def __init__(
        self, class_counts: CountsLike, *,
        beta: float = 0.9999, gamma: float = 1.0,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, **options)
        self.beta = check_beta(beta)
        self.gamma = check_gamma(gamma)

    @property
    def weights(self) -> Tensor:
        """The class-balanced weights :math:`w_j` (float32, summing to C)."""
        return _engine.class_balanced_weights(self.class_counts, self.beta, torch.float32)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`class_balanced_focal_loss`."""
        counts, options = self.class_counts, self.options
        return _engine.mixture_loss(
            logits, target, counts, options, alpha=1.0, beta=self.beta, gamma=self.gamma, tau=0.0
        )
