r"""Class-balanced focal and logit-adjusted binary cross-entropy for multi-hot targets."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import (
    CountsLike,
    check_beta,
    check_finite,
    check_gamma,
    check_mean_over,
    check_num_samples,
)
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = [
    "LogitAdjustedBCE",
    "MultiLabelClassBalancedFocal",
    "logit_adjusted_bce_loss",
    "multilabel_class_balanced_focal_loss",
]


@fill
def multilabel_class_balanced_focal_loss(  # noqa: D417 (weight, mean_over, options: multihot_args)
    logits: Tensor, target: Tensor, class_counts: CountsLike, *,
    beta: float = 0.9999, gamma: float = 1.0,
    weight: Optional[Tensor] = None, mean_over: str = "elements",
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Class-balanced sigmoid focal loss :cite:`cui2019class` for multi-hot targets, weighted per class.

    Every element of class :math:`j` is weighted by the effective-number weight of its class,
    :math:`w_j \propto (1-\beta)/(1-\beta^{n_j})` from the positive count :math:`n_j`, normalised to sum to C
    (:func:`~longtail_losses.functional.class_balanced_weights`):

    .. math::
        \ell_{j}(z, t) = w_j \bigl[t_j\, f_\gamma(z_j) + (1 - t_j)\, f_\gamma(-z_j)\bigr],
        \qquad f_\gamma(s) = -\sigma(-s)^\gamma \log\sigma(s).

    The single-label :func:`~longtail_losses.functional.class_balanced_focal_loss` weights a sample by the
    weight of its one label; with several labels there is no one label, so the weight moves to the class of each
    element (positives and negatives of a class alike). ``beta = 0`` is the sigmoid focal loss and, with
    ``gamma = 0``, ``binary_cross_entropy_with_logits``.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Multi-hot labels in ``[0, 1]`` (soft labels allowed), or ``ignore_index`` where unknown.
        class_counts: Positive training samples per class :math:`n_j`, all ``> 0``.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)`.
        gamma: Focusing exponent :math:`\gamma \ge 0`.
        {multihot_args}

    Shape:
        {multihot_shape}
        class_counts: :math:`(C)`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the shapes disagree, a count is not positive, a target value is invalid or a hyperparameter
            is out of range.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]])
        >>> target = torch.tensor([[1, 0, 0], [0, 1, 1]])
        >>> multilabel_class_balanced_focal_loss(logits, target, [90, 30, 5], beta=0.99)
        tensor(1.3033)
    """
    beta, gamma, mean_over = check_beta(beta), check_gamma(gamma), check_mean_over(mean_over)
    counts, checked = _engine.function_args(logits, class_counts, options)
    return _cb_focal(logits, target, counts, checked, weight, beta=beta, gamma=gamma, mean_over=mean_over)


def _cb_focal(
    logits: Tensor, target: Tensor, counts: Tensor, options: _engine.CallOptions, weight: Optional[Tensor], *,
    beta: float, gamma: float, mean_over: str,
) -> Tensor:  # fmt: skip
    ml = _engine.prepare_multihot(logits, target, counts.shape[0], options, weight=weight)
    z = ml.logits
    w = _engine.derived(  # computed once per counts buffer, as the single-label losses' weights
        counts, "class_balanced", (beta, z.device, z.dtype),
        lambda: _engine.class_balanced_weights(counts.to(z.device), beta, z.dtype),
    )  # fmt: skip
    per = _engine.multihot_elements(ml, class_weights=w, gamma_pos=gamma, gamma_neg=gamma)
    return _engine.finish_elements(per, ml, options.reduction, mean_over)


@fill
class MultiLabelClassBalancedFocal(CountsLoss):
    r"""Module form of :func:`multilabel_class_balanced_focal_loss`: per-class effective-number weights.

    Args:
        class_counts: Positive training samples per class, all ``> 0``.
        beta: Effective-number hyperparameter in ``[0, 1)``. Default: ``0.9999``.
        gamma: Focusing exponent ``>= 0``. Default: ``1.0``.
        {multihot_module_options}

    Shape:
        {multihot_shape}

    Example:
        >>> criterion = MultiLabelClassBalancedFocal([90, 30, 5], beta=0.99)
        >>> criterion(torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]]), torch.tensor([[1, 0, 0], [0, 1, 1]]))
        tensor(1.3033)
    """

    _hyperparameters = ("beta", "gamma", "mean_over")

    def __init__(
        self, class_counts: CountsLike, *,
        beta: float = 0.9999, gamma: float = 1.0, mean_over: str = "elements",
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, **options)
        self.beta, self.gamma, self.mean_over = check_beta(beta), check_gamma(gamma), check_mean_over(mean_over)

    def forward(self, logits: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """Compute the loss; see :func:`multilabel_class_balanced_focal_loss` (``weight``: per element, or None)."""
        counts, options = self.class_counts, self.options
        return _cb_focal(
            logits, target, counts, options, weight, beta=self.beta, gamma=self.gamma, mean_over=self.mean_over
        )


@fill
def logit_adjusted_bce_loss(  # noqa: D417 (weight, mean_over and options are the multihot_args fragment)
    logits: Tensor, target: Tensor, class_counts: CountsLike, num_samples: int, *,
    tau: float = 1.0,
    weight: Optional[Tensor] = None, mean_over: str = "elements",
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Binary cross-entropy of logits shifted by the scaled logit of each class's prior :cite:`menon2021logit`.

    .. math::
        \ell_j(z, t) = \operatorname{BCE}\bigl(z_j + \tau \operatorname{logit}(p_j),\ t_j\bigr),
        \qquad p_j = n_j / N,\quad \operatorname{logit}(p) = \log\frac{p}{1-p},

    the multi-label form of logit adjustment (each class a binary problem with its own prior, so the shift is the
    prior's log-odds, not its log as in the softmax form). At test time use the raw logits :math:`z`: their
    sigmoid estimates the class posterior under a prior of 1/2 per class (for ``tau = 1``), which ranks the
    rare classes fairly. ``tau = 0`` is ``binary_cross_entropy_with_logits``.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Multi-hot labels in ``[0, 1]`` (soft labels allowed), or ``ignore_index`` where unknown.
        class_counts: Positive training samples per class :math:`n_j`, all ``> 0`` and ``< num_samples``.
        num_samples: Training samples :math:`N`.
        tau: Scale :math:`\tau` of the shift, a finite number.
        {multihot_args}

    Shape:
        {multihot_shape}
        class_counts: :math:`(C)`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the shapes disagree, a count is not in ``[1, num_samples)``, a target value is invalid or
            ``tau`` is not finite.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]])
        >>> target = torch.tensor([[1, 0, 0], [0, 1, 1]])
        >>> logit_adjusted_bce_loss(logits, target, [90, 30, 5], 100)
        tensor(1.5137)
    """
    tau, mean_over = check_finite("tau", tau), check_mean_over(mean_over)
    counts, checked = _engine.function_args(logits, class_counts, options)
    n = check_num_samples(num_samples, counts, check_values=checked.check_values)
    return _la_bce(logits, target, counts, n, checked, weight, tau=tau, mean_over=mean_over)


def _la_bce(
    logits: Tensor, target: Tensor, counts: Tensor, num_samples: int, options: _engine.CallOptions,
    weight: Optional[Tensor], *, tau: float, mean_over: str,
) -> Tensor:  # fmt: skip
    ml = _engine.prepare_multihot(logits, target, counts.shape[0], options, weight=weight)
    shift = tau * _engine.prior_logits(counts.to(ml.logits.device), num_samples, ml.logits.dtype)
    return _engine.finish_elements(_engine.multihot_elements(ml, shift=shift), ml, options.reduction, mean_over)


@fill
class LogitAdjustedBCE(CountsLoss):
    r"""Module form of :func:`logit_adjusted_bce_loss`: :math:`\operatorname{BCE}(z + \tau\operatorname{logit}(p), t)`.

    Args:
        class_counts: Positive training samples per class, all ``> 0`` and ``< num_samples``.
        num_samples: Training samples :math:`N`.
        tau: Scale of the shift. Default: ``1.0``.
        {multihot_module_options}

    Shape:
        {multihot_shape}

    Example:
        >>> criterion = LogitAdjustedBCE([90, 30, 5], num_samples=100)
        >>> criterion(torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]]), torch.tensor([[1, 0, 0], [0, 1, 1]]))
        tensor(1.5137)
    """

    _hyperparameters = ("num_samples", "tau", "mean_over")

    def __init__(
        self, class_counts: CountsLike, num_samples: int, *,
        tau: float = 1.0, mean_over: str = "elements",
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, **options)
        self.num_samples = check_num_samples(num_samples, self.class_counts)
        self.tau, self.mean_over = check_finite("tau", tau), check_mean_over(mean_over)

    def forward(self, logits: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """Compute the loss; see :func:`logit_adjusted_bce_loss` (``weight``: per element, or None)."""
        counts, n, options = self.class_counts, self.num_samples, self.options
        return _la_bce(logits, target, counts, n, options, weight, tau=self.tau, mean_over=self.mean_over)
