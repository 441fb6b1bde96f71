r"""Data balanced review (eq. 2 of the BWLM paper): the two stages' index sets."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from longtail_losses._validation import check_int
from longtail_losses.data.counts import _labels_of, class_counts

__all__ = ["data_balanced_review", "head_tail_classes"]


def _split(labels: Any) -> tuple[Tensor, Tensor, list[int], list[int]]:
    # (labels on the CPU, counts, head, tail): classes by descending count, ties lower index first; head = first C // 2.
    counts = class_counts(labels)
    if counts.numel() < 2:
        raise ValueError(f"Expected `labels` to hold at least 2 classes, but got {counts.numel()}")
    values, n = counts.tolist(), counts.numel()
    order = sorted(range(n), key=lambda c: (-values[c], c))
    return _labels_of(labels, None).to(device="cpu", dtype=torch.int64), counts, order[: n // 2], order[n // 2 :]


def head_tail_classes(labels: Any) -> tuple[Tensor, Tensor]:
    r"""Split the classes into the head and tail halves of :func:`data_balanced_review`.

    In the order of :func:`data_balanced_review`, the first :math:`m = \lfloor C/2 \rfloor` classes are the head.

    Args:
        labels: Class indices of the training set (tensor, list or array), or a data set with ``.targets``.

    Returns:
        ``(head, tail)``: ``int64`` class indices, each most frequent first.

    Raises:
        TypeError: If ``labels`` is not integer-valued.
        ValueError: If ``labels`` is not 1-D, is negative, or has fewer than 2 classes.

    Example:
        >>> head, tail = head_tail_classes([2, 2, 2, 0, 0, 1, 1, 1, 1, 3])
        >>> head, tail
        (tensor([1, 2]), tensor([0, 3]))
    """
    _, _, head, tail = _split(labels)
    return torch.tensor(head, dtype=torch.int64), torch.tensor(tail, dtype=torch.int64)


def data_balanced_review(labels: Any, seed: int = 0) -> tuple[Tensor, Tensor]:
    r"""Index sets of the two training stages by the data balanced review of the paper, eq. (2).

    Order the :math:`C` classes by training count, descending (ties: lower class index first), number them
    :math:`1..C` in that order and let :math:`m = \lfloor C/2 \rfloor`. With :math:`D_j` the samples of class
    :math:`j` and :math:`n_{m+1}` the count of the most frequent tail class,

    .. math::
        D_{stage1} = \bigcup_{j=1}^{m} D_j, \qquad
        \hat D = \bigcup_{j=1}^{m} \mathrm{sam}(D_j, n_{m+1}) \;\cup\; \bigcup_{j=m+1}^{C} D_j,

    where :math:`\mathrm{sam}(D_j, n)` draws :math:`n` samples of :math:`D_j` uniformly without replacement
    (seeded: the same ``seed`` gives the same subset on every machine). Stage 1 sees the head classes only;
    stage 2 all :math:`C` classes, each head class cut down to :math:`n_{m+1}`.

    Args:
        labels: Class indices of the training set (tensor, list or array), or a data set with ``.targets``
            (read without decoding a sample). :math:`C` is ``max(labels) + 1``.
        seed: Seed of the :class:`torch.Generator` that draws the head classes' stage-2 subsets.

    Returns:
        ``(stage1_indices, stage2_indices)``: sorted ``int64`` positions into ``labels``, e.g. for
        :class:`~torch.utils.data.Subset`.

    Raises:
        TypeError: If ``labels`` is not integer-valued or ``seed`` not an int.
        ValueError: If ``labels`` is not 1-D, is negative, has fewer than 2 classes, or its first tail class
            has no sample.

    Example:
        >>> labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]  # counts 4, 2, 3, 1: head = {0, 2}, n_{m+1} = 2
        >>> stage1, stage2 = data_balanced_review(labels, seed=0)
        >>> stage1
        tensor([0, 1, 2, 3, 6, 7, 8])
        >>> class_counts(torch.tensor(labels)[stage2])
        tensor([2, 2, 2, 1])
    """
    check_int("seed", seed, -(2**63))
    values, counts, head, tail = _split(labels)
    n_review = int(counts[tail[0]])
    if n_review == 0:
        raise ValueError(
            f"Expected the first tail class (class {tail[0]}) to have samples, but got 0; "
            "every class of `labels` should have at least one sample"
        )
    generator = torch.Generator().manual_seed(seed)
    is_head = torch.zeros(counts.numel(), dtype=torch.bool)
    is_head[head] = True
    stage1 = torch.nonzero(is_head[values]).flatten()
    parts = [torch.nonzero(~is_head[values]).flatten()]
    for c in head:  # most frequent first; fixes the order in which the generator is consumed
        members = torch.nonzero(values == c).flatten()
        parts.append(members[torch.randperm(members.numel(), generator=generator)[:n_review]])
    stage2 = torch.sort(torch.cat(parts)).values
    return stage1, stage2
