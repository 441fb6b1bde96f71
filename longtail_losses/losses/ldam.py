r"""LDAM loss and deferred re-weighting (Cao et al., NeurIPS 2019).

The label-distribution-aware margin loss subtracts a per-class margin :math:`m_j \propto n_j^{-1/4}` from the
target logit before a scaled cross-entropy; DRW trains with it unweighted, then switches to class-balanced
weights late in training (:func:`drw_weights`). Everything here runs on any device; nothing assumes CUDA.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import CountsLike, as_counts, check_beta, check_finite
from longtail_losses.losses import _engine
from longtail_losses.losses._base import WeightedLoss
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["LDAMLoss", "drw_weights", "ldam_loss", "ldam_margins"]


def _margins(counts: Tensor, max_margin: float, dtype: torch.dtype) -> Tensor:
    # m_j = max_margin * (min n / n_j)^(1/4): the largest margin, of the rarest class, is max_margin.
    n = counts.to(dtype)
    return max_margin * (n.min() / n).pow(0.25)


def ldam_margins(class_counts: CountsLike, max_margin: float = 0.5, *, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The per-class margins of LDAM :cite:`cao2019ldam` (:math:`\Delta_j`, section 3): :math:`m_j \propto n_j^{-1/4}`.

    .. math::
        m_j = \frac{C}{n_j^{1/4}}, \qquad C \text{ chosen so that } \max_j m_j = m_{\max},
        \quad\text{i.e.}\quad m_j = m_{\max} \Bigl(\frac{\min_i n_i}{n_j}\Bigr)^{1/4},

    as in Cao et al.'s released code (``m_list * (max_m / max(m_list))``).

    Args:
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        max_margin: The margin :math:`m_{\max} \ge 0` of the rarest class.
        dtype: Floating-point dtype of the result.

    Returns:
        A tensor of shape :math:`(C)` on the device of ``class_counts``.

    Raises:
        ValueError: If a count is invalid or ``max_margin`` is negative or not finite.

    Example:
        >>> ldam_margins([10000, 100, 1], max_margin=0.5)
        tensor([0.0500, 0.1581, 0.5000])
    """
    return _margins(as_counts(class_counts), check_finite("max_margin", max_margin, low=0.0), dtype)


def drw_weights(
    class_counts: CountsLike, epoch: int, start_epoch: int, *,
    beta: float = 0.9999, dtype: torch.dtype = torch.float32,
) -> Tensor:  # fmt: skip
    r"""Deferred re-weighting (DRW) :cite:`cao2019ldam`, Algorithm 1: the class weights of epoch ``epoch``.

    Before ``start_epoch``, every weight is 1 (plain empirical risk); from ``start_epoch`` on, the
    class-balanced weights of Cui et al. :cite:`cui2019class`,
    :math:`w_j \propto (1-\beta)/(1-\beta^{n_j})`, normalised to sum to :math:`C` (as in Cao et al.'s code, which
    uses ``beta = 0.9999`` and ``start_epoch = 160`` of 200 on CIFAR). Pass them as ``class_weights`` of
    :func:`ldam_loss`, or assign them to the ``class_weights`` of :class:`LDAMLoss` at the start of every epoch.

    Args:
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        epoch: The current epoch, counted from 0.
        start_epoch: The first re-weighted epoch, ``>= 0``.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)`.
        dtype: Floating-point dtype of the result.

    Returns:
        A tensor of shape :math:`(C)` on the device of ``class_counts`` that sums to :math:`C`.

    Raises:
        TypeError: If ``epoch`` or ``start_epoch`` is not an int.
        ValueError: If a count is invalid, ``epoch`` or ``start_epoch`` is negative, or ``beta`` is outside
            ``[0, 1)``.

    Example:
        >>> drw_weights([100, 10, 1], epoch=0, start_epoch=2, beta=0.9)
        tensor([1., 1., 1.])
        >>> drw_weights([100, 10, 1], epoch=2, start_epoch=2, beta=0.9)
        tensor([0.2393, 0.3674, 2.3932])
    """
    for name, value in (("epoch", epoch), ("start_epoch", start_epoch)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Expected `{name}` to be an int, but got {value!r}")
        if value < 0:
            raise ValueError(f"Expected `{name}` to be >= 0, but got {value}")
    counts = as_counts(class_counts)
    beta = check_beta(beta)
    if epoch < start_epoch:
        return torch.ones(counts.shape[0], dtype=dtype, device=counts.device)
    return _engine.class_balanced_weights(counts, beta, dtype)


def _ldam(
    logits: Tensor, target: Tensor, counts: Tensor, class_weights: Optional[Tensor], options: _engine.CallOptions, *,
    max_margin: float, scale: float,
) -> Tensor:  # fmt: skip
    def adjust(n: Tensor, dtype: torch.dtype) -> dict[str, Any]:
        return {"scale": scale, "margin": _margins(n, max_margin, dtype)}

    return _engine.weighted_softmax(logits, target, counts, class_weights, options, adjust)


def ldam_loss(
    logits: Tensor, target: Tensor, class_counts: CountsLike, *,
    max_margin: float = 0.5, scale: float = 30.0, class_weights: Optional[CountsLike] = None,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Label-distribution-aware margin (LDAM) loss :cite:`cao2019ldam`, eq. (13).

    The target logit loses a margin that grows as the class gets rarer (:func:`ldam_margins`), and the
    cross-entropy runs on the logits scaled by :math:`s`:

    .. math::
        \ell_{LDAM}(z, y) = -w_y \log \frac{e^{s (z_y - m_y)}}{e^{s (z_y - m_y)} + \sum_{j \ne y} e^{s z_j}}
        = w_y\, \mathrm{CE}\bigl(s\,(z - m_y e_y),\, y\bigr),
        \qquad m_j = m_{\max} \Bigl(\frac{\min_i n_i}{n_j}\Bigr)^{1/4},

    with :math:`w` the optional class weights (``class_weights``; 1 without it), e.g. those of deferred re-weighting,
    :func:`drw_weights`. Cao et al. use it with a cosine classifier (normalised features and weights, so
    :math:`z_j \in [-1, 1]`) and :math:`s = 30`, :math:`m_{\max} = 0.5`; the raw logits of a linear layer need a
    smaller ``scale``. With ``max_margin=0`` and ``scale=1`` it is exactly
    ``F.cross_entropy(logits, target, weight=class_weights, ...)``.

    **Probability targets** :math:`t` (mixup, cutmix, and labels smoothed by ``label_smoothing``) give the
    expected loss over the target distribution, :math:`\sum_k t_k\, \ell_{LDAM}(z, k)`, each class with its own
    margin; a one-hot :math:`t` gives the class-index loss, and without margins this is
    :func:`~torch.nn.functional.cross_entropy` with probabilities (and ``weight=class_weights``).

    **Reduction** follows :func:`~torch.nn.functional.cross_entropy`: with class-index targets and ``class_weights``,
    ``'mean'`` divides the sum by :math:`\sum_n w_{y_n}` over the samples that are not ignored (with or without
    label smoothing); without them, by their number; with probability targets, by the number of samples.
    Half and bfloat16 logits are computed (and returned) in float32.

    Args:
        logits: Class scores :math:`z` (cosine similarities in Cao et al.'s setting).
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities of the shape of
            ``logits``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        max_margin: The margin :math:`m_{\max} \ge 0` of the rarest class.
        scale: The scale :math:`s > 0` of the logits.
        class_weights: Per-class loss weights :math:`w_j \ge 0`, or ``None`` for ones.
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).
        class_weights: :math:`(C)`.
        output: a scalar, or the shape of the class-index target if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``logits`` is not floating point, or ``target`` is neither integer nor
            floating point.
        ValueError: If the shapes disagree, a count or label is invalid, ``max_margin < 0`` or ``scale <= 0``.

    Example:
        >>> logits = torch.tensor([[0.8, 0.1], [0.2, 0.5]])
        >>> target = torch.tensor([0, 1])
        >>> ldam_loss(logits, target, [90, 10])
        tensor(3.0012)
        >>> ldam_loss(logits, target, [90, 10], class_weights=drw_weights([90, 10], epoch=5, start_epoch=3))
        tensor(5.4001)
    """
    max_margin = check_finite("max_margin", max_margin, low=0.0)
    scale = check_finite("scale", scale, low=0.0, strict=True)
    counts, checked = _engine.function_args(logits, class_counts, options)
    class_weights = _engine.class_weights_arg(class_weights, counts.shape[0], checked)
    return _ldam(logits, target, counts, class_weights, checked, max_margin=max_margin, scale=scale)


@fill
class LDAMLoss(WeightedLoss):
    r"""Module form of :func:`ldam_loss`: :math:`w_y\,\mathrm{CE}(s\,(z - m_y e_y), y)`, :math:`m_j \propto n_j^{-1/4}`.

    The counts are an ``int64`` buffer; ``class_weights`` is a float64 buffer (or ``None``), so both follow
    ``.to()`` and ``state_dict()``. For LDAM-DRW assign the deferred weights at the start of every epoch::

        criterion = LDAMLoss(counts)
        for epoch in range(200):
            criterion.class_weights = drw_weights(counts, epoch, start_epoch=160).to(device)
            ...

    A ``state_dict`` saved with class weights loads into a module built without them, and one saved without
    them into a module built with them (which then has none); both are checked on loading.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        max_margin: Margin of the rarest class, ``>= 0``. Default: ``0.5``.
        scale: Scale of the logits, ``> 0``. Default: ``30.0``.
        {weighted_module_options}

    Shape:
        {logits_shape}

    Example:
        >>> criterion = LDAMLoss([90, 10])
        >>> criterion
        LDAMLoss(num_classes=2, max_margin=0.5, scale=30.0, weighted=False, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[0.8, 0.1], [0.2, 0.5]]), torch.tensor([0, 1]))
        tensor(3.0012)
    """

    _hyperparameters = ("max_margin", "scale", "weighted")

    def __init__(
        self, class_counts: CountsLike, *,
        max_margin: float = 0.5, scale: float = 30.0, class_weights: Optional[CountsLike] = None,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, class_weights, **options)
        self.max_margin = check_finite("max_margin", max_margin, low=0.0)
        self.scale = check_finite("scale", scale, low=0.0, strict=True)

    @property
    def margins(self) -> Tensor:
        """The margins :math:`m_j` (float32, on the device of the counts)."""
        return _margins(self.class_counts, self.max_margin, torch.float32)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`ldam_loss`."""
        hyper = {"max_margin": self.max_margin, "scale": self.scale}
        return _ldam(logits, target, self.class_counts, self.class_weights, self.options, **hyper)
