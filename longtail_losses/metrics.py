r"""Evaluation for long-tailed recognition: per-class and Many/Medium/Few-shot accuracy, classifier weight norms.

Evaluate on the model's **raw logits**. The balanced-softmax prior (adding :math:`\log n_c` to the logits) is a
training-time correction inside the loss only; it is never added at test time.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import Tensor, nn

from longtail_losses._validation import (
    as_counts,
    check_int,
    check_labels,
    check_real,
    check_tensor,
    check_weight_matrix,
)

__all__ = [
    "classifier_weight_norms",
    "format_shot_table",
    "per_class_accuracy",
    "per_class_average_precision",
    "shot_accuracy",
    "shot_groups",
    "shot_map",
]

SHOT_KEYS = ("many", "medium", "few", "all")
GROUPS = SHOT_KEYS[:3]


def per_class_accuracy(
    logits_or_preds: Tensor, target: Tensor, num_classes: int, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Accuracy of every class: the fraction of its test samples that are predicted as that class.

    Its mean over the classes with test samples (``.nanmean()``) is the balanced accuracy.

    Args:
        logits_or_preds: Raw logits (floating point; the prediction is their argmax) or predicted class indices.
        target: True class indices in ``[0, C)``.
        num_classes: Number of classes C.
        dtype: Floating-point dtype of the result.

    Shape:
        logits_or_preds: :math:`(N, C)` logits or :math:`(N)` predictions.
        target: :math:`(N)`.
        output: :math:`(C)` in ``dtype`` on the device of ``logits_or_preds``; ``nan`` for a class without a test
            sample.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If the shapes disagree or a label is outside ``[0, C)``.

    Example:
        >>> per_class_accuracy(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 1]), num_classes=3)
        tensor([0.5000, 0.5000,    nan])
    """
    num_classes = check_int("num_classes", num_classes, 1)
    preds = check_tensor("logits_or_preds", logits_or_preds).detach()
    y = check_labels("target", target).detach()
    if preds.dtype.is_complex or preds.dtype == torch.bool:
        raise TypeError(
            "Expected `logits_or_preds` to be float logits (N, C) or integer predictions (N,), "
            f"but got dtype {preds.dtype}"
        )
    if preds.dtype.is_floating_point:
        if preds.ndim != 2 or preds.shape[1] != num_classes:
            raise ValueError(
                f"Expected floating-point `logits_or_preds` to be logits of shape (N, C) = (N, {num_classes}), "
                f"but got shape {tuple(preds.shape)}"
            )
        preds = preds.argmax(dim=1)
    elif preds.ndim != 1:
        raise ValueError(
            f"Expected integer `logits_or_preds` to be predictions of shape (N,), but got shape {tuple(preds.shape)}"
        )
    if preds.shape[0] != y.shape[0]:
        raise ValueError(f"Expected `target` to have one label per prediction ({preds.shape[0]}), but got {y.shape[0]}")
    y = y.to(preds.device)
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"Expected every `target` label to be in [0, {num_classes}), but got {int(y[i])} at position {i}"
        )
    total = torch.bincount(y, minlength=num_classes).to(dtype)
    correct = torch.bincount(y[preds == y], minlength=num_classes).to(dtype)
    return correct / total  # 0 / 0 = nan for a class without test samples


def shot_groups(
    class_counts: Any, *, many_threshold: float = 100, few_threshold: float = 20, relative: bool = False
) -> dict[str, Tensor]:
    r"""Split the classes into Many-, Medium- and Few-shot groups by their number of training samples.

    Many: :math:`n > t_\text{many}`; Medium: :math:`t_\text{few} \le n \le t_\text{many}`; Few:
    :math:`n < t_\text{few}` (the paper's section 4.2 and :cite:`liu2019oltr`, with
    :math:`t_\text{many} = 100` and :math:`t_\text{few} = 20`). With ``relative=True`` the thresholds are
    fractions of the head class's count, :math:`t = \text{threshold} \cdot \max_c n_c`: on CIFAR-100-LT (head
    class 500) ``many_threshold=0.2, few_threshold=0.04`` gives the paper's 100 and 20, and the same fractions
    stay meaningful on a small data set, where the fixed 100 and 20 would put every class in Few.

    Args:
        class_counts: Training samples per class (e.g. :func:`longtail_losses.class_counts` of the training set).
        many_threshold: A class with more training samples than this is Many-shot.
        few_threshold: A class with fewer training samples than this is Few-shot.
        relative: Read both thresholds as fractions (in ``[0, 1]``) of the largest count.

    Returns:
        A dict with keys ``"many"``, ``"medium"``, ``"few"``, each an ``int64`` tensor of class indices.

    Raises:
        ValueError: If ``few_threshold > many_threshold``, a relative threshold is outside ``[0, 1]`` or
            ``class_counts`` is not 1-D and non-negative.

    Example:
        >>> shot_groups([500, 101, 100, 20, 19, 5])
        {'many': tensor([0, 1]), 'medium': tensor([2, 3]), 'few': tensor([4, 5])}
        >>> shot_groups([50, 11, 10, 2, 1], many_threshold=0.2, few_threshold=0.04, relative=True)
        {'many': tensor([0, 1]), 'medium': tensor([2, 3]), 'few': tensor([4])}
    """
    counts = as_counts(class_counts, minimum=0)
    many_t = check_real("many_threshold", many_threshold)
    few_t = check_real("few_threshold", few_threshold)
    if few_t > many_t:
        raise ValueError(
            f"Expected `few_threshold` <= `many_threshold`, but got few_threshold={few_threshold} "
            f"and many_threshold={many_threshold}"
        )
    if relative:
        for name, value in (("many_threshold", many_t), ("few_threshold", few_t)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"Expected `{name}` to be a fraction of the head class's count in [0, 1] with relative=True, "
                    f"but got {value:g}"
                )
        head = int(counts.max())
        many_t, few_t = many_t * head, few_t * head
    many, few = counts > many_t, counts < few_t
    return {k: m.nonzero().flatten() for k, m in zip(GROUPS, (many, ~many & ~few, few))}


def shot_accuracy(
    logits_or_preds: Tensor, target: Tensor, class_counts: Any, *,
    many_threshold: float = 100, few_threshold: float = 20, relative: bool = False,
) -> dict[str, float]:  # fmt: skip
    r"""Many-, Medium-, Few-shot and overall accuracy, as reported for long-tailed benchmarks.

    Each group's accuracy is the mean of the :func:`per_class_accuracy` of its classes, grouped by
    :func:`shot_groups` (by default Many :math:`n > 100`, Medium :math:`20 \le n \le 100`, Few :math:`n < 20`
    training samples; on a small data set pass ``relative=True``). ``"all"`` is the mean over every class, which
    equals plain accuracy on a balanced test set such as those of CIFAR-100-LT and ImageNet-LT. A class without
    test samples is left out of the means; a group with no class (for example no Few-shot class when IF = 10)
    gives ``nan`` and a :class:`UserWarning` that names the empty groups. Pass the raw logits.

    Args:
        logits_or_preds: Raw logits (floating point; the prediction is their argmax) or predicted class indices.
        target: True class indices in ``[0, C)``.
        class_counts: Training samples per class; its length is C.
        many_threshold: Many-shot above this, as in :func:`shot_groups`.
        few_threshold: Few-shot below this, as in :func:`shot_groups`.
        relative: Read both thresholds as fractions of the head class's count, as in :func:`shot_groups`.

    Shape:
        logits_or_preds: :math:`(N, C)` logits or :math:`(N)` predictions.
        target: :math:`(N)`.
        class_counts: :math:`(C)`.

    Returns:
        ``{"many": ..., "medium": ..., "few": ..., "all": ...}``, floats in ``[0, 1]`` or ``nan``.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If the shapes disagree, a label is outside ``[0, C)``, the thresholds are inverted or, with
            ``relative=True``, outside ``[0, 1]``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
        >>> shot_accuracy(logits, torch.tensor([0, 1, 2, 2]), class_counts=[500, 50, 5])
        {'many': 1.0, 'medium': 1.0, 'few': 0.5, 'all': 0.8333333333333334}
    """
    counts = as_counts(class_counts, minimum=0)
    groups = shot_groups(counts, many_threshold=many_threshold, few_threshold=few_threshold, relative=relative)
    acc = per_class_accuracy(logits_or_preds, target, counts.numel()).cpu().double()
    empty = [k for k in GROUPS if groups[k].numel() == 0]
    if empty:
        sizes = ", ".join(f"{k}={groups[k].numel()}" for k in GROUPS)
        unit = "of the head class's count" if relative else "training samples"
        warnings.warn(
            f"shot_accuracy: no class in the {'/'.join(empty)} group ({sizes} classes; thresholds "
            f"many > {many_threshold:g}, few < {few_threshold:g} {unit}, largest count {int(counts.max())}); "
            "its accuracy is nan. On a small data set pass relative=True with fractions of the head class's count.",
            UserWarning,
            stacklevel=2,
        )

    def mean_of(classes: Tensor) -> float:
        values = acc[classes]
        values = values[~values.isnan()]
        return float(values.mean()) if values.numel() else math.nan

    out = {k: mean_of(groups[k]) for k in GROUPS}
    out["all"] = mean_of(torch.arange(counts.numel()))
    return out


def per_class_average_precision(scores: Tensor, target: Tensor, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""Average precision of every class of a multi-label problem, as scikit-learn's ``average_precision_score``.

    For class :math:`j`, rank the samples by score and sum the precision at each distinct score threshold
    weighted by the recall it adds,

    .. math::
        \mathrm{AP}_j = \sum_k (R_k - R_{k-1})\, P_k,

    samples with equal scores entering together (no interpolation). Its mean over the classes (``.nanmean()``) is
    the mAP. Scores may be logits or probabilities (any monotone map gives the same AP).

    Args:
        scores: Class scores, floating point.
        target: Multi-hot labels, ``> 0.5`` meaning positive (any real dtype).
        dtype: Floating-point dtype of the result.

    Shape:
        scores: :math:`(N, C)`.
        target: :math:`(N, C)`.
        output: :math:`(C)` in ``dtype`` on the device of ``scores``; ``nan`` for a class without a positive.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If the shapes disagree.

    Example:
        >>> scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.6]])
        >>> per_class_average_precision(scores, torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0]]))
        tensor([0.8333, 1.0000], dtype=torch.float64)
    """
    z = check_tensor("scores", scores).detach()
    t = check_tensor("target", target).detach()
    if not z.dtype.is_floating_point:
        raise TypeError(f"Expected `scores` to be a floating-point tensor, but got dtype {z.dtype}")
    if t.dtype.is_complex:
        raise TypeError(f"Expected `target` to hold real numbers, but got dtype {t.dtype}")
    if z.ndim != 2 or t.shape != z.shape:
        raise ValueError(
            f"Expected `scores` of shape (N, C) and `target` of the same shape, but got {tuple(z.shape)} and "
            f"{tuple(t.shape)}"
        )
    if z.shape[0] == 0:
        return torch.full((z.shape[1],), math.nan, dtype=dtype, device=z.device)
    # Per class (rows of the transposed matrices), sorted by decreasing score.
    neg_sorted, order = torch.sort(-z.t().to(torch.float64), dim=1, stable=True)
    positive = (t.t().to(device=z.device, dtype=torch.float64) > 0.5).gather(1, order).to(torch.float64)
    tp = positive.cumsum(dim=1)
    # A tie block enters at once: the precision of every positive is that at the end of its block.
    end = torch.searchsorted(neg_sorted.contiguous(), neg_sorted.contiguous(), right=True) - 1
    precision_at_end = (tp / torch.arange(1, z.shape[0] + 1, device=z.device, dtype=torch.float64)).gather(1, end)
    num_positive = positive.sum(dim=1)
    ap = (positive * precision_at_end).sum(dim=1) / num_positive  # 0 / 0 = nan without a positive
    return ap.to(dtype)


def shot_map(
    scores: Tensor, target: Tensor, class_counts: Any, *,
    many_threshold: float = 100, few_threshold: float = 20, relative: bool = False,
) -> dict[str, float]:  # fmt: skip
    r"""Many-, Medium-, Few-shot and overall mAP of a multi-label problem.

    Each group's value is the mean of the :func:`per_class_average_precision` of its classes, grouped by
    :func:`shot_groups` on the **positive** training counts (:func:`~longtail_losses.data.multilabel_counts`):
    by default Many :math:`n > 100`, Medium :math:`20 \le n \le 100`, Few :math:`n < 20` positives, the split of
    the multi-label long-tailed benchmarks (VOC-MLT, COCO-MLT :cite:`wu2020distribution`); pass ``relative=True``
    for fractions of the head class's count. ``"all"`` is the mAP over every class. A class without a test
    positive is left out of the means; an empty group gives ``nan`` and a :class:`UserWarning`.

    Args:
        scores: Class scores (logits or probabilities).
        target: Multi-hot test labels, ``> 0.5`` meaning positive.
        class_counts: Positive training samples per class; its length is C.
        many_threshold: Many-shot above this, as in :func:`shot_groups`.
        few_threshold: Few-shot below this, as in :func:`shot_groups`.
        relative: Read both thresholds as fractions of the head class's count.

    Shape:
        scores: :math:`(N, C)`.
        target: :math:`(N, C)`.
        class_counts: :math:`(C)`.

    Returns:
        ``{"many": ..., "medium": ..., "few": ..., "all": ...}``, floats in ``[0, 1]`` or ``nan``.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If the shapes disagree or the thresholds are invalid.

    Example:
        >>> scores = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.7, 0.9], [0.3, 0.2, 0.1], [0.1, 0.6, 0.8]])
        >>> target = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]])
        >>> shot_map(scores, target, class_counts=[500, 50, 5])
        {'many': 0.8333333333333333, 'medium': 1.0, 'few': 1.0, 'all': 0.9444444444444443}
    """
    counts = as_counts(class_counts, minimum=0)
    groups = shot_groups(counts, many_threshold=many_threshold, few_threshold=few_threshold, relative=relative)
    ap = per_class_average_precision(scores, target).cpu()
    if ap.shape[0] != counts.numel():
        raise ValueError(
            f"Expected `class_counts` to have one entry per class ({ap.shape[0]}), but got {counts.numel()}"
        )
    empty = [k for k in GROUPS if groups[k].numel() == 0]
    if empty:
        sizes = ", ".join(f"{k}={groups[k].numel()}" for k in GROUPS)
        warnings.warn(
            f"shot_map: no class in the {'/'.join(empty)} group ({sizes} classes); its mAP is nan",
            UserWarning,
            stacklevel=2,
        )

    def mean_of(classes: Tensor) -> float:
        values = ap[classes]
        values = values[~values.isnan()]
        return float(values.mean()) if values.numel() else math.nan

    out = {k: mean_of(groups[k]) for k in GROUPS}
    out["all"] = mean_of(torch.arange(counts.numel()))
    return out


def classifier_weight_norms(classifier: Union[nn.Module, Tensor]) -> Tensor:
    """L2 norm of every class's row of a linear classifier's weight (the paper's Fig. 5a).

    Under long-tailed training the head classes' rows grow longer than the tail classes'; balanced weight
    decay (:class:`~longtail_losses.ClassNormDecay`) evens them out.

    Args:
        classifier: The classifier module (anything with a 2-D ``.weight``, such as :class:`~torch.nn.Linear`)
            or its weight itself, one row per class.

    Shape:
        classifier: weight :math:`(C, D)`.
        output: :math:`(C)`, detached, on the weight's device and of its dtype.

    Raises:
        TypeError: If there is no floating-point weight.
        ValueError: If the weight is not 2-D.

    Example:
        >>> classifier_weight_norms(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        tensor([5., 1.])
    """
    weight = check_weight_matrix(classifier)
    return torch.linalg.vector_norm(weight.detach(), dim=1)


def _cell(value: Any, digits: int, percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"Expected a table cell to be a number or a (mean, std) pair, but got {value!r}")
        mean, std = (float(v) for v in value)
        if math.isnan(mean):
            return "–"
        return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Expected a table cell to be a number or a (mean, std) pair, but got {value!r}")
    return "–" if math.isnan(value) else f"{float(value) * scale:.{digits}f}"


def format_shot_table(
    rows: Mapping[str, Mapping[str, Any]], *,
    header: str = "Method", columns: tuple[str, ...] = SHOT_KEYS, digits: int = 1, percent: bool = True,
) -> str:  # fmt: skip
    """Format :func:`shot_accuracy` results as a Markdown table (readable as plain text too).

    Args:
        rows: Row name to a dict with the ``columns`` as keys; each value is a float in ``[0, 1]`` or a
            ``(mean, std)`` pair, printed as ``mean ± std``. ``nan`` prints as ``–``.
        header: Title of the first column.
        columns: Keys to print, in order; shown capitalised.
        digits: Decimals after the point.
        percent: Print values times 100.

    Returns:
        The table, one line per row, without a trailing newline.

    Raises:
        KeyError: If a row lacks one of the ``columns``.

    Example:
        >>> print(format_shot_table({"CE": {"many": 0.7, "medium": 0.4, "few": 0.1, "all": 0.45}}))
        | Method | Many | Medium | Few | All |
        |---|---|---|---|---|
        | CE | 70.0 | 40.0 | 10.0 | 45.0 |
    """
    lines = [
        "| " + " | ".join([header, *(c.capitalize() for c in columns)]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for name, row in rows.items():
        missing = [c for c in columns if c not in row]
        if missing:
            raise KeyError(f"Expected row {name!r} to have keys {list(columns)}, but it lacks {missing}")
        lines.append("| " + " | ".join([name, *(_cell(row[c], digits, percent) for c in columns)]) + " |")
    return "\n".join(lines)
