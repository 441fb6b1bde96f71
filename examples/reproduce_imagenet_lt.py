r"""Reproduce a row of the BWLM paper's Tables 2-3 (ImageNet-LT, ResNeXt-50) on one GPU, several (torchrun) or a CPU.

The same two stages as ``reproduce_cifar_lt.py`` (paper section 3.2) with torchvision's
``resnext50_32x4d(weights=None)``, the standard ImageNet transforms (RandomResizedCrop 224 + horizontal flip for
training; resize 256 / center crop 224 for evaluation) and a DataLoader with worker processes and pinned memory.

Data: the ILSVRC-2012 images under ``--data`` (``train/<wnid>/...``, ``val/<wnid>/...``) and the ImageNet-LT
split files ``ImageNet_LT_{train,val,test}.txt`` (lines ``relative/path.JPEG label``) from the OLTR project
(see :func:`longtail_losses.data.imagenet_lt`). The official ILSVRC-2012 val archive is flat
(``val/ILSVRC2012_val_00000001.JPEG``, ...); the test list expects ``val/<wnid>/ILSVRC2012_val_....JPEG``: sort
the val images into one folder per class first (e.g. with the ``valprep.sh`` of PyTorch's ImageNet example).
Every image the split files list is checked to exist before training starts.

With ``--val-split`` the val set (20 images per class) is evaluated after every epoch and the epoch that is best
on it is reported besides the last one; the test set (50 per class) never selects anything.

Examples:
    python examples/reproduce_imagenet_lt.py --data /data/imagenet --splits /data/ImageNet_LT --row BWLM \
        --output runs/inlt_bwlm
    torchrun --nproc_per_node=8 examples/reproduce_imagenet_lt.py --data /data/imagenet \
        --splits /data/ImageNet_LT --row BWLM --output runs/inlt_bwlm

Outputs as ``reproduce_cifar_lt.py``: results.json, per_class_accuracy.png (Fig. 7), weight_norms.png (Fig. 5a),
checkpoint.pt every epoch (--resume), stage1_model.pt (with the fingerprint --stage1-weights checks),
final_model.pt, best_stage1_model.pt, and train.log (the start banner and one line per epoch).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))  # longtail_losses from a clone, if not installed

import _batches
import _cli
import _distributed
import _pipeline
import torch
from torch.utils.data import DataLoader, Subset

from longtail_losses import data as ltd

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reproduce_imagenet_lt.py", description=_cli.plain(__doc__), formatter_class=_cli.HelpFormatter
    )
    g = parser.add_argument_group("data")
    g.add_argument("--data", type=Path, default=Path("data/imagenet"), help="folder the split files' paths start in")
    g.add_argument(
        "--splits",
        type=Path,
        default=None,
        help="folder of ImageNet_LT_{train,val,test}.txt (default: --data); see also --train-split etc.",
    )
    g.add_argument("--train-split", type=Path, default=None, help="default: <splits>/ImageNet_LT_train.txt")
    g.add_argument("--val-split", type=Path, default=None, help="default: <splits>/ImageNet_LT_val.txt if it exists")
    g.add_argument("--test-split", type=Path, default=None, help="default: <splits>/ImageNet_LT_test.txt")
    g.add_argument("--no-val", action="store_true", help="do not evaluate on val (no best-on-val epoch)")
    g.add_argument(
        "--image-size", type=int, default=224, help="training crop; evaluation resizes to size*256/224 (paper: 224)"
    )
    g.add_argument("--workers", type=int, default=8, help="DataLoader worker processes per GPU")
    g.add_argument("--eval-batch-size", type=int, default=256, help="batch size of evaluation / feature extraction")
    _cli.add_common_args(parser, epochs=500, output="runs/imagenet_lt_<row>_seed<seed>")
    return parser


def transforms(size: int) -> tuple[Any, Any]:
    from torchvision import transforms as T

    normalize = T.Normalize(MEAN, STD)
    train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    test = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), normalize])
    return train, test


def check_split_files(args: argparse.Namespace, files: dict[str, Path]) -> None:
    """Before anything trains: every split file exists (told in terms of --splits / --train-split ...)."""
    for split, path in files.items():
        if not path.is_file():
            flag = f"--{split}-split" if getattr(args, f"{split}_split") is not None else "--splits"
            raise _cli.InputError(
                f"Expected the ImageNet-LT {split} list at {path} (from {flag}), but there is no such file. "
                "Point --splits at the folder holding ImageNet_LT_{train,val,test}.txt (the OLTR project's split "
                f"files), or pass --{split}-split FILE" + (" or --no-val." if split == "val" else ".")
            )


def missing_images(root: Path, relative_paths: list[str]) -> list[str]:
    """The paths (relative to ``root``) that do not exist; one directory listing per folder, not one stat per file."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for rel in relative_paths:
        folder, _, name = rel.rpartition("/")
        by_folder[folder].append(name)
    missing = []
    for folder, names in by_folder.items():
        try:
            present = set(os.listdir(root / folder))
        except OSError:
            present = set()
        missing += [f"{folder}/{n}" if folder else n for n in names if n not in present]
    return missing


def check_images(args: argparse.Namespace, datasets: dict[str, Any]) -> None:
    """Before anything trains: every image that a split file lists exists under --data."""
    root = Path(args.data).expanduser()
    problems = []
    flat_val = False
    for split, ds in datasets.items():
        rels = [os.path.relpath(path, root).replace(os.sep, "/") for path, _ in ds.samples]
        missing = missing_images(root, rels)
        if missing:
            problems.append(f"{split}: {len(missing)} of {len(rels)} missing (first: {missing[0]})")
            first = missing[0]
            if first.startswith("val/") and (root / "val" / first.rsplit("/", 1)[-1]).is_file():
                flat_val = True
    if problems:
        hint = (
            " The val images are in the official flat layout (val/ILSVRC2012_val_*.JPEG), but the ImageNet-LT lists "
            "expect val/<wnid>/ILSVRC2012_val_*.JPEG: sort them into one folder per class (e.g. with the valprep.sh "
            "of PyTorch's ImageNet example)."
            if flat_val
            else " Point --data at the folder that holds train/ and val/ (the ILSVRC-2012 images; the paths in the "
            "split files are relative to it), with val/ sorted into one folder per class (val/<wnid>/...)."
        )
        raise _cli.InputError(
            f"Expected every image of the split files under --data {args.data}, but " + "; ".join(problems) + "." + hint
        )


def make_task(args: argparse.Namespace, d: _distributed.Dist) -> _pipeline.Task:
    from torchvision.models import resnext50_32x4d

    splits = args.splits if args.splits is not None else args.data
    train_file = args.train_split or splits / "ImageNet_LT_train.txt"
    test_file = args.test_split or splits / "ImageNet_LT_test.txt"
    val_file = args.val_split or splits / "ImageNet_LT_val.txt"
    use_val = not args.no_val and (args.val_split is not None or val_file.exists())
    check_split_files(args, {"train": train_file, "test": test_file} | ({"val": val_file} if use_val else {}))
    if not Path(args.data).expanduser().is_dir():
        raise _cli.InputError(
            f"Expected --data {args.data} to be the folder of the ILSVRC-2012 images (train/, val/), but it is not a "
            "folder"
        )
    train_tf, test_tf = transforms(args.image_size)
    train_aug = ltd.imagenet_lt(args.data, train_file, train_tf)
    num_classes = int(train_aug.class_counts.numel())
    train_plain = ltd.imagenet_lt(args.data, train_file, test_tf, num_classes=num_classes)
    evals = {"test": ltd.imagenet_lt(args.data, test_file, test_tf, num_classes=num_classes)}
    if use_val:
        evals["val"] = ltd.imagenet_lt(args.data, val_file, test_tf, num_classes=num_classes)
    check_images(args, {"train": train_aug, **evals})
    pin = d.device.type == "cuda"

    def loader(dataset: Any, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset, num_workers=args.workers, pin_memory=pin, persistent_workers=False, **kwargs
        )  # fmt: skip

    def train_batches(positions: torch.Tensor, batch_size: int, seed: int, epoch: int, augment: bool) -> Any:
        shards = _batches.epoch_batches(positions.numel(), batch_size, seed=seed, epoch=epoch, d=d)
        batch_sampler = [s.tolist() for s, _ in shards]
        # Worker seeds (and so the augmentations) are a function of (seed, epoch, rank): resumable.
        torch.manual_seed(seed * 100_003 + epoch * 101 + d.rank)
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch * 101 + d.rank)
        dl = loader(Subset(train_aug if augment else train_plain, positions.tolist()),
                    batch_sampler=batch_sampler, generator=gen)  # fmt: skip
        for (x, y), (_, global_n) in zip(dl, shards):
            yield x, y, global_n

    def feature_data(key: Any) -> DataLoader:
        if isinstance(key, str):
            ds: Any = evals[key]
            positions = _batches.eval_shard(len(ds), d)
        else:
            ds = train_plain
            positions = key[_batches.eval_shard(key.numel(), d)]
        return loader(Subset(ds, positions.tolist()), batch_size=args.eval_batch_size, shuffle=False)

    def eval_batches(split: str) -> Any:
        return feature_data(split)

    def build_model() -> torch.nn.Module:
        return resnext50_32x4d(weights=None, num_classes=num_classes)

    return _pipeline.Task(
        name="ImageNet-LT",
        num_classes=num_classes,
        train_labels=torch.tensor(train_aug.targets, dtype=torch.int64),
        build_model=build_model,
        train_batches=train_batches,
        feature_data=feature_data,
        eval_batches=eval_batches,
        splits=("val", "test") if use_val else ("test",),
        thresholds=(100, 20),
        extra={
            "model": "torchvision resnext50_32x4d(weights=None)",
            "split_files": {k: str(v) for k, v in {"train": train_file, "test": test_file}.items()}
            | ({"val": str(val_file)} if use_val else {}),
            "eval_sizes": {k: len(v) for k, v in evals.items()},
            "image_size": args.image_size,
        },
        fingerprint={"dataset": "ImageNet-LT", "train_split": train_file.name, "num_train": len(train_aug)},
    )


def main(argv: Optional[list[str]] = None) -> int:
    return _pipeline.run_main(build_parser().parse_args(argv), make_task, "imagenet_lt_{row}_seed{seed}")


if __name__ == "__main__":
    sys.exit(main())
