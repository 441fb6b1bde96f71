r"""Label-aware smoothing (Zhong et al., CVPR 2021, MiSLAS): label smoothing with a factor per class.

Head classes are smoothed more than tail classes, following a schedule :math:`\epsilon_j = f(n_j)`
(:func:`label_aware_smoothing_factors`). The loss is the cross-entropy of the smoothed target, so it is the
library's softmax term with a per-class target distribution: no new kernel. MiSLAS uses it in stage 2 (the
classifier retrained on a frozen backbone with class-balanced batches); any stage-2 loop of
:mod:`longtail_losses.twostage` takes it as its criterion.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import CountsLike, as_counts, check_number
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["LabelAwareSmoothing", "label_aware_smoothing_factors", "label_aware_smoothing_loss"]

SHAPES = ("concave", "linear", "convex", "exp")


def _factors(
    counts: Tensor, head: float, tail: float, shape: str, power: Optional[float], dtype: torch.dtype
) -> Tensor:  # fmt: skip
    n = counts.to(dtype)
    span = n.max() - n.min()
    # r_j = (n_j - n_K) / (n_1 - n_K) in [0, 1]; equal counts give r = 0 (every class is the tail).
    r = torch.where(span > 0, (n - n.min()) / span.clamp_min(1.0), torch.zeros_like(n))
    if shape == "concave":
        return tail + (head - tail) * torch.sin(0.5 * math.pi * r)
    if shape == "linear":
        return tail + (head - tail) * r
    if shape == "convex":
        return head + (head - tail) * torch.sin(1.5 * math.pi + 0.5 * math.pi * r)
    assert power is not None
    return tail + (head - tail) * r.pow(power)


def _check(head: object, tail: object, shape: object, power: object) -> tuple[float, float, str, Optional[float]]:
    head = check_number("smooth_head", head, low=0.0, high=1.0)
    tail = check_number("smooth_tail", tail, low=0.0, high=1.0)
    if shape not in SHAPES:
        raise ValueError(f"Expected `shape` to be one of {SHAPES}, but got {shape!r}")
    if shape == "exp":
        power = check_number("power", power, low=0.0, strict_low=True)
    elif power is not None:
        raise ValueError(f"Expected `power` to be None unless shape='exp', but got {power!r}")
    return head, tail, str(shape), power  # type: ignore[return-value]


def label_aware_smoothing_factors(
    class_counts: CountsLike, *,
    smooth_head: float = 0.3, smooth_tail: float = 0.0, shape: str = "concave", power: Optional[float] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:  # fmt: skip
    r"""The per-class smoothing factors :math:`\epsilon_j` of label-aware smoothing :cite:`zhong2021mislas`, eq. (5).

    With :math:`n_1 = \max_i n_i`, :math:`n_K = \min_i n_i`, :math:`r_j = (n_j - n_K)/(n_1 - n_K)` and
    :math:`\epsilon_1` = ``smooth_head``, :math:`\epsilon_K` = ``smooth_tail``:

    .. math::
        \epsilon_j = \begin{cases}
        \epsilon_K + (\epsilon_1 - \epsilon_K) \sin\bigl(\tfrac{\pi}{2} r_j\bigr) & \text{concave} \\
        \epsilon_K + (\epsilon_1 - \epsilon_K)\, r_j & \text{linear} \\
        \epsilon_1 + (\epsilon_1 - \epsilon_K) \sin\bigl(\tfrac{3\pi}{2} + \tfrac{\pi}{2} r_j\bigr) & \text{convex} \\
        \epsilon_K + (\epsilon_1 - \epsilon_K)\, r_j^{p} & \text{exp (power } p\text{)}
        \end{cases}

    as in Zhong et al.'s released code (``LabelAwareSmoothing``; the ``exp`` shape is only in the code). The
    defaults are that code's concave shape with the stage-2 factors of its CIFAR-10-LT configurations
    (``smooth_head=0.3, smooth_tail=0.0``; CIFAR-100-LT uses 0.4 and 0.1). The equation numbering of the paper
    was not checked against its text. Equal counts (:math:`n_1 = n_K`), where the code divides by zero, give
    :math:`r_j = 0`, i.e. :math:`\epsilon_j = \epsilon_K` in every shape.

    Args:
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        smooth_head: :math:`\epsilon_1 \in [0, 1]`, the factor of the most frequent class.
        smooth_tail: :math:`\epsilon_K \in [0, 1]`, the factor of the rarest class.
        shape: ``'concave'``, ``'linear'``, ``'convex'`` or ``'exp'``.
        power: The exponent :math:`p > 0` of ``shape='exp'`` (None otherwise).
        dtype: Floating-point dtype of the result.

    Returns:
        A tensor of shape :math:`(C)` on the device of ``class_counts``.

    Raises:
        ValueError: If a count is invalid, a factor is outside ``[0, 1]``, or ``shape``/``power`` are invalid.

    Example:
        >>> label_aware_smoothing_factors([500, 100, 50, 5])
        tensor([0.3000, 0.0891, 0.0427, 0.0000])
    """
    head, tail, shape, power = _check(smooth_head, smooth_tail, shape, power)
    return _factors(as_counts(class_counts), head, tail, shape, power, dtype)


def _las(logits: Tensor, target: Tensor, factors: Tensor, options: _engine.CallOptions) -> Tensor:
    rows = _engine.prepare(logits, target, factors.shape[0], options)
    z = rows.logits
    eps = factors.to(device=z.device, dtype=z.dtype)
    num_classes = z.shape[1]
    if rows.probs is None:
        assert rows.labels is not None
        t = (torch.arange(num_classes, device=z.device) == rows.labels.unsqueeze(1)).to(z.dtype)
    else:
        t = rows.probs
    # sum_k t_k [(1 - eps_k) e_k + eps_k / C]: the expectation over t of the label-aware smoothed target.
    smoothed = t * (1.0 - eps) + (t * eps).sum(dim=1, keepdim=True) / num_classes
    return _engine.finish(_engine.softmax_per_row(rows._replace(probs=smoothed)), rows, options.reduction)


def label_aware_smoothing_loss(
    logits: Tensor, target: Tensor, class_counts: CountsLike, *,
    smooth_head: float = 0.3, smooth_tail: float = 0.0, shape: str = "concave", power: Optional[float] = None,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Label-aware smoothing :cite:`zhong2021mislas`: cross-entropy with a smoothing factor per class.

    .. math::
        \ell_{LAS}(z, y) = -\sum_{j=1}^{C} q_j \log p_j, \qquad
        q = (1 - \epsilon_y)\, e_y + \frac{\epsilon_y}{C}\, \mathbf{1}, \qquad p = \operatorname{softmax}(z),

    i.e. :math:`(1-\epsilon_y)(-\log p_y) + \epsilon_y \cdot \frac{1}{C}\sum_j (-\log p_j)`, with
    :math:`\epsilon_j` from the class counts by :func:`label_aware_smoothing_factors`. Equal factors
    :math:`\epsilon` give ``F.cross_entropy(logits, target, label_smoothing=epsilon)``.

    **Probability targets** :math:`t` give the expected loss, :math:`\sum_k t_k\, \ell_{LAS}(z, k)` (the
    cross-entropy of :math:`\sum_k t_k q^{(k)}`); ``label_smoothing`` :math:`\varepsilon` is applied to the target
    first (as for every loss of the library), and then the per-class factors. ``'mean'`` divides by the number of
    samples whose label is not ``ignore_index`` (by the number of samples for probability targets), as MiSLAS's
    code (``loss.mean()``). Half and bfloat16 logits are computed (and returned) in float32.

    It works as a stage-2 loss (classifier re-training on a frozen backbone, as in MiSLAS) with the criterion
    argument of :func:`~longtail_losses.twostage.train_classifier`, and as a one-stage loss.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities of the shape of
            ``logits``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        smooth_head: Factor :math:`\epsilon_1 \in [0, 1]` of the most frequent class.
        smooth_tail: Factor :math:`\epsilon_K \in [0, 1]` of the rarest class.
        shape: Schedule between them: ``'concave'``, ``'linear'``, ``'convex'`` or ``'exp'``.
        power: Exponent of ``shape='exp'``, ``> 0`` (None otherwise).
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).
        output: a scalar, or the shape of the class-index target if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``logits`` is not floating point, or ``target`` is neither integer nor floating point.
        ValueError: If the shapes disagree, a count or label is invalid, or a hyperparameter is out of range.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> label_aware_smoothing_loss(logits, torch.tensor([0, 1]), [90, 10])
        tensor(0.3701)
    """
    head, tail, shape, power = _check(smooth_head, smooth_tail, shape, power)
    counts, checked = _engine.function_args(logits, class_counts, options)
    factors = _factors(counts, head, tail, shape, power, torch.float64)
    return _las(logits, target, factors, checked)


@fill
class LabelAwareSmoothing(CountsLoss):
    r"""Module form of :func:`label_aware_smoothing_loss`: cross-entropy smoothed by :math:`\epsilon_y = f(n_y)`.

    The counts are an ``int64`` buffer; the factors (:attr:`smoothing`) are computed from them on every call.
    As MiSLAS's stage-2 loss, pass it to :func:`~longtail_losses.twostage.train_classifier`::

        train_classifier(nn.Linear(dim, num_classes), features, labels, LabelAwareSmoothing(counts), epochs=10)

    Args:
        class_counts: Training samples per class, all ``> 0``.
        smooth_head: Factor of the most frequent class, in ``[0, 1]``. Default: ``0.3``.
        smooth_tail: Factor of the rarest class, in ``[0, 1]``. Default: ``0.0``.
        shape: ``'concave'`` (default), ``'linear'``, ``'convex'`` or ``'exp'``.
        power: Exponent of ``shape='exp'``. Default: ``None``.
        {module_options}

    Shape:
        {logits_shape}

    Example:
        >>> criterion = LabelAwareSmoothing([90, 10])
        >>> criterion
        LabelAwareSmoothing(num_classes=2, smooth_head=0.3, smooth_tail=0.0, shape='concave', reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.3701)
    """  # noqa: E501

    _hyperparameters = ("smooth_head", "smooth_tail", "shape")

    def __init__(
        self, class_counts: CountsLike, *,
        smooth_head: float = 0.3, smooth_tail: float = 0.0, shape: str = "concave", power: Optional[float] = None,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, **options)
        self.smooth_head, self.smooth_tail, self.shape, self.power = _check(smooth_head, smooth_tail, shape, power)

    @property
    def smoothing(self) -> Tensor:
        r"""The factors :math:`\epsilon_j` (float32, on the device of the counts)."""
        return _factors(self.class_counts, self.smooth_head, self.smooth_tail, self.shape, self.power, torch.float32)

    def extra_repr(self) -> str:
        """Show the number of classes, the hyperparameters (``power`` for ``shape='exp'``) and the options."""
        text = super().extra_repr().replace(f"shape={self.shape}", f"shape={self.shape!r}")
        return text.replace("shape='exp'", f"shape='exp', power={self.power}") if self.shape == "exp" else text

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`label_aware_smoothing_loss`."""
        factors = _factors(self.class_counts, self.smooth_head, self.smooth_tail, self.shape, self.power, torch.float64)
        return _las(logits, target, factors, self.options)
