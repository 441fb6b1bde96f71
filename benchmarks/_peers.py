"""The PyPI peers that ``bench_losses.py`` compares against, and the one-liners a user writes instead.

Install them without their dependencies, so that torch is not replaced::

    pip install --no-deps balanced-loss cbloss pytorch-focalloss focal-loss-torch imbalanced-losses

Each builder takes ``(counts, device, classifier)`` (the ``(C,)`` class counts, the device, the ``(C, D)``
classifier that only BWLM uses) and returns ``loss(z, y)`` on ``(B, C)`` logits and ``(B,)`` labels, or raises
(a peer that does not import); :data:`PEERS` names them in the order of the report. A peer is imported only when
it is built. Hyperparameters: ``ALPHA``, ``BETA``, ``GAMMA`` of ``_harness``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from _harness import ALPHA, BETA, GAMMA

import longtail_losses as ltl

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Builder = Callable[[torch.Tensor, torch.device, torch.Tensor], Loss]


def effective_weights(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Cui et al.'s class-balanced weights of ``counts`` (``(C,)``) with ``BETA``, on ``device``."""
    return ltl.functional.class_balanced_weights(counts, BETA).to(device)


def cross_entropy(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    """``F.cross_entropy``: the floor every loss is compared with."""
    return lambda z, y: F.cross_entropy(z, y)


def bs_one_liner(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    """Balanced softmax as a user writes it: ``F.cross_entropy(z + log n, y)``."""
    log_counts = counts.to(device).float().log()
    return lambda z, y: F.cross_entropy(z + log_counts, y)


def balanced_loss(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    """balanced-loss 0.1.1: sigmoid CB focal (Cui et al.'s code)."""
    from balanced_loss import Loss as BalancedLoss

    peer = BalancedLoss(
        loss_type="focal_loss", beta=BETA, fl_gamma=GAMMA, samples_per_class=counts.tolist(), class_balanced=True
    )
    return lambda z, y: peer(z, y)


def imbalanced_losses(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    """imbalanced-losses: sigmoid focal with per-sample weights, here the CB weight of each sample's class."""
    from imbalanced_losses import SigmoidFocalLoss

    peer = SigmoidFocalLoss(alpha=-1, gamma=GAMMA, reduction="sum")
    weights = effective_weights(counts, device)

    def loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(y, z.shape[1]).to(z.dtype)
        return peer(z, onehot, sample_weight=weights[y].unsqueeze(1)) / z.shape[0]

    return loss


def cbloss(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    """cbloss: softmax focal times CB weights."""
    from cbloss.loss import ClassBalancedLoss, FocalLoss

    num_classes = counts.shape[0]
    peer = ClassBalancedLoss(counts.numpy(), BETA, num_classes, FocalLoss(num_classes, gamma=GAMMA, reduction="none"))
    peer.weights = peer.weights.to(device)
    return lambda z, y: peer(z, y)


def pytorch_focalloss(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    """pytorch-focalloss: softmax focal with the CB weights as class alpha."""
    from torch_focalloss import MultiClassFocalLoss

    peer = MultiClassFocalLoss(gamma=GAMMA, alpha=effective_weights(counts, device))
    return lambda z, y: peer(z, y)


def focal_loss_torch(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    """focal-loss-torch: focal on probabilities, with the CB weights as class weights."""
    from focal_loss.focal_loss import FocalLoss

    peer = FocalLoss(gamma=GAMMA, weights=effective_weights(counts, device))
    return lambda z, y: peer(torch.softmax(z, dim=-1), y)


def bfs_one_liner(focal: Builder) -> Builder:
    """The BFS a user writes from two peers: ``ALPHA * focal(z, y) + (1 - ALPHA) * CE(z + log n, y)``."""

    def build(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
        focal_loss, balanced_softmax = focal(counts, device, classifier), bs_one_liner(counts, device, classifier)
        return lambda z, y: ALPHA * focal_loss(z, y) + (1 - ALPHA) * balanced_softmax(z, y)

    return build


PEERS: dict[str, Builder] = {
    "balanced softmax as F.cross_entropy(z + log n)": bs_one_liner,
    "sigmoid CB focal (balanced-loss)": balanced_loss,
    "sigmoid focal + CB weights (imbalanced-losses)": imbalanced_losses,
    "softmax focal + CB weights (cbloss)": cbloss,
    "softmax focal + CB alpha (pytorch-focalloss)": pytorch_focalloss,
    "softmax focal + CB weights (focal-loss-torch)": focal_loss_torch,
    "BFS one-liner: balanced-loss + CE(z + log n)": bfs_one_liner(balanced_loss),
    "BFS one-liner: imbalanced-losses + CE(z + log n)": bfs_one_liner(imbalanced_losses),
}
