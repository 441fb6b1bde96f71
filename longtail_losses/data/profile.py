r"""The long-tailed profile of :cite:`cao2019ldam` and the subsampling that draws it from a balanced set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from longtail_losses._validation import as_counts, check_imbalance_factor, check_int, check_labels
from longtail_losses.data.readers import _import

__all__ = ["longtail_counts", "longtail_indices"]


def longtail_counts(num_classes: int, max_count: int, imbalance_factor: float) -> list[int]:
    r"""Per-class sample counts of the exponential long-tailed profile :cite:`cao2019ldam`.

    .. math::
        n_i = \left\lfloor n_{\max} \cdot \left(\tfrac{1}{\mathrm{IF}}\right)^{i/(C-1)} \right\rfloor,
        \qquad i = 0, \dots, C-1,

    the formula of LDAM's ``IMBALANCECIFAR`` that CIFAR-LT benchmarks (and the paper's Table 1) use. Class 0 is
    the head with :math:`n_{\max}` samples and class :math:`C-1` the tail with
    :math:`\lfloor n_{\max}/\mathrm{IF} \rfloor`. With a single class the result is ``[max_count]``.

    Args:
        num_classes: Number of classes C, ``>= 1``.
        max_count: Samples of the head class, ``>= 1``.
        imbalance_factor: Ratio IF of the head count to the tail count, ``>= 1`` (``1`` gives a balanced set).

    Returns:
        A list of C non-increasing positive ints.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range, or if the tail class would keep no sample
            (``imbalance_factor > max_count``).

    Example:
        >>> longtail_counts(5, 100, 10)
        [100, 56, 31, 17, 10]
        >>> [sum(longtail_counts(100, 500, f)) for f in (200, 100, 50, 10)]  # CIFAR-100-LT, paper's Table 1
        [9502, 10847, 12608, 19573]
    """
    num_classes = check_int("num_classes", num_classes, 1)
    max_count = check_int("max_count", max_count, 1)
    factor = check_imbalance_factor(imbalance_factor)
    if num_classes == 1:
        return [max_count]
    counts = [int(max_count * (1.0 / factor) ** (i / (num_classes - 1))) for i in range(num_classes)]
    if counts[-1] < 1:
        raise ValueError(
            f"Expected `imbalance_factor` <= `max_count` so that the tail class keeps at least one sample, "
            f"but got imbalance_factor={imbalance_factor} with max_count={max_count}"
        )
    return counts


def longtail_indices(labels: Any, counts: Sequence[int] | Tensor, seed: int = 0) -> Tensor:
    """Indices of a long-tailed subset that keeps ``counts[j]`` samples of every class ``j``.

    This reproduces LDAM's ``IMBALANCECIFAR.gen_imbalanced_data`` :cite:`cao2019ldam` (the CIFAR-LT subsets
    used by LDAM, Balanced Softmax and most later work, seed 0 by default): a NumPy ``RandomState(seed)``
    shuffles the indices of each class in turn, in increasing class order, and the first ``counts[j]`` of
    class ``j`` are kept. The result lists class 0's samples first, then class 1's, and so on. Requires NumPy.

    Args:
        labels: Class indices in ``[0, C)`` of a (typically balanced) data set: a tensor, list or array.
        counts: Samples to keep per class, each ``>= 0``; its length is C.
        seed: Seed of the shuffle.

    Returns:
        An ``int64`` tensor of indices into ``labels``, of length ``sum(counts)``.

    Raises:
        TypeError: If ``labels`` or ``counts`` is not integer-valued.
        ValueError: If ``labels`` is not 1-D, holds a label outside ``[0, C)``, a count is negative, or a class
            has fewer samples than requested.

    Example:
        >>> labels = [0, 1, 0, 1, 0, 1, 2, 2, 2]
        >>> idx = longtail_indices(labels, [3, 2, 1])
        >>> sorted(idx[:3].tolist()), [labels[i] for i in idx]
        ([0, 2, 4], [0, 0, 0, 1, 1, 2])
    """
    np = _import("numpy", "longtail_indices")
    seed = check_int("seed", seed, 0)
    y = check_labels("labels", torch.as_tensor(labels.targets if hasattr(labels, "targets") else labels))
    c = as_counts(counts, "counts", minimum=0)
    num_classes = c.numel()
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"Expected every label to be in [0, len(counts)) = [0, {num_classes}), but got {int(y[i])} at position {i}"
        )
    y_np = y.cpu().numpy().astype(np.int64)
    rng = np.random.RandomState(seed)
    chosen = []
    for j in range(num_classes):
        idx = np.where(y_np == j)[0]
        want = int(c[j])
        if idx.size < want:
            raise ValueError(
                f"Expected class {j} to have at least counts[{j}] = {want} samples in `labels`, but it has {idx.size}"
            )
        rng.shuffle(idx)
        chosen.append(idx[:want])
    return torch.from_numpy(np.concatenate(chosen).astype(np.int64))
