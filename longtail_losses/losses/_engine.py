r"""The one loss engine: :func:`mixture_loss` for the paper's losses, :func:`prepare` and :func:`finish` for the rest.

A call takes four steps, each a function of this module:

1. :func:`prepare` checks every argument (:mod:`longtail_losses._validation` holds the wording; the call options
   come checked once, by :func:`check_options`), casts labels to ``int64`` *before* any comparison, and brings
   every input form of :func:`~torch.nn.functional.cross_entropy` to rows: logits :math:`(C)`, :math:`(N, C)` or
   :math:`(N, C, d_1, ..., d_k)` become :math:`(M, C)`, class indices become :math:`(M)` (with the mask of kept
   rows) and probability targets, or labels smoothed by ``label_smoothing``, become :math:`(M, C)`
   distributions.
2. A per-row kernel computes the loss of every row. For the paper's losses it is :func:`mixture_per_row`,
   :math:`\alpha\,\ell_{CB} + (1-\alpha)\,\ell_{CE}(z + \tau\log n)`, which runs the fused kernel of
   :mod:`longtail_losses.losses._fused` where it applies and the reference code of this module otherwise.
3. :func:`finish` zeroes ignored rows, turns rows with an unchecked invalid label into ``nan`` (never into
   another class), reduces, and restores the shape of ``reduction='none'``.
4. An optional penalty (BWLM's) is added once to the reduced loss, or spread over the kept rows.

A loss whose only term is the softmax one (balanced softmax, logit adjustment) skips steps 1-3 when the labels
were checked: it is then literally ``F.cross_entropy(z + tau * log n, target, ...)`` in the caller's own form.

Probability targets :math:`t` (mixup, cutmix, distillation, label smoothing) mean the expectation of the
class-index loss, :math:`\ell(z, t) = \sum_k t_k\, \ell(z, k)`, for every loss; for the softmax term this is
exactly :func:`~torch.nn.functional.cross_entropy` with probabilities, and a one-hot :math:`t` gives the
class-index loss.

Value checks that synchronise with the device (labels in range, counts positive, probabilities summing to 1)
run when ``validate_args`` is true and nothing traces the call. Under ``torch.compile`` and ``torch.func``
transforms, and with ``validate_args=False``, an invalid label gives its row a ``nan`` loss instead: a check
with no synchronisation.
"""

from __future__ import annotations

import math
import sys
from typing import Callable, NamedTuple, Optional, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from longtail_losses.losses import _fused

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # typing_extensions comes with torch
    from typing_extensions import Unpack
from longtail_losses._validation import (
    CountsLike,
    as_class_counts,
    check_bool,
    check_ignore_index,
    check_label_smoothing,
    check_logits_target,
    check_probabilities,
    check_reduction,
    check_target_values,
)

__all__ = [
    "BALANCED_SOFTMAX_MIN_ELEMENTS",
    "LossOptions",
    "Options",
    "Rows",
    "Unpack",
    "check_options",
    "class_balanced_weights",
    "compute_dtype",
    "finish",
    "mixture_loss",
    "mixture_per_row",
    "prepare",
]

#: Below this many logits (32 MiB of float32) the softmax-only losses run as ``F.cross_entropy(z + log n)``:
#: there that one-liner is as fast as cross-entropy, while the fused kernel's fixed cost and its page faults on a
#: fresh gradient buffer made it slower and noisier (CPU, B = 256, C = 1,000 and 10,000). Above it the fused
#: kernel wins on time and memory (one (N, C) tensor instead of three).
BALANCED_SOFTMAX_MIN_ELEMENTS = 1 << 23


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


class Options(NamedTuple):
    """Checked call options."""

    reduction: str
    ignore_index: int
    label_smoothing: float
    validate_args: bool


def check_options(
    *, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0, validate_args: bool = True
) -> Options:
    """Check the call options; the one place that holds their defaults (those of ``nn.CrossEntropyLoss``)."""
    return Options(
        check_reduction(reduction),
        check_ignore_index(ignore_index),
        check_label_smoothing(label_smoothing),
        check_bool("validate_args", validate_args),
    )


class Rows(NamedTuple):
    """Checked inputs brought to rows: what a per-row kernel receives."""

    logits: Tensor  # (M, C) in the compute dtype
    labels: Optional[Tensor]  # (M,) int64 in [0, C): ignored and invalid labels replaced by 0; None with probs only
    probs: Optional[Tensor]  # (M, C) target distribution (probability targets or smoothed labels), else None
    keep: Optional[Tensor]  # (M,) bool, False where the label is ignore_index; None for probability targets
    invalid: Optional[Tensor]  # (M,) bool, labels out of range that were not checked; None when checked
    counts: Tensor  # (C,) int64 on the device of the logits
    shape: tuple[int, ...]  # the shape of reduction='none'


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Losses compute in float32 for half/bfloat16 inputs and keep float32/float64 as they are."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def class_balanced_weights(counts: Tensor, beta: float, dtype: torch.dtype) -> Tensor:
    r"""Cui et al.'s weights :math:`(1-\beta)/(1-\beta^{n_j})` normalised to sum to C, from checked int64 counts.

    :math:`1-\beta^{n} = -\operatorname{expm1}(n \log\beta)` is evaluated without cancellation and the
    :math:`1-\beta` cancels in the normalisation, so ``beta = 0.9999`` is accurate in float32.
    """
    log_beta = math.log(beta) if beta > 0.0 else -math.inf  # in float64, then scaled by n in `dtype`
    inverse = -1.0 / torch.expm1(counts.to(dtype) * log_beta)  # (1 - beta**n)^-1
    return inverse * (counts.shape[0] / inverse.sum())


def _class_view(vector: Tensor, ndim: int) -> Tensor:
    """A (C,) vector shaped to broadcast on the class dimension of ``ndim``-D logits (dim 1, or 0 unbatched)."""
    return vector if ndim <= 2 else vector.view(-1, *([1] * (ndim - 2)))


def _to_rows(x: Tensor) -> Tensor:
    """(C,) -> (1, C); (N, C) as is; (N, C, d1, ..., dk) -> (N * d1 * ... * dk, C) with the classes last."""
    if x.ndim == 1:
        return x.unsqueeze(0)
    if x.ndim == 2:
        return x
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _checks_values(validate_args: bool) -> bool:
    """Value checks run when asked for and when nothing traces the call (they synchronise with the device)."""
    return validate_args and not _fused.tracing()


def _counts(class_counts: CountsLike, device: torch.device, check: bool) -> Tensor:
    if isinstance(class_counts, Tensor) and not check:
        if class_counts.ndim != 1:
            raise ValueError(
                f"Expected `class_counts` to be 1-D (one count per class), but got shape {tuple(class_counts.shape)}"
            )
        return class_counts if class_counts.device == device else class_counts.to(device=device)
    return as_class_counts(class_counts).to(device=device)


def _to_compute_dtype(x: Tensor) -> Tensor:
    dtype = compute_dtype(x.dtype)
    return x if x.dtype == dtype else x.to(dtype)


def _shift(counts: Tensor, dtype: torch.dtype, tau: float) -> Tensor:
    r"""The logit shift :math:`\tau \log n` of the softmax term, shape (C,)."""
    log_n = counts.to(dtype).log()
    return log_n if tau == 1.0 else tau * log_n


def _check_call(
    logits: Tensor, target: Tensor, class_counts: CountsLike, options: Options, *, check_counts: bool
) -> tuple[Tensor, bool, bool]:
    """The checks of every call.

    Returns the counts, whether ``target`` holds probabilities, and whether values were checked.
    """
    check_values = _checks_values(options.validate_args)
    if not isinstance(logits, Tensor):
        raise TypeError(f"Expected `logits` to be a torch.Tensor, but got {type(logits).__name__}")
    counts = _counts(class_counts, logits.device, check_counts and check_values)
    is_prob = check_logits_target(logits, target, counts.shape[0])
    if check_values:
        if is_prob:
            check_probabilities(target, 0 if logits.ndim == 1 else 1)
        else:
            check_target_values(target.long(), counts.shape[0], options.ignore_index)
    return counts, is_prob, check_values


def prepare(
    logits: Tensor, target: Tensor, class_counts: CountsLike, options: Options, *, check_counts: bool = True
) -> Rows:
    """Check the inputs and bring them to rows (step 1 of the module docstring); ``options`` are checked already."""
    counts, is_prob, checked = _check_call(logits, target, class_counts, options, check_counts=check_counts)
    return _rows(logits, target, counts, options, is_prob=is_prob, checked=checked)


def _rows(logits: Tensor, target: Tensor, counts: Tensor, options: Options, *, is_prob: bool, checked: bool) -> Rows:
    label_smoothing = options.label_smoothing
    z = _to_rows(_to_compute_dtype(logits))
    num_classes = z.shape[1]
    shape = tuple(logits.shape[:1] + logits.shape[2:]) if logits.ndim > 1 else ()
    if is_prob:
        dist = _to_rows(target.to(z.dtype))
        if label_smoothing > 0.0:
            dist = dist * (1.0 - label_smoothing) + label_smoothing / num_classes
        return Rows(z, None, dist, None, None, counts, shape)
    y = target.reshape(-1).long()  # int64 first: a uint8 156 must not compare equal to ignore_index -100
    keep = y != options.ignore_index
    invalid = None if checked else keep & ((y < 0) | (y >= num_classes))
    valid = keep if invalid is None else keep & ~invalid
    labels = torch.where(valid, y, 0)
    probs: Optional[Tensor] = None
    if label_smoothing > 0.0:
        one_hot = (torch.arange(num_classes, device=z.device) == labels.unsqueeze(1)).to(z.dtype)
        probs = one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes
    return Rows(z, labels, probs, keep, invalid, counts, shape)


def finish(per_row: Tensor, rows: Rows, reduction: str) -> Tensor:
    """Zero ignored rows, mark unchecked invalid labels ``nan``, reduce (step 3 of the module docstring).

    ``'mean'`` divides by the kept rows (``nan`` if there are none, like
    :func:`~torch.nn.functional.cross_entropy`), or by all rows for probability targets.
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
    if rows.keep is None:
        return total / per_row.shape[0]
    return total / rows.keep.sum().to(total.dtype)


def add_penalty(loss: Tensor, penalty: Tensor, *, target: Tensor, is_prob: bool, options: Options) -> Tensor:
    """Add ``penalty`` once to the reduced ``loss`` (step 4 of the module docstring).

    For ``'none'`` it is spread over the kept entries (over every entry when none is kept), so that the result
    summed always equals ``reduction='sum'``.
    """
    penalty = penalty.to(loss.dtype)
    if options.reduction != "none":
        return loss + penalty
    if is_prob or loss.numel() == 0:
        keep = torch.ones_like(loss)
    else:
        keep = (target.long() != options.ignore_index).to(loss.dtype).reshape(loss.shape)
    kept = keep.sum()
    share = torch.where(kept > 0, keep / kept.clamp_min(1.0), torch.full_like(keep, 1.0 / max(1, keep.numel())))
    return loss + share * penalty


# ----------------------------------------------------------------------------------------------------------------
# The paper's losses: alpha * class-balanced sigmoid focal + (1 - alpha) * cross-entropy of z + tau * log n.


def _focal_terms(z: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    r"""Per element, the focal losses of a positive and of a negative, from log-sigmoid only.

    :math:`A = -\sigma(-z)^\gamma \log\sigma(z)` and :math:`B = -\sigma(z)^\gamma \log\sigma(-z)`, finite for
    any finite z.
    """
    log_p, log_q = F.logsigmoid(z), F.logsigmoid(-z)
    if gamma == 0.0:
        return -log_p, -log_q
    return -torch.exp(gamma * log_q) * log_p, -torch.exp(gamma * log_p) * log_q


def focal_per_row(rows: Rows, weights: Tensor, gamma: float) -> Tensor:
    r"""Reference class-balanced sigmoid focal loss per row.

    Class indices: :math:`w_y \sum_j f(s_j)` with the signed logit :math:`s_j = z_j` for the target and
    :math:`-z_j` otherwise. Distributions :math:`t`: the expectation
    :math:`\sum_k t_k w_k \sum_j f(s^{(k)}_j) = \sum_j \bigl[(W - u_j) B_j + u_j A_j\bigr]` with
    :math:`u = t \odot w` and :math:`W = \sum_k u_k`, which has no cancellation and is the class-index value for
    a one-hot :math:`t`.
    """
    z = rows.logits
    if rows.probs is None:
        assert rows.labels is not None
        is_target = torch.arange(z.shape[1], device=z.device) == rows.labels.unsqueeze(1)
        signed = torch.where(is_target, z, -z)
        log_p = F.logsigmoid(signed)
        row = -log_p.sum(dim=1) if gamma == 0.0 else -(torch.exp(gamma * F.logsigmoid(-signed)) * log_p).sum(dim=1)
        return weights[rows.labels] * row
    positive, negative = _focal_terms(z, gamma)
    u = rows.probs * weights
    return ((u.sum(dim=1, keepdim=True) - u) * negative + u * positive).sum(dim=1)


def softmax_per_row(rows: Rows, shift: Tensor) -> Tensor:
    """Reference cross-entropy of the shifted logits ``z + shift`` per row (labels or distributions)."""
    target = rows.probs if rows.probs is not None else rows.labels
    assert target is not None
    return F.cross_entropy(rows.logits + shift, target, reduction="none")


def _mixture_reference(rows: Rows, *, alpha: float, gamma: float, shift: Tensor, weights: Optional[Tensor]) -> Tensor:
    if alpha == 0.0:
        return softmax_per_row(rows, shift)
    assert weights is not None
    focal = focal_per_row(rows, weights, gamma)
    if alpha == 1.0:
        return focal
    return alpha * focal + (1.0 - alpha) * softmax_per_row(rows, shift)


def mixture_per_row(rows: Rows, *, alpha: float, beta: float, gamma: float, tau: float) -> Tensor:
    r"""Per-row :math:`\alpha\,\ell_{CB}(\beta, \gamma) + (1-\alpha)\,\ell_{CE}(z + \tau \log n)`.

    The fused kernel runs for class indices without label smoothing (for ``alpha = 0`` only from
    :data:`BALANCED_SOFTMAX_MIN_ELEMENTS` logits on); the reference code of this module otherwise.
    """
    z, counts = rows.logits, rows.counts
    shift = _shift(counts, z.dtype, tau)
    weights = class_balanced_weights(counts, beta, z.dtype) if alpha > 0.0 else None

    def reference(logits: Tensor) -> Tensor:
        return _mixture_reference(rows._replace(logits=logits), alpha=alpha, gamma=gamma, shift=shift, weights=weights)

    labels = rows.labels
    fused = (
        rows.probs is None
        and labels is not None
        and (alpha > 0.0 or z.numel() >= BALANCED_SOFTMAX_MIN_ELEMENTS)
        and _fused.use_fast_path(z)
    )
    if not fused or labels is None:
        return reference(z)
    return _fused.fused_loss(
        z,
        labels,
        log_counts=shift if alpha < 1.0 else None,
        weights=weights,
        alpha=alpha,
        gamma=gamma,
        reference=reference,
    )


def mixture_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    *,
    alpha: float,
    beta: float,
    gamma: float,
    tau: float,
    check_counts: bool = True,
    penalty: Optional[Callable[[], Tensor]] = None,
    **options: Unpack[LossOptions],
) -> Tensor:
    """The paper's losses (hyperparameters already checked): the four steps of the module docstring.

    ``penalty`` is called after the inputs are checked and its value added once (BWLM's classifier norm).
    """
    opts = check_options(**options)
    counts, is_prob, checked = _check_call(logits, target, class_counts, opts, check_counts=check_counts)
    z = _to_compute_dtype(logits)
    if alpha == 0.0 and z.numel() < BALANCED_SOFTMAX_MIN_ELEMENTS:
        # Softmax only: exactly F.cross_entropy of the shifted logits, in the caller's form.
        invalid: Optional[Tensor] = None
        if is_prob:
            goal = _to_compute_dtype(target)
        else:
            goal = target.long()
            if not checked:  # an unchecked invalid label gives nan, never another class (and no device sync)
                num_classes = counts.shape[0]
                invalid = (goal != opts.ignore_index) & ((goal < 0) | (goal >= num_classes))
                goal = torch.where(invalid, opts.ignore_index, goal)
        loss = F.cross_entropy(
            z + _class_view(_shift(counts, z.dtype, tau), z.ndim),
            goal,
            ignore_index=opts.ignore_index,
            reduction=opts.reduction,
            label_smoothing=opts.label_smoothing,
        )
        if invalid is not None:
            loss = torch.where(invalid if opts.reduction == "none" else invalid.any(), math.nan, loss)
    else:
        rows = _rows(logits, target, counts, opts, is_prob=is_prob, checked=checked)
        loss = finish(mixture_per_row(rows, alpha=alpha, beta=beta, gamma=gamma, tau=tau), rows, opts.reduction)
    if penalty is None:
        return loss
    return add_penalty(loss, penalty(), target=target, is_prob=is_prob, options=opts)
