r"""Small reference networks for the examples: the CIFAR ResNet-32 and a tiny CNN for 8x8 digits.

Both name their classifier ``fc`` (an :class:`~torch.nn.Linear`), like torchvision's ResNet and ResNeXt, so
:func:`longtail_losses.twostage.replace_classifier` and :func:`~longtail_losses.twostage.extract_features` work
with their defaults.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from longtail_losses._validation import check_int

__all__ = ["BasicBlock", "CifarResNet", "DigitsCNN", "resnet32"]


def _init_weights(module: nn.Module) -> None:
    # He et al. 2015 initialisation of convolutions and linear layers, as the LDAM / weight-balancing code.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


class BasicBlock(nn.Module):
    r"""Two 3x3 convolutions with BatchNorm and a residual connection (He et al. 2016, CIFAR variant).

    When the block halves the resolution or changes the width, the shortcut is **option A** of He et al.:
    the identity, subsampled by 2 and zero-padded in the channel dimension, with no parameters. This is the
    shortcut of the original CIFAR ResNets and of the reference code of LDAM, weight balancing and BWLM.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (1 or 2).

    Shape:
        input: :math:`(N, \text{in\_planes}, H, W)`.
        output: :math:`(N, \text{planes}, H / \text{stride}, W / \text{stride})`.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x))


class CifarResNet(nn.Module):
    r"""The CIFAR ResNet of He et al. 2016 (section 4.2): a 3x3 stem and three stages of basic blocks.

    The stages have 16, 32 and 64 channels at 32x32, 16x16 and 8x8 resolution; global average pooling and the
    classifier ``fc`` follow. ``6n + 2`` layers for ``n`` blocks per stage (``n = 5``: ResNet-32). Shortcuts
    use option A (see :class:`BasicBlock`).

    Args:
        num_blocks: Basic blocks per stage.
        num_classes: Outputs of ``fc``.
        in_channels: Channels of the input images.

    Shape:
        input: :math:`(N, \text{in\_channels}, H, W)`, e.g. :math:`32 \times 32`.
        output: :math:`(N, \text{num\_classes})`, raw logits.

    Example:
        >>> net = CifarResNet(1, num_classes=10)  # ResNet-8
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_blocks: int = 5, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        check_int("num_blocks", num_blocks, 1)
        check_int("num_classes", num_classes, 1)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        for in_planes, planes, stride in ((16, 16, 1), (16, 32, 2), (32, 64, 2)):
            blocks = [BasicBlock(in_planes, planes, stride)]
            blocks += [BasicBlock(planes, planes) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """Return the raw logits."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.fc(out)


def resnet32(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 for CIFAR: a :class:`CifarResNet` with 5 blocks per stage, the BWLM paper's CIFAR backbone.

    Args:
        num_classes: Outputs of the classifier ``fc``.
        in_channels: Channels of the input images.

    Returns:
        The network (0.47 M parameters with 100 classes).

    Example:
        >>> net = resnet32(num_classes=100)
        >>> sum(p.numel() for p in net.parameters())
        470004
        >>> net.fc
        Linear(in_features=64, out_features=100, bias=True)
    """
    return CifarResNet(5, num_classes=num_classes, in_channels=in_channels)


class DigitsCNN(nn.Module):
    r"""A three-convolution CNN for 8x8 grey-scale images (scikit-learn's digits), classifier ``fc``.

    conv 3x3 (32) - BN - ReLU - conv 3x3 (64) - BN - ReLU - max-pool 2 - conv 3x3 (128) - BN - ReLU - global
    average pool - ``fc``. Used by the offline demo, where it trains in seconds on a CPU.

    Args:
        num_classes: Outputs of ``fc``.
        in_channels: Channels of the input images.
        width: Channels of the first convolution (the others are 2x and 4x).

    Shape:
        input: :math:`(N, \text{in\_channels}, 8, 8)` (any size >= 2x2 works).
        output: :math:`(N, \text{num\_classes})`, raw logits.

    Example:
        >>> DigitsCNN(num_classes=10)(torch.zeros(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * width, num_classes)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """Return the raw logits."""
        return self.fc(self.features(x))
