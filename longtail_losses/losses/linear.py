r"""Balanced softmax and BFS of a linear classifier, computed class chunk by class chunk.

For heads with :math:`10^5`–:math:`10^7` classes (faces, products, species) the logits
:math:`z = x W^\top + b` of shape :math:`(N, C)` and their gradient dominate memory. The functions here take the
classifier itself (``features``, ``weight``, ``bias``) and compute the loss and the gradients of all three
without ever holding :math:`(N, C)`: a custom autograd function walks over blocks of classes twice.

* Pass 1 recomputes each block's logits and keeps, per sample, an online log-sum-exp of
  :math:`z + \log n` (balanced softmax) and the focal term's row sum (the sigmoid focal loss is element-wise over
  classes, so it splits over blocks exactly).
* Pass 2 recomputes each block's logits again and forms its gradient
  :math:`G = (1-\alpha)\,(\operatorname{softmax}(z + \log n) - \operatorname{onehot}(y))
  + \alpha\, w_y\, \partial_z \ell_{CB}`, scaled per sample by the reduction, then accumulates
  :math:`\partial x \mathrel{+}= G W_c` and writes :math:`\partial W_c = G^\top x`,
  :math:`\partial b_c = \sum_n G_n`.

With ``reduction='mean'`` or ``'sum'`` pass 2 runs inside forward (the gradient of a scalar loss is known up to
the factor ``grad_output``, applied in place in backward), and the focal row sums come out of pass 2, so pass 1
only computes the log-sum-exp. With ``reduction='none'`` the gradient depends on the per-sample
``grad_output``, so pass 2 runs in backward. Peak extra memory is a few blocks of :math:`N \times` ``chunk_size``
elements plus the gradients themselves.

The class-sharded form (``process_group``) follows PartialFC: every rank holds a contiguous slice of the
classifier's rows and the full batch of features; the log-sum-exp is combined across ranks by an all-reduce of
the maxima and of the rescaled sums of exponentials, the target logit comes from the rank that owns the class,
the focal sums and the squared weight norm are summed, and the gradient of the features is summed across ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longtail_losses._validation import (
    CountsLike,
    as_class_counts,
    check_alpha,
    check_beta,
    check_bool,
    check_gamma,
    check_ignore_index,
    check_reduction,
    check_target_values,
    check_weight_decay,
)
from longtail_losses.losses import _engine

__all__ = ["LinearBFS", "LinearBalancedSoftmax", "linear_balanced_softmax_loss", "linear_bfs_loss", "shard_range"]

#: Elements of one block of logits when ``chunk_size`` is None: 2**21 (8 MiB of float32), i.e. 8192 classes for a
#: batch of 256: small enough to stay in cache, large enough that the ~30 tensor ops per block are not dominated
#: by their fixed cost (each is a parallel region, which is slow to start on a busy CPU).
CHUNK_ELEMENTS = 1 << 21

_MIN_CHUNK = 64

ProcessGroup = Any  # torch.distributed.ProcessGroup, which is not importable on every build


# ----------------------------------------------------------------------------------------------------------------
# Argument checks (the wording of longtail_losses._validation)
# ----------------------------------------------------------------------------------------------------------------


def _check_chunk_size(chunk_size: object) -> Optional[int]:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"Expected `chunk_size` to be None or an int, but got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"Expected `chunk_size` to be None or an int >= 1, but got {chunk_size}")
    return chunk_size


def _check_classifier(features: Any, weight: Any, bias: Any, target: Any) -> None:
    """Types, dtypes, shapes and devices of ``features`` (N, D), ``weight`` (C, D), ``bias`` (C) and ``target``."""
    for name, value in (("features", features), ("weight", weight), ("target", target)):
        if not isinstance(value, Tensor):
            raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(value).__name__}")
    if not features.dtype.is_floating_point:
        raise TypeError(f"Expected `features` to be a floating-point tensor, but got dtype {features.dtype}")
    if features.ndim != 2:
        raise ValueError(f"Expected `features` to have shape (N, D), but got shape {tuple(features.shape)}")
    if weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"Expected `weight` to have shape (C, D) with D = {features.shape[1]} to match `features` "
            f"{tuple(features.shape)}, but got shape {tuple(weight.shape)}"
        )
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"Expected `bias` to be None or a torch.Tensor, but got {type(bias).__name__}")
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"Expected `bias` to have shape (C,) = ({weight.shape[0]},) to match `weight`, "
                f"but got shape {tuple(bias.shape)}"
            )
    for name, value in (("weight", weight), ("bias", bias)):
        if isinstance(value, Tensor) and (value.dtype != features.dtype or value.device != features.device):
            raise TypeError(
                f"Expected `{name}` to have the dtype and device of `features` ({features.dtype}, {features.device}), "
                f"but got ({value.dtype}, {value.device})"
            )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(
            f"Expected `target` to hold integer class indices (e.g. torch.int64), but got dtype {target.dtype}"
        )
    if target.shape != (features.shape[0],):
        raise ValueError(
            f"Expected `target` to have shape (N,) = ({features.shape[0]},) to match `features` "
            f"{tuple(features.shape)}, but got {tuple(target.shape)}"
        )
    if target.device != features.device:
        raise ValueError(f"Expected `target` on the device of `features` ({features.device}), but got {target.device}")


# ----------------------------------------------------------------------------------------------------------------
# Collectives (identity without a process group)
# ----------------------------------------------------------------------------------------------------------------


def _all_reduce(tensor: Tensor, group: Optional[ProcessGroup], *, op: str = "sum") -> Tensor:
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
    return tensor


def _global_logsumexp(local: Tensor, group: Optional[ProcessGroup]) -> Tensor:
    """Combine each rank's per-row log-sum-exp: all-reduce of the maxima, then of the rescaled sums."""
    if group is None:
        return local
    top = _all_reduce(local.clone(), group, op="max")
    total = _all_reduce(torch.exp(local - top), group)
    return top + total.log()


def _shard_start(num_local: int, num_classes: int, group: ProcessGroup, device: torch.device) -> int:
    """Offset of this rank's class slice: the sizes of the slices of the lower ranks, summed."""
    import torch.distributed as dist

    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor([num_local], dtype=torch.int64, device=device), group=group)
    counts = [int(s) for s in sizes]
    if sum(counts) != num_classes:
        raise ValueError(
            f"Expected the ranks' `weight` slices to hold C = len(class_counts) = {num_classes} rows in all, "
            f"but got {counts}"
        )
    return sum(counts[: dist.get_rank(group)])


# ----------------------------------------------------------------------------------------------------------------
# The engine: one object per call holding the prepared inputs, with the two passes over class blocks
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Engine:
    """Prepared inputs of one call and the two passes over blocks of (this rank's) classes."""

    features: Tensor  # (N, D), compute dtype, detached
    weight: Tensor  # (C_local, D), caller's dtype, detached
    bias: Optional[Tensor]  # (C_local,), detached
    target: Tensor  # (N,) int64 global labels, ignored ones replaced by 0
    keep: Tensor  # (N,) bool
    log_counts: Tensor  # (C,) compute dtype, all classes
    counts: Tensor  # (C,) compute dtype, all classes
    cb_weight: Optional[Tensor]  # (N,) w_y when alpha > 0
    class_start: int
    alpha: float
    gamma: float
    chunk: int
    group: Optional[ProcessGroup]

    @property
    def dtype(self) -> torch.dtype:
        return self.features.dtype

    @property
    def num_local(self) -> int:
        return self.weight.shape[0]

    def blocks(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.num_local, self.chunk):
            yield start, min(start + self.chunk, self.num_local)

    def block_weight(self, start: int, stop: int) -> Tensor:
        return self.weight[start:stop].to(self.dtype)

    def block_logits(self, start: int, stop: int, w: Tensor, *, shifted: bool = False) -> Tensor:
        r"""The block's logits :math:`x W_c^\top + b_c`, or with ``shifted`` :math:`x W_c^\top + b_c + \log n_c`."""
        shift = self.log_counts[self.class_start + start : self.class_start + stop] if shifted else None
        bias = None if self.bias is None else self.bias[start:stop].to(self.dtype)
        if shift is not None:
            bias = shift if bias is None else bias + shift
        if bias is None:
            return torch.mm(self.features, w.t())
        return torch.addmm(bias, self.features, w.t())

    def target_columns(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Rows whose (kept) label lies in the block, and the label's column in the block (clamped), (N, 1)."""
        relative = self.target - (self.class_start + start)
        inside = self.keep & (relative >= 0) & (relative < stop - start)
        return inside[:, None], relative.clamp(0, stop - start - 1)[:, None]

    def target_logit(self) -> Tensor:
        """:math:`z_{n, y_n}` by a row-wise dot product (summed over ranks: only the owner contributes)."""
        relative = self.target - self.class_start
        inside = self.keep & (relative >= 0) & (relative < self.num_local)
        if self.num_local == 0:
            return torch.zeros(self.features.shape[0], dtype=self.dtype, device=self.features.device)
        rows = relative.clamp(0, self.num_local - 1)
        z_y = (self.features * self.weight[rows].to(self.dtype)).sum(dim=1)
        if self.bias is not None:
            z_y = z_y + self.bias[rows].to(self.dtype)
        z_y = torch.where(inside, z_y, 0.0)
        return _all_reduce(z_y, self.group)

    # -- the focal term, element-wise over a block ------------------------------------------------------------
    def _focal_parts(self, z: Tensor) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        r"""For every entry treated as a non-target class: ``(log(1 - p), p, p**gamma)`` with ``p = sigmoid(z)``.

        :math:`\log(1-p) = \log\sigma(-z)` is one ``logsigmoid`` (finite for any finite logit) and
        :math:`p^\gamma = \exp(\gamma (z + \log\sigma(-z)))`; the third item is None for ``gamma = 0`` and
        ``p`` itself for ``gamma = 1``. Three block-sized operations for ``gamma`` in {0, 1}.
        """
        log_q = F.logsigmoid(torch.neg(z))
        p = torch.sigmoid(z)
        if self.gamma == 0.0:
            return log_q, p, None
        if self.gamma == 1.0:
            return log_q, p, p
        p_gamma = torch.add(z, log_q)  # log p
        p_gamma.mul_(self.gamma).exp_()
        return log_q, p, p_gamma

    def _focal_row_sum(self, log_q: Tensor, p_gamma: Optional[Tensor], inside: Tensor, cols: Tensor) -> Tensor:
        r"""Row sums of :math:`-p^\gamma \log(1-p)` over the block's non-target classes (overwrites ``log_q``)."""
        log_q.scatter_(1, cols, torch.where(inside, 0.0, log_q.gather(1, cols)))
        if p_gamma is not None:
            log_q.mul_(p_gamma)
        return log_q.sum(dim=1).neg_()

    # -- pass 1 ---------------------------------------------------------------------------------------------
    def statistics(self, *, want_logsumexp: bool, want_focal: bool) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """Per-sample log-sum-exp of ``z + log n`` and focal row sum (target class excluded), over all classes."""
        n = self.features.shape[0]
        device = self.features.device
        lse = torch.full((n,), -math.inf, dtype=self.dtype, device=device) if want_logsumexp else None
        focal = torch.zeros(n, dtype=self.dtype, device=device) if want_focal else None
        for start, stop in self.blocks():
            z = self.block_logits(start, stop, self.block_weight(start, stop), shifted=focal is None)
            if focal is not None:
                inside, cols = self.target_columns(start, stop)
                log_q, _, p_gamma = self._focal_parts(z)
                focal += self._focal_row_sum(log_q, p_gamma, inside, cols)
                if lse is not None:
                    z += self.log_counts[self.class_start + start : self.class_start + stop]
            if lse is not None:
                torch.logaddexp(lse, torch.logsumexp(z, dim=1), out=lse)
        if lse is not None:
            lse = _global_logsumexp(lse, self.group)
        if focal is not None:
            focal = _all_reduce(focal, self.group)
        return lse, focal

    # -- pass 2 ---------------------------------------------------------------------------------------------
    def gradients(
        self,
        *,
        softmax_scale: Optional[Tensor],
        focal_scale: Optional[Tensor],
        target_grad: Tensor,
        lse: Optional[Tensor],
        decay: Optional[tuple[float, Optional[Tensor]]],
        want_features: bool,
        want_weight: bool,
        want_bias: bool,
        want_focal: bool,
        nonnegative: bool = False,
    ) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        r"""Gradients of :math:`\sum_n \ell_n r_n` (and, if ``want_focal``, the focal row sums of pass 1).

        ``softmax_scale`` is :math:`(1-\alpha) r_n` and ``focal_scale`` is :math:`\alpha w_{y_n} r_n` (None for a
        term that is off); ``target_grad`` is the whole gradient entry at the target class. ``decay`` is
        ``(weight_decay, factor)``: ``weight_decay * factor * W`` is added to the weight's gradient (``factor``
        a 0-d tensor, or None for 1). ``nonnegative`` promises ``softmax_scale >= 0``, which folds its logarithm
        into the softmax's shift (no multiplication by its sign). Returns ``(d features, d weight, d bias,
        focal row sums)``; the features' gradient is summed over the ranks.
        """
        x = self.features
        n, d = x.shape
        device = x.device
        grad_x = torch.zeros(n, d, dtype=self.dtype, device=device) if want_features else None
        grad_w = torch.empty_like(self.weight) if want_weight else None
        grad_b = torch.empty_like(self.bias) if want_bias and self.bias is not None else None
        focal = torch.zeros(n, dtype=self.dtype, device=device) if want_focal else None
        direct = self.weight.dtype == self.dtype
        shift = sign = None
        if softmax_scale is not None:
            assert lse is not None
            # (1 - alpha) r_n n_c exp(z - lse_n) = sign_n n_c exp(z - shift_n), shift_n = lse_n - log|(1 - alpha) r_n|
            shift = lse - softmax_scale.abs().log()  # a zero scale gives +inf: exp(-inf) = 0
            sign = None if nonnegative else torch.sign(softmax_scale)[:, None]
        for start, stop in self.blocks():
            w = self.block_weight(start, stop)
            z = self.block_logits(start, stop, w)
            inside, cols = self.target_columns(start, stop)
            grad: Optional[Tensor] = None
            if focal_scale is not None:
                log_q, p, p_gamma = self._focal_parts(z)
                if self.gamma == 0.0:
                    grad = p  # d/dz of -log(1 - p)
                else:
                    # p**gamma * (p - gamma * (1 - p) * log(1 - p))
                    grad = torch.mul(p, log_q)
                    grad.sub_(log_q)
                    if self.gamma != 1.0:
                        grad.mul_(self.gamma)
                    grad.add_(p)
                    assert p_gamma is not None
                    grad.mul_(p_gamma)
                if focal is not None:  # after the gradient: this overwrites `log_q`
                    focal += self._focal_row_sum(log_q, p_gamma, inside, cols)
                grad.mul_(focal_scale[:, None])
            if shift is not None:
                counts = self.counts[self.class_start + start : self.class_start + stop]
                z.sub_(shift[:, None]).exp_()
                if sign is not None:
                    z.mul_(sign)
                grad = z.mul_(counts) if grad is None else grad.addcmul_(z, counts)
            assert grad is not None
            grad.scatter_(1, cols, torch.where(inside, target_grad[:, None], grad.gather(1, cols)))
            if grad_x is not None:
                grad_x.addmm_(grad, w)
            if grad_w is not None:
                block = grad_w[start:stop]
                if direct:
                    torch.mm(grad.t(), x, out=block)
                else:
                    block.copy_(torch.mm(grad.t(), x))
                if decay is not None:
                    weight_decay, factor = decay
                    if factor is None:
                        block.add_(self.weight[start:stop], alpha=weight_decay)
                    else:
                        block.addcmul_(self.weight[start:stop], factor.to(block.dtype), value=weight_decay)
            if grad_b is not None:
                grad_b[start:stop] = grad.sum(dim=0)
        if grad_x is not None:
            grad_x = _all_reduce(grad_x, self.group)
        if focal is not None:
            focal = _all_reduce(focal, self.group)
        return grad_x, grad_w, grad_b, focal


@dataclass(frozen=True)
class _Options:
    alpha: float
    gamma: float
    weight_decay: float
    reduction: str
    chunk: Optional[int]
    class_start: int
    group: Optional[ProcessGroup]


def _target_terms(z_y: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    r"""Focal loss :math:`-(1-p)^\gamma \log p` and its derivative at the target logit, per sample."""
    log_p, log_q = F.logsigmoid(z_y), F.logsigmoid(-z_y)
    p, q = torch.exp(log_p), torch.exp(log_q)
    if gamma == 0.0:
        return -log_p, -q
    q_gamma = torch.exp(gamma * log_q)
    return -q_gamma * log_p, q_gamma * (gamma * p * log_p - q)


class _LinearLoss(torch.autograd.Function):
    """Forward: the loss (and, for a scalar loss, the gradients); backward: scale or recompute them."""

    @staticmethod
    def forward(
        ctx: Any,
        features: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        target: Tensor,
        keep: Tensor,
        log_counts: Tensor,
        counts: Tensor,
        cb_weights: Optional[Tensor],
        options: _Options,
        needs: tuple[bool, bool, bool],
    ) -> Tensor:
        dtype = _engine.compute_dtype(features.dtype)
        n = features.shape[0]
        alpha, gamma = options.alpha, options.gamma
        chunk = options.chunk or max(_MIN_CHUNK, CHUNK_ELEMENTS // max(n, 1))
        engine = _Engine(
            features=features.detach().to(dtype),
            weight=weight.detach(),
            bias=None if bias is None else bias.detach(),
            target=target,
            keep=keep,
            log_counts=log_counts,
            counts=counts,
            cb_weight=None if cb_weights is None else cb_weights[target],
            class_start=options.class_start,
            alpha=alpha,
            gamma=gamma,
            chunk=max(1, chunk),
            group=options.group,
        )
        use_softmax, use_focal = alpha < 1.0, alpha > 0.0
        kept = keep.sum().to(dtype)
        z_y = engine.target_logit()
        log_n_y = log_counts[target]
        precompute = any(needs) and options.reduction != "none"
        lse, focal = engine.statistics(want_logsumexp=use_softmax, want_focal=use_focal and not precompute)

        squared_norm = None
        if options.weight_decay > 0.0:
            flat = weight.detach().reshape(-1).to(dtype)
            squared_norm = _all_reduce(torch.dot(flat, flat), options.group)

        saved: Optional[tuple[Optional[Tensor], ...]] = None
        if precompute:
            # With grad_output = 1; backward scales the result (the same arithmetic as a recomputation).
            rows, factor = _row_weights(keep, options.reduction, torch.ones((), dtype=dtype, device=keep.device))
            scales = _row_scales(engine, z_y, log_n_y, lse, rows)
            grad_x, grad_w, grad_b, focal = engine.gradients(
                **scales,
                lse=lse,
                decay=(options.weight_decay, factor) if options.weight_decay > 0.0 else None,
                want_features=needs[0],
                want_weight=needs[1],
                want_bias=needs[2],
                want_focal=use_focal,
                nonnegative=True,
            )
            saved = (grad_x, grad_w, grad_b)

        per_sample = torch.zeros(n, dtype=dtype, device=features.device)
        if use_softmax:
            assert lse is not None
            per_sample = per_sample + (1.0 - alpha) * (lse - z_y - log_n_y)
        if use_focal:
            assert focal is not None
            assert engine.cb_weight is not None
            target_loss, _ = _target_terms(z_y, gamma)
            per_sample = per_sample + alpha * engine.cb_weight * (focal + target_loss)
        per_sample = torch.where(keep, per_sample, 0.0)
        if options.reduction == "none":
            loss = per_sample
            if squared_norm is not None:
                loss = loss + keep.to(dtype) * (0.5 * options.weight_decay * squared_norm / kept.clamp_min(1.0))
        else:
            loss = per_sample.sum()
            if options.reduction == "mean":
                loss = loss / kept
            if squared_norm is not None:
                loss = loss + 0.5 * options.weight_decay * squared_norm

        ctx.engine = engine
        ctx.options = options
        ctx.saved = saved
        ctx.needs = needs
        ctx.has_lse = lse is not None
        ctx.save_for_backward(features, weight, bias, z_y, lse if lse is not None else z_y.new_empty(0))
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Optional[Tensor], ...]:
        features, _, _, z_y, lse = ctx.saved_tensors  # also checks that none was modified in place
        engine: _Engine = ctx.engine
        options: _Options = ctx.options
        dtype = engine.dtype
        g = grad_output.to(dtype)
        if ctx.saved is not None:
            grad_x, grad_w, grad_b = ctx.saved
            ctx.saved = None  # hand the buffers to autograd (a second backward recomputes)
            unit = g.device.type == "cpu" and float(g) == 1.0  # loss.backward(): no pass over the gradients
            for grad in (grad_x, grad_w, grad_b):
                if grad is not None and not unit:
                    grad.mul_(g.to(grad.dtype))
        else:
            rows, factor = _row_weights(engine.keep, options.reduction, g)
            log_n_y = engine.log_counts[engine.target]
            lse = lse if ctx.has_lse else None
            scales = _row_scales(engine, z_y, log_n_y, lse, rows)
            grad_x, grad_w, grad_b, _ = engine.gradients(
                **scales,
                lse=lse,
                decay=(options.weight_decay, factor) if options.weight_decay > 0.0 else None,
                want_features=ctx.needs[0],
                want_weight=ctx.needs[1],
                want_bias=ctx.needs[2],
                want_focal=False,
            )
        if grad_x is not None and grad_x.dtype != features.dtype:
            grad_x = grad_x.to(features.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None


def _row_weights(keep: Tensor, reduction: str, grad_output: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample weight :math:`r_n` of each loss in the gradient, and the factor of the penalty's gradient."""
    kept_mask = keep.to(grad_output.dtype)
    kept = kept_mask.sum().clamp_min(1.0)
    if reduction == "none":  # the penalty is spread over the kept samples
        rows = kept_mask * grad_output
        return rows, rows.sum() / kept
    scale = grad_output / kept if reduction == "mean" else grad_output
    return kept_mask * scale, grad_output


def _row_scales(engine: _Engine, z_y: Tensor, log_n_y: Tensor, lse: Optional[Tensor], rows: Tensor) -> dict[str, Any]:
    """Per-sample factors of the two gradient terms and the gradient entry at the target class."""
    alpha = engine.alpha
    softmax_scale = focal_scale = None
    target_grad = torch.zeros_like(rows)
    if alpha < 1.0:
        assert lse is not None
        softmax_scale = (1.0 - alpha) * rows
        target_grad = target_grad + softmax_scale * torch.expm1(z_y + log_n_y - lse)
    if alpha > 0.0:
        assert engine.cb_weight is not None
        focal_scale = alpha * engine.cb_weight * rows
        _, target_derivative = _target_terms(z_y, engine.gamma)
        target_grad = target_grad + focal_scale * target_derivative
    return {"softmax_scale": softmax_scale, "focal_scale": focal_scale, "target_grad": target_grad}


def _linear_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    bias: Optional[Tensor],
    *,
    alpha: float,
    beta: float,
    gamma: float,
    weight_decay: float,
    reduction: str,
    ignore_index: int,
    validate_args: bool,
    check_counts: bool,
    chunk_size: Optional[int],
    process_group: Optional[ProcessGroup],
    class_start: Optional[int],
) -> Tensor:
    """Check the arguments, prepare the per-class tensors and apply :class:`_LinearLoss`."""
    alpha, gamma = check_alpha(alpha), check_gamma(gamma)
    beta = check_beta(beta)
    weight_decay = check_weight_decay(weight_decay)
    reduction = check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    chunk_size = _check_chunk_size(chunk_size)
    _check_classifier(features, weight, bias, target)
    counts = _engine._counts(class_counts, features.device, check_counts)
    num_classes = counts.shape[0]
    if process_group is None:
        if weight.shape[0] != num_classes:
            raise ValueError(
                f"Expected `weight` to have C = len(class_counts) = {num_classes} rows, "
                f"but got shape {tuple(weight.shape)}"
            )
        class_start = 0
    elif class_start is None:
        class_start = _shard_start(weight.shape[0], num_classes, process_group, features.device)
    target = target.long()  # before any comparison: a uint8 156 must not compare equal to ignore_index -100
    checked = _engine._checks_values(check_bool("validate_args", validate_args))
    if checked:
        check_target_values(target, num_classes, ignore_index)
    dtype = _engine.compute_dtype(features.dtype)
    keep = target != ignore_index
    # Unchecked labels out of range give their sample a nan loss, never another class's (as the other losses).
    invalid = None if checked else keep & ((target < 0) | (target >= num_classes))
    safe_target = torch.where(keep if invalid is None else keep & ~invalid, target, 0)
    log_counts = counts.to(dtype).log()
    cb = None
    if alpha > 0.0:
        from longtail_losses.functional import class_balanced_weights  # here: functional imports this module

        cb = class_balanced_weights(counts, beta, dtype=dtype)
    needs = (features.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
    if not torch.is_grad_enabled():
        needs = (False, False, False)
    options = _Options(alpha, gamma, weight_decay, reduction, chunk_size, class_start, process_group)
    loss: Tensor = _LinearLoss.apply(
        features, weight, bias, safe_target, keep, log_counts, counts.to(dtype), cb, options, needs
    )
    if invalid is not None:
        loss = torch.where(invalid if reduction == "none" else invalid.any(), math.nan, loss)
    return loss


# ----------------------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------------------


def linear_balanced_softmax_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    bias: Optional[Tensor] = None,
    *,
    weight_decay: float = 0.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    validate_args: bool = True,
    chunk_size: Optional[int] = None,
    process_group: Optional[ProcessGroup] = None,
) -> Tensor:
    r""":func:`~longtail_losses.functional.balanced_softmax_loss` of a linear classifier, without its logits.

    Computes, class block by class block, the balanced softmax :cite:`ren2020balanced` of the logits
    :math:`z = x W^\top + b` and the gradients of ``features``, ``weight`` and ``bias``, never holding the
    :math:`(N, C)` logits or their gradient:

    .. math::
        \ell_n = \log \sum_{c=1}^{C} n_c e^{z_{n,c}} - \log n_{y_n} - z_{n,y_n},
        \qquad \mathcal{L} = \operatorname{reduce}_n \ell_n + \frac{\lambda}{2} \lVert W \rVert_F^2

    It equals ``balanced_softmax_loss(features @ weight.T + bias, target, class_counts)`` (plus the penalty), in
    value and gradients, up to rounding. ``'mean'`` divides by the number of samples whose label is not
    ``ignore_index`` (``nan`` if there is none). The penalty (``weight_decay`` :math:`=\lambda`, default off) is
    added once to the reduced loss, so its gradient is exactly ``weight_decay * weight``; with
    ``reduction='none'`` it is spread evenly over the kept samples, as in
    :func:`~longtail_losses.functional.bwlm_loss`. Memory beyond the gradients is a few blocks of
    :math:`N \times` ``chunk_size`` elements; time is about that of the plain computation (one more matrix
    product). Half and bfloat16 inputs are computed in float32. Double backward is not supported.

    With ``process_group``, ``weight`` (and ``bias``) are this rank's contiguous slice of the classifier's rows,
    in rank order, and ``features``, ``target`` and ``class_counts`` (all C classes) are the same on every rank;
    every rank returns the same loss, its slice's gradients, and the full gradient of ``features`` (summed over
    the ranks). Every rank must call forward and backward.

    Args:
        features: Inputs :math:`x` of the linear classifier.
        weight: Its weight :math:`W`, one row per class.
        target: Class indices in ``[0, C)``, or ``ignore_index``.
        class_counts: Training samples per class :math:`n_c`, all ``> 0``.
        bias: Its bias :math:`b`, or None.
        weight_decay: :math:`\lambda \ge 0` of the penalty :math:`\frac{\lambda}{2}\lVert W\rVert^2`.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        ignore_index: Label whose samples contribute nothing.
        validate_args: Check tensor values (counts, label range); this synchronises with the device.
        chunk_size: Classes per block; None picks about :math:`2^{21} / N`.
        process_group: Shard the classes over this ``torch.distributed`` group (see above).

    Shape:
        features: :math:`(N, D)`.
        weight: :math:`(C, D)` (this rank's :math:`(C_r, D)` when sharded).
        target: :math:`(N)`.
        class_counts: :math:`(C)`.
        bias: :math:`(C)` (:math:`(C_r)` when sharded).
        output: a scalar, or :math:`(N)` if ``reduction='none'`` (zero for ignored samples).

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If the shapes disagree, a count or label is invalid, or a hyperparameter is out of range.

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> weight = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> linear_balanced_softmax_loss(features, weight, torch.tensor([0, 1]), [90, 10])
        tensor(0.7380)
        >>> linear_balanced_softmax_loss(features, weight, torch.tensor([0, 1]), [90, 10], chunk_size=1)
        tensor(0.7380)
    """
    return _linear_loss(
        features,
        weight,
        target,
        class_counts,
        bias,
        alpha=0.0,
        beta=0.0,
        gamma=0.0,
        weight_decay=weight_decay,
        reduction=reduction,
        ignore_index=ignore_index,
        validate_args=validate_args,
        check_counts=validate_args,
        chunk_size=chunk_size,
        process_group=process_group,
        class_start=None,
    )


def linear_bfs_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    bias: Optional[Tensor] = None,
    *,
    alpha: float = 0.1,
    beta: float = 0.9999,
    gamma: float = 1.0,
    weight_decay: float = 0.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    validate_args: bool = True,
    chunk_size: Optional[int] = None,
    process_group: Optional[ProcessGroup] = None,
) -> Tensor:
    r""":func:`~longtail_losses.functional.bfs_loss` (and BWLM) of a linear classifier, without its logits.

    Computes, class block by class block, the Balanced Focal Softmax of the BWLM paper :cite:`fan2024bwlm`
    (eq. 11) on the logits :math:`z = x W^\top + b`, and the gradients of ``features``, ``weight`` and ``bias``,
    never holding the :math:`(N, C)` logits or their gradient:

    .. math::
        \ell_n = -\alpha\, w_{y_n} \sum_{c=1}^{C} (1-p^t_{n,c})^{\gamma} \log p^t_{n,c}
          - (1-\alpha) \log \frac{n_{y_n} e^{z_{n,y_n}}}{\sum_{c} n_c e^{z_{n,c}}},
        \qquad \mathcal{L} = \operatorname{reduce}_n \ell_n + \frac{\lambda}{2} \lVert W \rVert_F^2

    with sigmoid :math:`p^t` and the class-balanced weights :math:`w` normalised to sum to C, as in
    :func:`~longtail_losses.functional.bfs_loss`. With ``weight_decay`` :math:`=\lambda > 0` it is BWLM's loss
    (eq. 17, :func:`~longtail_losses.functional.bwlm_loss`): the penalty is added once to the reduced loss, its
    gradient is exactly ``weight_decay * weight`` and, with ``reduction='none'``, it is spread evenly over the
    kept samples. ``'mean'`` divides by the number of samples whose label is not ``ignore_index``. The focal
    term is computed from log-sigmoids (:math:`\log(1-p) = \log\sigma(-z)`), so it stays finite for any finite
    logits. Memory, dtypes, double backward and ``process_group`` are as in
    :func:`~longtail_losses.functional.linear_balanced_softmax_loss`.

    Args:
        features: Inputs :math:`x` of the linear classifier.
        weight: Its weight :math:`W`, one row per class.
        target: Class indices in ``[0, C)``, or ``ignore_index``.
        class_counts: Training samples per class :math:`n_c`, all ``> 0``.
        bias: Its bias :math:`b`, or None.
        alpha: Weight :math:`\alpha \in [0, 1]` of the class-balanced focal term.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)` of the focal term.
        gamma: Focusing parameter :math:`\gamma \ge 0` of the focal term.
        weight_decay: :math:`\lambda \ge 0` of the penalty :math:`\frac{\lambda}{2}\lVert W\rVert^2`.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        ignore_index: Label whose samples contribute nothing.
        validate_args: Check tensor values (counts, label range); this synchronises with the device.
        chunk_size: Classes per block; None picks about :math:`2^{21} / N`.
        process_group: Shard the classes over this ``torch.distributed`` group (see
            :func:`~longtail_losses.functional.linear_balanced_softmax_loss`).

    Shape:
        features: :math:`(N, D)`.
        weight: :math:`(C, D)` (this rank's :math:`(C_r, D)` when sharded).
        target: :math:`(N)`.
        class_counts: :math:`(C)`.
        bias: :math:`(C)` (:math:`(C_r)` when sharded).
        output: a scalar, or :math:`(N)` if ``reduction='none'`` (zero for ignored samples).

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If the shapes disagree, a count or label is invalid, or a hyperparameter is out of range.

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> weight = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> linear_bfs_loss(features, weight, torch.tensor([0, 1]), [90, 10], beta=0.99)
        tensor(0.7064)
        >>> linear_bfs_loss(features, weight, torch.tensor([0, 1]), [90, 10], beta=0.99, weight_decay=0.1)
        tensor(0.9564)
    """
    return _linear_loss(
        features,
        weight,
        target,
        class_counts,
        bias,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        weight_decay=weight_decay,
        reduction=reduction,
        ignore_index=ignore_index,
        validate_args=validate_args,
        check_counts=validate_args,
        chunk_size=chunk_size,
        process_group=process_group,
        class_start=None,
    )


# ----------------------------------------------------------------------------------------------------------------
# Modules: they own the classifier
# ----------------------------------------------------------------------------------------------------------------


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous class range ``[start, stop)`` that rank ``rank`` of ``world_size`` holds (near-equal slices).

    Example:
        >>> from longtail_losses.losses.linear import shard_range
        >>> [shard_range(10, r, 3) for r in range(3)]
        [(0, 3), (3, 6), (6, 10)]
    """
    return num_classes * rank // world_size, num_classes * (rank + 1) // world_size


class LinearBalancedSoftmax(nn.Module):
    r"""Module form of :func:`~longtail_losses.functional.linear_balanced_softmax_loss`: classifier and loss.

    It owns the classifier's ``weight`` :math:`(C, D)` and ``bias`` :math:`(C)` (initialised as
    :class:`~torch.nn.Linear` does) and ``forward(features, target)`` returns the loss without materialising the
    :math:`(N, C)` logits. For evaluation, :meth:`logits` returns them plainly, :meth:`iter_logits` block by block
    and :meth:`topk` the best classes without holding them. The class counts are an ``int64`` buffer.

    With ``process_group`` the module holds only this rank's contiguous slice of the classes,
    :func:`~longtail_losses.losses.linear.shard_range` of the group's rank (``class_start``, ``num_local_classes``); see
    :func:`~longtail_losses.functional.linear_balanced_softmax_loss` for what each rank must pass and receives.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        in_features: Size :math:`D` of each feature vector.
        bias: Whether the classifier has a bias. Default: ``True``.
        weight_decay: :math:`\lambda \ge 0` of the penalty :math:`\frac{\lambda}{2}\lVert W\rVert^2`. Default: ``0``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        ignore_index: Label to ignore. Default: ``-100``.
        validate_args: Check the label range on every call (a device sync). Default: ``True``.
        chunk_size: Classes per block; None picks about :math:`2^{21} / N`. Default: ``None``.
        process_group: Shard the classes over this ``torch.distributed`` group. Default: ``None``.
        device: Device of the parameters.
        dtype: Floating-point dtype of the parameters.

    Shape:
        features: :math:`(N, D)`.
        target: :math:`(N)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Example:
        >>> head = LinearBalancedSoftmax([90, 10, 5], in_features=4)
        >>> head
        LinearBalancedSoftmax(num_classes=3, in_features=4, bias=True, weight_decay=0.0,
          reduction='mean', ignore_index=-100)
        >>> loss = head(torch.randn(8, 4), torch.randint(0, 3, (8,)))
        >>> loss.backward()
        >>> head.weight.grad.shape, head.logits(torch.randn(8, 4)).shape
        (torch.Size([3, 4]), torch.Size([8, 3]))
    """

    class_counts: Tensor
    _hyperparameters: tuple[str, ...] = ("weight_decay",)

    def __init__(
        self,
        class_counts: CountsLike,
        in_features: int,
        *,
        bias: bool = True,
        weight_decay: float = 0.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        validate_args: bool = True,
        chunk_size: Optional[int] = None,
        process_group: Optional[ProcessGroup] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.register_buffer("class_counts", as_class_counts(class_counts))
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"Expected `in_features` to be an int >= 1, but got {in_features!r}")
        self.in_features = in_features
        self.weight_decay = check_weight_decay(weight_decay)
        self.reduction = check_reduction(reduction)
        self.ignore_index = check_ignore_index(ignore_index)
        self.validate_args = check_bool("validate_args", validate_args)
        self.chunk_size = _check_chunk_size(chunk_size)
        self.process_group = process_group
        num_classes = self.class_counts.shape[0]
        if process_group is None:
            start, stop = 0, num_classes
        else:
            import torch.distributed as dist

            start, stop = shard_range(num_classes, dist.get_rank(process_group), dist.get_world_size(process_group))
        self.class_start = start
        self.num_local_classes = stop - start
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(stop - start, in_features, **factory))  # type: ignore[arg-type]
        self.bias = nn.Parameter(torch.empty(stop - start, **factory)) if bias else None  # type: ignore[arg-type]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``weight`` and ``bias`` as :class:`~torch.nn.Linear` does (uniform, bound ``1/sqrt(D)``)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def num_classes(self) -> int:
        """Number of classes C (over all ranks)."""
        return self.class_counts.shape[0]

    def extra_repr(self) -> str:
        """Show the sizes and the hyperparameters in ``repr``."""
        fields = [f"num_classes={self.num_classes}", f"in_features={self.in_features}", f"bias={self.bias is not None}"]
        if self.process_group is not None:
            fields.append(f"class_start={self.class_start}, num_local_classes={self.num_local_classes}")
        fields += [f"{name}={getattr(self, name)}" for name in self._hyperparameters]
        fields += [f"reduction={self.reduction!r}", f"ignore_index={self.ignore_index}"]
        return ", ".join(fields)

    def _hyper(self) -> dict[str, float]:
        return {"alpha": 0.0, "beta": 0.0, "gamma": 0.0}

    def forward(self, features: Tensor, target: Tensor) -> Tensor:
        """Compute the loss of the classifier's logits on ``features``; see :func:`linear_bfs_loss`."""
        return _linear_loss(
            features,
            self.weight,
            target,
            self.class_counts,
            self.bias,
            **self._hyper(),
            weight_decay=self.weight_decay,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            validate_args=self.validate_args,
            check_counts=False,
            chunk_size=self.chunk_size,
            process_group=self.process_group,
            class_start=self.class_start,
        )

    def logits(self, features: Tensor) -> Tensor:
        """The plain logits ``features @ weight.T + bias`` (this rank's classes when sharded), shape (N, C)."""
        return F.linear(features, self.weight, self.bias)

    def iter_logits(self, features: Tensor, chunk_size: Optional[int] = None) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(first_class, logits)`` block by block: the logits of classes ``first_class, ...`` (global ids).

        Example:
            >>> head = LinearBalancedSoftmax([5, 4, 3, 2, 1], in_features=2)
            >>> [(start, tuple(z.shape)) for start, z in head.iter_logits(torch.randn(3, 2), chunk_size=2)]
            [(0, (3, 2)), (2, (3, 2)), (4, (3, 1))]
        """
        chunk = _check_chunk_size(chunk_size) or self.chunk_size
        if chunk is None:
            chunk = max(_MIN_CHUNK, CHUNK_ELEMENTS // max(1, features.shape[0]))
        for start in range(0, self.num_local_classes, chunk):
            stop = min(start + chunk, self.num_local_classes)
            bias = None if self.bias is None else self.bias[start:stop]
            yield self.class_start + start, F.linear(features, self.weight[start:stop], bias)

    @torch.no_grad()
    def topk(self, features: Tensor, k: int = 1, chunk_size: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """The ``k`` largest logits of each sample and their (global) classes, without holding all the logits.

        When sharded, the result covers this rank's classes only.

        Example:
            >>> head = LinearBalancedSoftmax([5, 4, 3, 2, 1], in_features=2, bias=False)
            >>> _ = head.weight.data.copy_(torch.arange(10.0).view(5, 2))
            >>> head.topk(torch.tensor([[1.0, 1.0], [-1.0, 0.0]]), k=2, chunk_size=2)
            (tensor([[17., 13.],
                    [ 0., -2.]]), tensor([[4, 3],
                    [0, 1]]))
        """
        values: Optional[Tensor] = None
        indices: Optional[Tensor] = None
        for start, z in self.iter_logits(features, chunk_size):
            top = z.topk(min(k, z.shape[1]), dim=1)
            ids = top.indices + start
            if values is None or indices is None:
                values, indices = top.values, ids
            else:
                merged = torch.cat([values, top.values], dim=1).topk(min(k, values.shape[1] + z.shape[1]), dim=1)
                values, indices = merged.values, torch.cat([indices, ids], dim=1).gather(1, merged.indices)
        if values is None or indices is None:
            empty = features.new_empty(features.shape[0], 0)
            return empty, empty.long()
        return values, indices


class LinearBFS(LinearBalancedSoftmax):
    r"""Module form of :func:`~longtail_losses.functional.linear_bfs_loss`: classifier and BFS (or BWLM) loss.

    Like :class:`~longtail_losses.LinearBalancedSoftmax` (which see for
    :meth:`~longtail_losses.LinearBalancedSoftmax.logits`, :meth:`~longtail_losses.LinearBalancedSoftmax.iter_logits`,
    :meth:`~longtail_losses.LinearBalancedSoftmax.topk` and ``process_group``), with the focal term's
    hyperparameters. With ``weight_decay > 0`` it is BWLM's loss, eq. (17) of the paper.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        in_features: Size :math:`D` of each feature vector.
        alpha: Weight of the class-balanced focal term, in ``[0, 1]``. Default: ``0.1``.
        beta: Effective-number hyperparameter in ``[0, 1)``. Default: ``0.9999``.
        gamma: Focusing parameter ``>= 0``. Default: ``1.0``.
        **kwargs: ``bias``, ``weight_decay``, ``reduction``, ``ignore_index``, ``validate_args``, ``chunk_size``,
            ``process_group``, ``device``, ``dtype``: as for :class:`LinearBalancedSoftmax`.

    Shape:
        features: :math:`(N, D)`.
        target: :math:`(N)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Example:
        >>> head = LinearBFS([90, 10, 5], in_features=4, weight_decay=5e-3)
        >>> head
        LinearBFS(num_classes=3, in_features=4, bias=True, alpha=0.1, beta=0.9999, gamma=1.0, weight_decay=0.005,
          reduction='mean', ignore_index=-100)
        >>> features, target = torch.randn(8, 4), torch.randint(0, 3, (8,))
        >>> loss = head(features, target)
        >>> plain = torch.nn.functional.linear(features, head.weight, head.bias)
        >>> from longtail_losses.functional import bwlm_loss
        >>> torch.allclose(loss, bwlm_loss(plain, target, [90, 10, 5], head.weight, weight_decay=5e-3))
        True
    """

    _hyperparameters = ("alpha", "beta", "gamma", "weight_decay")

    def __init__(
        self,
        class_counts: CountsLike,
        in_features: int,
        *,
        alpha: float = 0.1,
        beta: float = 0.9999,
        gamma: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(class_counts, in_features, **kwargs)  # bias, weight_decay, options: as LinearBalancedSoftmax
        self.alpha = check_alpha(alpha)
        self.beta = check_beta(beta)
        self.gamma = check_gamma(gamma)

    def _hyper(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}
