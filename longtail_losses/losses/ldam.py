r"""LDAM loss and deferred re-weighting (Cao et al., NeurIPS 2019).

The label-distribution-aware margin loss subtracts a per-class margin :math:`m_j \propto n_j^{-1/4}` from the
target logit before a scaled cross-entropy; DRW trains with it unweighted, then switches to class-balanced
weights late in training (:func:`drw_weights`). Everything here runs on any device; nothing assumes CUDA.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import CountsLike, as_class_counts, check_beta, check_finite
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["LDAMLoss", "drw_weights", "ldam_loss", "ldam_margins"]


def check_class_weight(weight: object, num_classes: int) -> Optional[Tensor]:
    """Return ``weight`` if it is ``None`` or a floating-point tensor of shape ``(C,)`` (metadata only)."""
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise TypeError(f"Expected `weight` to be None or a torch.Tensor, but got {type(weight).__name__}")
    if not weight.dtype.is_floating_point:
        raise TypeError(f"Expected `weight` to be a floating-point tensor, but got dtype {weight.dtype}")
    if weight.shape != (num_classes,):
        raise ValueError(
            f"Expected `weight` to have shape ({num_classes},), one weight per class, but got {tuple(weight.shape)}"
        )
    return weight


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
    return _margins(as_class_counts(class_counts), check_finite("max_margin", max_margin, low=0.0), dtype)


def drw_weights(
    class_counts: CountsLike,
    epoch: int,
    start_epoch: int,
    *,
    beta: float = 0.9999,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Deferred re-weighting (DRW) :cite:`cao2019ldam`, Algorithm 1: the class weights of epoch ``epoch``.

    Before ``start_epoch``, every weight is 1 (plain empirical risk); from ``start_epoch`` on, the
    class-balanced weights of Cui et al. :cite:`cui2019class`,
    :math:`w_j \propto (1-\beta)/(1-\beta^{n_j})`, normalised to sum to :math:`C` (as in Cao et al.'s code, which
    uses ``beta = 0.9999`` and ``start_epoch = 160`` of 200 on CIFAR). Pass them as ``weight`` of
    :func:`ldam_loss`, or assign them to the ``weight`` of :class:`LDAMLoss` at the start of every epoch.

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
    counts = as_class_counts(class_counts)
    beta = check_beta(beta)
    if epoch < start_epoch:
        return torch.ones(counts.shape[0], dtype=dtype, device=counts.device)
    return _engine.class_balanced_weights(counts, beta, dtype)


def _leave_one_out_logsumexp(a: Tensor) -> Tensor:
    r"""(M, C) -> (M, C): :math:`\log \sum_{j \ne k} e^{a_j}` for every k, without cancellation.

    Off the row maximum, :math:`\sum_j e^{a_j - \max} - e^{a_k - \max} \ge 1`, so the subtraction is exact to a
    few ulps; at the maximum the sum is taken over the other entries directly.
    """
    top, arg = a.detach().max(dim=1, keepdim=True)
    is_top = torch.arange(a.shape[1], device=a.device) == arg
    shifted = torch.exp(a - top)
    rest = torch.where(is_top, 1.0, shifted.sum(dim=1, keepdim=True) - shifted)
    at_top = torch.logsumexp(a.masked_fill(is_top, -math.inf), dim=1, keepdim=True)
    return torch.where(is_top, at_top, top + rest.log())


def _ldam_per_row(rows: _engine.Rows, *, margins: Tensor, scale: float, weight: Optional[Tensor]) -> Tensor:
    """Per row: ``w_y * CE(scale * (z - m_y e_y), y)``, or its expectation over a target distribution."""
    z = rows.logits
    if rows.probs is None:
        assert rows.labels is not None
        is_target = torch.arange(z.shape[1], device=z.device) == rows.labels.unsqueeze(1)
        shifted = scale * torch.where(is_target, z - margins[rows.labels].unsqueeze(1), z)
        row = F.cross_entropy(shifted, rows.labels, reduction="none")
        return row if weight is None else weight[rows.labels] * row
    if z.shape[1] == 1:  # one class: every loss is 0
        return (z * rows.probs).sum(dim=1) * 0.0
    # loss(z, k) = softplus(log sum_{j != k} e^{s z_j} - s (z_k - m_k)); the expectation sum_k t_k w_k loss(z, k).
    a = scale * z
    per_class = F.softplus(_leave_one_out_logsumexp(a) - (a - scale * margins))
    u = rows.probs if weight is None else rows.probs * weight
    return (u * per_class).sum(dim=1)


def _ldam(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    *,
    max_margin: float,
    scale: float,
    weight: Optional[Tensor],
    check_counts: bool = True,
    **options: Unpack[LossOptions],
) -> Tensor:
    opts = _engine.check_options(**options)
    reduction = opts.reduction
    rows = _engine.prepare(logits, target, class_counts, opts, check_counts=check_counts)
    z = rows.logits
    weight = check_class_weight(weight, z.shape[1])
    w = None if weight is None else weight.to(device=z.device, dtype=z.dtype)
    per_row = _ldam_per_row(rows, margins=_margins(rows.counts, max_margin, z.dtype), scale=scale, weight=w)
    if w is None or reduction != "mean" or rows.keep is None:
        return _engine.finish(per_row, rows, reduction)
    # Class indices with a weight: 'mean' divides by the summed weights of the kept labels, as F.cross_entropy.
    assert rows.labels is not None
    total = _engine.finish(per_row, rows, "sum")
    return total / torch.where(rows.keep, w[rows.labels], 0.0).sum()


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    *,
    max_margin: float = 0.5,
    scale: float = 30.0,
    weight: Optional[Tensor] = None,
    **options: Unpack[LossOptions],
) -> Tensor:
    r"""Label-distribution-aware margin (LDAM) loss :cite:`cao2019ldam`, eq. (13).

    The target logit loses a margin that grows as the class gets rarer (:func:`ldam_margins`), and the
    cross-entropy runs on the logits scaled by :math:`s`:

    .. math::
        \ell_{LDAM}(z, y) = -w_y \log \frac{e^{s (z_y - m_y)}}{e^{s (z_y - m_y)} + \sum_{j \ne y} e^{s z_j}}
        = w_y\, \mathrm{CE}\bigl(s\,(z - m_y e_y),\, y\bigr),
        \qquad m_j = m_{\max} \Bigl(\frac{\min_i n_i}{n_j}\Bigr)^{1/4},

    with :math:`w` the optional class weights (``weight``; 1 without it), e.g. those of deferred re-weighting,
    :func:`drw_weights`. Cao et al. use it with a cosine classifier (normalised features and weights, so
    :math:`z_j \in [-1, 1]`) and :math:`s = 30`, :math:`m_{\max} = 0.5`; the raw logits of a linear layer need a
    smaller ``scale``. With ``max_margin=0`` and ``scale=1`` it is exactly
    ``F.cross_entropy(logits, target, weight=weight, ...)``.

    **Probability targets** :math:`t` (mixup, cutmix, and labels smoothed by ``label_smoothing``) give the
    expected loss over the target distribution, :math:`\sum_k t_k\, \ell_{LDAM}(z, k)`, each class with its own
    margin; a one-hot :math:`t` gives the class-index loss, and without margins this is
    :func:`~torch.nn.functional.cross_entropy` with probabilities (and ``weight``).

    **Reduction** follows :func:`~torch.nn.functional.cross_entropy`: with class-index targets and a ``weight``,
    ``'mean'`` divides the sum by :math:`\sum_n w_{y_n}` over the samples that are not ignored (with or without
    label smoothing); without ``weight``, by their number; with probability targets, by the number of samples.
    Half and bfloat16 logits are computed (and returned) in float32.

    Args:
        logits: Class scores :math:`z` (cosine similarities in Cao et al.'s setting).
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities of the shape of
            ``logits``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        max_margin: The margin :math:`m_{\max} \ge 0` of the rarest class.
        scale: The scale :math:`s > 0` of the logits.
        weight: Per-class weights :math:`w_j` (floating point), or ``None`` for ones.
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).
        weight: :math:`(C)`.
        output: a scalar, or the shape of the class-index target if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``logits`` or ``weight`` is not floating point, or ``target`` is neither integer nor
            floating point.
        ValueError: If the shapes disagree, a count or label is invalid, ``max_margin < 0`` or ``scale <= 0``.

    Example:
        >>> logits = torch.tensor([[0.8, 0.1], [0.2, 0.5]])
        >>> target = torch.tensor([0, 1])
        >>> ldam_loss(logits, target, [90, 10])
        tensor(3.0012)
        >>> ldam_loss(logits, target, [90, 10], weight=drw_weights([90, 10], epoch=5, start_epoch=3))
        tensor(5.4001)
    """
    return _ldam(
        logits,
        target,
        class_counts,
        max_margin=check_finite("max_margin", max_margin, low=0.0),
        scale=check_finite("scale", scale, low=0.0, strict=True),
        weight=weight,
        **options,
    )


@fill
class LDAMLoss(CountsLoss):
    r"""Module form of :func:`ldam_loss`: :math:`w_y\,\mathrm{CE}(s\,(z - m_y e_y), y)`, :math:`m_j \propto n_j^{-1/4}`.

    The counts are an ``int64`` buffer; ``weight`` is a floating-point buffer (or ``None``), so both follow
    ``.to()`` and ``state_dict()``. For LDAM-DRW assign the deferred weights at the start of every epoch::

        criterion = LDAMLoss(counts)
        for epoch in range(200):
            criterion.weight = drw_weights(counts, epoch, start_epoch=160).to(device)
            ...

    A ``state_dict`` saved with a weight loads into a module built without one.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        max_margin: Margin of the rarest class, ``>= 0``. Default: ``0.5``.
        scale: Scale of the logits, ``> 0``. Default: ``30.0``.
        weight: Per-class weights, a floating-point tensor of shape :math:`(C)`, or ``None``. Default: ``None``.
        {module_options}

    Shape:
        {logits_shape}

    Example:
        >>> criterion = LDAMLoss([90, 10])
        >>> criterion
        LDAMLoss(num_classes=2, max_margin=0.5, scale=30.0, weighted=False, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[0.8, 0.1], [0.2, 0.5]]), torch.tensor([0, 1]))
        tensor(3.0012)
    """

    weight: Optional[Tensor]
    _hyperparameters = ("max_margin", "scale", "weighted")

    def __init__(
        self,
        class_counts: CountsLike,
        *,
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: Optional[Tensor] = None,
        **options: Unpack[LossOptions],
    ) -> None:
        super().__init__(class_counts, **options)
        self.max_margin = check_finite("max_margin", max_margin, low=0.0)
        self.scale = check_finite("scale", scale, low=0.0, strict=True)
        weight = check_class_weight(weight, self.num_classes)
        self.register_buffer("weight", None if weight is None else weight.detach().clone())

    @property
    def weighted(self) -> bool:
        """Whether a per-class ``weight`` is set."""
        return self.weight is not None

    @property
    def margins(self) -> Tensor:
        """The margins :math:`m_j` (float32, on the device of the counts)."""
        return _margins(self.class_counts, self.max_margin, torch.float32)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "weight"
        if key in state_dict and self.weight is None:  # a DRW checkpoint into a fresh module
            self.weight = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`ldam_loss`."""
        return _ldam(
            logits,
            target,
            self.class_counts,
            max_margin=self.max_margin,
            scale=self.scale,
            weight=self.weight,
            **self._options(),
        )
