r"""The one loss engine: every loss goes prepare -> a per-row kernel -> finish (and an optional penalty).

1. :func:`prepare` checks the inputs (:mod:`longtail_losses._validation` holds the wording; the call options
   come checked once, by :func:`check_options`, where they are given) and brings every input form of
   :func:`~torch.nn.functional.cross_entropy` to rows: logits :math:`(C)`, :math:`(N, C)` or
   :math:`(N, C, d_1, ..., d_k)` become :math:`(M, C)` in the compute dtype; class indices go through
   :func:`labels` (the one label normalisation: ``int64`` first, ``ignore_index``, an unchecked label out of
   range marked ``invalid``) and probability targets, or labels smoothed by ``label_smoothing``, become
   :math:`(M, C)` distributions.
2. A per-row kernel computes the loss of every row from the element-wise terms of
   :mod:`~longtail_losses.losses._kernel`: :func:`mixture_per_row` for the paper's losses and logit adjustment,
   :func:`softmax_per_row` for the softmax term with a margin, a scale or per-row shifts (LDAM, Seesaw),
   :func:`sigmoid_per_row` for per-element weighted sigmoid terms (EQLv2), and the chunked kernel of
   :mod:`~longtail_losses.losses.linear` for a classifier fused with its loss.
3. :func:`finish` zeroes ignored rows, turns rows with an unchecked invalid label into ``nan`` (never into
   another class), reduces (``'mean'`` optionally weighted per row, as :func:`~torch.nn.functional.cross_entropy`
   with ``weight``) and restores the shape of ``reduction='none'``.
4. :func:`add_penalty` adds a penalty (BWLM's classifier norm) once to the reduced loss, or spread over the
   kept rows so that ``'none'`` always sums to ``'sum'``.

**Multi-hot targets** (the multi-label losses) take the same steps element-wise: :func:`prepare_multihot` (checks,
rows, unknown elements marked by ``ignore_index``), :func:`multihot_elements` (the focal kernel on both signs of
each element, the fast path of :func:`_kernel.fused_multilabel` or the reference) and :func:`finish_elements`
(per-element weight, unknown elements zeroed, ``'mean'`` over the known elements or over the samples).

Probability targets :math:`t` (mixup, cutmix, distillation, label smoothing) mean the expectation of the
class-index loss, :math:`\ell(z, t) = \sum_k t_k\, \ell(z, k)`, for every loss.

Value checks that synchronise with the device (labels in range, counts positive, probabilities summing to 1)
run when ``validate_args`` is true and nothing traces the call. Under ``torch.compile`` and ``torch.func``
transforms, and with ``validate_args=False``, an invalid label gives its row a ``nan`` loss instead.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, NamedTuple, Optional, TypedDict, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from longtail_losses._validation import (
    CountsLike,
    as_counts,
    check_bool,
    check_ignore_index,
    check_label_smoothing,
    check_logits_target,
    check_multihot,
    check_multihot_values,
    check_probabilities,
    check_reduction,
    check_target_values,
    check_tensor,
)
from longtail_losses.losses import _kernel

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # typing_extensions comes with torch
    from typing_extensions import Unpack

__all__ = [
    "CallOptions",
    "LossOptions",
    "MultiHot",
    "Rows",
    "Unpack",
    "add_penalty",
    "check_options",
    "class_balanced_weights",
    "class_weights_arg",
    "compute_dtype",
    "finish",
    "finish_elements",
    "function_args",
    "labels",
    "mixture_loss",
    "multihot_elements",
    "prepare",
    "prepare_multihot",
    "prior_logits",
    "sigmoid_per_row",
    "softmax_per_row",
    "weighted_softmax",
]

#: Below this many logits (8 MiB of float32) the softmax-only losses run as ``F.cross_entropy(z + log n)`` in
#: the caller's form: there that one call costs a cross-entropy and one add; from it on the fused kernel is faster
#: and holds less memory (on 2 cores, B = 256, a steady heap: 1.52 against 1.82 ms at C = 10,000, 0.56 against
#: 0.45 ms at C = 4,000).
BALANCED_SOFTMAX_MIN_ELEMENTS = 1 << 21


class LossOptions(TypedDict, total=False):
    r"""The keyword options every loss takes after its hyperparameters, with the defaults of ``nn.CrossEntropyLoss``.

    * ``reduction``: ``'mean'`` (default), ``'sum'`` or ``'none'``;
    * ``ignore_index``: the label whose samples contribute nothing (default ``-100``);
    * ``label_smoothing``: smoothing :math:`\varepsilon \in [0, 1]` of the target (default ``0.0``);
    * ``validate_args``: check the values of the counts and the targets, a device sync (default ``True``).
    """

    reduction: str
    ignore_index: int
    label_smoothing: float
    validate_args: bool


LossOptions.__module__ = "longtail_losses"  # documented, and referenced by every signature, as a public type


class CallOptions(NamedTuple):
    """The call options of :class:`LossOptions`, checked (the one options type of the engine)."""

    reduction: str = "mean"
    ignore_index: int = -100
    label_smoothing: float = 0.0
    validate_args: bool = True

    @property
    def check_values(self) -> bool:
        """Value checks run when asked for and when nothing traces the call (they synchronise with the device)."""
        return self.validate_args and not _kernel.tracing()

    def without_smoothing(self, loss: str) -> CallOptions:
        """These options, for a loss whose statistics need one class per sample (``label_smoothing`` must be 0)."""
        if self.label_smoothing != 0.0:
            raise ValueError(
                f"Expected `label_smoothing` to be 0 for {loss}, which needs one class per sample, "
                f"but got {self.label_smoothing}"
            )
        return self


def check_options(
    *,
    reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0, validate_args: bool = True,
    **unknown: object,
) -> CallOptions:  # fmt: skip
    """Check the call options; the one place that holds their defaults (those of ``nn.CrossEntropyLoss``)."""
    for name in unknown:
        raise TypeError(
            f"Expected no keyword argument {name!r}: the call options are reduction, ignore_index, label_smoothing "
            "and validate_args"
        )
    return CallOptions(
        check_reduction(reduction),
        check_ignore_index(ignore_index),
        check_label_smoothing(label_smoothing),
        check_bool("validate_args", validate_args),
    )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Losses compute in float32 for half/bfloat16 inputs and keep float32/float64 as they are."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def function_args(logits: Tensor, class_counts: CountsLike, options: LossOptions) -> tuple[Tensor, CallOptions]:
    """What a functional loss checks first: its options, then its training counts (on the device of ``logits``)."""
    checked = check_options(**options)
    check_tensor("logits", logits)
    counts = as_counts(class_counts, check_values=checked.check_values)
    return counts.to(device=logits.device), checked


_derived: WeakIdKeyDictionary = WeakIdKeyDictionary()


def derived(counts: Tensor, kind: str, key: tuple[Any, ...], make: Callable[[], Tensor]) -> Tensor:
    """``make()``, a per-class tensor derived from ``counts``, cached per counts tensor and ``kind``.

    A module's counts buffer is the same tensor from call to call, so its log prior and class weights are computed
    once: the cache holds the latest value of each kind per tensor and is keyed by its in-place version and
    ``key`` (device, dtype, hyperparameters). Nothing is cached while a compiler or ``torch.func`` traces (the
    graph computes it) or in inference mode (an inference tensor cannot serve autograd later).
    """
    if _kernel.tracing() or torch.is_inference_mode_enabled():
        return make()
    full = (kind, counts._version, *key)
    store = _derived.get(counts)
    if store is None:
        store = _derived[counts] = {}
    hit = store.get(kind)
    if hit is not None and hit[0] == full:
        return hit[1]
    value = make()
    store[kind] = (full, value)
    return value


def log_prior(counts: Tensor, tau: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    r""":math:`\tau \log n` (C,) on ``device`` in ``dtype`` (cached per counts tensor: :func:`derived`)."""

    def make() -> Tensor:
        log_n = counts.to(device=device, dtype=dtype).log()
        return log_n if tau == 1.0 else tau * log_n

    return derived(counts, "log_prior", (tau, device, dtype), make)


def class_balanced_weights(counts: Tensor, beta: float, dtype: torch.dtype) -> Tensor:
    r"""Cui et al.'s weights :math:`(1-\beta)/(1-\beta^{n_j})` normalised to sum to C, from checked int64 counts.

    :math:`1-\beta^{n} = -\operatorname{expm1}(n \log\beta)` is evaluated without cancellation and the
    :math:`1-\beta` cancels in the normalisation, so ``beta = 0.9999`` is accurate in float32.
    """
    log_beta = math.log(beta) if beta > 0.0 else -math.inf
    inverse = -1.0 / torch.expm1(counts.to(dtype) * log_beta)  # (1 - beta**n)^-1
    return inverse * (counts.shape[0] / inverse.sum())


# ----------------------------------------------------------------------------------------------------------------
# Step 1: checks and rows


class Rows(NamedTuple):
    """Checked inputs brought to rows: what a per-row kernel receives."""

    logits: Tensor  # (M, C) in the compute dtype
    labels: Optional[Tensor]  # (M,) int64 in [0, C): ignored and invalid labels replaced by 0; None with probs only
    probs: Optional[Tensor]  # (M, C) target distribution (probability targets or smoothed labels), else None
    keep: Optional[Tensor]  # (M,) bool, False where the label is ignore_index; None for probability targets
    invalid: Optional[Tensor]  # (M,) bool, labels out of range that were not checked; None when checked
    shape: tuple[int, ...]  # the shape of reduction='none'

    @property
    def valid(self) -> Tensor:
        """(M,) bool: rows whose label is a class (not ``ignore_index``, not an unchecked invalid label)."""
        assert self.keep is not None
        return self.keep if self.invalid is None else self.keep & ~self.invalid


def _to_rows(x: Tensor) -> Tensor:
    """(C,) -> (1, C); (N, C) as is; (N, C, d1, ..., dk) -> (N * d1 * ... * dk, C) with the classes last."""
    if x.ndim == 1:
        return x.unsqueeze(0)
    return x if x.ndim == 2 else x.movedim(1, -1).reshape(-1, x.shape[1])


def labels(
    target: Tensor, num_classes: int, options: CallOptions, *, checked: bool
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """The one label normalisation: ``(labels, keep, invalid)`` of class indices of any shape, flattened.

    ``int64`` first (a uint8 156 must not compare equal to ``ignore_index`` -100); ``labels`` holds 0 where a
    label is ignored or invalid; ``invalid`` marks labels out of range when they were not ``checked`` (else None).
    """
    y = target.reshape(-1).long()
    keep = y != options.ignore_index
    invalid = None if checked else keep & ((y < 0) | (y >= num_classes))
    return torch.where(keep if invalid is None else keep & ~invalid, y, 0), keep, invalid


def check(logits: Tensor, target: Tensor, num_classes: int, options: CallOptions, *, loss: str = "") -> bool:
    """The checks of every call; returns whether ``target`` holds probabilities.

    With ``loss``, probability targets are refused (Seesaw and EQLv2 count one class per sample).
    """
    is_prob = check_logits_target(logits, target, num_classes)
    if is_prob and loss:
        raise TypeError(
            f"Expected `target` to hold integer class indices ({loss} needs one class per sample), "
            f"but got dtype {target.dtype}"
        )
    if options.check_values:
        if is_prob:
            check_probabilities(target, 0 if logits.ndim == 1 else 1)
        else:
            check_target_values(target.long(), num_classes, options.ignore_index)
    return is_prob


def prepare(logits: Tensor, target: Tensor, num_classes: int, options: CallOptions, *, loss: str = "") -> Rows:
    """Check the inputs and bring them to rows (step 1 of the module docstring)."""
    is_prob = check(logits, target, num_classes, options, loss=loss)
    return _rows(logits, target, options, is_prob=is_prob)


def _rows(logits: Tensor, target: Tensor, options: CallOptions, *, is_prob: bool) -> Rows:
    z = _to_rows(logits.to(compute_dtype(logits.dtype)))
    num_classes, smoothing = z.shape[1], options.label_smoothing
    shape = tuple(logits.shape[:1] + logits.shape[2:]) if logits.ndim > 1 else ()
    if is_prob:
        dist = _to_rows(target.to(z.dtype))
        if smoothing > 0.0:
            dist = dist * (1.0 - smoothing) + smoothing / num_classes
        return Rows(z, None, dist, None, None, shape)
    y, keep, invalid = labels(target, num_classes, options, checked=options.check_values)
    probs = None
    if smoothing > 0.0:
        one_hot = (torch.arange(num_classes, device=z.device) == y.unsqueeze(1)).to(z.dtype)
        probs = one_hot * (1.0 - smoothing) + smoothing / num_classes
    return Rows(z, y, probs, keep, invalid, shape)


# ----------------------------------------------------------------------------------------------------------------
# Steps 3 and 4: reduction and penalty


def finish(per_row: Tensor, rows: Rows, reduction: str, *, row_weights: Optional[Tensor] = None) -> Tensor:
    """Zero ignored rows, mark unchecked invalid labels ``nan``, reduce (step 3 of the module docstring).

    ``'mean'`` divides by the kept rows (``nan`` if there are none, like :func:`~torch.nn.functional.cross_entropy`),
    by all rows for probability targets, or by the summed ``row_weights`` of the kept rows when given (the
    ``weight`` convention of cross-entropy).
    """
    if rows.keep is not None:
        per_row = torch.where(rows.keep, per_row, 0.0)
    if rows.invalid is not None:
        per_row = torch.where(rows.invalid, math.nan, per_row)
    if reduction == "none":
        return per_row.reshape(rows.shape)
    total = per_row.sum()
    if reduction == "sum":
        return total
    if row_weights is not None and rows.keep is not None:
        weight = torch.where(rows.keep, row_weights, 0.0).sum()
        return torch.where(weight > 0, total / weight, math.nan)  # no weight: nan, as cross-entropy
    if rows.keep is None:
        return total / per_row.shape[0]
    return total / rows.keep.sum().to(total.dtype)


def add_penalty(loss: Tensor, penalty: Tensor, keep: Optional[Tensor], reduction: str) -> Tensor:
    """Add ``penalty`` once to the reduced ``loss`` (step 4 of the module docstring).

    For ``'none'`` it is spread over the kept entries (``keep``, of the shape of ``loss``; every entry when None or
    none is kept; an empty batch has no entry to carry it), so that the result summed always equals ``'sum'``.
    """
    penalty = penalty.to(loss.dtype)
    if reduction != "none":
        return loss + penalty
    if loss.numel() == 0:  # no entry to carry it
        return loss
    share = torch.ones_like(loss) if keep is None else keep.reshape(loss.shape).to(loss.dtype)
    kept = share.sum()
    share = torch.where(kept > 0, share / kept.clamp_min(1.0), torch.full_like(share, 1.0 / share.numel()))
    return loss + share * penalty


# ----------------------------------------------------------------------------------------------------------------
# Step 2: the per-row kernels (references; the fast paths are tested equal to them)


def _focal_per_row(rows: Rows, weights: Tensor, gamma: float) -> Tensor:
    r"""Class-balanced sigmoid focal loss per row, :math:`w_y \sum_j f(s_j)`, or its expectation over :math:`t`.

    For a distribution :math:`t`, :math:`\sum_k t_k w_k \sum_j f(s^{(k)}_j) = \sum_j [(W - u_j) f(-z_j) + u_j f(z_j)]`
    with :math:`u = t \odot w` and :math:`W = \sum_k u_k`, which is the class-index value for a one-hot :math:`t`.
    """
    z = rows.logits
    if rows.probs is None:
        assert rows.labels is not None
        is_target = torch.arange(z.shape[1], device=z.device) == rows.labels.unsqueeze(1)
        value, _ = _kernel.focal_terms(torch.where(is_target, z, -z), gamma, derivative=False)
        return weights[rows.labels] * value.sum(dim=1)
    positive, _ = _kernel.focal_terms(z, gamma, derivative=False)
    negative, _ = _kernel.focal_terms(-z, gamma, derivative=False)
    u = rows.probs * weights
    return ((u.sum(dim=1, keepdim=True) - u) * negative + u * positive).sum(dim=1)


def softmax_per_row(
    rows: Rows, *,
    shift: Optional[Tensor] = None, scale: Union[float, Tensor] = 1.0, margin: Optional[Tensor] = None,
    class_weights: Optional[Tensor] = None,
) -> Tensor:  # fmt: skip
    r"""Per row, :math:`w_y\, \mathrm{CE}(x, y)` of the adjusted logits :math:`x` (:func:`_kernel.adjusted_logits`).

    Probability targets give the expectation :math:`\sum_k t_k w_k \mathrm{CE}(x^{(k)}, k)`, where the logits of
    class :math:`k` carry its own margin: without a margin that is cross-entropy with probabilities.
    """
    z = rows.logits
    if rows.probs is None:
        assert rows.labels is not None
        x = _kernel.adjusted_logits(z, rows.labels, shift=shift, scale=scale, margin=margin)
        row = F.cross_entropy(x, rows.labels, reduction="none")
        return row if class_weights is None else class_weights[rows.labels] * row
    u = rows.probs if class_weights is None else rows.probs * class_weights
    x = _kernel.adjusted_logits(z, shift=shift, scale=scale)
    if margin is None:
        return -(u * torch.log_softmax(x, dim=1)).sum(dim=1)
    # CE(x^(k), k) = softplus(lse_{j != k} x_j - (x_k - s m_k)): the target logit of class k loses its margin.
    target_logits = x - scale * margin
    return (u * F.softplus(_leave_one_out_logsumexp(x) - target_logits)).sum(dim=1)


def weighted_softmax(
    logits: Tensor, target: Tensor, counts: Tensor, class_weights: Optional[Tensor], options: CallOptions,
    adjust: Callable[[Tensor, torch.dtype], dict[str, Any]],
) -> Tensor:  # fmt: skip
    """Steps 1-3 for the softmax term with per-class loss weights (LDAM, VS): ``'mean'`` as ``F.cross_entropy``.

    ``adjust(counts, dtype)`` gives the keywords of :func:`softmax_per_row` (``scale``, ``shift``, ``margin``) from
    the counts on the logits' device; with class indices and weights, ``'mean'`` divides by the summed weights of
    the kept labels.
    """
    rows = prepare(logits, target, counts.shape[0], options)
    z = rows.logits
    w = None if class_weights is None else class_weights.to(device=z.device, dtype=z.dtype)
    per_row = softmax_per_row(rows, class_weights=w, **adjust(counts.to(z.device), z.dtype))
    row_weights = None if w is None or rows.labels is None else w[rows.labels]
    return finish(per_row, rows, options.reduction, row_weights=row_weights)


def class_weights_arg(class_weights: Optional[CountsLike], num_classes: int, options: CallOptions) -> Optional[Tensor]:
    """A function's ``class_weights``: None, or (C,) finite and ``>= 0``, as float64 (values checked as asked)."""
    if class_weights is None:
        return None
    check = options.check_values
    return as_counts(
        class_weights, "class_weights", num_classes=num_classes, minimum=0, dtype=torch.float64, check_values=check
    )


def _leave_one_out_logsumexp(a: Tensor) -> Tensor:
    r"""(M, C) -> (M, C): :math:`\log \sum_{j \ne k} e^{a_j}` for every k, without cancellation."""
    if a.shape[1] == 1:
        return torch.full_like(a, -math.inf)
    top, arg = a.detach().max(dim=1, keepdim=True)
    is_top = torch.arange(a.shape[1], device=a.device) == arg
    shifted = torch.exp(a - top)
    rest = torch.where(is_top, 1.0, shifted.sum(dim=1, keepdim=True) - shifted)
    at_top = torch.logsumexp(a.masked_fill(is_top, -math.inf), dim=1, keepdim=True)
    return torch.where(is_top, at_top, top + rest.log())


def sigmoid_per_row(rows: Rows, positive_weights: Tensor, negative_weights: Tensor, gamma: float = 0.0) -> Tensor:
    r"""Per row, :math:`\sum_{j \ne y} v_j f(-z_j) + u_y f(z_y)`: the sigmoid term with per-class weights.

    ``positive_weights`` :math:`u` and ``negative_weights`` :math:`v` are (C,); with ``gamma = 0`` this is a
    weighted binary cross-entropy per class (EQLv2).
    """
    z, y = rows.logits, rows.labels
    assert y is not None
    is_target = torch.arange(z.shape[1], device=z.device) == y.unsqueeze(1)
    value, _ = _kernel.focal_terms(torch.where(is_target, z, -z), gamma, derivative=False)
    weights = torch.where(is_target, positive_weights.to(z.dtype), negative_weights.to(z.dtype))
    return (value * weights).sum(dim=1)


def mixture_per_row(rows: Rows, counts: Tensor, *, alpha: float, beta: float, gamma: float, tau: float) -> Tensor:
    r"""Per row :math:`\alpha\,\ell_{CB}(\beta, \gamma) + (1-\alpha)\,\ell_{CE}(z + \tau \log n)`.

    The fused kernel runs for class indices without label smoothing (for ``alpha = 0`` only from
    :data:`BALANCED_SOFTMAX_MIN_ELEMENTS` logits on); the reference otherwise.
    """
    z = rows.logits
    shift = log_prior(counts, tau, z.device, z.dtype)
    weights = None
    if alpha > 0.0:
        weights = derived(
            counts, "class_balanced", (beta, z.device, z.dtype),
            lambda: class_balanced_weights(counts.to(z.device), beta, z.dtype),
        )  # fmt: skip

    def reference(logits: Tensor) -> Tensor:
        r = rows._replace(logits=logits)
        softmax = softmax_per_row(r, shift=shift) if alpha < 1.0 else 0.0
        if weights is None:
            return softmax  # type: ignore[return-value]
        return alpha * _focal_per_row(r, weights, gamma) + (1.0 - alpha) * softmax

    fast = (
        rows.probs is None and (alpha > 0.0 or z.numel() >= BALANCED_SOFTMAX_MIN_ELEMENTS) and _kernel.use_fast_path(z)
    )
    if not fast or rows.labels is None:
        return reference(z)
    return _kernel.fused_loss(
        z, rows.labels, shift=shift, weights=weights, alpha=alpha, gamma=gamma, reference=reference
    )


def mixture_loss(
    logits: Tensor, target: Tensor, counts: Tensor, options: CallOptions, *,
    alpha: float, beta: float, gamma: float, tau: float, penalty: Optional[Callable[[], Tensor]] = None,
) -> Tensor:  # fmt: skip
    """The paper's losses and logit adjustment (hyperparameters and ``counts`` checked): steps 1-4.

    ``penalty`` is called after the inputs are checked and its value added once (BWLM's classifier norm).
    """
    is_prob = check(logits, target, counts.shape[0], options)
    if alpha == 0.0 and logits.numel() < BALANCED_SOFTMAX_MIN_ELEMENTS:
        # The softmax term alone is exactly F.cross_entropy of the shifted logits, in the caller's form.
        z = logits.to(compute_dtype(logits.dtype))
        shift = log_prior(counts, tau, z.device, z.dtype)
        if z.ndim > 2:
            shift = shift.view(-1, *([1] * (z.ndim - 2)))  # on the class dim
        invalid, keep, goal = None, None, target.to(z.dtype) if is_prob else target.long()
        # Checked labels go to cross-entropy as they are; keep is needed only to spread a penalty.
        if not is_prob and penalty is not None:
            _, keep, _ = labels(target, counts.shape[0], options, checked=True)
        if not is_prob and not options.check_values:
            # An unchecked label out of range is ignored by cross-entropy and turns the loss into nan (never
            # another class): a few element-wise ops, no device sync.
            bad = goal.clamp(0, counts.shape[0] - 1) != goal  # out of range, ignore_index included when it is
            goal = torch.where(bad, options.ignore_index, goal)
            invalid = bad if 0 <= options.ignore_index < counts.shape[0] else bad & (target != options.ignore_index)
        loss = F.cross_entropy(
            z + shift,
            goal,
            ignore_index=-100 if is_prob else options.ignore_index,  # torch refuses another one with probabilities
            reduction=options.reduction,
            label_smoothing=options.label_smoothing,
        )
        if invalid is not None:  # added, not selected: an AddBackward costs less than a WhereBackward
            loss = loss + torch.where(invalid if options.reduction == "none" else invalid.any(), math.nan, 0.0)
    else:
        rows = _rows(logits, target, options, is_prob=is_prob)
        keep = rows.keep
        per_row = mixture_per_row(rows, counts, alpha=alpha, beta=beta, gamma=gamma, tau=tau)
        loss = finish(per_row, rows, options.reduction)
    return loss if penalty is None else add_penalty(loss, penalty(), keep, options.reduction)


# ----------------------------------------------------------------------------------------------------------------
# Multi-hot targets: the same steps, element-wise (prepare_multihot -> multihot_elements -> finish_elements)


class MultiHot(NamedTuple):
    """Checked multi-hot inputs brought to rows: what :func:`multihot_elements` receives."""

    logits: Tensor  # (M, C) in the compute dtype
    target: Tensor  # (M, C) in the compute dtype, in [0, 1]; 0 where unknown or invalid; smoothed if asked
    known: Optional[Tensor]  # (M, C) bool, False where the target is ignore_index; None if nothing is
    invalid: Optional[Tensor]  # (M, C) bool, unchecked values outside [0, 1]; None when checked
    weight: Optional[Tensor]  # (M, C) per-element weight in the compute dtype, or None
    shape: tuple[int, ...]  # the shape of logits (and of reduction='none')


def prepare_multihot(
    logits: Tensor, target: Tensor, num_classes: Optional[int], options: CallOptions, *,
    weight: Optional[Tensor] = None,
) -> MultiHot:  # fmt: skip
    r"""Check multi-hot inputs and bring them to rows (step 1, element-wise).

    A target value equal to ``ignore_index`` is unknown (partial labels): the element contributes nothing and
    ``'mean'`` does not count it. ``label_smoothing`` :math:`\varepsilon` smooths each binary label,
    :math:`t (1 - \varepsilon) + \varepsilon / 2`.
    """
    check_multihot(logits, target, num_classes, weight)
    if options.check_values:
        check_multihot_values(target, options.ignore_index)
    z = _to_rows(logits.to(compute_dtype(logits.dtype)))
    t = _to_rows(target.to(z.dtype))
    unknown = t == options.ignore_index
    in_range = (t >= 0) & (t <= 1)  # False for nan too
    # No device sync: the mask is kept even where nothing is unknown (an all-true mask costs one where).
    known, invalid = ~unknown, None if options.check_values else ~unknown & ~in_range
    t = torch.where(in_range, t, 0.0)
    if options.label_smoothing > 0.0:
        t = t * (1.0 - options.label_smoothing) + options.label_smoothing / 2
    w = None if weight is None else _to_rows(torch.broadcast_to(weight.to(z.dtype), logits.shape))
    return MultiHot(z, t, known, invalid, w, tuple(logits.shape))


def multihot_elements(
    ml: MultiHot, *,
    shift: Optional[Tensor] = None, class_weights: Optional[Tensor] = None,
    gamma_pos: float = 0.0, gamma_neg: float = 0.0, clip: float = 0.0, neg_scale: float = 1.0, detach: bool = False,
) -> Tensor:  # fmt: skip
    r"""Per element (M, C), :math:`w\,[t f_{\gamma_+}(x) + (1-t) \lambda^{-1} f_{\gamma_-,m}(-\lambda x)]`.

    The logits are :math:`x = z + \text{shift}`.

    ``shift`` is (C,) (a per-class logit offset); ``class_weights`` (C,) or (M, C) (per element, no gradient).
    The fast path (:func:`_kernel.fused_multilabel`: value and derivative in one pass) runs where
    :func:`_kernel.use_fast_path` allows and the target needs no gradient; the reference (autograd through
    :func:`_kernel.multilabel_terms`) otherwise.
    """
    z, t = ml.logits, ml.target
    x = z if shift is None else z + shift.to(z.dtype)
    kwargs = {"gamma_pos": gamma_pos, "gamma_neg": gamma_neg, "clip": clip, "neg_scale": neg_scale, "detach": detach}

    def reference(x_: Tensor) -> Tensor:
        return _kernel.multilabel_terms(x_, t, **kwargs, derivative=False)[0]  # type: ignore[arg-type]

    if _kernel.use_fast_path(x) and not t.requires_grad:
        value = _kernel.fused_multilabel(x, t, reference=reference, **kwargs)
    else:
        value = reference(x)
    return value if class_weights is None else value * class_weights.to(z.dtype)


def finish_elements(per_element: Tensor, ml: MultiHot, reduction: str, mean_over: str = "elements") -> Tensor:
    """Weight, zero unknown elements, mark unchecked invalid values ``nan``, reduce (step 3, element-wise).

    ``'mean'`` divides by the number of known elements (``mean_over='elements'``, as
    :class:`~torch.nn.BCEWithLogitsLoss`, also with ``weight``) or by the number of samples (``'samples'``: the
    mean over samples of the sum over classes); ``'none'`` has the shape of the logits.
    """
    out = per_element if ml.weight is None else per_element * ml.weight
    if ml.known is not None:
        out = torch.where(ml.known, out, 0.0)
    if ml.invalid is not None:
        out = torch.where(ml.invalid, math.nan, out)
    if reduction == "none":
        if len(ml.shape) <= 2:
            return out.reshape(ml.shape)
        return out.reshape(ml.shape[:1] + ml.shape[2:] + ml.shape[1:2]).movedim(-1, 1)
    total = out.sum()
    if reduction == "sum":
        return total
    if mean_over == "samples":
        return total / out.shape[0]
    if ml.known is None:
        return total / out.numel()
    return total / ml.known.sum().to(total.dtype)


def prior_logits(counts: Tensor, num_samples: int, dtype: torch.dtype) -> Tensor:
    r"""Per class :math:`\operatorname{logit}(p_j) = \log n_j - \log(N - n_j)`, :math:`p_j = n_j / N` (checked)."""
    n = counts.to(dtype)
    return n.log() - (num_samples - n).log()
