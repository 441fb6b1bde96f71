r"""File readers behind the data sets: CIFAR pickles, IDX files, images, and the optional imports."""

from __future__ import annotations

import gzip
import importlib
import math
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

__all__ = ["read_idx"]


PathLike = Union[str, os.PathLike]
Transform = Optional[Callable[[Any], Any]]

_EXTRA_HINT = "install it with `pip install longtail-losses[examples]`"


def _import(module: str, purpose: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{purpose} needs `{module.split('.')[0]}`, which is not installed; {_EXTRA_HINT}") from err


def _pil_rgb_loader(path: str) -> Any:
    image_module = _import("PIL.Image", "Decoding ImageNet-LT images")
    with open(path, "rb") as f:
        return image_module.open(f).convert("RGB")


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        # latin1 as torchvision does: the official files are Python 2 pickles of NumPy arrays.
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict):
        raise ValueError(f"Expected {path} to hold a pickled dict, but got {type(entry).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


_IDX_DTYPES = {
    0x08: torch.uint8,
    0x09: torch.int8,
    0x0B: torch.int16,
    0x0C: torch.int32,
    0x0D: torch.float32,
    0x0E: torch.float64,
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
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"Expected an IDX file (magic 0x0000TTDD), but {p} starts with {raw[:4].hex()!r}")
    dtype = _IDX_DTYPES[raw[2]]
    ndim, itemsize = raw[3], dtype.itemsize
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
