"""Float64 re-derivations of every loss, written from the papers' equations without calling the library.

They use the textbook formulas (explicit sigmoid, explicit prior-weighted softmax, ``beta ** n``), which are
accurate in float64 for moderate logits; the library's stable forms must agree with them there. The input forms
of ``F.cross_entropy`` (``form_rows``, ``form_loss``) are re-derived here too, with ``permute`` and ``one_hot``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100


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


def reduce(per_sample: Tensor, target: Tensor, reduction: str, ignore_index: int = IGNORE) -> Tensor:
    """Zero the ignored samples; 'mean' divides by the number of kept samples."""
    return reduce_kept(per_sample, target != ignore_index, reduction)


def reduce_kept(per_row: Tensor, keep: Tensor, reduction: str, row_weight: Optional[Tensor] = None) -> Tensor:
    """Zero the rows not kept; 'mean' divides by the kept rows, or by their summed weights (F.cross_entropy's rule)."""
    per_row = torch.where(keep, per_row, torch.zeros_like(per_row))
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if row_weight is None:
        return per_row.sum() / keep.sum()
    return per_row.sum() / torch.where(keep, row_weight, torch.zeros_like(row_weight)).sum()


def safe(target: Tensor, ignore_index: int = IGNORE) -> Tensor:
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


def log_softmax(a: Tensor) -> Tensor:
    """log(e^{a_k} / sum_j e^{a_j}) over dim 1, with the row maximum subtracted first (the ratio is unchanged)."""
    shifted = a - a.max(dim=1, keepdim=True).values.detach()
    return shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))


# ----------------------------------------------------------------------------------------------------------------
# The input forms of F.cross_entropy


def form_rows(
    logits: Tensor, target: Tensor, smoothing: float = 0.0, ignore_index: int = IGNORE
) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor], tuple[int, ...]]:
    """Any input form as float64 rows.

    Returns the rows (M, C), their target distributions (M, C) with ``smoothing`` mixed in, the kept mask (M,),
    the labels (M,) (0 where ignored) or None for probability targets, and the shape of a ``'none'`` result.
    """
    z = rows_of(logits).to(torch.float64)
    num_classes = z.shape[1]
    if target.dtype.is_floating_point:
        dist = rows_of(target).to(torch.float64)
        keep = torch.ones(z.shape[0], dtype=torch.bool)
        labels = None
        shape = (logits.shape[0], *logits.shape[2:]) if logits.ndim > 1 else ()
    else:
        y = target.reshape(-1)
        keep = y != ignore_index
        labels = safe(y, ignore_index)
        dist = F.one_hot(labels, num_classes).to(torch.float64)
        shape = tuple(target.shape)
    dist = dist * (1.0 - smoothing) + smoothing / num_classes
    return z, dist, keep, labels, shape


def form_loss(
    logits: Tensor,
    target: Tensor,
    per_rows: Callable[[Tensor, Tensor, Optional[Tensor]], tuple[Tensor, Optional[Tensor]]],
    *,
    reduction: str,
    smoothing: float = 0.0,
) -> Tensor:
    """Reduce ``per_rows(z, dist, labels) -> (per-row losses, per-row weights or None)`` over any input form."""
    z, dist, keep, labels, shape = form_rows(logits, target, smoothing)
    per_row, row_weight = per_rows(z, dist, labels)
    out = reduce_kept(per_row, keep, reduction, row_weight)
    return out.reshape(shape) if reduction == "none" else out


# ----------------------------------------------------------------------------------------------------------------
# Logit adjustment and LDAM


def logit_adjusted_rows(z: Tensor, dist: Tensor, counts: Any, tau: float) -> Tensor:
    """Menon et al. eq. (10): -sum_k t_k log(e^{z_k + tau log pi_k} / sum_j e^{z_j + tau log pi_j})."""
    n = torch.as_tensor(counts).to(torch.float64)
    pi = n / n.sum()
    return -(dist * log_softmax(z + tau * torch.log(pi))).sum(dim=1)


def ldam_margins(counts: Any, max_margin: float) -> Tensor:
    """Cao et al.: Delta_j = C / n_j^(1/4); their code: m = 1 / n^(1/4), rescaled so that max_j m_j = max_margin."""
    m = 1.0 / torch.sqrt(torch.sqrt(torch.as_tensor(counts).to(torch.float64)))
    return m * (max_margin / m.max())


def ldam_rows(
    z: Tensor, dist: Tensor, counts: Any, max_margin: float, scale: float, weight: Optional[Tensor]
) -> Tensor:
    """Cao et al. eq. (13), expected over t: -w_k log(e^{s(z_k - m_k)} / (e^{s(z_k - m_k)} + sum_{j!=k} e^{s z_j}))."""
    m = ldam_margins(counts, max_margin)
    w = torch.ones(z.shape[1], dtype=torch.float64) if weight is None else weight.to(torch.float64)
    total = torch.zeros(z.shape[0], dtype=torch.float64)
    for k in range(z.shape[1]):
        is_k = torch.arange(z.shape[1]) == k
        a = torch.where(is_k, scale * (z - m[k]), scale * z)
        total = total + dist[:, k] * w[k] * (-log_softmax(a)[:, k])
    return total


# ----------------------------------------------------------------------------------------------------------------
# The losses that accumulate statistics: each reference keeps its own, so a comparison covers several steps.


class SeesawReference:
    """Wang et al. 2021, eq. (1)-(4), with the official mmdet code's counts (updated before the loss, clamped at 1)."""

    def __init__(self, num_classes: int, p: float, q: float, eps: float = 1e-2, counts: Optional[list] = None):
        self.counts = [0.0] * num_classes if counts is None else [float(c) for c in counts]
        self.p, self.q, self.eps = p, q, eps

    def step(self, logits: Tensor, target: Tensor, *, train: bool = True) -> Tensor:
        """Per-sample losses (0 where ignored) of a (N, C) float64 batch, after counting the batch if ``train``."""
        if train:
            for y in target.tolist():
                if y != IGNORE:
                    self.counts[y] += 1.0
        rows = []
        for z, y in zip(logits, target.tolist()):
            if y == IGNORE:
                rows.append(z.sum() * 0.0)
                continue
            e = [math.exp(float(v)) for v in z.detach()]
            sigma = [v / sum(e) for v in e]  # the softmax of the detached logits
            n_y = max(self.counts[y], 1.0)
            denominator = torch.exp(z[y])
            for j in range(len(e)):
                if j == y:
                    continue
                s = 1.0
                n_j = max(self.counts[j], 1.0)
                if n_j < n_y:
                    s *= (n_j / n_y) ** self.p
                ratio = sigma[j] / max(sigma[y], self.eps)
                if ratio > 1.0:
                    s *= ratio**self.q
                denominator = denominator + s * torch.exp(z[j])
            rows.append(-torch.log(torch.exp(z[y]) / denominator))
        return torch.stack(rows)


class EQLv2Reference:
    """Tan et al. 2021, eq. (7)-(10), following the official code's ``get_weight`` and ``collect_grad``."""

    def __init__(self, num_classes: int, gamma: float, mu: float, alpha: float, background: bool = False):
        self.pos = [0.0] * num_classes
        self.neg = [0.0] * num_classes
        self.started = False
        self.gamma, self.mu, self.alpha, self.background = gamma, mu, alpha, background

    def weights(self) -> tuple[list[float], list[float]]:
        if not self.started:
            k = len(self.pos) + int(self.background)
            return [1.0] * k, [1.0] * k
        neg_w = [1.0 / (1.0 + math.exp(-self.gamma * (p / (n + 1e-10) - self.mu))) for p, n in zip(self.pos, self.neg)]
        pos_w = [1.0 + self.alpha * (1.0 - w) for w in neg_w]
        if self.background:
            neg_w, pos_w = [*neg_w, 1.0], [*pos_w, 1.0]
        return pos_w, neg_w

    def step(self, logits: Tensor, target: Tensor, *, train: bool = True) -> Tensor:
        pos_w, neg_w = self.weights()
        rows = []
        for z, y in zip(logits, target.tolist()):
            total = z.sum() * 0.0
            if y != IGNORE:
                for j in range(z.shape[0]):
                    s = 1.0 / (1.0 + torch.exp(-z[j]))
                    total = total - pos_w[j] * torch.log(s) if j == y else total - neg_w[j] * torch.log(1.0 - s)
            rows.append(total)
        if train:
            for z, y in zip(logits.detach(), target.tolist()):
                if y == IGNORE:
                    continue
                for j in range(len(self.pos)):  # the background column is not collected
                    s = 1.0 / (1.0 + math.exp(-float(z[j])))
                    if j == y:
                        self.pos[j] += abs(s - 1.0) * pos_w[j]
                    else:
                        self.neg[j] += abs(s) * neg_w[j]
            self.started = self.started or any(y != IGNORE for y in target.tolist())
        return torch.stack(rows)


# ----------------------------------------------------------------------------------------------------------------
# Data


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


# ----------------------------------------------------------------------------------------------------------------
# VS, label-aware smoothing, influence-balanced, LADE: each from its paper's formula and released code


def vs_rows(z: Tensor, dist: Tensor, counts: Any, gamma: float, tau: float, weight: Optional[Tensor]) -> Tensor:
    """Kini et al.'s code: x / ((1/n)^gamma / min((1/n)^gamma)) + tau log(n / N), expected over t, weighted."""
    n = torch.as_tensor(counts).to(torch.float64)
    delta = (1.0 / n) ** gamma
    delta = delta / delta.min()
    x = z / delta + tau * torch.log(n / n.sum())
    w = torch.ones(z.shape[1], dtype=torch.float64) if weight is None else weight.to(torch.float64)
    return -(dist * w * log_softmax(x)).sum(dim=1)


def cdt_rows(z: Tensor, dist: Tensor, counts: Any, gamma: float) -> Tensor:
    """Ye et al. (CDT): cross-entropy of z_j / a_j with a_j = (n_max / n_j)^gamma."""
    n = torch.as_tensor(counts).to(torch.float64)
    return -(dist * log_softmax(z / (n.max() / n) ** gamma)).sum(dim=1)


def las_factors(counts: Any, head: float, tail: float, shape: str, power: Optional[float] = None) -> Tensor:
    """Zhong et al.'s code, element by element, with math.sin (equal counts: r = 0)."""
    n = [float(c) for c in torch.as_tensor(counts).tolist()]
    n1, nk = max(n), min(n)
    out = []
    for c in n:
        r = (c - nk) / (n1 - nk) if n1 > nk else 0.0
        if shape == "concave":
            out.append(tail + (head - tail) * math.sin(r * math.pi / 2))
        elif shape == "linear":
            out.append(tail + (head - tail) * r)
        elif shape == "convex":
            out.append(head + (head - tail) * math.sin(1.5 * math.pi + r * math.pi / 2))
        else:
            out.append(tail + (head - tail) * r**power)
    return torch.tensor(out, dtype=torch.float64)


def las_rows(z: Tensor, dist: Tensor, eps: Tensor) -> Tensor:
    """sum_k t_k [(1 - eps_k) (-log p_k) + eps_k * mean_j (-log p_j)] (the code's confidence/smooth split)."""
    nll = -log_softmax(z)
    return (dist * ((1.0 - eps) * nll + eps * nll.mean(dim=1, keepdim=True))).sum(dim=1)


def ib_rows(z: Tensor, dist: Tensor, norms: Tensor, counts: Any, alpha: float, eps: float, reweight: bool) -> Tensor:
    """Park et al.'s code: alpha / (sum |softmax(z) - t| * ||h||_1 + eps) * w-weighted cross-entropy."""
    n = torch.as_tensor(counts).to(torch.float64)
    w = (1.0 / n) / (1.0 / n).sum() * n.numel() if reweight else torch.ones_like(n)
    p = torch.exp(log_softmax(z))
    influence = (p - dist).abs().sum(dim=1) * norms.to(torch.float64)
    return alpha / (influence + eps) * -(dist * w * log_softmax(z)).sum(dim=1)


def lader(z: Tensor, dist: Tensor, keep: Tensor, counts: Any, remine_lambda: float) -> Tensor:
    """Hong et al.'s LADELoss, class by class over the kept rows (a class without a sample: first term 0)."""
    n = torch.as_tensor(counts).to(torch.float64)
    prior = n / n.sum()
    zk, dk = z[keep], dist[keep]
    big_n = zk.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for c in range(z.shape[1]):
        num = dk[:, c].sum()
        first = (dk[:, c] * zk[:, c]).sum() / num if num > 0 else torch.zeros((), dtype=torch.float64)
        spread = zk[:, c] - torch.log(prior[c]) + math.log(1.0 / z.shape[1])
        second = torch.log(torch.exp(spread).sum()) - math.log(big_n)
        total = total - prior[c] * (first - second - remine_lambda * second**2)
    return total


# Multi-label losses, per element, from the papers' formulas with explicit sigmoids (float64)


def _sigmoid(z: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-z))


def asl_elements(z: Tensor, t: Tensor, gamma_neg: float, gamma_pos: float, clip: float) -> Tensor:
    """Ridnik et al., eq. (7): -t (1-p)^g+ log p - (1-t) p_m^g- log(1 - p_m), p_m = max(p - clip, 0)."""
    z, t = z.to(torch.float64), t.to(torch.float64)
    p = _sigmoid(z)
    p_m = torch.clamp(p - clip, min=0.0)
    return -t * (1 - p) ** gamma_pos * torch.log(p) - (1 - t) * p_m**gamma_neg * torch.log(1 - p_m)


def focal_elements(z: Tensor, t: Tensor, gamma: float) -> Tensor:
    """Sigmoid focal loss per element, -t (1-p)^g log p - (1-t) p^g log(1-p)."""
    return asl_elements(z, t, gamma, gamma, 0.0)


def db_elements(
    z: Tensor, t: Tensor, counts: Tensor, num_samples: int, *,
    alpha: float, beta: float, mu: float, gamma: float, lam: float, kappa: float,
) -> Tensor:  # fmt: skip
    """Wu et al. (reference code's bias): r_ki = (1/n_i) / sum_j t_kj / n_j, mapped; NTR at z + kappa/lam logit(p).

    Rows without a positive get the limit alpha + 1.
    """
    z, t, n = z.to(torch.float64), t.to(torch.float64), counts.to(torch.float64)
    p_class = n / num_samples
    nu = kappa / lam * torch.log(p_class / (1 - p_class))
    x = z + nu
    weights = torch.empty_like(z)
    for k in range(z.shape[0]):
        repeat = sum(float(t[k, j]) / float(n[j]) for j in range(z.shape[1]))
        for i in range(z.shape[1]):
            if repeat > 0:
                r = (1.0 / float(n[i])) / repeat
                weights[k, i] = alpha + 1.0 / (1.0 + math.exp(-beta * (r - mu)))
            else:
                weights[k, i] = alpha + 1.0
    p_pos = _sigmoid(x)
    p_neg = _sigmoid(lam * x)  # the probability of the positive class under the scaled negative logit
    pos = -((1 - p_pos) ** gamma) * torch.log(p_pos)
    neg = -(p_neg**gamma) * torch.log(1 - p_neg) / lam
    return weights * (t * pos + (1 - t) * neg)


def la_bce_elements(z: Tensor, t: Tensor, counts: Tensor, num_samples: int, tau: float) -> Tensor:
    """BCE(z + tau log(p / (1 - p)), t) with explicit sigmoids."""
    n = counts.to(torch.float64)
    p = n / num_samples
    return focal_elements(z.to(torch.float64) + tau * torch.log(p / (1 - p)), t, 0.0)


def multihot_reduce(
    per_element: Tensor, target: Tensor, reduction: str, *, mean_over: str = "elements", ignore_index: int = IGNORE
) -> Tensor:
    """Zero the unknown elements; 'mean' divides by the known elements, or by the rows (of ``rows_of``)."""
    known = target != ignore_index
    out = torch.where(known, per_element, torch.zeros_like(per_element))
    if reduction == "none":
        return out
    if reduction == "sum":
        return out.sum()
    if mean_over == "samples":
        return out.sum() / rows_of(out).shape[0]
    return out.sum() / known.sum()


def multihot_apply(
    elements: Callable[[Tensor, Tensor], Tensor], logits: Tensor, target: Tensor, reduction: str, **kw: Any
) -> Tensor:
    """A per-element formula on (M, C) rows of any input form, unknown targets read as 0, then reduced."""
    z = rows_of(logits).to(torch.float64)
    t = rows_of(target).to(torch.float64)
    t_known = torch.where(t == IGNORE, torch.zeros_like(t), t)
    per = elements(z, t_known)
    shape = logits.shape
    if len(shape) > 2:
        per = per.reshape(shape[0], *shape[2:], shape[1]).permute(0, -1, *range(1, len(shape) - 1))
    else:
        per = per.reshape(shape)
    return multihot_reduce(per, target, reduction, **kw)
