r"""Distribution-balanced loss (Wu et al. 2020) for multi-label long-tailed targets."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import (
    CountsLike,
    check_bool,
    check_gamma,
    check_mean_over,
    check_num_samples,
    check_number,
)
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["DistributionBalancedLoss", "distribution_balanced_loss", "rebalanced_weights"]


def _check_db(
    alpha: object, beta: object, mu: object, gamma: object, lambda_: object, kappa: object, rebalance: object
) -> dict[str, Any]:
    return {
        "alpha": check_number("alpha", alpha, low=0.0),
        "beta": check_number("beta", beta, low=0.0),
        "mu": check_number("mu", mu),
        "gamma": check_gamma(gamma),
        "lambda_": check_number("lambda_", lambda_, low=0.0, strict_low=True),
        "kappa": check_number("kappa", kappa),
        "rebalance": check_bool("rebalance", rebalance),
    }


def rebalanced_weights(target: Tensor, class_counts: Tensor, *, alpha: float, beta: float, mu: float) -> Tensor:
    r"""The smoothed re-balancing weights :math:`\hat r^k_i = \alpha + \sigma(\beta (r^k_i - \mu))` per element.

    :math:`r^k_i = n_i^{-1} / \sum_j t^k_j n_j^{-1}` (a sample without a positive gets the limit
    :math:`r = \infty`, :math:`\hat r = \alpha + 1`, as the reference code). ``target`` (M, C) in ``[0, 1]`` (no
    gradient), ``class_counts`` (C,) checked counts; float in the dtype of ``target``.
    """
    inverse = 1.0 / class_counts.to(target.dtype)
    repeat = (target.detach() * inverse).sum(dim=1, keepdim=True)
    has_positive = repeat > 0
    r = inverse / torch.where(has_positive, repeat, 1.0)
    limit = 1.0 if beta > 0.0 else 0.5  # sigma(beta * inf)
    return alpha + torch.where(has_positive, torch.sigmoid(beta * (r - mu)), limit)


def _db(ml: _engine.MultiHot, counts: Tensor, num_samples: int, p: dict[str, Any]) -> Tensor:
    z = ml.logits
    shift = None
    if p["kappa"] > 0.0:
        shift = (p["kappa"] / p["lambda_"]) * _engine.prior_logits(counts, num_samples, z.dtype)
    weights = None
    if p["rebalance"]:
        weights = rebalanced_weights(ml.target, counts, alpha=p["alpha"], beta=p["beta"], mu=p["mu"])
    return _engine.multihot_elements(
        ml, shift=shift, class_weights=weights, gamma_pos=p["gamma"], gamma_neg=p["gamma"], neg_scale=p["lambda_"]
    )


@fill
def distribution_balanced_loss(  # noqa: D417 (weight, mean_over and options are the multihot_args fragment)
    logits: Tensor, target: Tensor, class_counts: CountsLike, num_samples: int, *,
    alpha: float = 0.1, beta: float = 10.0, mu: float = 0.2, gamma: float = 2.0,
    lambda_: float = 2.0, kappa: float = 0.05, rebalance: bool = True,
    weight: Optional[Tensor] = None, mean_over: str = "elements",
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Distribution-balanced loss :cite:`wu2020distribution` (DB-Focal) for multi-hot targets, per element.

    **Re-balanced weighting.** A sample :math:`k` is drawn :math:`P^I_k = \frac1C \sum_{j} t^k_j / n_j` times as
    often by class-aware sampling as by instance sampling relative to class :math:`i`'s
    :math:`P^C_i = \frac1C\, n_i^{-1}`; the ratio :math:`r^k_i = P^C_i / P^I_k` is smoothed by
    :math:`\hat r^k_i = \alpha + \sigma(\beta (r^k_i - \mu))` (:func:`rebalanced_weights`).

    **Negative-tolerant regularisation** with scale :math:`\lambda` and the class-specific bias
    :math:`\nu_i = \frac{\kappa}{\lambda} \operatorname{logit}(p_i)`, :math:`p_i = n_i / N`:

    .. math::
        \ell^k_i = \hat r^k_i \Bigl[t^k_i\, f_\gamma(z_i + \nu_i)
        + (1 - t^k_i)\, \tfrac{1}{\lambda} f_\gamma\bigl(-\lambda (z_i + \nu_i)\bigr)\Bigr],
        \qquad f_\gamma(s) = -\sigma(-s)^\gamma \log\sigma(s),

    the focal term of the library (``gamma = 0``: binary cross-entropy).

    **Decisions where the paper and the reference code disagree** (both written down so that either can be
    had): (1) *the bias*: the paper writes :math:`z - \nu` with :math:`\nu = \kappa\, b`,
    :math:`b = -\log(1/p - 1) = \operatorname{logit}(p)`; the reference code (its fixed version, the one
    every port copies) adds :math:`\frac{\kappa}{\lambda}\operatorname{logit}(p)`. This function follows the
    code, whose configurations produced the paper's results: the loss sees the logits shifted *towards* the prior
    (a rare class's logit lowered), so the trained logits of rare classes are raised, as logit adjustment does.
    The paper's form is ``kappa`` :math:`= -\lambda \kappa_\text{paper}` (``kappa`` may be negative). (2) *Which
    elements are weighted*: :math:`\hat r^k_i` is defined for every class :math:`i` by the formula, and the
    reference code weights every element, positives and negatives, as here; the alternative reading (weights on
    the positives only, negatives weighted 1) is a ``weight`` of :math:`t \hat r + (1 - t)` with
    ``rebalance=False``. The code's extra constant factor (``balance_param = 2``) is left out. Defaults are the
    reference code's DB-Focal configuration (``alpha=0.1, beta=10, mu=0.2, gamma=2, lambda_=2, kappa=0.05``).

    ``rebalance=False`` sets :math:`\hat r = 1`; ``kappa=0, lambda_=1`` switch the regularisation off; with both
    the loss is the sigmoid focal loss (``gamma = 0``: ``binary_cross_entropy_with_logits``).

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Multi-hot labels in ``[0, 1]`` (soft labels allowed), or ``ignore_index`` where unknown.
        class_counts: Positive training samples per class :math:`n_i` (:func:`~longtail_losses.data.multilabel_counts`),
            all ``> 0`` and ``< num_samples``.
        num_samples: Training samples :math:`N`.
        alpha: Floor :math:`\alpha \ge 0` of the smoothed weights.
        beta: Steepness :math:`\beta \ge 0` of the smoothing map.
        mu: Centre :math:`\mu` of the smoothing map.
        gamma: Focusing exponent :math:`\gamma \ge 0`.
        lambda_: Scale :math:`\lambda > 0` of the negatives' logits.
        kappa: Scale :math:`\kappa` of the class-specific bias (the reference code's sign; see above).
        rebalance: Apply the re-balanced weights.
        {multihot_args}

    Shape:
        {multihot_shape}
        class_counts: :math:`(C)`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the shapes disagree, a count is not in ``[1, num_samples)``, a target value is invalid or a
            hyperparameter is out of range.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]])
        >>> target = torch.tensor([[1, 0, 0], [0, 1, 1]])
        >>> distribution_balanced_loss(logits, target, [90, 30, 5], 100)
        tensor(0.5410)
    """
    params = _check_db(alpha, beta, mu, gamma, lambda_, kappa, rebalance)
    mean_over = check_mean_over(mean_over)
    counts, checked = _engine.function_args(logits, class_counts, options)
    n = check_num_samples(num_samples, counts, check_values=checked.check_values)
    ml = _engine.prepare_multihot(logits, target, counts.shape[0], checked, weight=weight)
    return _engine.finish_elements(_db(ml, counts, n, params), ml, checked.reduction, mean_over)


@fill
class DistributionBalancedLoss(CountsLoss):
    r"""Module form of :func:`distribution_balanced_loss` (DB-Focal): re-balanced weights and NTR.

    Args:
        class_counts: Positive training samples per class, all ``> 0`` and ``< num_samples``.
        num_samples: Training samples :math:`N`.
        alpha: Floor of the smoothed weights. Default: ``0.1``.
        beta: Steepness of the smoothing map. Default: ``10.0``.
        mu: Centre of the smoothing map. Default: ``0.2``.
        gamma: Focusing exponent. Default: ``2.0``.
        lambda_: Scale of the negatives' logits. Default: ``2.0``.
        kappa: Scale of the class-specific bias. Default: ``0.05``.
        rebalance: Apply the re-balanced weights. Default: ``True``.
        {multihot_module_options}

    Shape:
        {multihot_shape}

    Example:
        >>> criterion = DistributionBalancedLoss([90, 30, 5], num_samples=100)
        >>> criterion(torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]]), torch.tensor([[1, 0, 0], [0, 1, 1]]))
        tensor(0.5410)
    """

    _hyperparameters = ("num_samples", "alpha", "beta", "mu", "gamma", "lambda_", "kappa", "rebalance", "mean_over")

    def __init__(
        self, class_counts: CountsLike, num_samples: int, *,
        alpha: float = 0.1, beta: float = 10.0, mu: float = 0.2, gamma: float = 2.0,
        lambda_: float = 2.0, kappa: float = 0.05, rebalance: bool = True, mean_over: str = "elements",
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, **options)
        self.num_samples = check_num_samples(num_samples, self.class_counts)
        params = _check_db(alpha, beta, mu, gamma, lambda_, kappa, rebalance)
        self.alpha, self.beta, self.mu, self.gamma = params["alpha"], params["beta"], params["mu"], params["gamma"]
        self.lambda_, self.kappa, self.rebalance = params["lambda_"], params["kappa"], params["rebalance"]
        self.mean_over = check_mean_over(mean_over)

    def forward(self, logits: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """Compute the loss; see :func:`distribution_balanced_loss` (``weight``: per element, or None)."""
        ml = _engine.prepare_multihot(logits, target, self.num_classes, self.options, weight=weight)
        params = {
            name: getattr(self, name) for name in ("alpha", "beta", "mu", "gamma", "lambda_", "kappa", "rebalance")
        }
        per = _db(ml, self.class_counts.to(ml.logits.device), self.num_samples, params)
        return _engine.finish_elements(per, ml, self.reduction, self.mean_over)
