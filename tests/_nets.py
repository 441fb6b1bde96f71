"""A small network with a classifier, a stage-1 model and a parameter snapshot, for the two-stage and loop tests."""

from __future__ import annotations

import torch
from torch import nn


class SmallNet(nn.Module):
    """Conv + BatchNorm + dropout backbone with a linear head at a custom, nested attribute."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def stage1_model(seed: int = 0) -> SmallNet:
    torch.manual_seed(seed)
    net = SmallNet()
    net.train()
    with torch.no_grad():  # move the BN statistics away from their initial values
        for _ in range(3):
            net(torch.randn(8, 3, 6, 6) * 2 + 1)
    return net


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
