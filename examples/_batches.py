"""Batches that are a pure function of ``(seed, epoch)``, cut into one shard per rank; tensor-held data sets.

A run on N processes sees the same global batches as a run on one, and a resumed run the same as an uninterrupted
one. CIFAR-style augmentation (zero-padded random crop + horizontal flip) runs as batched tensor ops on
device-held ``uint8`` images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from _distributed import Dist
from torch import Tensor
from torch.nn import functional as F

from longtail_losses import data


def epoch_batches(
    num_samples: int, batch_size: int, *, seed: int, epoch: int, d: Dist, drop_last: bool = False
) -> list[tuple[Tensor, int]]:
    """This rank's part of every global batch of an epoch, as ``(positions, global_batch_size)`` pairs.

    The global batches are those of :class:`longtail_losses.data.SeededBatchSampler` (so one process sees
    exactly the batches of :func:`longtail_losses.twostage.train_classifier`); each is split into
    ``world_size`` nearly equal contiguous shards. A last batch smaller than ``world_size`` is dropped.
    """
    sampler = data.SeededBatchSampler(num_samples, batch_size, seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    order = sampler.permutation()
    out = []
    for start in range(0, len(sampler) * batch_size, batch_size):
        idx = order[start : start + batch_size]
        if idx.numel() < d.world_size:
            break
        out.append((torch.tensor_split(idx, d.world_size)[d.rank], int(idx.numel())))
    return out


def eval_shard(num_samples: int, d: Dist) -> Tensor:
    """Positions ``0..num_samples-1`` that this rank evaluates (contiguous; rank order = data order)."""
    return torch.tensor_split(torch.arange(num_samples), d.world_size)[d.rank]


class CropFlip:
    """CIFAR augmentation as batched tensor ops: zero-padded random crop (``padding`` pixels) and h-flip.

    The random draws of epoch ``e`` are made once for all ``N`` samples from a generator seeded with
    ``(seed, e)``, so a sample's augmentation does not depend on the batch order, the rank, or a resume.

    Args:
        num_samples: N.
        padding: Pixels of zero padding on every side before the crop (CIFAR: 4).
        flip: Flip horizontally with probability 1/2.
        seed: Base seed.
    """

    def __init__(self, num_samples: int, *, padding: int = 4, flip: bool = True, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.padding = padding
        self.flip = flip
        self.seed = seed
        self.offsets = torch.zeros(num_samples, 2, dtype=torch.int64)
        self.flips = torch.zeros(num_samples, dtype=torch.bool)

    def set_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        self.offsets = torch.randint(0, 2 * self.padding + 1, (self.num_samples, 2), generator=g)
        self.flips = torch.rand(self.num_samples, generator=g) < 0.5 if self.flip else torch.zeros_like(self.flips)

    def __call__(self, images: Tensor, positions: Tensor) -> Tensor:
        """Augment ``images`` (N_b, C, H, W), the samples at ``positions`` of the data set."""
        n, c, h, w = images.shape
        dev = images.device
        p = self.padding
        padded = F.pad(images, (p, p, p, p)) if p else images
        off = self.offsets[positions].to(dev)
        rows = off[:, 0:1] + torch.arange(h, device=dev)  # (n, h)
        cols = off[:, 1:2] + torch.arange(w, device=dev)  # (n, w)
        flips = self.flips[positions].to(dev)
        cols = torch.where(flips[:, None], cols.flip(1), cols)
        b = torch.arange(n, device=dev)[:, None, None, None]
        ch = torch.arange(c, device=dev)[None, :, None, None]
        return padded[b, ch, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass
class TensorData:
    """A data set held as one ``uint8`` tensor on the training device (CIFAR, digits): no DataLoader needed.

    Attributes:
        images: ``uint8`` :math:`(N, C, H, W)` on the device.
        labels: ``int64`` :math:`(N)` on the device.
        mean, std: Per-channel normalisation (applied after augmentation, on the device).
    """

    images: Tensor
    labels: Tensor
    mean: Sequence[float]
    std: Sequence[float]
    channels_last: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def normalize(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x = (x.float() / 255.0 - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def subset(self, positions: Tensor) -> TensorData:
        idx = positions.to(self.images.device)
        return TensorData(self.images[idx], self.labels[idx], self.mean, self.std, self.channels_last)

    def train_batches(
        self, batch_size: int, *, seed: int, epoch: int, d: Dist, augment: Optional[CropFlip]
    ) -> Iterator[tuple[Tensor, Tensor, int]]:
        if augment is not None:
            augment.set_epoch(epoch)
        for pos, global_n in epoch_batches(len(self), batch_size, seed=seed, epoch=epoch, d=d):
            idx = pos.to(self.images.device)
            x = self.images[idx]
            if augment is not None:
                x = augment(x, pos)
            yield self.normalize(x), self.labels[idx], global_n

    def eval_batches(self, d: Dist, batch_size: int = 1000) -> Iterator[tuple[Tensor, Tensor]]:
        shard = eval_shard(len(self), d).to(self.images.device)
        for start in range(0, shard.numel(), batch_size):
            idx = shard[start : start + batch_size]
            yield self.normalize(self.images[idx]), self.labels[idx]
