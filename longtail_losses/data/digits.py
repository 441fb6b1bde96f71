r"""Digits-LT: scikit-learn's bundled 8x8 digits, made long-tailed; the offline demo's data set."""

from __future__ import annotations

from typing import Optional

import torch

from longtail_losses._validation import check_imbalance_factor, check_int
from longtail_losses.data.datasets import InMemoryImageDataset, longtail_pick, subset
from longtail_losses.data.readers import Transform, _import

__all__ = ["digits_lt"]


def digits_lt(
    imbalance_factor: float, train: bool = True, *,
    test_per_class: int = 50, max_count: Optional[int] = None, transform: Transform = None,
    target_transform: Transform = None, seed: int = 0,
) -> InMemoryImageDataset:  # fmt: skip
    """Digits-LT: scikit-learn's bundled 8x8 digits, made long-tailed; needs no download.

    :func:`sklearn.datasets.load_digits` has 1,797 images of 10 classes (174 to 183 per class). A seeded
    stratified split holds out ``test_per_class`` images of every class as the balanced test set (the same
    split for ``train=True`` and ``False`` with the same ``seed``); the rest, from which the training split keeps
    :func:`longtail_counts` ``(10, max_count, imbalance_factor)`` images per class, is disjoint from it. Pixel
    values 0..16 are scaled to ``uint8`` 0..255 (``round(v * 255 / 16)``).

    Args:
        imbalance_factor: Head-to-tail ratio IF, ``>= 1``; ignored if ``train=False``.
        train: Long-tailed training split if ``True``, balanced test split otherwise.
        test_per_class: Images held out per class for the test set.
        max_count: Images kept for the head class. Default: the smallest class size left after the hold-out
            (124 with the default ``test_per_class``).
        transform: Applied to the PIL grey-scale 8x8 image.
        target_transform: Applied to the label.
        seed: Seed of both the split and the subsampling.

    Returns:
        An :class:`InMemoryImageDataset` with ``.data`` (``uint8`` tensor :math:`(N, 8, 8)`); ``.as_tensors()``
        gives float images for a quick model without PIL.

    Raises:
        ImportError: If scikit-learn is missing (``pip install longtail-losses[examples]``).
        ValueError: If an argument is out of range.
    """
    factor = check_imbalance_factor(imbalance_factor)
    test_per_class = check_int("test_per_class", test_per_class, 1)
    seed = check_int("seed", seed, 0)
    bunch = _import("sklearn.datasets", "digits_lt").load_digits()
    images = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    num_classes = 10
    smallest = int(torch.bincount(labels, minlength=num_classes).min())
    if smallest <= test_per_class:
        raise ValueError(
            f"Expected `test_per_class` < the smallest class ({smallest} images), but got {test_per_class}"
        )
    gen = torch.Generator().manual_seed(seed)
    by_class = [(labels == j).nonzero().flatten() for j in range(num_classes)]
    shuffled = [idx[torch.randperm(idx.numel(), generator=gen)] for idx in by_class]
    pool = torch.cat([idx[test_per_class:] if train else idx[:test_per_class] for idx in shuffled])
    classes = [str(j) for j in range(num_classes)]
    indices = longtail_pick(labels, num_classes, factor, max_count, seed, pool) if train else pool
    name = f"Digits-LT IF={factor:g}" if train else "Digits test"
    return subset(images, labels, classes, name, indices, transform=transform, target_transform=target_transform)
