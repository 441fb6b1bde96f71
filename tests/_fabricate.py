"""Fabricate tiny data sets in the real on-disk formats, so that tests run the real loading code.

Plain functions, importable from any test module: ``from tests._fabricate import make_fake_cifar100``.

Every image encodes its label so a test can check that images and labels stay paired:
CIFAR and Fashion-MNIST pixels are random, except pixel (0, 0) which holds ``label`` (in every channel);
fabricated ImageNet JPEGs are a solid grey of value ``label_grey(label)``.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _interleaved_labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    rng.shuffle(labels)  # like the real files: classes are not stored in order
    return labels


def _images_with_label(labels: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    images = rng.integers(0, 256, size=(labels.size, *shape), dtype=np.uint8)
    images[:, 0, 0, ...] = labels.reshape(-1, *([1] * (len(shape) - 2))).astype(np.uint8)
    return images


def make_fake_cifar100(
    root: str | Path,
    per_class_train: int = 5,
    per_class_test: int = 2,
    num_classes: int = 100,
    seed: int = 0,
    *,
    str_keys: bool = False,
    protocol: int = 2,
) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` with the keys of the official python-version pickles.

    Image ``k`` is stored CHW-flattened in ``data[k]`` (3072 uint8), as in the real files; pixel (0, 0) of
    every channel holds the label. ``str_keys=True`` writes ``str`` keys (what the official Python 2 pickles
    give when loaded with ``encoding='latin1'``); the default writes ``bytes`` keys (``encoding='bytes'``).
    ``protocol`` is the pickle protocol: 2 as in the official files; a higher one writes and reads large fakes
    several times faster.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def key(k: str) -> str | bytes:
        return k if str_keys else k.encode("latin1")

    def text(s: str) -> str | bytes:
        return s if str_keys else s.encode("latin1")

    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        labels = _interleaved_labels(num_classes, per_class, rng)
        hwc = _images_with_label(labels, (32, 32, 3), rng)
        data = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2).reshape(labels.size, 3072))
        entry = {
            key("filenames"): [text(f"img_{split}_{i}.png") for i in range(labels.size)],
            key("batch_label"): text(f"{split}ing batch 1 of 1"),
            key("fine_labels"): labels.tolist(),
            key("coarse_labels"): (labels // 5).tolist(),
            key("data"): data,
        }
        with open(base / split, "wb") as f:
            pickle.dump(entry, f, protocol=protocol)
    meta = {
        key("fine_label_names"): [text(f"class_{j:03d}") for j in range(num_classes)],
        key("coarse_label_names"): [text(f"super_{j:02d}") for j in range(max(1, num_classes // 5))],
    }
    with open(base / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=protocol)
    return root


def label_grey(label: int) -> int:
    """Grey value of the fabricated ImageNet JPEGs of class ``label``."""
    return (37 * label + 20) % 256


def make_fake_imagenet_lt(
    root: str | Path,
    counts_train: Sequence[int],
    per_class_eval: int = 2,
    image_size: int = 8,
) -> dict[str, Path]:
    """Write a tiny ImageNet in the ILSVRC-2012 folder layout and ImageNet-LT split files over it.

    Class ``j`` has WordNet-like id ``n{j:08d}``. Training images are ``train/<wnid>/<wnid>_<k>.JPEG``;
    the ``val`` list takes ``per_class_eval`` further images of the same ``train/`` folders (as ImageNet-LT's
    val does) and the ``test`` list ``per_class_eval`` images ``val/<wnid>/ILSVRC2012_val_<n>.JPEG``. Every
    JPEG is a solid grey of :func:`label_grey` ``(label)``.

    Returns:
        ``{"train": path, "val": path, "test": path}`` of ``root/ImageNet_LT_{train,val,test}.txt``.
    """
    from PIL import Image

    root = Path(root)
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    serial = 0
    for j, n_train in enumerate(counts_train):
        wnid = f"n{j:08d}"
        grey = label_grey(j)
        for folder in ("train", "val"):
            (root / folder / wnid).mkdir(parents=True, exist_ok=True)
        for k in range(n_train + per_class_eval):
            rel = f"train/{wnid}/{wnid}_{k}.JPEG"
            Image.new("RGB", (image_size, image_size), (grey, grey, grey)).save(root / rel, format="JPEG")
            lines["train" if k < n_train else "val"].append(f"{rel} {j}")
        for _ in range(per_class_eval):
            serial += 1
            rel = f"val/{wnid}/ILSVRC2012_val_{serial:08d}.JPEG"
            Image.new("RGB", (image_size, image_size), (grey, grey, grey)).save(root / rel, format="JPEG")
            lines["test"].append(f"{rel} {j}")
    out = {}
    for split, split_lines in lines.items():
        path = root / f"ImageNet_LT_{split}.txt"
        path.write_text("".join(line + "\n" for line in split_lines))
        out[split] = path
    return out


def write_idx(path: str | Path, array: np.ndarray, *, gz: bool = True) -> Path:
    """Write ``array`` as an IDX file (big-endian), gzipped if ``gz``."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C}
    codes.update({np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E})
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, codes[big.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(big).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_fake_fashion_mnist(
    root: str | Path,
    per_class_train: int = 20,
    per_class_test: int = 3,
    seed: int = 0,
    *,
    gz: bool = True,
    torchvision_layout: bool = False,
) -> Path:
    """Write the four Fashion-MNIST IDX files (10 classes, 28x28) with labels in shuffled order.

    The files go in ``root`` (Debian's ``dataset-fashion-mnist`` layout), or in ``root/FashionMNIST/raw`` if
    ``torchvision_layout``; named ``*-ubyte.gz`` if ``gz`` else ``*-ubyte``. Pixel (0, 0) holds the label.

    Returns:
        The folder holding the files.
    """
    root = Path(root)
    folder = root / "FashionMNIST" / "raw" if torchvision_layout else root
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for prefix, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = _interleaved_labels(10, per_class, rng).astype(np.uint8)
        images = _images_with_label(labels, (28, 28), rng)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
    return folder
