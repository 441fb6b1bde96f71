"""Counting training samples per class."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from longtail_losses._validation import check_bool, check_ignore_index, check_int, check_labels, check_multihot_values

__all__ = ["class_counts", "multilabel_counts"]


def _as_labels(values: Any, what: str, *, multihot: bool = False) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach()
    if multihot:
        try:
            return torch.as_tensor(values).detach()
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                "Expected `labels` to be a multi-hot matrix (tensor, nested list or array), a data set or a "
                f"DataLoader, but got {what}: {err}"
            ) from None
    try:
        tensor = torch.as_tensor(values)
        # An empty list or array has no dtype of its own (torch reads it as float): no label is no wrong type.
        return tensor.long() if tensor.numel() == 0 and tensor.dtype.is_floating_point else tensor
    except (TypeError, ValueError, RuntimeError):
        try:
            return torch.as_tensor(list(values))
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                "Expected `labels` to be a tensor, list or array of class indices, a data set or a DataLoader, "
                f"but got {what}: {err}"
            ) from None


def _second(sample: Any) -> Any:
    if isinstance(sample, (tuple, list)) and len(sample) >= 2:
        return sample[1]
    raise TypeError(
        "Expected each sample of the `labels` data set to be an (input, label, ...) tuple, but got "
        f"{type(sample).__name__}; pass `label_fn` to say where the label is"
    )


def _labels_of(source: Any, label_fn: Optional[Callable[[Any], Any]], *, multihot: bool = False) -> Tensor:
    """The labels of ``source``: class indices, or with ``multihot`` the (N, C) matrix.

    They are read without decoding a sample whenever the data set allows it.
    """
    if isinstance(source, DataLoader):
        return _labels_of(source.dataset, label_fn, multihot=multihot)
    if label_fn is None:
        targets = getattr(source, "targets", None)
        if targets is not None:  # torchvision's and this library's data sets
            return _as_labels(targets, type(source).__name__, multihot=multihot)
        if isinstance(source, TensorDataset) and len(source.tensors) >= 2:
            return source.tensors[1].detach()
    if isinstance(source, Subset):
        parent = _labels_of(source.dataset, label_fn, multihot=multihot)
        return parent[torch.as_tensor(list(source.indices), dtype=torch.long)]
    if isinstance(source, Dataset) or label_fn is not None:
        if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
            raise TypeError(
                f"Expected `labels` to be a map-style data set (with __len__ and __getitem__), but got "
                f"{type(source).__name__}"
            )
        pick = label_fn if label_fn is not None else _second
        # The generic path: reads every sample, since the data set exposes its labels no other way.
        if not multihot:
            return _as_labels([int(pick(source[i])) for i in range(len(source))], type(source).__name__)
        rows = [torch.as_tensor(pick(source[i])) for i in range(len(source))]
        if not rows:
            raise ValueError("Expected `labels` to hold at least one sample, but got an empty data set")
        return torch.stack(rows)
    return _as_labels(source, type(source).__name__, multihot=multihot)


def class_counts(
    labels: Any, num_classes: Optional[int] = None, *, label_fn: Optional[Callable[[Any], Any]] = None
) -> Tensor:
    """Count the training samples of every class.

    Reads the labels without decoding a single image wherever the data set allows it: a data set's ``.targets``
    (torchvision's data sets and those of :mod:`longtail_losses.data`), the second tensor of a
    :class:`~torch.utils.data.TensorDataset`, and a :class:`~torch.utils.data.Subset` of either through its
    parent. A :class:`~torch.utils.data.DataLoader` is counted through its data set (its sampler is ignored: the
    counts are those of the training set). Any other map-style data set is read sample by sample, taking the
    label with ``label_fn(sample)`` (default: ``sample[1]``).

    Args:
        labels: Class indices (a tensor, list or NumPy array), a data set or a DataLoader.
        num_classes: Number of classes C. Default: ``max(labels) + 1``. Pass it whenever a class may have no
            sample in ``labels``, so that the counts still have one entry per class.
        label_fn: Where the label of a sample is, for data sets without ``.targets``: a function of one sample
            returning its class index (e.g. ``lambda s: s["label"]``). Given, it is used for every data set.

    Returns:
        An ``int64`` tensor of shape :math:`(C)` on the CPU. A class without samples counts ``0``; the losses
        reject such counts with a clear error.

    Raises:
        TypeError: If ``labels`` is not integer-valued or a sample has no label where expected.
        ValueError: If ``labels`` is not 1-D, is negative, or has a label ``>= num_classes``.

    Example:
        >>> class_counts([0, 0, 1, 2, 2, 2])
        tensor([2, 1, 3])
        >>> class_counts(torch.tensor([1, 1]), num_classes=3)
        tensor([0, 2, 0])
        >>> from torch.utils.data import TensorDataset
        >>> class_counts(TensorDataset(torch.zeros(4, 2), torch.tensor([1, 0, 1, 1])))
        tensor([1, 3])
    """
    values = _labels_of(labels, label_fn)
    values = check_labels("labels", values).to(device="cpu", dtype=torch.int64)
    num_classes = check_int("num_classes", num_classes, 1, optional=True)
    if values.numel() and int(values.min()) < 0:
        raise ValueError(f"Expected `labels` to be >= 0, but got {int(values.min())}")
    if num_classes is not None and values.numel() and int(values.max()) >= num_classes:
        raise ValueError(f"Expected `labels` to be < num_classes={num_classes}, but got {int(values.max())}")
    if num_classes is None and values.numel() == 0:
        raise ValueError("Expected `labels` to be non-empty when `num_classes` is not given, but got no labels")
    return torch.bincount(values, minlength=num_classes or 0)


def multilabel_counts(
    labels: Any, *,
    label_fn: Optional[Callable[[Any], Any]] = None, ignore_index: int = -100, all_reduce: bool = False,
    group: Optional[Any] = None,
) -> tuple[Tensor, int]:  # fmt: skip
    """Count the positive training samples of every class, and the samples, of a multi-hot label matrix.

    The counts that :class:`~longtail_losses.DistributionBalancedLoss`, :class:`~longtail_losses.LogitAdjustedBCE`
    and :class:`~longtail_losses.MultiLabelClassBalancedFocal` take. Reads the labels as :func:`class_counts`
    does (a data set's ``.targets``, a :class:`~torch.utils.data.TensorDataset`'s second tensor, a
    :class:`~torch.utils.data.Subset` through its parent, a DataLoader through its data set, else sample by
    sample with ``label_fn``). An element is a positive where its value is ``> 0.5`` (a soft label counts as
    the hard label it rounds to); ``ignore_index`` (unknown) is never a positive.

    **Distributed.** With ``all_reduce=True`` and :mod:`torch.distributed` initialised, each rank counts its
    own shard of the data and the counts and the number of samples are summed over the ranks of ``group`` (one
    ``all_reduce``, on the CPU tensors, so the backend must support CPU tensors, e.g. gloo).

    Args:
        labels: Multi-hot labels :math:`(N, C)` (a tensor, nested list or array, of any real dtype), a data set
            or a DataLoader.
        label_fn: Where the labels of a sample are, for data sets without ``.targets``. Default: ``sample[1]``.
        ignore_index: The value that marks an unknown label.
        all_reduce: Sum the counts over the ranks of ``group``.
        group: The process group. Default: the world.

    Returns:
        ``(class_counts, num_samples)``: an ``int64`` tensor :math:`(C)` on the CPU and an int.

    Raises:
        TypeError: If ``labels`` cannot be read as a matrix.
        ValueError: If it is not 2-D, or holds a value outside ``[0, 1]`` other than ``ignore_index``.

    Example:
        >>> multilabel_counts(torch.tensor([[1, 0, 1], [1, 0, 0], [0, 1, 1], [1, 0, 0]]))
        (tensor([3, 1, 2]), 4)
        >>> multilabel_counts([[1.0, -1.0], [0.9, 0.2]], ignore_index=-1)
        (tensor([2, 0]), 2)
    """
    values = _labels_of(labels, label_fn, multihot=True)
    ignore_index = check_ignore_index(ignore_index)
    if values.dtype.is_complex:
        raise TypeError(f"Expected `labels` to hold real numbers, but got dtype {values.dtype}")
    if values.ndim != 2:
        raise ValueError(f"Expected multi-hot `labels` to have shape (N, C), but got {tuple(values.shape)}")
    check_multihot_values(values, ignore_index)
    values = values.to("cpu")
    positive = (values.double() > 0.5) & (values.double() != ignore_index)
    stats = torch.cat([positive.sum(dim=0), torch.tensor([values.shape[0]])]).to(torch.int64)
    if check_bool("all_reduce", all_reduce):
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=group)
    return stats[:-1], int(stats[-1])
