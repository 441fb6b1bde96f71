"""A long-tail loss in torchvision's reference classification script (``references/classification/train.py``).

The script hard-codes ``criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)`` and, with
``--mixup-alpha`` or ``--cutmix-alpha``, mixes every batch in its ``collate_fn`` with ``transforms.v2.MixUp`` /
``CutMix``, which turn the labels into class probabilities. ``make_criterion`` is the one line to change; the
rest of this file re-creates the parts of the script that the loss meets (the ImageFolder, the collate function,
the training step), offline on a tiny image folder.

Run:  python examples/integrations/torchvision_reference.py     (needs `pip install -e ".[examples]"`)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[2]))  # longtail_losses from a clone, if not installed

from _image_folder import write_image_folder

import longtail_losses as ltl


def make_criterion(dataset: torchvision.datasets.ImageFolder, args: argparse.Namespace) -> nn.Module:
    """In train.py, in place of ``criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)``."""
    criterion = ltl.BalancedSoftmax(ltl.class_counts(dataset), label_smoothing=args.label_smoothing)
    return criterion


def mixup_cutmix_collate(num_classes: int, args: argparse.Namespace) -> Callable[[list[Any]], Any]:
    """The script's collate_fn with ``--mixup-alpha`` and ``--cutmix-alpha``: one of MixUp or CutMix per batch."""
    mixup_cutmix = v2.RandomChoice(
        [
            v2.MixUp(alpha=args.mixup_alpha, num_classes=num_classes),
            v2.CutMix(alpha=args.cutmix_alpha, num_classes=num_classes),
        ]
    )

    def collate_fn(batch: list[Any]) -> Any:
        return mixup_cutmix(*default_collate(batch))

    return collate_fn


def train_one_epoch(
    model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader
) -> Tensor:
    """The script's training step: ``criterion(output, target)`` with ``target`` of shape (N, C) here."""
    model.train()
    loss = torch.tensor(float("nan"))
    for image, target in loader:
        output = model(image)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.detach()


def main(root: Path) -> float:
    args = argparse.Namespace(label_smoothing=0.1, mixup_alpha=0.2, cutmix_alpha=1.0)  # the script's ImageNet recipe
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    dataset = torchvision.datasets.ImageFolder(str(write_image_folder(root / "train", [12, 6, 3, 3])), transform)
    num_classes = len(dataset.classes)
    criterion = make_criterion(dataset, args)
    model = torchvision.models.get_model("resnet18", weights=None, num_classes=num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=mixup_cutmix_collate(num_classes, args))
    loss = float(train_one_epoch(model, criterion, optimizer, loader))
    print(f"counts {criterion.class_counts.tolist()}; last loss with MixUp/CutMix soft targets: {loss:.4f}")
    return loss


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
