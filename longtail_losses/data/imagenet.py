r"""ImageNet-LT: the ILSVRC-2012 images and the split files of Liu et al."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from longtail_losses._validation import check_int
from longtail_losses.data.datasets import ImageListDataset
from longtail_losses.data.readers import PathLike, Transform

__all__ = ["imagenet_lt"]


def imagenet_lt(
    root: PathLike, split_file: PathLike, transform: Transform = None, *,
    target_transform: Transform = None, num_classes: Optional[int] = None,
    loader: Optional[Callable[[str], Any]] = None,
) -> ImageListDataset:  # fmt: skip
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
    base = Path(root).expanduser()
    split_path = Path(split_file).expanduser()
    if not split_path.is_file():
        raise FileNotFoundError(
            f"ImageNet-LT split file not found: {split_path}. Get ImageNet_LT_{{train,val,test}}.txt from the OLTR "
            "project's published split files (linked from zhmiao/OpenLongTailRecognition-OLTR) or TensorFlow "
            "Datasets' imagenet_lt, and pass its path as `split_file`."
        )
    if not base.is_dir():
        raise FileNotFoundError(
            f"Expected `root` to be the folder of the ImageNet (ILSVRC-2012) images that the paths in "
            f"{split_path} are relative to, but {base} is not a folder"
        )
    samples: list[tuple[str, int]] = []
    with open(split_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not (text := line.strip()):
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(
                    f"Expected every line of a split file to read `relative/path label` with an integer label "
                    f">= 0, but got {text!r} at {split_path}:{lineno}"
                )
            samples.append((str(base / parts[0]), int(parts[1])))
    if not samples:
        raise ValueError(f"Expected at least one `relative/path label` line in {split_path}, but it has none")
    largest = max(label for _, label in samples)
    num_classes = check_int("num_classes", largest + 1 if num_classes is None else num_classes, 1)
    if largest >= num_classes:
        raise ValueError(f"Expected every label in {split_path} to be < num_classes={num_classes}, but got {largest}")
    return ImageListDataset(
        base, split_path, samples, num_classes, transform=transform, target_transform=target_transform, loader=loader
    )
