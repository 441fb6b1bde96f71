r"""Fashion-MNIST-LT, from the IDX files (gzipped or not)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from longtail_losses._validation import check_imbalance_factor
from longtail_losses.data.datasets import InMemoryImageDataset, longtail_pick, subset
from longtail_losses.data.readers import PathLike, Transform, read_idx

__all__ = ["fashion_mnist_lt"]

_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _find_idx(root: Path, stem: str) -> Path:
    for found in (d / (stem + ext) for d in (root, root / "FashionMNIST" / "raw") for ext in (".gz", "")):
        if found.is_file():
            return found
    raise FileNotFoundError(
        f"Fashion-MNIST not found: looked for {stem}[.gz] in {root} and {root / 'FashionMNIST' / 'raw'}. "
        "On Debian/Ubuntu `apt-get install dataset-fashion-mnist` installs the files in "
        "/usr/share/datasets/fashion-mnist/; or `torchvision.datasets.FashionMNIST(root, download=True)` downloads "
        "them into root/FashionMNIST/raw/."
    )


def fashion_mnist_lt(
    root: PathLike, imbalance_factor: float, train: bool = True, max_count: Optional[int] = None,
    transform: Transform = None, seed: int = 0, *,
    target_transform: Transform = None,
) -> InMemoryImageDataset:  # fmt: skip
    """Fashion-MNIST-LT: Fashion-MNIST :cite:`xiao2017fashion` with an exponentially long-tailed training set.

    Reads the four IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` with :func:`read_idx`, from
    ``root`` itself (the layout of Debian's ``dataset-fashion-mnist``, which installs them in
    ``/usr/share/datasets/fashion-mnist/``) or from torchvision's ``root/FashionMNIST/raw/``. The training split
    keeps :func:`longtail_counts` ``(10, max_count, imbalance_factor)`` images per class (class 0, T-shirt/top,
    is the head), chosen by :func:`longtail_indices`. ``train=False`` returns the full balanced test set
    (10 x 1,000 images) and ignores ``imbalance_factor`` and ``max_count``.

    Args:
        root: Folder with the IDX files, or with ``FashionMNIST/raw/``.
        imbalance_factor: Head-to-tail ratio IF, ``>= 1``.
        train: Long-tailed training split if ``True``, balanced test split otherwise.
        max_count: Images kept for the head class. Default: the class size of the balanced training split
            (6,000), like CIFAR-LT's 500 of 500; pass a smaller value (e.g. 500) for a faster study.
        transform: Applied to the PIL grey-scale image.
        seed: Seed of the subsampling.
        target_transform: Applied to the label.

    Returns:
        An :class:`InMemoryImageDataset` with ``.data`` (``uint8`` tensor :math:`(N, 28, 28)`), ``.targets``,
        ``.classes``, ``.class_counts``.

    Raises:
        FileNotFoundError: If a file is missing (the message says where it looked and how to get it).
        ValueError: If an argument is out of range or the files disagree.
    """
    factor = check_imbalance_factor(imbalance_factor)
    base = Path(root).expanduser()
    prefix = "train" if train else "t10k"
    images = read_idx(_find_idx(base, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(base, f"{prefix}-labels-idx1-ubyte")).to(torch.int64)
    if images.ndim != 3 or images.dtype != torch.uint8 or labels.ndim != 1 or labels.numel() != images.shape[0]:
        raise ValueError(
            f"Expected uint8 images (N, H, W) and N labels in {base}, but got images {tuple(images.shape)} "
            f"{images.dtype} and labels {tuple(labels.shape)}"
        )
    classes = list(_CLASSES)
    indices = longtail_pick(labels, len(classes), factor, max_count, seed) if train else None
    name = f"Fashion-MNIST-LT IF={factor:g}" if train else "Fashion-MNIST test"
    return subset(images, labels, classes, name, indices, transform=transform, target_transform=target_transform)
