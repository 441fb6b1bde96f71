"""Counting training samples per class."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["class_counts"]


def _labels_of(source: Any) -> Tensor:
    targets = getattr(source, "targets", None)
    if targets is None and hasattr(source, "dataset") and hasattr(source, "indices"):
        # torch.utils.data.Subset: count the labels of the selected indices without decoding any sample.
        parent = _labels_of(source.dataset)
        return parent[torch.as_tensor(list(source.indices), dtype=torch.long)]
    if targets is not None:
        source = targets
    if isinstance(source, Tensor):
        labels = source.detach()
    else:
        try:
            labels = torch.as_tensor(source)
        except (TypeError, ValueError, RuntimeError):
            try:
                labels = torch.as_tensor(list(source))
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(
                    "Expected `labels` to be a tensor, list or array of class indices, or a data set with "
                    f"`.targets`, but got {type(source).__name__}: {err}"
                ) from None
    return labels


def class_counts(labels: Any, num_classes: Optional[int] = None) -> Tensor:
    """Count the training samples of every class.

    Works without decoding a single image: a data set is counted through its ``.targets`` attribute (as on
    torchvision's data sets and on those of :mod:`longtail_losses.data`), and a
    :class:`~torch.utils.data.Subset` through the targets of its parent.

    Args:
        labels: Class indices (a tensor, list or NumPy array), or a data set that has ``.targets``.
        num_classes: Number of classes C. Default: ``max(labels) + 1``. Pass it whenever a class may have no
            sample in ``labels``, so that the counts still have one entry per class.

    Returns:
        An ``int64`` tensor of shape :math:`(C)` on the CPU. A class without samples counts ``0``; the losses
        reject such counts with a clear error.

    Raises:
        TypeError: If ``labels`` is not integer-valued.
        ValueError: If ``labels`` is not 1-D, is negative, or has a label ``>= num_classes``.

    Example:
        >>> class_counts([0, 0, 1, 2, 2, 2])
        tensor([2, 1, 3])
        >>> class_counts(torch.tensor([1, 1]), num_classes=3)
        tensor([0, 2, 0])
    """
    values = _labels_of(labels)
    if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
        raise TypeError(f"Expected `labels` to hold integer class indices, but got dtype {values.dtype}")
    if values.ndim != 1:
        raise ValueError(f"Expected `labels` to be 1-D, but got shape {tuple(values.shape)}")
    values = values.to(device="cpu", dtype=torch.int64)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise TypeError(f"Expected `num_classes` to be an int, but got {num_classes!r}")
    if num_classes is not None and num_classes <= 0:
        raise ValueError(f"Expected `num_classes` to be > 0, but got {num_classes}")
    if values.numel() and int(values.min()) < 0:
        raise ValueError(f"Expected `labels` to be >= 0, but got {int(values.min())}")
    if num_classes is not None and values.numel() and int(values.max()) >= num_classes:
        raise ValueError(f"Expected `labels` to be < num_classes={num_classes}, but got {int(values.max())}")
    if num_classes is None and values.numel() == 0:
        raise ValueError("Expected `labels` to be non-empty when `num_classes` is not given, but got no labels")
    return torch.bincount(values, minlength=num_classes or 0)
