"""A long-tail loss in timm's training recipe: Mixup/CutMix soft targets, a timm image folder, a timm model.

timm's ``train.py`` hard-codes its loss: with Mixup or CutMix on, ``SoftTargetCrossEntropy()`` on the soft
targets that ``timm.data.Mixup`` makes (label smoothing included). Every loss of this library takes those soft
targets as they are (class probabilities, shape (N, C)): replace the loss block with ``make_loss`` below. The
counts come from the training folder's file list, without decoding an image.

Run:  python examples/integrations/timm_mixup.py     (needs `pip install -e ".[integrations]"`; offline)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import timm
import torch
from timm.data import Mixup, create_dataset
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[2]))  # longtail_losses from a clone, if not installed

from _image_folder import write_image_folder

import longtail_losses as ltl


def counts_of(dataset_train) -> Tensor:
    """Training images per class of a timm folder data set, from its file list (no image is decoded)."""
    return ltl.class_counts([target for _, target in dataset_train.reader.samples])


def make_loss(counts: Tensor) -> nn.Module:
    """In timm's train.py, in place of ``train_loss_fn = SoftTargetCrossEntropy()`` (and of the other branches)."""
    # Hard labels and Mixup's soft targets alike; Mixup applies the label smoothing, so the loss adds none.
    train_loss_fn = ltl.BalancedSoftmax(counts)
    return train_loss_fn


def train_steps(model: nn.Module, loader: DataLoader, mixup_fn: Mixup, train_loss_fn: nn.Module, steps: int) -> float:
    """Timm-style training steps: Mixup on the batch, the loss on its soft targets; returns the last loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    loss = torch.tensor(float("nan"))
    for step, (images, targets) in enumerate(loader):
        if step == steps:
            break
        images, targets = mixup_fn(images, targets)  # targets: (N, C) class probabilities
        loss = train_loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def main(root: Path, steps: int = 3) -> float:
    counts_per_class = [12, 6, 3, 3]
    write_image_folder(root / "train", counts_per_class)
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    dataset_train = create_dataset("", root=str(root / "train"), split="train", is_training=True, transform=transform)
    counts = counts_of(dataset_train)
    num_classes = len(counts)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=num_classes)  # no download
    mixup_fn = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=num_classes)
    loader = DataLoader(dataset_train, batch_size=8, shuffle=True, drop_last=True)  # Mixup needs even batches
    loss = train_steps(model, loader, mixup_fn, make_loss(counts), steps)
    print(f"counts {counts.tolist()}; loss after {steps} steps with Mixup/CutMix soft targets: {loss:.4f}")
    return loss


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
