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
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from longtail_losses._validation import check_linear_inputs, check_target_values
from longtail_losses.losses import _engine, _kernel

__all__ = ["CHUNK_ELEMENTS", "Engine", "LinearLoss", "ProcessGroup", "Spread", "default_chunk", "linear_loss"]

#: Elements of one block of logits when ``chunk_size`` is None: 2**16 (256 KiB of float32), i.e. 256 classes for a
#: batch of 256. Measured on a 2-core CPU at N = 256, D = 128 (balanced softmax): against 2**21 it takes 18 % more
#: time at C = 10**6 (3.0 s against 2.55 s) for 0.9 MiB of working memory at C = 10**5 instead of 11.6 MiB, less
#: than torch's own chunked ``F.linear_cross_entropy``; a larger ``chunk_size`` trades memory for time.
CHUNK_ELEMENTS = 1 << 16

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


class Spread(NamedTuple):
    r"""Label smoothing's uniform part :math:`\varepsilon / C` times a per-class weight :math:`a_c`."""

    local: Tensor  # (C_local,) this rank's classes
    total: Tensor  # () summed over all C classes


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
    label_weight: Tensor  # (N,) (1 - eps) v_{y_n}: the weight of the label's own loss (v: class_weights, or 1)
    row_weight: Optional[Tensor]  # (N,) v_{y_n}, summed by 'mean' (None without class_weights: it counts)
    cb_weight: Optional[Tensor]  # (N,) (1 - eps) v_{y_n} w_{y_n} when alpha > 0
    spread: Optional[Spread]  # eps / C * v_c, when eps > 0: the smoothed part of the softmax term
    cb_spread: Optional[Spread]  # eps / C * v_c w_c, when eps > 0 and alpha > 0: that of the focal term
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

    def total_weight(self) -> Tensor:
        """What ``'mean'`` divides by: the kept samples' class weights summed, or their number without weights."""
        mask = self.keep.to(self.dtype)
        return (mask if self.row_weight is None else mask * self.row_weight).sum()

    def focal_block(
        self, z: Tensor, block: slice, inside: Tensor, cols: Tensor, *, sums: bool, derivative: bool
    ) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        r"""One block's focal terms: row sums of the values, :math:`f'(-z)`, the smoothed part's derivative.

        The value is :math:`\tilde w_n \sum_{c \ne y} f(-z_c) + \sum_c \bigl[(E - e_c) f(-z_c) + e_c f(z_c)\bigr]`
        (the label's target term :math:`\tilde w_n f(z_y)` is added once, in forward), with :math:`\tilde w_n` =
        ``cb_weight`` and :math:`e` = ``cb_spread``: the expectation of the class-index focal loss under the smoothed
        target, in the form of :func:`~longtail_losses.losses._engine._focal_per_row` (no cancellation). The smoothed
        part's derivative covers every column, the target's included; the label part's is the derivative
        :math:`f'(-z)`, to be scaled by :math:`-\tilde w_n`. ``z`` is not modified.
        """
        value, negative = _kernel.focal_terms(torch.neg(z), self.gamma, derivative=derivative)
        row: Optional[Tensor] = None
        smoothed: Optional[Tensor] = None
        if self.cb_spread is not None:
            e = self.cb_spread.local[block]
            rest = self.cb_spread.total - e
            positive_value, positive = _kernel.focal_terms(z, self.gamma, derivative=derivative)
            if sums:
                row = torch.mv(value, rest).add_(torch.mv(positive_value, e))
            if positive is not None and negative is not None:
                smoothed = positive.mul_(e).sub_(negative * rest)
        if sums:
            assert self.cb_weight is not None
            label = _row_sum(value, inside, cols).mul_(self.cb_weight)
            row = label if row is None else row.add_(label)
        return row, negative, smoothed

    def statistics(self, z_y: Tensor, *, focal: bool) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        r"""Pass 1: per sample, over all classes and ranks, ``(softmax loss, lse, focal sums)``.

        ``lse`` is the log-sum-exp of :math:`x = z + \log n` (both None if ``alpha == 1``). The label's softmax loss
        is :math:`\operatorname{softplus}(\text{rest} - x_y) \ge 0`, ``rest`` the log-sum-exp over the classes
        other than the target, accurate relative to itself at any logit scale (``lse - x_y`` would cancel); label
        smoothing adds :math:`\sum_c e_c (\text{lse} - x_c) = E\,\text{lse} - \sum_c e_c x_c`. The focal sums
        (:meth:`focal_block`) are None without ``focal``.
        """
        n = self.features.shape[0]
        rest = self.features.new_full((n,), -math.inf) if self.alpha < 1.0 else None
        spread = self.features.new_zeros(n) if rest is not None and self.spread is not None else None
        sums = self.features.new_zeros(n) if focal else None
        for block, _, z, inside, cols in self.blocks(shifted=not focal):
            if sums is not None:
                row = self.focal_block(z, block, inside, cols, sums=True, derivative=False)[0]
                assert row is not None
                sums += row
                if rest is not None:
                    z += self.counts[block].log()
            if rest is not None:
                if spread is not None:
                    assert self.spread is not None
                    spread.addmv_(z, self.spread.local[block])
                z.scatter_(1, cols, torch.where(inside, -math.inf, z.gather(1, cols)))  # the target left out
                torch.logaddexp(rest, torch.logsumexp(z, dim=1), out=rest)
        if rest is None:
            return None, None, None if sums is None else _all_reduce(sums, self.group)
        if self.group is not None:  # all-reduce of the maxima, then of the rescaled sums
            top = _all_reduce(rest.clone(), self.group, op="max")
            finite_top = torch.where(torch.isfinite(top), top, 0.0)
            rest = finite_top + _all_reduce(torch.exp(rest - finite_top), self.group).log()
        x_y = z_y + self.log_n_y
        lse = torch.logaddexp(rest, x_y)
        softmax = self.label_weight * F.softplus(rest - x_y)
        if spread is not None:
            assert self.spread is not None
            softmax += self.spread.total * lse - _all_reduce(spread, self.group)
        return softmax, lse, None if sums is None else _all_reduce(sums, self.group)

    def gradients(self, grad_output: Optional[Tensor], z_y: Tensor, lse: Optional[Tensor]) -> tuple[Any, ...]:
        r"""Pass 2: the gradients of :math:`\sum_n r_n \ell_n` and of the penalty, and the focal row sums.

        Returns ``(d features, d weight, d bias, focal row sums)``. :math:`r_n` is ``grad_output`` times the
        sample's weight in the reduction (0 if ignored). ``grad_output`` None stands for 1: forward computes a scalar
        loss's gradients so (backward scales them), and gets the focal row sums of pass 1 too (else None). The
        features' gradient is summed over the ranks. The softmax term's gradient is
        :math:`(\tilde v_n + E)\operatorname{softmax}(x)_c - \tilde v_n [c = y_n] - e_c` with the label's weight
        :math:`\tilde v_n` and the smoothed part :math:`e` (``spread``).
        """
        forward = grad_output is None
        x = self.features
        g = x.new_ones(()) if grad_output is None else grad_output.to(self.dtype)
        mask = self.keep.to(self.dtype)
        if self.reduction == "none":  # the penalty is spread over the kept samples (over all when none is kept)
            kept = mask.sum()
            share = torch.where(kept > 0, mask / kept.clamp_min(1.0), 1.0 / max(1, mask.numel()))
            rows, decay = mask * g, (g * share).sum()
        elif self.reduction == "mean":
            total = self.total_weight()
            rows, decay = mask * torch.where(total > 0, g / total, 0.0), g
        else:
            rows, decay = mask * g, g
        target_grad = torch.zeros_like(rows)  # the entry at the target class, but for the smoothed parts
        shift: Optional[Tensor] = None
        sign: Optional[Tensor] = None
        spread_rows: Optional[Tensor] = None
        focal_scale: Optional[Tensor] = None
        focal_rows: Optional[Tensor] = None
        if self.alpha < 1.0:
            assert lse is not None
            softmax_scale = (1.0 - self.alpha) * rows
            log_p_y = z_y + self.log_n_y - lse
            label, weight = self.label_weight * torch.expm1(log_p_y), self.label_weight
            if self.spread is not None:
                label, weight = label + self.spread.total * torch.exp(log_p_y), weight + self.spread.total
                spread_rows = softmax_scale.neg()
            target_grad = target_grad + softmax_scale * label
            # s_n n_c exp(z - lse_n) = sign_n n_c exp(z - shift_n), shift_n = lse_n - log|s_n|, s_n its row's scale
            softmax_scale = softmax_scale * weight
            shift = (lse - softmax_scale.abs().log())[:, None]  # a zero scale gives +inf: exp(-inf) = 0
            sign = None if forward else torch.sign(softmax_scale)[:, None]  # r_n >= 0 when grad_output is 1
        if self.alpha > 0.0:
            assert self.cb_weight is not None
            focal_rows = self.alpha * rows
            focal_scale = focal_rows * self.cb_weight
            target_derivative = _kernel.focal_terms(z_y, self.gamma)[1]
            assert target_derivative is not None
            target_grad = target_grad + focal_scale * target_derivative
            focal_scale, focal_rows = focal_scale.neg()[:, None], focal_rows[:, None]  # d f(-z)/dz = -f'(-z)
        grad_x = x.new_zeros(x.shape) if self.needs[0] else None
        grad_w = torch.empty_like(self.weight) if self.needs[1] else None
        grad_b = torch.empty_like(self.bias) if self.needs[2] and self.bias is not None else None
        focal = x.new_zeros(x.shape[0]) if forward and focal_scale is not None else None
        for block, w, z, inside, cols in self.blocks():
            grad: Optional[Tensor] = None
            smoothed: Optional[Tensor] = None
            if focal_scale is not None:
                row, grad, smoothed = self.focal_block(z, block, inside, cols, sums=focal is not None, derivative=True)
                if focal is not None and row is not None:
                    focal += row
                assert grad is not None
                grad.mul_(focal_scale)
            if shift is not None:
                z.sub_(shift).exp_()
                if sign is not None:
                    z.mul_(sign)
                grad = z.mul_(self.counts[block]) if grad is None else grad.addcmul_(z, self.counts[block])
            assert grad is not None  # alpha < 1 or alpha > 0
            grad.scatter_(1, cols, torch.where(inside, target_grad[:, None], grad.gather(1, cols)))
            if smoothed is not None and focal_rows is not None:
                grad.addcmul_(smoothed, focal_rows)
            if spread_rows is not None:
                assert self.spread is not None
                grad.addr_(spread_rows, self.spread.local[block])
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
        softmax, lse, focal = engine.statistics(z_y, focal=engine.alpha > 0.0 and not precompute)
        # With grad_output = 1; backward scales them (the same arithmetic as a recomputation).
        ctx.grads = engine.gradients(None, z_y, lse) if precompute else None
        focal = ctx.grads[3] if precompute else focal
        per_sample = torch.zeros_like(z_y)
        if softmax is not None:
            per_sample += (1.0 - engine.alpha) * softmax
        if focal is not None:
            assert engine.cb_weight is not None
            target_loss = _kernel.focal_terms(z_y, engine.gamma, derivative=False)[0]
            per_sample += engine.alpha * (focal + engine.cb_weight * target_loss)
        per_sample = torch.where(engine.keep, per_sample, 0.0)
        loss = per_sample if engine.reduction == "none" else per_sample.sum()
        if engine.reduction == "mean":  # no weight (every sample ignored): nan, as cross-entropy
            total = engine.total_weight()
            loss = torch.where(total > 0, loss / total, math.nan)
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
    class_weights: Optional[Tensor],
    weight_decay: float,
    chunk_size: Optional[int],
    process_group: Optional[ProcessGroup],
    class_start: Optional[int] = None,
) -> Tensor:
    """Prepare the :class:`Engine` and apply :class:`LinearLoss`; everything but the inputs comes checked.

    ``hyper`` is ``(alpha, beta, gamma)``; ``class_weights`` is (C,) for all classes, or None; ``class_start`` is
    the first class of this rank's slice (None: gathered from the ranks).
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
    # Label smoothing: the target t = (1 - eps) onehot(y) + eps / C, each class k's loss weighted by t_k v_k.
    eps, local = options.label_smoothing, slice(class_start, class_start + num_local)
    v = None if class_weights is None else class_weights.to(device=features.device, dtype=dtype)
    row_weight = None if v is None else v[safe_target]
    label_weight = (1.0 - eps) * (torch.ones_like(safe_target, dtype=dtype) if row_weight is None else row_weight)
    cb = _engine.class_balanced_weights(counts, beta, dtype) if alpha > 0.0 else None

    def spread(per_class: Tensor) -> Spread:
        part = per_class * (eps / num_classes)
        return Spread(part[local], part.sum())

    smoothed: Optional[Spread] = None
    cb_smoothed: Optional[Spread] = None
    if eps > 0.0:  # the target's uniform part eps / C, times each class's weight (no (C,) work without smoothing)
        per_class = counts.new_ones(num_classes, dtype=dtype) if v is None else v
        smoothed = spread(per_class)
        cb_smoothed = None if cb is None else spread(per_class * cb)
    engine = Engine(
        features=features.detach().to(dtype),
        weight=weight.detach(),
        bias=None if bias is None else bias.detach(),
        target=safe_target - class_start,
        keep=keep,
        counts=counts[class_start : class_start + num_local].to(dtype),
        log_n_y=counts.to(dtype).log()[safe_target],
        label_weight=label_weight,
        row_weight=row_weight,
        cb_weight=None if cb is None else label_weight * cb[safe_target],
        spread=smoothed,
        cb_spread=cb_smoothed,
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
