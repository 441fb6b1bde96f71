"""The chunked autograd kernel: two passes over blocks of classes, and the collectives of the sharded form.

See :mod:`longtail_losses.losses.linear` for the method. The element-wise terms are those of
:mod:`longtail_losses.losses._kernel` (:func:`~longtail_losses.losses._kernel.focal_terms`, the softmax's
``exp(x - lse)``); :class:`LinearLoss` checks nothing: its caller ``_functions.linear_loss`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from longtail_losses.losses import _engine, _kernel

__all__ = ["CHUNK_ELEMENTS", "LinearLoss", "Plan", "ProcessGroup", "default_chunk"]

#: Elements of one block of logits when ``chunk_size`` is None: 2**21 (8 MiB of float32), i.e. 8192 classes for a
#: batch of 256: small enough to stay in cache, large enough that the ~30 tensor ops per block are not dominated
#: by their fixed cost (each is a parallel region, which is slow to start on a busy CPU).
CHUNK_ELEMENTS = 1 << 21

_MIN_CHUNK = 64


def default_chunk(num_samples: int) -> int:
    """Classes per block when ``chunk_size`` is None: about :data:`CHUNK_ELEMENTS` logits, at least 64 classes."""
    return max(_MIN_CHUNK, CHUNK_ELEMENTS // max(1, num_samples))


ProcessGroup = Any  # torch.distributed.ProcessGroup, which is not importable on every build

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

    # -- the focal term over a block: every entry as a negative (the target column is the caller's) ----------
    def _focal(self, z: Tensor, *, derivative: bool) -> tuple[Tensor, Optional[Tensor]]:
        r""":math:`f(-z)` and :math:`\partial f(-z) / \partial z = -f'(-z)` of every entry of the block."""
        value, d = _kernel.focal_terms(torch.neg(z), self.gamma, derivative=derivative)
        return value, None if d is None else d.neg_()

    def _focal_row_sum(self, value: Tensor, inside: Tensor, cols: Tensor) -> Tensor:
        """Row sums of the block's focal values over its non-target classes (overwrites ``value``)."""
        return value.scatter_(1, cols, torch.where(inside, 0.0, value.gather(1, cols))).sum(dim=1)

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
                focal += self._focal_row_sum(self._focal(z, derivative=False)[0], inside, cols)
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
                value, grad = self._focal(z, derivative=True)
                assert grad is not None
                if focal is not None:
                    focal += self._focal_row_sum(value, inside, cols)
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
class Plan:
    """What one call of :class:`LinearLoss` computes, besides its tensors."""

    alpha: float
    gamma: float
    weight_decay: float
    reduction: str
    chunk: Optional[int]
    class_start: int
    group: Optional[ProcessGroup]


def _target_terms(z_y: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Focal loss and its derivative at the target logit, per sample (the target is a positive)."""
    value, derivative = _kernel.focal_terms(z_y, gamma)
    assert derivative is not None
    return value, derivative


class LinearLoss(torch.autograd.Function):
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
        options: Plan,
        needs: tuple[bool, bool, bool],
    ) -> Tensor:
        dtype = _engine.compute_dtype(features.dtype)
        n = features.shape[0]
        alpha, gamma = options.alpha, options.gamma
        chunk = options.chunk or default_chunk(n)
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
        loss = per_sample if options.reduction == "none" else per_sample.sum()
        if options.reduction == "mean":
            loss = loss / kept
        if squared_norm is not None:
            loss = _engine.add_penalty(loss, 0.5 * options.weight_decay * squared_norm, keep, options.reduction)

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
        options: Plan = ctx.options
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
    if reduction == "none":  # the penalty is spread over the kept samples (over all of them when none is kept)
        share = torch.where(kept_mask.sum() > 0, kept_mask / kept, 1.0 / max(1, keep.numel()))
        return kept_mask * grad_output, (grad_output * share).sum()
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
