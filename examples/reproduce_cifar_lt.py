r"""Reproduce a row of the BWLM paper's Table 4 (CIFAR-100-LT, ResNet-32) on one GPU, several (torchrun) or a CPU.

Two stages (paper section 3.2): stage 1 trains ResNet-32 with cross-entropy on the head half of the classes;
stage 2 freezes it (BatchNorm statistics included), puts a new linear classifier over all 100 classes on top and
trains only that, on the data-balanced-review subset, with the row's loss. ``--naive`` (or ``--row naive``) is the
one-stage baseline: cross-entropy on the whole long-tailed set.

The data set lives on the training device as one uint8 tensor and is augmented there (4-pixel zero-padded
random crop + horizontal flip as batched tensor ops), so no CPU DataLoader limits the speed. By default stage 2
runs without augmentation, on features of the frozen backbone computed once (the fast path; the paper does not
say whether stage 2 augments): ``--stage2-augment`` runs the frozen backbone with augmentation every step.

Examples:
    python examples/reproduce_cifar_lt.py --data ~/data --imbalance-factor 100 --row BWLM --output runs/bwlm
    python examples/reproduce_cifar_lt.py --data ~/data --row CE --stage1-weights runs/bwlm/stage1_model.pt \
        --output runs/ce
    torchrun --nproc_per_node=4 examples/reproduce_cifar_lt.py --data ~/data --row BSW --output runs/bsw

Outputs in ``--output``: results.json (config, Many/Medium/Few/All per stage, per-class accuracy, classifier
weight norms, wall time), per_class_accuracy.png (paper Fig. 7), weight_norms.png (Fig. 5a), stage1_model.pt
(with a fingerprint of the data and seed, checked by --stage1-weights), final_model.pt, checkpoint.pt (every
epoch; continue with --resume) and train.log (the start banner and one line per epoch, as printed).
Accuracy is measured on the raw logits; the reported model is the last epoch's (CIFAR has no validation split,
and the test set selects nothing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))  # longtail_losses from a clone, if not installed

import _batches
import _cli
import _distributed
import _pipeline
import torch

from longtail_losses import data as ltd
from longtail_losses.models import resnet32

MEAN = {"cifar100": (0.5071, 0.4865, 0.4409), "cifar10": (0.4914, 0.4822, 0.4465)}
STD = {"cifar100": (0.2673, 0.2564, 0.2762), "cifar10": (0.2470, 0.2435, 0.2616)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reproduce_cifar_lt.py", description=_cli.plain(__doc__), formatter_class=_cli.HelpFormatter
    )
    g = parser.add_argument_group("data")
    g.add_argument("--data", type=Path, default=Path("data"), help="folder holding cifar-100-python/")
    g.add_argument("--dataset", choices=("cifar100", "cifar10"), default="cifar100", help="paper: cifar100")
    g.add_argument(
        "--imbalance-factor",
        type=float,
        default=100,
        help="IF = largest / smallest class (paper: 10, 50, 100, 200; Table 4)",
    )
    g.add_argument("--download", action="store_true", help="download CIFAR with torchvision if missing")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the long-tailed subsample (0: LDAM's subset)")
    g.add_argument("--max-count", type=int, default=None, help="images of the head class (default: 500, all)")
    _cli.add_common_args(parser, epochs=320, output="runs/cifar_lt_if<IF>_<row>_seed<seed>")
    return parser


# The python-version pickles each data set needs (as longtail_losses.data reads them).
CIFAR_FILES = {
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
    "cifar10": ("cifar-10-batches-py", [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]),
}


def check_cifar(args: argparse.Namespace) -> None:
    """Before anything trains: the CIFAR pickles are in ``--data`` (skipped with ``--download``)."""
    folder, files = CIFAR_FILES[args.dataset]
    base = Path(args.data).expanduser() / folder
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        name = "CIFAR-100" if args.dataset == "cifar100" else "CIFAR-10"
        raise _cli.InputError(
            f"Expected {name} in --data {args.data} (the python version: {folder}/ with "
            f"{', '.join(files)}), but {len(missing)} of {len(files)} files are missing ({base / missing[0]}). "
            f"Pass --download to fetch it (needs torchvision and internet access), or point --data at the folder "
            f"that holds {folder}/ (from https://www.cs.toronto.edu/~kriz/cifar.html)."
        )


def make_task(args: argparse.Namespace, d: _distributed.Dist) -> _pipeline.Task:
    loader = ltd.cifar100_lt if args.dataset == "cifar100" else ltd.cifar10_lt
    if args.download:  # rank 0 downloads; the others wait for it, then every rank reads the files
        if d.is_main:
            loader(args.data, args.imbalance_factor, train=True, download=True)
            loader(args.data, args.imbalance_factor, train=False, download=True)
        _distributed.barrier(d)
    check_cifar(args)
    train_set = loader(args.data, args.imbalance_factor, train=True, seed=args.data_seed, max_count=args.max_count)
    test_set = loader(args.data, args.imbalance_factor, train=False)
    channels_last = bool(args.channels_last and d.device.type == "cuda")

    def on_device(ds: Any) -> _batches.TensorData:
        images = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous().to(d.device)
        labels = torch.tensor(ds.targets, dtype=torch.int64, device=d.device)
        return _batches.TensorData(images, labels, MEAN[args.dataset], STD[args.dataset], channels_last)

    train, test = on_device(train_set), on_device(test_set)
    cache: dict[tuple[int, int], tuple[_batches.TensorData, _batches.CropFlip]] = {}

    def subset(positions: torch.Tensor, seed: int) -> tuple[_batches.TensorData, _batches.CropFlip]:
        key = (id(positions), seed)
        if key not in cache:
            sub = train.subset(positions)
            cache[key] = (sub, _batches.CropFlip(len(sub), padding=4, flip=True, seed=seed))
        return cache[key]

    def train_batches(positions: torch.Tensor, batch_size: int, seed: int, epoch: int, augment: bool) -> Any:
        sub, crop = subset(positions, seed)
        return sub.train_batches(batch_size, seed=seed, epoch=epoch, d=d, augment=crop if augment else None)

    def feature_data(key: Any) -> tuple[torch.Tensor, torch.Tensor]:
        src = test if isinstance(key, str) else train.subset(key)
        shard = _batches.eval_shard(len(src), d).to(d.device)
        return src.normalize(src.images[shard]), src.labels[shard]

    def eval_batches(split: str) -> Any:
        return test.eval_batches(d)

    name = f"{'CIFAR-100' if args.dataset == 'cifar100' else 'CIFAR-10'}-LT IF={args.imbalance_factor:g}"
    return _pipeline.Task(
        name=name,
        num_classes=len(train_set.classes),
        train_labels=torch.tensor(train_set.targets, dtype=torch.int64),
        build_model=lambda: resnet32(num_classes=len(train_set.classes)),
        train_batches=train_batches,
        feature_data=feature_data,
        eval_batches=eval_batches,
        splits=("test",),
        thresholds=(100, 20),
        extra={"model": "resnet32 (option-A shortcuts)", "test_size": len(test_set)},
        fingerprint={
            "dataset": args.dataset,
            "imbalance_factor": args.imbalance_factor,
            "data_seed": args.data_seed,
            "max_count": args.max_count,
        },
    )


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return _pipeline.run_main(args, make_task, f"cifar_lt_if{args.imbalance_factor:g}_{{row}}_seed{{seed}}")


if __name__ == "__main__":
    sys.exit(main())
