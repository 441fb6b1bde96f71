r"""Vector-scaling (VS) loss (Kini et al., NeurIPS 2021): a multiplicative and an additive logit adjustment.

VS contains CDT (Ye et al. 2020; ``tau=0``) and logit adjustment (Menon et al.; ``gamma=0``) as special cases; with
``gamma=0, tau=1`` it is balanced softmax. It is one parameter choice of the library's softmax term
(:func:`~longtail_losses.losses._kernel.adjusted_logits`: a per-class scale and a per-class shift): no new kernel.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import CountsLike, check_finite
from longtail_losses.losses import _engine
from longtail_losses.losses._base import WeightedLoss
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["VSLoss", "vs_loss"]


def _scale_shift(counts: Tensor, gamma: float, tau: float, dtype: torch.dtype) -> tuple[Tensor, Optional[Tensor]]:
    # Delta_j = (n_j / n_max)^gamma (multiplicative), iota_j = tau * log(n_j / N) (additive).
    n = counts.to(dtype)
    scale = (n / n.max()).pow(gamma)
    shift = tau * (n / n.sum()).log() if tau != 0.0 else None
    return scale, shift


def _vs(
    logits: Tensor, target: Tensor, counts: Tensor, class_weights: Optional[Tensor], options: _engine.CallOptions, *,
    gamma: float, tau: float,
) -> Tensor:  # fmt: skip
    def adjust(n: Tensor, dtype: torch.dtype) -> dict[str, Any]:
        scale, shift = _scale_shift(n, gamma, tau, dtype)
        return {"scale": scale, "shift": shift}

    return _engine.weighted_softmax(logits, target, counts, class_weights, options, adjust)


def vs_loss(
    logits: Tensor, target: Tensor, class_counts: CountsLike, *,
    gamma: float = 0.3, tau: float = 1.0, class_weights: Optional[CountsLike] = None,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Vector-scaling loss :cite:`kini2021vs`: cross-entropy of per-class scaled and shifted logits.

    .. math::
        \ell_{VS}(z, y) = -w_y \log \frac{e^{\Delta_y z_y + \iota_y}}{\sum_{j} e^{\Delta_j z_j + \iota_j}},
        \qquad \Delta_j = \Bigl(\frac{n_j}{n_{\max}}\Bigr)^{\gamma}, \quad
        \iota_j = \tau \log \frac{n_j}{\sum_i n_i},

    with :math:`w` the optional per-class loss weights (``class_weights``; 1 without them), which Kini et al. use
    in some experiments (e.g. with deferred re-weighting, :func:`~longtail_losses.drw_weights`). The
    multiplicative factor :math:`\Delta` is CDT's :cite:`ye2020cdt` (``tau = 0``: the logits divided by
    :math:`(n_{\max}/n_j)^\gamma`), the additive :math:`\iota` is logit adjustment's :cite:`menon2021logit`
    (``gamma = 0``); ``gamma = 0, tau = 1`` is :func:`~longtail_losses.functional.balanced_softmax_loss` and
    ``gamma = tau = 0`` is :func:`~torch.nn.functional.cross_entropy` (with ``weight=class_weights``).

    The defaults ``gamma = 0.3, tau = 1.0`` are those of Kini et al.'s released code (``cifar_train.py``); the
    paper tunes both per data set, and its tables were not checked here. :math:`\Delta` and :math:`\iota` are
    computed as in that code (``x / ((1/n)^gamma / min((1/n)^gamma)) + tau * log(n / N)``). Predict with the raw
    logits :math:`z`.

    **Probability targets** (mixup, cutmix, ``label_smoothing``) give the expected loss over the target
    distribution, :math:`\sum_k t_k\, \ell_{VS}(z, k)`: cross-entropy with probabilities of the adjusted logits.
    **Reduction** follows :func:`~torch.nn.functional.cross_entropy`: with class-index targets and
    ``class_weights``, ``'mean'`` divides by :math:`\sum_n w_{y_n}` over the kept samples (as
    ``F.cross_entropy(weight=...)``, the released code's call); without them, by their number; with probability
    targets, by the number of samples. Half and bfloat16 logits are computed (and returned) in float32.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities of the shape of
            ``logits``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        gamma: Exponent :math:`\gamma` of the multiplicative adjustment, a finite number ``>= 0``.
        tau: Strength :math:`\tau` of the additive adjustment, a finite real number.
        class_weights: Per-class loss weights :math:`w_j \ge 0`, or ``None`` for ones.
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).
        class_weights: :math:`(C)`.
        output: a scalar, or the shape of the class-index target if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``logits`` is not floating point, or ``target`` is neither integer nor floating point.
        ValueError: If the shapes disagree, a count, weight or label is invalid, or ``gamma < 0``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> target = torch.tensor([0, 1])
        >>> vs_loss(logits, target, [90, 10])
        tensor(0.9329)
        >>> vs_loss(logits, target, [90, 10], gamma=0.0, tau=1.0)  # balanced softmax
        tensor(0.7380)
    """
    gamma = check_finite("gamma", gamma, low=0.0)
    tau = check_finite("tau", tau)
    counts, checked = _engine.function_args(logits, class_counts, options)
    class_weights = _engine.class_weights_arg(class_weights, counts.shape[0], checked)
    return _vs(logits, target, counts, class_weights, checked, gamma=gamma, tau=tau)


@fill
class VSLoss(WeightedLoss):
    r"""Module form of :func:`vs_loss`: :math:`w_y\,\mathrm{CE}(\Delta \odot z + \iota, y)`.

    :math:`\Delta_j = (n_j/n_{\max})^\gamma`, :math:`\iota_j = \tau\log(n_j/N)`. The counts are an ``int64`` buffer;
    ``class_weights`` a float64 buffer (or ``None``) that may be reassigned between epochs (e.g. to
    :func:`~longtail_losses.drw_weights`), as for :class:`~longtail_losses.LDAMLoss`.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        gamma: Exponent of the multiplicative adjustment, ``>= 0``. Default: ``0.3`` (Kini et al.'s code).
        tau: Strength of the additive adjustment. Default: ``1.0`` (Kini et al.'s code).
        {weighted_module_options}

    Shape:
        {logits_shape}

    Example:
        >>> criterion = VSLoss([90, 10])
        >>> criterion
        VSLoss(num_classes=2, gamma=0.3, tau=1.0, weighted=False, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.9329)
    """

    _hyperparameters = ("gamma", "tau", "weighted")

    def __init__(
        self, class_counts: CountsLike, *,
        gamma: float = 0.3, tau: float = 1.0, class_weights: Optional[CountsLike] = None,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, class_weights, **options)
        self.gamma = check_finite("gamma", gamma, low=0.0)
        self.tau = check_finite("tau", tau)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`vs_loss`."""
        return _vs(logits, target, self.class_counts, self.class_weights, self.options, gamma=self.gamma, tau=self.tau)
