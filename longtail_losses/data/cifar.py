r"""CIFAR-100-LT and CIFAR-10-LT, from torchvision's on-disk format."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from longtail_losses._validation import check_imbalance_factor
from longtail_losses.data.datasets import InMemoryImageDataset, longtail_pick, subset
from longtail_losses.data.readers import PathLike, Transform, _import, _unpickle

__all__ = ["cifar10_lt", "cifar100_lt"]

# Per data set: folder, training pickles, test pickles, meta pickle, label key, class-name key. The name also gives
# torchvision's class (CIFAR100), our builder (cifar100_lt) and the official archive (cifar-100-python.tar.gz).
_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR = {
    "CIFAR-100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
    "CIFAR-10": ("cifar-10-batches-py", _BATCHES, ["test_batch"], "batches.meta", "labels", "label_names"),
}


def _cifar_lt(
    spec_name: str, root: PathLike, imbalance_factor: float, train: bool, transform: Transform,
    target_transform: Transform, download: bool, seed: int, max_count: Optional[int],
) -> InMemoryImageDataset:  # fmt: skip
    folder, train_files, test_files, meta_file, label_key, names_key = _CIFAR[spec_name]
    factor = check_imbalance_factor(imbalance_factor)
    base = Path(root).expanduser() / folder
    splits = train_files if train else test_files
    files = [*splits, meta_file]
    if download and not all((base / f).is_file() for f in files):
        datasets = _import("torchvision.datasets", "`download=True`")
        getattr(datasets, spec_name.replace("-", ""))(str(Path(root).expanduser()), train=train, download=True)
    for f in files:
        if not (base / f).is_file():
            raise FileNotFoundError(
                f"{spec_name} not found: looked for {base / f} (the python-version pickles "
                f"{', '.join(files)} in {base}). Pass `download=True` to {spec_name.lower().replace('-', '')}_lt "
                f"(needs torchvision and internet access), or download and extract {spec_name.lower()}-python.tar.gz "
                f"from https://www.cs.toronto.edu/~kriz/cifar.html into {Path(root).expanduser()}."
            )
    np = _import("numpy", f"Reading {spec_name}")
    data_parts: list[Any] = []
    labels: list[int] = []
    for f in splits:
        entry = _unpickle(base / f)
        for key in ("data", label_key):
            if key not in entry:
                raise ValueError(f"Expected key {key!r} in {base / f}, but it has keys {sorted(entry)}")
        data_parts.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(int(t) for t in entry[label_key])
    data = np.concatenate(data_parts)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(labels):
        raise ValueError(
            f"Expected `data` of shape (N, 3072) with N = {len(labels)} labels in {base}, but got {data.shape}"
        )
    data = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # HWC, as torchvision
    meta = _unpickle(base / meta_file)
    classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    y = torch.tensor(labels, dtype=torch.int64)
    indices = longtail_pick(y, len(classes), factor, max_count, seed) if train else None
    name = f"{spec_name}-LT IF={factor:g}" if train else f"{spec_name} test"
    return subset(data, y, classes, name, indices, transform=transform, target_transform=target_transform)


def cifar100_lt(
    root: PathLike, imbalance_factor: float, train: bool = True, transform: Transform = None, download: bool = False,
    seed: int = 0, *,
    target_transform: Transform = None, max_count: Optional[int] = None,
) -> InMemoryImageDataset:  # fmt: skip
    """CIFAR-100-LT :cite:`cao2019ldam`: CIFAR-100 with an exponentially long-tailed training set.

    Reads torchvision's on-disk format, ``root/cifar-100-python/{train,test,meta}`` (the official "python
    version" pickles), with :mod:`pickle` directly, without torchvision's md5 check. The training split keeps
    :func:`longtail_counts` ``(100, 500, imbalance_factor)`` images per class, chosen by
    :func:`longtail_indices` (LDAM's subset for ``seed=0``); for IF = 200, 100, 50, 10 that is 9,502, 10,847,
    12,608 and 19,573 images (the paper's Table 1). ``train=False`` returns the full balanced test set
    (100 x 100 images) and ignores ``imbalance_factor``.

    Evaluate models on their raw logits: the balanced-softmax prior is a training-time correction only.

    Args:
        root: Folder that holds (or will hold) ``cifar-100-python/``, as for ``torchvision.datasets.CIFAR100``.
        imbalance_factor: Head-to-tail ratio IF, ``>= 1``.
        train: Long-tailed training split if ``True``, balanced test split otherwise.
        transform: Applied to the PIL image, as in torchvision.
        download: If the files are missing, download them with ``torchvision.datasets.CIFAR100`` first.
        seed: Seed of the subsampling.
        target_transform: Applied to the label.
        max_count: Images kept for the head class. Default: the class size of the balanced split (500).

    Returns:
        An :class:`InMemoryImageDataset` with ``.data`` (NumPy ``uint8``, :math:`(N, 32, 32, 3)`), ``.targets``,
        ``.classes``, ``.class_counts``; items are ``(PIL image or transform(image), int)``.

    Raises:
        FileNotFoundError: If the pickles are missing (the message says where it looked and how to get them).
        ValueError: If ``imbalance_factor`` is out of range or the files are malformed.
    """
    return _cifar_lt("CIFAR-100", root, imbalance_factor, train, transform, target_transform, download, seed, max_count)


def cifar10_lt(
    root: PathLike, imbalance_factor: float, train: bool = True, transform: Transform = None, download: bool = False,
    seed: int = 0, *,
    target_transform: Transform = None, max_count: Optional[int] = None,
) -> InMemoryImageDataset:  # fmt: skip
    """CIFAR-10-LT :cite:`cao2019ldam`, the ten-class twin of :func:`cifar100_lt`.

    Reads ``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``; the head class keeps 5,000
    images by default. Arguments, return value and errors as in :func:`cifar100_lt`.

    Args:
        root: Folder that holds (or will hold) ``cifar-10-batches-py/``.
        imbalance_factor: Head-to-tail ratio IF, ``>= 1``.
        train: Long-tailed training split if ``True``, balanced test split otherwise.
        transform: Applied to the PIL image.
        download: If the files are missing, download them with ``torchvision.datasets.CIFAR10`` first.
        seed: Seed of the subsampling.
        target_transform: Applied to the label.
        max_count: Images kept for the head class. Default: the class size of the balanced split (5,000).

    Returns:
        An :class:`InMemoryImageDataset`.
    """
    return _cifar_lt("CIFAR-10", root, imbalance_factor, train, transform, target_transform, download, seed, max_count)
