r"""Long-tailed image data sets: CIFAR-100-LT, ImageNet-LT, Fashion-MNIST-LT and a tiny offline digits set.

Every data set here is a :class:`torch.utils.data.Dataset` that returns ``(image, label)`` pairs like
torchvision's, and exposes ``.targets`` (a list of ints), so that :func:`longtail_losses.class_counts` counts
its classes without decoding a single image.

Long-tailed training sets follow the exponential profile of :cite:`cao2019ldam` (:func:`longtail_counts`):
class :math:`i` keeps :math:`n_i = \lfloor n_{\max} \cdot \mathrm{IF}^{-i/(C-1)} \rfloor` samples, so that class 0
is the head and class :math:`C-1` the tail. Test sets stay balanced.

Only :mod:`torch` is needed to import this module. NumPy (CIFAR pickles, subsampling), Pillow (decoding images
in ``__getitem__``), torchvision (``download=True``) and scikit-learn (:func:`digits_lt`) are imported when a
function needs them; ``pip install longtail-losses[examples]`` installs all of them.
"""

from __future__ import annotations

import gzip
import math
import numbers
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "ImageListDataset",
    "InMemoryImageDataset",
    "cifar10_lt",
    "cifar100_lt",
    "digits_lt",
    "fashion_mnist_lt",
    "imagenet_lt",
    "longtail_counts",
    "longtail_indices",
    "read_idx",
]

PathLike = Union[str, "os.PathLike[str]"]
Transform = Optional[Callable[[Any], Any]]

_EXTRA_HINT = "install it with `pip install longtail-losses[examples]`"


def _import(module: str, purpose: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{purpose} needs `{module.split('.')[0]}`, which is not installed; {_EXTRA_HINT}") from err


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Expected `{name}` to be an int, but got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"Expected `{name}` to be >= {minimum}, but got {value}")
    return int(value)


def _check_imbalance_factor(imbalance_factor: object) -> float:
    if isinstance(imbalance_factor, bool) or not isinstance(imbalance_factor, numbers.Real):
        raise TypeError(
            f"Expected `imbalance_factor` to be a real number, but got {imbalance_factor!r} "
            f"of type {type(imbalance_factor).__name__}"
        )
    value = float(imbalance_factor)
    if not (math.isfinite(value) and value >= 1.0):
        raise ValueError(
            f"Expected `imbalance_factor` (= largest / smallest class count) to be a finite number >= 1, "
            f"but got {imbalance_factor}"
        )
    return value


# --------------------------------------------------------------------------------------------------------------------
# Long-tailed profiles and subsampling
# --------------------------------------------------------------------------------------------------------------------


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
    num_classes = _check_int("num_classes", num_classes, 1)
    max_count = _check_int("max_count", max_count, 1)
    factor = _check_imbalance_factor(imbalance_factor)
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
    seed = _check_int("seed", seed, 0)
    y = torch.as_tensor(labels.targets if hasattr(labels, "targets") else labels)
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"Expected `labels` to hold integer class indices, but got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"Expected `labels` to be 1-D, but got shape {tuple(y.shape)}")
    c = torch.as_tensor(counts)
    if c.dtype.is_floating_point or c.dtype.is_complex or c.dtype == torch.bool:
        raise TypeError(f"Expected `counts` to hold ints, but got dtype {c.dtype}")
    if c.ndim != 1 or c.numel() == 0:
        raise ValueError(f"Expected `counts` to be 1-D with one entry per class, but got shape {tuple(c.shape)}")
    num_classes = c.numel()
    if bool((c < 0).any()):
        j = int((c < 0).nonzero()[0, 0])
        raise ValueError(f"Expected every entry of `counts` to be >= 0, but got {int(c[j])} for class {j}")
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


# --------------------------------------------------------------------------------------------------------------------
# Data set classes
# --------------------------------------------------------------------------------------------------------------------


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
        self,
        data: Any,
        targets: Sequence[int],
        classes: Sequence[str],
        *,
        name: str,
        indices: Optional[Tensor] = None,
        transform: Transform = None,
        target_transform: Transform = None,
    ) -> None:
        self.data = data
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.name = name
        n = len(self.targets)
        self.indices = torch.arange(n) if indices is None else indices
        self.transform = transform
        self.target_transform = target_transform
        y = torch.tensor(self.targets, dtype=torch.int64)
        self.class_counts = torch.bincount(y, minlength=len(self.classes))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image_module = _import("PIL.Image", f"Decoding {self.name} images")
        arr = self.data[index]
        if isinstance(arr, Tensor):
            arr = arr.numpy()
        img = image_module.fromarray(arr)
        target: Any = self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

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
        self,
        root: Path,
        split_file: Path,
        samples: list[tuple[str, int]],
        num_classes: int,
        *,
        transform: Transform = None,
        target_transform: Transform = None,
        loader: Optional[Callable[[str], Any]] = None,
    ) -> None:
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
        if self.transform is not None:
            img = self.transform(img)
        out: Any = target if self.target_transform is None else self.target_transform(target)
        return img, out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split_file={str(self.split_file)!r}, samples={len(self)}, "
            f"classes={self.class_counts.numel()})"
        )


def _pil_rgb_loader(path: str) -> Any:
    image_module = _import("PIL.Image", "Decoding ImageNet-LT images")
    with open(path, "rb") as f:
        img = image_module.open(f)
        return img.convert("RGB")


# --------------------------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------------------------

_CIFAR = {
    "CIFAR-100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
        "torchvision": "CIFAR100",
        "function": "cifar100_lt",
    },
    "CIFAR-10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
        "torchvision": "CIFAR10",
        "function": "cifar10_lt",
    },
}


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        # latin1 as torchvision does: the official files are Python 2 pickles of NumPy arrays.
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict):
        raise ValueError(f"Expected {path} to hold a pickled dict, but got {type(entry).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _cifar_lt(
    spec_name: str,
    root: PathLike,
    imbalance_factor: float,
    train: bool,
    transform: Transform,
    target_transform: Transform,
    download: bool,
    seed: int,
    max_count: Optional[int],
) -> InMemoryImageDataset:
    spec: dict[str, Any] = _CIFAR[spec_name]
    factor = _check_imbalance_factor(imbalance_factor)
    base = Path(root).expanduser() / spec["folder"]
    files = [*spec["train" if train else "test"], spec["meta"]]
    if download and not all((base / f).is_file() for f in files):
        datasets = _import("torchvision.datasets", "`download=True`")
        getattr(datasets, spec["torchvision"])(str(Path(root).expanduser()), train=train, download=True)
    for f in files:
        if not (base / f).is_file():
            raise FileNotFoundError(
                f"{spec_name} not found: looked for {base / f} (the python-version pickles "
                f"{', '.join(files)} in {base}). Pass `download=True` to {spec['function']} (needs torchvision and "
                f"internet access), or download and extract {spec['archive']} "
                f"from https://www.cs.toronto.edu/~kriz/cifar.html into {Path(root).expanduser()}."
            )
    np = _import("numpy", f"Reading {spec_name}")
    data_parts: list[Any] = []
    labels: list[int] = []
    for f in spec["train" if train else "test"]:
        entry = _unpickle(base / f)
        for key in ("data", spec["label_key"]):
            if key not in entry:
                raise ValueError(f"Expected key {key!r} in {base / f}, but it has keys {sorted(entry)}")
        data_parts.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(int(t) for t in entry[spec["label_key"]])
    data = np.concatenate(data_parts)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(labels):
        raise ValueError(
            f"Expected `data` of shape (N, 3072) with N = {len(labels)} labels in {base}, but got {data.shape}"
        )
    data = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # HWC, as torchvision
    meta = _unpickle(base / spec["meta"])
    classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta[spec["names_key"]]]
    y = torch.tensor(labels, dtype=torch.int64)
    if not train:
        return InMemoryImageDataset(
            np.ascontiguousarray(data),
            labels,
            classes,
            name=f"{spec_name} test",
            transform=transform,
            target_transform=target_transform,
        )
    per_class = torch.bincount(y, minlength=len(classes))
    if max_count is None:
        max_count = int(per_class.min())
    counts = longtail_counts(len(classes), max_count, factor)
    idx = longtail_indices(y, counts, seed=seed)
    idx_np = idx.numpy()
    return InMemoryImageDataset(
        np.ascontiguousarray(data[idx_np]),
        y[idx].tolist(),
        classes,
        name=f"{spec_name}-LT IF={imbalance_factor:g}",
        indices=idx,
        transform=transform,
        target_transform=target_transform,
    )


def cifar100_lt(
    root: PathLike,
    imbalance_factor: float,
    train: bool = True,
    transform: Transform = None,
    download: bool = False,
    seed: int = 0,
    *,
    target_transform: Transform = None,
    max_count: Optional[int] = None,
) -> InMemoryImageDataset:
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
    root: PathLike,
    imbalance_factor: float,
    train: bool = True,
    transform: Transform = None,
    download: bool = False,
    seed: int = 0,
    *,
    target_transform: Transform = None,
    max_count: Optional[int] = None,
) -> InMemoryImageDataset:
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


# --------------------------------------------------------------------------------------------------------------------
# ImageNet-LT
# --------------------------------------------------------------------------------------------------------------------


def imagenet_lt(
    root: PathLike,
    split_file: PathLike,
    transform: Transform = None,
    *,
    target_transform: Transform = None,
    num_classes: Optional[int] = None,
    loader: Optional[Callable[[str], Any]] = None,
) -> ImageListDataset:
    """ImageNet-LT :cite:`liu2019oltr` from one of its standard split files.

    Each line of ``split_file`` reads ``relative/path.JPEG label`` (one space, labels ``0..999``), with paths
    relative to ``root``, the folder of the ILSVRC-2012 images (``train/<wnid>/...`` and
    ``val/<wnid>/...``). The split files come from the OLTR project (``ImageNet_LT_train.txt``,
    ``ImageNet_LT_val.txt``, ``ImageNet_LT_test.txt``; OLTR's README links them) or from TensorFlow Datasets'
    ``imagenet_lt``; classifier-balancing ships the same val and test lists. The training list has 115,846
    images of 1,000 classes, from 1,280 down to 5 per class; val has 20 and test 50 images per class.
    The images themselves fall under ImageNet's own terms of access.

    Images are decoded only in ``__getitem__`` (as RGB with Pillow, like torchvision's ``default_loader``);
    building the data set reads the split file only, and does not check that the images exist.

    Args:
        root: Folder that the paths in the split file are relative to.
        split_file: Path to the split file.
        transform: Applied to the PIL RGB image.
        target_transform: Applied to the label.
        num_classes: Length of ``.class_counts``. Default: the largest label + 1.
        loader: Function from a path to an image. Default: Pillow, converted to RGB.

    Returns:
        An :class:`ImageListDataset` with ``.samples``, ``.targets`` and ``.class_counts``.

    Raises:
        FileNotFoundError: If ``root`` is not a folder or ``split_file`` does not exist.
        ValueError: If a line is malformed (the message names the file and line number), or a label is
            ``>= num_classes``.
    """
    root_path = Path(root).expanduser()
    split_path = Path(split_file).expanduser()
    if not split_path.is_file():
        raise FileNotFoundError(
            f"ImageNet-LT split file not found: {split_path}. Get ImageNet_LT_{{train,val,test}}.txt from the OLTR "
            "project's published split files (linked from zhmiao/OpenLongTailRecognition-OLTR) or TensorFlow "
            "Datasets' imagenet_lt, and pass its path as `split_file`."
        )
    if not root_path.is_dir():
        raise FileNotFoundError(
            f"Expected `root` to be the folder of the ImageNet (ILSVRC-2012) images that the paths in "
            f"{split_path} are relative to, but {root_path} is not a folder"
        )
    samples: list[tuple[str, int]] = []
    with open(split_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(
                    f"Expected every line of a split file to read `relative/path label` with an integer label "
                    f">= 0, but got {text!r} at {split_path}:{lineno}"
                )
            samples.append((str(root_path / parts[0]), int(parts[1])))
    if not samples:
        raise ValueError(f"Expected at least one `relative/path label` line in {split_path}, but it has none")
    largest = max(label for _, label in samples)
    if num_classes is None:
        num_classes = largest + 1
    num_classes = _check_int("num_classes", num_classes, 1)
    if largest >= num_classes:
        raise ValueError(f"Expected every label in {split_path} to be < num_classes={num_classes}, but got {largest}")
    return ImageListDataset(
        root_path,
        split_path,
        samples,
        num_classes,
        transform=transform,
        target_transform=target_transform,
        loader=loader,
    )


# --------------------------------------------------------------------------------------------------------------------
# IDX files and Fashion-MNIST-LT
# --------------------------------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}


def read_idx(path: PathLike) -> Tensor:
    """Read an IDX file (the MNIST / Fashion-MNIST format), gzipped (``.gz``) or raw.

    The header is two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
    ``0x0D`` float32, ``0x0E`` float64), the number of dimensions, and one big-endian ``int32`` size per
    dimension; the values follow, big-endian.

    Args:
        path: The file. Gzip-compressed files are recognised by their content, whatever their name.

    Returns:
        A tensor of the file's dtype and shape.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the header is not an IDX header or the data size does not match it.
    """
    p = Path(path)
    with open(p, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"Expected an IDX file (magic 0x0000TTDD), but {p} starts with {raw[:4].hex()!r}")
    dtype, itemsize = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"Expected {ndim} dimension sizes in the header of {p}, but the file ends after {len(raw)} bytes"
        )
    shape = [int.from_bytes(raw[4 + 4 * d : 8 + 4 * d], "big") for d in range(ndim)]
    numel = math.prod(shape)
    if len(raw) - header != numel * itemsize:
        raise ValueError(
            f"Expected {numel * itemsize} bytes of data for shape {tuple(shape)} in {p}, but got {len(raw) - header}"
        )
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    values = torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8)
    if itemsize > 1 and sys.byteorder == "little":
        values = values.view(-1, itemsize).flip(1).contiguous()
    return values.view(dtype).reshape(shape)


_FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _find_idx(root: Path, stem: str) -> Path:
    candidates = [d / (stem + ext) for d in (root, root / "FashionMNIST" / "raw") for ext in (".gz", "")]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"Fashion-MNIST not found: looked for {stem}[.gz] in {root} and {root / 'FashionMNIST' / 'raw'}. "
        "On Debian/Ubuntu `apt-get install dataset-fashion-mnist` installs the files in "
        "/usr/share/datasets/fashion-mnist/; or `torchvision.datasets.FashionMNIST(root, download=True)` downloads "
        "them into root/FashionMNIST/raw/."
    )


def fashion_mnist_lt(
    root: PathLike,
    imbalance_factor: float,
    train: bool = True,
    max_count: Optional[int] = None,
    transform: Transform = None,
    seed: int = 0,
    *,
    target_transform: Transform = None,
) -> InMemoryImageDataset:
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
    factor = _check_imbalance_factor(imbalance_factor)
    base = Path(root).expanduser()
    prefix = "train" if train else "t10k"
    images = read_idx(_find_idx(base, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(base, f"{prefix}-labels-idx1-ubyte")).to(torch.int64)
    if images.ndim != 3 or images.dtype != torch.uint8 or labels.ndim != 1 or labels.numel() != images.shape[0]:
        raise ValueError(
            f"Expected uint8 images (N, H, W) and N labels in {base}, but got images {tuple(images.shape)} "
            f"{images.dtype} and labels {tuple(labels.shape)}"
        )
    classes = list(_FASHION_CLASSES)
    if not train:
        return InMemoryImageDataset(
            images,
            labels.tolist(),
            classes,
            name="Fashion-MNIST test",
            transform=transform,
            target_transform=target_transform,
        )
    if max_count is None:
        max_count = int(torch.bincount(labels, minlength=len(classes)).min())
    counts = longtail_counts(len(classes), max_count, factor)
    idx = longtail_indices(labels, counts, seed=seed)
    return InMemoryImageDataset(
        images[idx].contiguous(),
        labels[idx].tolist(),
        classes,
        name=f"Fashion-MNIST-LT IF={imbalance_factor:g}",
        indices=idx,
        transform=transform,
        target_transform=target_transform,
    )


# --------------------------------------------------------------------------------------------------------------------
# scikit-learn digits (offline demo)
# --------------------------------------------------------------------------------------------------------------------


def digits_lt(
    imbalance_factor: float,
    train: bool = True,
    *,
    test_per_class: int = 50,
    max_count: Optional[int] = None,
    transform: Transform = None,
    target_transform: Transform = None,
    seed: int = 0,
) -> InMemoryImageDataset:
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
    factor = _check_imbalance_factor(imbalance_factor)
    test_per_class = _check_int("test_per_class", test_per_class, 1)
    seed = _check_int("seed", seed, 0)
    datasets = _import("sklearn.datasets", "digits_lt")
    bunch = datasets.load_digits()
    images = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    num_classes = 10
    per_class = torch.bincount(labels, minlength=num_classes)
    if int(per_class.min()) <= test_per_class:
        raise ValueError(
            f"Expected `test_per_class` < the smallest class ({int(per_class.min())} images), but got {test_per_class}"
        )
    gen = torch.Generator().manual_seed(seed)
    test_idx, pool_idx = [], []
    for j in range(num_classes):
        idx = (labels == j).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        test_idx.append(idx[:test_per_class])
        pool_idx.append(idx[test_per_class:])
    classes = [str(j) for j in range(num_classes)]
    if not train:
        idx = torch.cat(test_idx)
        return InMemoryImageDataset(
            images[idx].contiguous(),
            labels[idx].tolist(),
            classes,
            name="Digits test",
            indices=idx,
            transform=transform,
            target_transform=target_transform,
        )
    pool = torch.cat(pool_idx)
    if max_count is None:
        max_count = min(p.numel() for p in pool_idx)
    counts = longtail_counts(num_classes, max_count, factor)
    idx = pool[longtail_indices(labels[pool], counts, seed=seed)]
    return InMemoryImageDataset(
        images[idx].contiguous(),
        labels[idx].tolist(),
        classes,
        name=f"Digits-LT IF={imbalance_factor:g}",
        indices=idx,
        transform=transform,
        target_transform=target_transform,
    )


from longtail_losses.samplers import ClassAwareSampler  # noqa: E402  (re-export; defined in samplers.py)

__all__ += ["ClassAwareSampler"]
