"""The chunked autograd kernel: preparation, two passes over blocks of classes, and the sharded form's collectives.

See :mod:`longtail_losses.losses.linear` for the method. The element-wise terms are those of
:mod:`longtail_losses.losses._kernel` (:func:`~longtail_losses.losses._kernel.focal_terms`, the softmax's
``exp(x - lse)``). :func:`linear_loss` checks the inputs and prepares the :class:`Engine`; :class:`LinearLoss`
checks nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from longtail_losses._validation import check_linear_inputs, check_target_values
from longtail_losses.losses import _engine, _kernel

__all__ = ["CHUNK_ELEMENTS", "Engine", "LinearLoss", "ProcessGroup", "default_chunk", "linear_loss"]

#: Elements of one block of logits when ``chunk_size`` is None: 2**21 (8 MiB of float32), i.e. 8192 classes for a
#: batch of 256: small enough to stay in cache, large enough that the ~30 tensor ops per block are not dominated
#: by their fixed cost (each is a parallel region, which is slow to start on a busy CPU).
CHUNK_ELEMENTS = 1 << 21

ProcessGroup = Any  # torch.distributed.ProcessGroup, which is not importable on every build


def default_chunk(num_samples: int) -> int:
    """Classes per block when ``chunk_size`` is None: about :data:`CHUNK_ELEMENTS` logits, at least 64 classes."""
    return max(64, CHUNK_ELEMENTS // max(1, num_samples))


def _all_reduce(tensor: Tensor, group: Optional[ProcessGroup], *, op: str = "sum") -> Tensor:
    """Sum (or take the maximum of) ``tensor`` in place over the ranks of ``group``; identity without a group."""
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
    return tensor


def _row_sum(value: Tensor, inside: Tensor, cols: Tensor) -> Tensor:
    """Row sums of a block's values over its non-target classes (overwrites ``value``)."""
    return value.scatter_(1, cols, torch.where(inside, 0.0, value.gather(1, cols))).sum(dim=1)


@dataclass
class Engine:
    """The prepared inputs of one call and the two passes over blocks of (this rank's) classes."""

    features: Tensor  # (N, D), compute dtype, detached
    weight: Tensor  # (C_local, D), caller's dtype, detached
    bias: Optional[Tensor]  # (C_local,), detached
    target: Tensor  # (N,) int64 label minus this rank's first class; ignored labels are replaced by class 0
    keep: Tensor  # (N,) bool
    counts: Tensor  # (C_local,) compute dtype, this rank's classes
    log_n_y: Tensor  # (N,) log n_{y_n}
    cb_weight: Optional[Tensor]  # (N,) w_{y_n} when alpha > 0
    alpha: float
    gamma: float
    weight_decay: float
    reduction: str
    chunk: int
    group: Optional[ProcessGroup]
    needs: tuple[bool, bool, bool]  # gradients wanted for features, weight, bias

    @property
    def dtype(self) -> torch.dtype:
        return self.features.dtype

    def _columns(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Rows whose (kept) label lies in classes ``[start, stop)``, and its column there (clamped), (N, 1)."""
        relative = self.target - start
        inside = self.keep & (relative >= 0) & (relative < stop - start)
        return inside[:, None], relative.clamp(0, stop - start - 1)[:, None]

    def blocks(self, *, shifted: bool = False) -> Iterator[tuple[slice, Tensor, Tensor, Tensor, Tensor]]:
        r"""Per block: its classes, :math:`W_c`, :math:`x W_c^\top + b_c` (``shifted``: :math:`+\log n_c`), columns."""
        for start in range(0, self.weight.shape[0], self.chunk):
            block = slice(start, min(start + self.chunk, self.weight.shape[0]))
            w = self.weight[block].to(self.dtype)
            bias = None if self.bias is None else self.bias[block].to(self.dtype)
            if shifted:
                bias = self.counts[block].log() if bias is None else bias + self.counts[block].log()
            z = torch.mm(self.features, w.t()) if bias is None else torch.addmm(bias, self.features, w.t())
            yield (block, w, z, *self._columns(block.start, block.stop))

    def target_logit(self) -> Tensor:
        """:math:`z_{n, y_n}` by a row-wise dot product (summed over ranks: only the owner contributes)."""
        z_y = self.features.new_zeros(self.features.shape[0])
        if self.weight.shape[0] > 0:
            inside, rows = self._columns(0, self.weight.shape[0])
            z = (self.features * self.weight[rows[:, 0]].to(self.dtype)).sum(dim=1)
            if self.bias is not None:
                z = z + self.bias[rows[:, 0]].to(self.dtype)
            z_y = torch.where(inside[:, 0], z, 0.0)
        return _all_reduce(z_y, self.group)

    def statistics(self, z_y: Tensor, *, focal: bool) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        r"""Pass 1: per sample, over all classes and ranks, ``(rest, lse, focal sums)``.

        ``rest`` is the log-sum-exp of :math:`x = z + \log n` over the classes other than the target and ``lse`` over
        all of them (both None if ``alpha == 1``); the balanced-softmax loss is then
        :math:`\operatorname{softplus}(\text{rest} - x_y) \ge 0`, accurate relative to itself at any logit scale
        (``lse - x_y`` would cancel). The focal sums (target class excluded) are None without ``focal``.
        """
        n = self.features.shape[0]
        rest = self.features.new_full((n,), -math.inf) if self.alpha < 1.0 else None
        sums = self.features.new_zeros(n) if focal else None
        for block, _, z, inside, cols in self.blocks(shifted=not focal):
            if sums is not None:
                sums += _row_sum(_kernel.focal_terms(torch.neg(z), self.gamma, derivative=False)[0], inside, cols)
                if rest is not None:
                    z += self.counts[block].log()
            if rest is not None:
                z.scatter_(1, cols, torch.where(inside, -math.inf, z.gather(1, cols)))  # the target left out
                torch.logaddexp(rest, torch.logsumexp(z, dim=1), out=rest)
        if rest is not None and self.group is not None:  # all-reduce of the maxima, then of the rescaled sums
            top = _all_reduce(rest.clone(), self.group, op="max")
            finite_top = torch.where(torch.isfinite(top), top, 0.0)
            rest = finite_top + _all_reduce(torch.exp(rest - finite_top), self.group).log()
        lse = None if rest is None else torch.logaddexp(rest, z_y + self.log_n_y)
        return rest, lse, None if sums is None else _all_reduce(sums, self.group)

    def gradients(self, grad_output: Optional[Tensor], z_y: Tensor, lse: Optional[Tensor]) -> tuple[Any, ...]:
        r"""Pass 2: the gradients of :math:`\sum_n r_n \ell_n` and of the penalty, and the focal row sums.

        Returns ``(d features, d weight, d bias, focal row sums)``. :math:`r_n` is ``grad_output`` times the
        sample's weight in the reduction (0 if ignored). ``grad_output`` None stands for 1: forward computes a scalar
        loss's gradients so (backward scales them), and gets the focal row sums of pass 1 too (else None). The
        features' gradient is summed over the ranks.
        """
        forward = grad_output is None
        x = self.features
        g = x.new_ones(()) if grad_output is None else grad_output.to(self.dtype)
        mask = self.keep.to(self.dtype)
        kept = mask.sum()
        if self.reduction == "none":  # the penalty is spread over the kept samples (over all when none is kept)
            share = torch.where(kept > 0, mask / kept.clamp_min(1.0), 1.0 / max(1, mask.numel()))
            rows, decay = mask * g, (g * share).sum()
        else:
            rows, decay = mask * (g / kept.clamp_min(1.0) if self.reduction == "mean" else g), g
        target_grad = torch.zeros_like(rows)  # the whole gradient entry at the target class
        shift: Optional[Tensor] = None
        sign: Optional[Tensor] = None
        focal_scale: Optional[Tensor] = None
        if self.alpha < 1.0:
            assert lse is not None
            softmax_scale = (1.0 - self.alpha) * rows
            target_grad = target_grad + softmax_scale * torch.expm1(z_y + self.log_n_y - lse)
            # (1 - alpha) r_n n_c exp(z - lse_n) = sign_n n_c exp(z - shift_n), shift_n = lse_n - log|(1 - alpha) r_n|
            shift = (lse - softmax_scale.abs().log())[:, None]  # a zero scale gives +inf: exp(-inf) = 0
            sign = None if forward else torch.sign(softmax_scale)[:, None]  # r_n >= 0 when grad_output is 1
        if self.alpha > 0.0:
            assert self.cb_weight is not None
            focal_scale = self.alpha * self.cb_weight * rows
            target_derivative = _kernel.focal_terms(z_y, self.gamma)[1]
            assert target_derivative is not None
            target_grad = target_grad + focal_scale * target_derivative
            focal_scale = focal_scale.neg()[:, None]  # d f(-z) / dz = -f'(-z) for the non-target classes
        grad_x = x.new_zeros(x.shape) if self.needs[0] else None
        grad_w = torch.empty_like(self.weight) if self.needs[1] else None
        grad_b = torch.empty_like(self.bias) if self.needs[2] and self.bias is not None else None
        focal = x.new_zeros(x.shape[0]) if forward and focal_scale is not None else None
        for block, w, z, inside, cols in self.blocks():
            grad: Optional[Tensor] = None
            if focal_scale is not None:
                value, grad = _kernel.focal_terms(torch.neg(z), self.gamma)
                if focal is not None:
                    focal += _row_sum(value, inside, cols)
                assert grad is not None
                grad.mul_(focal_scale)
            if shift is not None:
                z.sub_(shift).exp_()
                if sign is not None:
                    z.mul_(sign)
                grad = z.mul_(self.counts[block]) if grad is None else grad.addcmul_(z, self.counts[block])
            assert grad is not None  # alpha < 1 or alpha > 0
            grad.scatter_(1, cols, torch.where(inside, target_grad[:, None], grad.gather(1, cols)))
            if grad_x is not None:
                grad_x.addmm_(grad, w)
            if grad_w is not None:
                grad_w_block = grad_w[block]
                if self.weight.dtype == self.dtype:
                    torch.mm(grad.t(), x, out=grad_w_block)
                else:
                    grad_w_block.copy_(torch.mm(grad.t(), x))
                if self.weight_decay > 0.0:
                    grad_w_block.addcmul_(self.weight[block], decay.to(grad_w.dtype), value=self.weight_decay)
            if grad_b is not None:
                grad_b[block] = grad.sum(dim=0)
        if grad_x is not None:
            _all_reduce(grad_x, self.group)
        return grad_x, grad_w, grad_b, None if focal is None else _all_reduce(focal, self.group)


class LinearLoss(torch.autograd.Function):
    """Forward: the loss (and, for a scalar loss, the gradients); backward: scale or recompute them."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, weight: Tensor, bias: Optional[Tensor], engine: Engine) -> Tensor:
        z_y = engine.target_logit()
        precompute = any(engine.needs) and engine.reduction != "none"
        rest, lse, focal = engine.statistics(z_y, focal=engine.alpha > 0.0 and not precompute)
        # With grad_output = 1; backward scales them (the same arithmetic as a recomputation).
        ctx.grads = engine.gradients(None, z_y, lse) if precompute else None
        focal = ctx.grads[3] if precompute else focal
        per_sample = torch.zeros_like(z_y)
        if rest is not None:
            per_sample += (1.0 - engine.alpha) * F.softplus(rest - z_y - engine.log_n_y)
        if focal is not None:
            assert engine.cb_weight is not None
            target_loss = _kernel.focal_terms(z_y, engine.gamma, derivative=False)[0]
            per_sample += engine.alpha * engine.cb_weight * (focal + target_loss)
        per_sample = torch.where(engine.keep, per_sample, 0.0)
        loss = per_sample if engine.reduction == "none" else per_sample.sum()
        if engine.reduction == "mean":
            loss = loss / engine.keep.sum().to(loss.dtype)
        if engine.weight_decay > 0.0:
            flat = engine.weight.reshape(-1).to(engine.dtype)
            squared_norm = _all_reduce(torch.dot(flat, flat), engine.group)
            loss = _engine.add_penalty(loss, 0.5 * engine.weight_decay * squared_norm, engine.keep, engine.reduction)
        ctx.engine = engine
        ctx.save_for_backward(features, weight, bias, z_y, lse)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Optional[Tensor], ...]:
        features, _, _, z_y, lse = ctx.saved_tensors  # also checks that none was modified in place
        if ctx.grads is None:
            grad_x, grad_w, grad_b, _ = ctx.engine.gradients(grad_output, z_y, lse)
        else:
            grad_x, grad_w, grad_b, _ = ctx.grads
            ctx.grads = None  # hand the buffers to autograd (a second backward recomputes)
            g = grad_output.to(ctx.engine.dtype)
            if g.device.type != "cpu" or float(g) != 1.0:  # loss.backward(): no pass over the gradients
                for grad in (grad_x, grad_w, grad_b):
                    if grad is not None:
                        grad.mul_(g.to(grad.dtype))
        if grad_x is not None:
            grad_x = grad_x.to(features.dtype)
        return grad_x, grad_w, grad_b, None


def _shard_start(num_local: int, num_classes: int, group: ProcessGroup, device: torch.device) -> int:
    """Offset of this rank's class slice: the sizes of the slices of the lower ranks, summed."""
    import torch.distributed as dist

    sizes = torch.zeros(dist.get_world_size(group), dtype=torch.int64, device=device)
    sizes[dist.get_rank(group)] = num_local
    counts = _all_reduce(sizes, group).tolist()
    if sum(counts) != num_classes:
        raise ValueError(
            f"Expected the ranks' `weight` slices to hold C = len(class_counts) = {num_classes} rows in all, "
            f"but got {counts}"
        )
    return sum(counts[: dist.get_rank(group)])


def linear_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    counts: Tensor,
    bias: Optional[Tensor],
    options: _engine.CallOptions,
    hyper: tuple[float, float, float],
    *,
    weight_decay: float,
    chunk_size: Optional[int],
    process_group: Optional[ProcessGroup],
    class_start: Optional[int] = None,
) -> Tensor:
    """Prepare the :class:`Engine` and apply :class:`LinearLoss`; everything but the inputs comes checked.

    ``hyper`` is ``(alpha, beta, gamma)``; ``class_start`` is the first class of this rank's slice (None: gathered
    from the ranks).
    """
    check_linear_inputs(features, weight, bias, target)
    counts = counts.to(features.device)
    num_classes, num_local = counts.shape[0], weight.shape[0]
    if process_group is None:
        if num_local != num_classes:
            raise ValueError(f"Expected `weight` to have C = {num_classes} rows, but got shape {tuple(weight.shape)}")
        class_start = 0
    elif class_start is None:
        class_start = _shard_start(num_local, num_classes, process_group, features.device)
    checked = options.check_values
    if checked:
        check_target_values(target.long(), num_classes, options.ignore_index)
    safe_target, keep, invalid = _engine.labels(target, num_classes, options, checked=checked)
    dtype = _engine.compute_dtype(features.dtype)
    alpha, beta, gamma = hyper
    needs = (features.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
    engine = Engine(
        features=features.detach().to(dtype),
        weight=weight.detach(),
        bias=None if bias is None else bias.detach(),
        target=safe_target - class_start,
        keep=keep,
        counts=counts[class_start : class_start + num_local].to(dtype),
        log_n_y=counts.to(dtype).log()[safe_target],
        cb_weight=_engine.class_balanced_weights(counts, beta, dtype)[safe_target] if alpha > 0.0 else None,
        alpha=alpha,
        gamma=gamma,
        weight_decay=weight_decay,
        reduction=options.reduction,
        chunk=chunk_size or default_chunk(features.shape[0]),
        group=process_group,
        needs=needs if torch.is_grad_enabled() else (False, False, False),
    )
    loss: Tensor = LinearLoss.apply(features, weight, bias, engine)
    if invalid is not None:  # unchecked labels out of range: nan, never another class's loss
        loss = torch.where(invalid if options.reduction == "none" else invalid.any(), math.nan, loss)
    return loss
