r"""The two Dataset classes every builder returns: images in memory, or a list of image files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset

from longtail_losses.data.profile import longtail_counts, longtail_indices
from longtail_losses.data.readers import Transform, _import, _pil_rgb_loader

__all__ = ["ImageListDataset", "InMemoryImageDataset"]


class InMemoryImageDataset(Dataset):
    """Images held in memory as a ``uint8`` array, with labels; returned like torchvision's CIFAR and MNIST.

    Built by :func:`cifar100_lt`, :func:`cifar10_lt`, :func:`fashion_mnist_lt` and :func:`digits_lt`.

    Attributes:
        data: ``uint8`` images, a NumPy array :math:`(N, H, W, 3)` for colour sets (as torchvision's CIFAR) or a
            tensor :math:`(N, H, W)` for grey-scale ones (as torchvision's MNIST).
        targets: Labels, a list of N ints.
        classes: Class names, one per class.
        class_counts: Samples per class, an ``int64`` tensor of shape :math:`(C)` (zero for an absent class).
        indices: ``int64`` indices of the kept samples in the original, balanced split.
        transform: Applied to the PIL image in ``__getitem__``.
        target_transform: Applied to the label in ``__getitem__``.
    """

    def __init__(
        self, data: Any, targets: Sequence[int], classes: Sequence[str], *,
        name: str, indices: Optional[Tensor] = None, transform: Transform = None, target_transform: Transform = None,
    ) -> None:  # fmt: skip
        self.data = data
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.name = name
        self.indices = torch.arange(len(self.targets)) if indices is None else indices
        self.transform = transform
        self.target_transform = target_transform
        self.class_counts = torch.bincount(torch.tensor(self.targets, dtype=torch.int64), minlength=len(self.classes))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image_module = _import("PIL.Image", f"Decoding {self.name} images")
        arr = self.data[index]
        img = image_module.fromarray(arr.numpy() if isinstance(arr, Tensor) else arr)
        target = self.targets[index]
        img = img if self.transform is None else self.transform(img)
        return img, target if self.target_transform is None else self.target_transform(target)

    def as_tensors(self) -> tuple[Tensor, Tensor]:
        r"""Return every image and label at once, skipping PIL and ``transform``.

        Returns:
            ``(images, labels)``: ``float32`` images in ``[0, 1]`` of shape :math:`(N, \text{channels}, H, W)` and
            ``int64`` labels of shape :math:`(N)`.
        """
        x = torch.as_tensor(self.data)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return x.float().div(255.0).contiguous(), torch.tensor(self.targets, dtype=torch.int64)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name}, samples={len(self)}, classes={len(self.classes)}, "
            f"max={int(self.class_counts.max())}, min={int(self.class_counts.min())})"
        )


def subset(
    images: Any, labels: Tensor, classes: Sequence[str], name: str, indices: Optional[Tensor], **transforms: Transform
) -> InMemoryImageDataset:
    """The data set of the samples ``indices`` (all if None) of ``images`` (NumPy or tensor) and int64 ``labels``."""
    if indices is not None:
        images, labels = images[indices if isinstance(images, Tensor) else indices.numpy()], labels[indices]
    data = images.contiguous() if isinstance(images, Tensor) else _import("numpy", name).ascontiguousarray(images)
    return InMemoryImageDataset(data, labels.tolist(), classes, name=name, indices=indices, **transforms)


def longtail_pick(
    labels: Tensor, num_classes: int, factor: float, max_count: Optional[int], seed: int, pool: Optional[Tensor] = None
) -> Tensor:
    """Indices of the long-tailed subset of the samples ``pool`` (all if None), for :func:`subset`.

    The head class keeps ``max_count`` samples (default: the smallest class of the pool), the others follow
    :func:`~longtail_losses.data.longtail_counts`, chosen by :func:`~longtail_losses.data.longtail_indices`.
    ``factor`` is the imbalance factor, checked already.
    """
    candidates = labels if pool is None else labels[pool]
    if max_count is None:
        max_count = int(torch.bincount(candidates, minlength=num_classes).min())
    indices = longtail_indices(candidates, longtail_counts(num_classes, max_count, factor), seed=seed)
    return indices if pool is None else pool[indices]


class ImageListDataset(Dataset):
    """Images named by a split file of ``relative/path label`` lines, decoded on access (ImageNet-LT style).

    Built by :func:`imagenet_lt`.

    Attributes:
        root: Folder that the paths in the split file are relative to.
        split_file: The split file read.
        samples: ``(path, label)`` pairs, in file order.
        targets: Labels, a list of ints.
        class_counts: Samples per class, an ``int64`` tensor of shape :math:`(C)`.
        transform: Applied to the PIL RGB image in ``__getitem__``.
        target_transform: Applied to the label in ``__getitem__``.
    """

    def __init__(
        self, root: Path, split_file: Path, samples: list[tuple[str, int]], num_classes: int, *,
        transform: Transform = None, target_transform: Transform = None, loader: Optional[Callable[[str], Any]] = None,
    ) -> None:  # fmt: skip
        self.root = root
        self.split_file = split_file
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.class_counts = torch.bincount(torch.tensor(self.targets, dtype=torch.int64), minlength=num_classes)
        self.transform = transform
        self.target_transform = target_transform
        self.loader = loader if loader is not None else _pil_rgb_loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        path, target = self.samples[index]
        img = self.loader(path)
        img = img if self.transform is None else self.transform(img)
        return img, target if self.target_transform is None else self.target_transform(target)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split_file={str(self.split_file)!r}, samples={len(self)}, "
            f"classes={self.class_counts.numel()})"
        )
