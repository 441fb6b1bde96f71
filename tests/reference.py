"""Float64 re-derivations of every loss, written from the papers' equations without calling the library.

They use the textbook formulas (explicit sigmoid, explicit prior-weighted softmax, ``beta ** n``), which are
accurate in float64 for moderate logits; the library's stable forms must agree with them there.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cb_weights(counts: Tensor, beta: float) -> Tensor:
    """Eq. (5): (1 - beta) / (1 - beta**n), normalised to sum to C (Cui et al.'s released code)."""
    n = counts.to(torch.float64)
    raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return raw / raw.sum() * n.numel()


def balanced_softmax(logits: Tensor, target: Tensor, counts: Tensor) -> Tensor:
    """Eq. (9)-(10), per sample: -log(n_y e^{z_y} / sum_i n_i e^{z_i})."""
    z = logits.to(torch.float64)
    n = counts.to(torch.float64)
    z = z - z.max(dim=1, keepdim=True).values  # the ratio is unchanged, exp cannot overflow
    numerator = n[target] * torch.exp(z.gather(1, target[:, None]).squeeze(1))
    denominator = (n[None, :] * torch.exp(z)).sum(dim=1)
    return -torch.log(numerator / denominator)


def cb_focal(logits: Tensor, target: Tensor, counts: Tensor, beta: float, gamma: float) -> Tensor:
    """Eq. (8), per sample: -w_y sum_j (1 - p_j^t)^gamma log p_j^t with sigmoid p."""
    z = logits.to(torch.float64)
    num_samples, num_classes = z.shape
    w = cb_weights(counts, beta)
    out = torch.zeros(num_samples, dtype=torch.float64)
    for i in range(num_samples):
        total = torch.zeros((), dtype=torch.float64)
        for j in range(num_classes):
            p = 1.0 / (1.0 + torch.exp(-z[i, j]))
            p_t = p if j == int(target[i]) else 1.0 - p
            total = total - (1.0 - p_t) ** gamma * torch.log(p_t)
        out[i] = w[int(target[i])] * total
    return out


def bfs(logits: Tensor, target: Tensor, counts: Tensor, alpha: float, beta: float, gamma: float) -> Tensor:
    """Eq. (11), per sample."""
    return alpha * cb_focal(logits, target, counts, beta, gamma) + (1 - alpha) * balanced_softmax(
        logits, target, counts
    )


def reduce(per_sample: Tensor, target: Tensor, reduction: str, ignore_index: int = -100) -> Tensor:
    """Zero the ignored samples; 'mean' divides by the number of kept samples."""
    keep = target != ignore_index
    per_sample = torch.where(keep, per_sample, torch.zeros_like(per_sample))
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / keep.sum()


def safe(target: Tensor, ignore_index: int = -100) -> Tensor:
    """Labels usable as indices: ignored ones replaced by 0 (their values are zeroed by ``reduce``)."""
    return torch.where(target == ignore_index, torch.zeros_like(target), target)


def penalty(weight: Tensor, weight_decay: float) -> Tensor:
    """BWLM's penalty, eq. (17) with the library's factor 1/2: weight_decay / 2 * sum_j ||theta_j||^2."""
    return 0.5 * weight_decay * (weight.to(torch.float64) ** 2).sum()


def rows_of(logits: Tensor) -> Tensor:
    """(C,) -> (1, C); (N, C, d...) -> (N * d..., C), written with permute (independently of the library)."""
    if logits.ndim == 1:
        return logits[None]
    dims = [0, *range(2, logits.ndim), 1]
    return logits.permute(*dims).reshape(-1, logits.shape[1])


def expected_over_classes(per_sample, logits: Tensor, probs: Tensor, counts: Tensor) -> Tensor:
    """Probability targets: sum_k t_k * loss(z, k), computed class by class with the class-index reference."""
    z, t = logits.to(torch.float64), probs.to(torch.float64)
    total = torch.zeros(z.shape[0], dtype=torch.float64)
    for k in range(z.shape[1]):
        label = torch.full((z.shape[0],), k, dtype=torch.int64)
        total = total + t[:, k] * per_sample(z, label, counts)
    return total


def ldam_subset(targets, img_num_per_cls, seed):
    """LDAM's IMBALANCECIFAR.gen_imbalanced_data, as written there (global NumPy RNG seeded in __init__)."""
    import numpy as np

    np.random.seed(seed)
    targets_np = np.array(targets, dtype=np.int64)
    classes = np.unique(targets_np)
    selected = []
    for the_class, the_img_num in zip(classes, img_num_per_cls):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        selected.append(idx[:the_img_num])
    return np.concatenate(selected)
