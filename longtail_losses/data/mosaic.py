r"""Fashion-MNIST mosaics: a real multi-label long-tailed data set, built offline from Fashion-MNIST."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from longtail_losses._validation import check_imbalance_factor, check_int, check_seed
from longtail_losses.data.fashion_mnist import _CLASSES, _find_idx
from longtail_losses.data.profile import longtail_counts
from longtail_losses.data.readers import PathLike, Transform, read_idx

__all__ = ["MultiLabelImageDataset", "fashion_mnist_mosaic"]

_SPLITS = ("train", "val", "test")


class MultiLabelImageDataset(Dataset):
    """Grey-scale images in memory with multi-hot labels; built by :func:`fashion_mnist_mosaic`.

    Attributes:
        data: ``uint8`` images, a tensor :math:`(N, H, W)`.
        targets: Multi-hot labels, an ``int64`` tensor :math:`(N, C)`.
        classes: Class names, one per class.
        class_counts: Positive samples per class, ``int64`` :math:`(C)`.
        transform: Applied to the ``float32`` image :math:`(1, H, W)` in ``[0, 1]`` in ``__getitem__``.
    """

    def __init__(
        self, data: Tensor, targets: Tensor, classes: Sequence[str], *, name: str, transform: Transform = None
    ) -> None:
        self.data = data
        self.targets = targets
        self.classes = list(classes)
        self.name = name
        self.transform = transform
        self.class_counts = targets.sum(dim=0)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, Tensor]:
        image = self.data[index].unsqueeze(0).float().div(255.0)
        return (image if self.transform is None else self.transform(image)), self.targets[index]

    def as_tensors(self) -> tuple[Tensor, Tensor]:
        r"""Every image, ``float32`` in ``[0, 1]`` :math:`(N, 1, H, W)`, and the labels :math:`(N, C)` at once."""
        return self.data.unsqueeze(1).float().div(255.0), self.targets

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name}, samples={len(self)}, classes={len(self.classes)}, "
            f"max={int(self.class_counts.max())}, min={int(self.class_counts.min())})"
        )


def _label_sets(counts: Sequence[int], num_mosaics: int, tiles: int, generator: torch.Generator) -> Tensor:
    """(M, C) bool: class j in exactly counts[j] mosaics, at most ``tiles`` classes per mosaic, empty rows dropped."""
    labels = torch.zeros(num_mosaics, len(counts), dtype=torch.bool)
    load = torch.zeros(num_mosaics, dtype=torch.int64)
    for j, n in enumerate(counts):
        room = (load < tiles).nonzero().flatten()
        if room.numel() < n:
            raise ValueError(
                f"Expected room for {n} positives of class {j} in {num_mosaics} mosaics of {tiles} tiles, "
                f"but only {room.numel()} mosaics have a free tile; raise `num_mosaics`"
            )
        pick = room[torch.randperm(room.numel(), generator=generator)[:n]]
        labels[pick, j] = True
        load[pick] += 1
    return labels[labels.any(dim=1)]


def fashion_mnist_mosaic(
    root: PathLike, imbalance_factor: float, split: str = "train", *,
    max_count: int = 500, num_mosaics: Optional[int] = None, per_class: int = 200, grid: int = 2,
    class_order: Optional[Sequence[int]] = None, seed: int = 0, transform: Transform = None,
) -> MultiLabelImageDataset:  # fmt: skip
    r"""Fashion-MNIST mosaics :cite:`xiao2017fashion`: a multi-label long-tailed set with a balanced test split.

    How it is built (every step seeded by ``seed``, with ``torch.Generator`` only):

    1. **Positives per class.** ``train``: class of rank :math:`r` is positive in
       :func:`~longtail_losses.data.longtail_counts` ``(10, max_count, imbalance_factor)[r]`` mosaics (the
       exponential profile, head rank 0); ``val`` and ``test``: ``per_class`` mosaics for every class (balanced).
    2. **Label sets.** Classes in rank order each pick their mosaics uniformly among the ``num_mosaics``
       (default: ``2 * max_count`` for ``train``, ``5 * per_class`` otherwise) that still have a free tile, so
       a mosaic holds 0 to ``grid**2`` distinct classes; mosaics without a class are dropped. The column sums are
       exactly the counts of step 1.
    3. **Tiles.** A mosaic is a ``grid x grid`` arrangement of 14 x 14 tiles (Fashion-MNIST images averaged over
       2 x 2 pixels), one tile per label at random positions, the other tiles blank (0): with ``grid = 2`` a
       28 x 28 image, the size of Fashion-MNIST, that any MNIST network takes. Each positive uses its own
       image: ``train`` takes the images of each class from the front of a seeded permutation of Fashion-MNIST's
       training images of that class, ``val`` from its back (disjoint from ``train`` while the two need fewer
       than 6,000 images of a class), ``test`` from the test images.
    4. **Class order.** ``class_order[r]`` is the Fashion-MNIST class of rank ``r`` (default: the identity);
       labels are ranks, and ``classes`` is listed in rank order.

    Args:
        root: Folder with the Fashion-MNIST IDX files (as :func:`fashion_mnist_lt`).
        imbalance_factor: Head-to-tail ratio of the positives, ``>= 1`` (``train`` only).
        split: ``'train'``, ``'val'`` or ``'test'``.
        max_count: Positives of the head class (``train``).
        num_mosaics: Mosaics drawn before empty ones are dropped (see step 2).
        per_class: Positives per class of ``val`` and ``test``.
        grid: Tiles per side.
        class_order: A permutation of the 10 classes, or None.
        seed: Seed of every draw.
        transform: Applied to the image tensor in ``__getitem__``.

    Returns:
        A :class:`MultiLabelImageDataset` of ``uint8`` images :math:`(N, 14 g, 14 g)` and ``int64`` labels
        :math:`(N, 10)`.

    Raises:
        FileNotFoundError: If a Fashion-MNIST file is missing.
        ValueError: If an argument is out of range, or the mosaics have no room for the positives.
    """
    factor = check_imbalance_factor(imbalance_factor)
    if split not in _SPLITS:
        raise ValueError(f"Expected `split` to be one of {_SPLITS}, but got {split!r}")
    max_count, per_class = check_int("max_count", max_count, 1), check_int("per_class", per_class, 1)
    grid, seed = check_int("grid", grid, 1), check_seed(seed)
    order = list(range(10)) if class_order is None else [int(c) for c in class_order]
    if sorted(order) != list(range(10)):
        raise ValueError(f"Expected `class_order` to be a permutation of range(10), but got {class_order}")
    counts = longtail_counts(10, max_count, factor) if split == "train" else [per_class] * 10
    default = 2 * max_count if split == "train" else 5 * per_class
    num_mosaics = check_int("num_mosaics", default if num_mosaics is None else num_mosaics, 1)
    base = Path(root).expanduser()
    prefix = "t10k" if split == "test" else "train"
    images = read_idx(_find_idx(base, f"{prefix}-images-idx3-ubyte"))
    original = read_idx(_find_idx(base, f"{prefix}-labels-idx1-ubyte")).to(torch.int64)
    generator = torch.Generator().manual_seed(seed + {"train": 0, "val": 1, "test": 2}[split])
    labels = _label_sets(counts, num_mosaics, grid * grid, generator)
    tiles = F.avg_pool2d(images.unsqueeze(1).float(), 2).round().to(torch.uint8).squeeze(1)  # (N, 14, 14)
    size = tiles.shape[-1]
    mosaics = torch.zeros(labels.shape[0], grid * grid, size, size, dtype=torch.uint8)
    # The k-th label of a mosaic (in rank order) goes to tile slots[k] of a random permutation of its tiles.
    slots = torch.argsort(torch.rand(labels.shape[0], grid * grid, generator=generator), dim=1)
    position = labels.to(torch.int64).cumsum(dim=1) - 1
    pool_generator = torch.Generator().manual_seed(seed)  # the same pools for train and val: disjoint ends
    for rank, cls in enumerate(order):
        members = (original == cls).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=pool_generator)]
        rows = labels[:, rank].nonzero().flatten()
        if rows.numel() > members.numel():
            raise ValueError(
                f"Expected at least {rows.numel()} images of class {cls}, but the files hold {members.numel()}"
            )
        chosen = members[: rows.numel()] if split != "val" else members.flip(0)[: rows.numel()]
        mosaics[rows, slots[rows, position[rows, rank]]] = tiles[chosen]
    data = mosaics.reshape(-1, grid, grid, size, size).permute(0, 1, 3, 2, 4).reshape(-1, grid * size, grid * size)
    name = f"Fashion-MNIST mosaics {split}" + (f" IF={factor:g}" if split == "train" else "")
    return MultiLabelImageDataset(
        data.contiguous(), labels.to(torch.int64), [_CLASSES[c] for c in order], name=name, transform=transform
    )
