"""The losses with timm's Mixup/CutMix soft targets and in torchvision's reference script, as the docs recipes do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import longtail_losses as ltl
from tests.integrations._examples import load

COUNTS = [40, 12, 5, 2]


def _losses(reduction: str) -> dict[str, nn.Module]:
    return {
        "BalancedSoftmax": ltl.BalancedSoftmax(COUNTS, reduction=reduction),
        "LogitAdjustedLoss": ltl.LogitAdjustedLoss(COUNTS, reduction=reduction),
        "BFS": ltl.BFS(COUNTS, reduction=reduction),
        "ClassBalancedFocal": ltl.ClassBalancedFocal(COUNTS, reduction=reduction),
        "LDAMLoss": ltl.LDAMLoss(COUNTS, reduction=reduction),
    }


def _mixed_batch(seed: int = 0):
    from timm.data import Mixup

    torch.manual_seed(seed)
    mixup_fn = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=len(COUNTS))
    images, labels = torch.randn(8, 3, 16, 16), torch.tensor([0, 0, 0, 1, 1, 2, 3, 0])
    _, targets = mixup_fn(images, labels)
    return torch.randn(8, len(COUNTS)), targets


@pytest.mark.parametrize("name", list(_losses("none")))
def test_a_mixed_sample_gets_the_mixture_of_its_losses(name: str) -> None:
    pytest.importorskip("timm")
    logits, targets = _mixed_batch()
    assert targets.shape == (8, len(COUNTS))
    assert torch.allclose(targets.sum(1), torch.ones(8))
    assert (targets.max(1).values < 1).all()  # mixed and smoothed: no one-hot row left
    criterion = _losses("none")[name]
    per_class = torch.stack([criterion(logits, torch.full((8,), c)) for c in range(len(COUNTS))], dim=1)
    torch.testing.assert_close(criterion(logits, targets), (targets * per_class).sum(1))


def test_balanced_softmax_is_timms_soft_target_ce_on_prior_shifted_logits() -> None:
    pytest.importorskip("timm")
    from timm.loss import SoftTargetCrossEntropy

    logits, targets = _mixed_batch(1)
    shifted = logits + torch.tensor(COUNTS, dtype=torch.float32).log()
    torch.testing.assert_close(ltl.BalancedSoftmax(COUNTS)(logits, targets), SoftTargetCrossEntropy()(shifted, targets))


def test_timm_recipe_trains(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    example = load("timm_mixup")
    loss = example.main(tmp_path, steps=2)
    assert torch.isfinite(torch.tensor(loss))
    dataset = example.create_dataset("", root=str(tmp_path / "train"), split="train")
    assert example.counts_of(dataset).tolist() == [12, 6, 3, 3]


def test_torchvision_recipe_trains_on_mixup_cutmix_targets(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    example = load("torchvision_reference")
    assert torch.isfinite(torch.tensor(example.main(tmp_path)))
    # The collate function gives the criterion (N, C) class probabilities, and the criterion keeps the
    # reference line's semantics: nn.CrossEntropyLoss with the same label_smoothing, on prior-shifted logits.
    import argparse

    import torchvision

    args = argparse.Namespace(label_smoothing=0.1, mixup_alpha=0.2, cutmix_alpha=1.0)
    dataset = torchvision.datasets.ImageFolder(str(tmp_path / "train"), torchvision.transforms.v2.ToImage())
    criterion = example.make_criterion(dataset, args)
    collate = example.mixup_cutmix_collate(4, args)
    torch.manual_seed(0)
    _, targets = collate([(torch.rand(3, 8, 8), c) for c in (0, 0, 1, 3)])
    assert targets.shape == (4, 4)
    assert targets.dtype.is_floating_point
    logits = torch.randn(4, 4)
    reference = nn.CrossEntropyLoss(label_smoothing=0.1)(logits + criterion.class_counts.log(), targets)
    torch.testing.assert_close(criterion(logits, targets), reference)
    assert criterion.class_counts.tolist() == [12, 6, 3, 3]
