r"""Fast paths of the losses: the loss and its gradient in one chunked pass, at the cost of a cross-entropy.

Every loss of the library is, per sample, a mixture of two terms on the logits :math:`z` (shape (N, C)):

* balanced softmax, :math:`\\ell_{BS} = \\operatorname{lse}(z + \\log n) - (z_y + \\log n_y)`, whose gradient is
  :math:`\\operatorname{softmax}(z + \\log n) - \\operatorname{onehot}(y)`;
* the class-balanced sigmoid focal term, :math:`\\ell_{CB} = w_y \\sum_j f(s_j)` with the signed logit
  :math:`s_j = z_j` for the target and :math:`-z_j` otherwise and
  :math:`f(s) = -\\sigma(-s)^\\gamma \\log\\sigma(s)`, whose derivative is

  .. math::
      f'(s) = \\sigma(-s)^\\gamma \\bigl(\\gamma\\, \\sigma(s) \\log\\sigma(s) - \\sigma(-s)\\bigr),

  so :math:`\\partial \\ell / \\partial z_j = w_y f'(z_y)` for the target and, with :math:`p = \\sigma(z_j)`,
  :math:`w_y\\, p^\\gamma \\bigl(p - \\gamma (1-p) \\log(1-p)\\bigr)` for every other class.

The straightforward implementation (``F.cross_entropy(z + log n)``, ``logsigmoid`` terms) allocates several
(N, C) temporaries, and autograd keeps some of them alive until backward; on a CPU every fresh (N, C)
allocation also pays its page faults. The fast path instead walks over blocks of rows small enough to stay in
cache, computes the per-sample loss *and* the gradient of each block with in-place work on a few block-sized
buffers, and writes the gradient straight into one (N, C) buffer that the autograd function owns. Its
gradient is ``row_scale[:, None] * buffer`` for a per-row scale (``alpha * w_y``); backward multiplies the
buffer in place by ``grad_output * row_scale`` and hands it to autograd, so the whole forward and backward
allocates one (N, C) tensor, the gradient itself (cross-entropy allocates three).

The reference path (the plain autograd code in :mod:`longtail_losses.balanced_softmax`,
:mod:`longtail_losses.class_balanced` and :mod:`longtail_losses.combined`) stays the definition; the fast path
is tested equal to it. It is used instead of the fast path:

* under :func:`reference_path` (tests, debugging);
* while ``torch.compile``/dynamo traces (the compiler then fuses the reference's ops itself);
* inside ``torch.func`` transforms (``vmap``, ``grad``), which need autograd functions written for them;
* for dtypes other than float32/float64 (the losses compute half/bfloat16 inputs in float32 anyway).

Double backward (``create_graph=True``, e.g. ``gradgradcheck``) and a second backward after
``retain_graph=True`` are supported: backward then recomputes the gradient with the reference path, with a
graph, from the saved logits.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fused_loss", "reference_path", "use_fast_path"]

#: Elements per block of rows on a CPU: the three block-sized buffers stay in cache, and the blocks are few
#: enough that the per-op thread synchronisation (which dominates on a busy machine) stays small.
CPU_BLOCK_ELEMENTS = 1 << 20
#: Elements per block on an accelerator: large enough to keep the kernels busy, small enough that the
#: block-sized buffers stay well below one (N, C) tensor for large C.
DEVICE_BLOCK_ELEMENTS = 1 << 21

_state = threading.local()

ReferenceFn = Callable[[Tensor], Tensor]


@contextlib.contextmanager
def reference_path(enabled: bool = True) -> Iterator[None]:
    """Within this context (per thread), every loss uses its straightforward reference implementation.

    Args:
        enabled: ``True`` forces the reference path, ``False`` restores the automatic choice.

    Example:
        >>> from longtail_losses.functional import balanced_softmax_loss
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> with reference_path():
        ...     slow = balanced_softmax_loss(logits, target, [90, 10])
        >>> slow, balanced_softmax_loss(logits, target, [90, 10])  # equal up to rounding
        (tensor(0.7380), tensor(0.7380))
    """
    previous = getattr(_state, "force_reference", False)
    _state.force_reference = enabled
    try:
        yield
    finally:
        _state.force_reference = previous


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    check = getattr(compiler, "is_compiling", None)  # torch >= 2.3
    if check is None:  # torch 2.1 / 2.2
        dynamo = getattr(torch, "_dynamo", None)
        check = getattr(dynamo, "is_compiling", None)
    return bool(check()) if check is not None else False


def _functorch_active() -> bool:
    check = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(check()) if check is not None else False


def use_fast_path(logits: Tensor) -> bool:
    """Whether the fused fast path applies to these (prepared) logits; see the module docstring."""
    if getattr(_state, "force_reference", False):
        return False
    if logits.dtype not in (torch.float32, torch.float64) or logits.ndim != 2:
        return False
    if torch.jit.is_scripting() or _is_compiling() or _functorch_active():
        return False
    return logits.device.type in ("cpu", "cuda")


def _logsigmoid(x: Tensor) -> Tensor:
    """``F.logsigmoid(x)``, written over ``x`` (one block-sized buffer less) where torch offers that."""
    out_variant = getattr(torch._C._nn, "log_sigmoid", None)
    if out_variant is not None:
        try:
            result: Tensor = out_variant(x, out=x)
            return result
        except (RuntimeError, TypeError):  # an alias check or a missing out= overload: use the plain form
            pass
    return F.logsigmoid(x)


def _block_rows(logits: Tensor) -> int:
    """Rows per block: within the element budget, and at most a quarter of the batch.

    The cap keeps the block-sized buffers below one (N, C) tensor.
    """
    n, c = logits.shape
    budget = CPU_BLOCK_ELEMENTS if logits.device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    return max(1, min(budget // max(1, c), -(-n // 4)))


def _forward(
    z: Tensor,
    target: Tensor,
    log_counts: Optional[Tensor],
    weights: Optional[Tensor],
    alpha: float,
    gamma: float,
    grad: Optional[Tensor],
) -> tuple[Tensor, Tensor]:
    """Per-sample loss of ``alpha * CB focal + (1 - alpha) * BS`` and, if ``grad`` is given, its gradient.

    ``log_counts`` is needed when ``alpha < 1`` and ``weights`` when ``alpha > 0``. Returns ``(loss, scale)``:
    the loss has shape (N,), and the gradient of ``loss[i]`` with respect to ``z[i]`` is
    ``scale[i] * grad[i]`` (``grad`` is overwritten).
    """
    n, c = z.shape
    dtype, device = z.dtype, z.device
    loss = torch.empty(n, dtype=dtype, device=device)
    use_bs, use_focal = alpha < 1.0, alpha > 0.0
    if use_focal:
        assert weights is not None  # internal invariant, checked by the callers
        w_y = weights[target]
        scale = w_y if alpha == 1.0 else alpha * w_y
    else:
        scale = torch.ones(n, dtype=dtype, device=device)
    if n == 0:
        return loss, scale
    # The softmax part enters the buffer divided by the row scale, so that scale * buffer is the gradient.
    bs_factor = (1.0 - alpha) / scale if use_bs else None
    rows = _block_rows(z)
    work = None if grad is not None or not use_bs else torch.empty(min(rows, n), c, dtype=dtype, device=device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        zb, yb = z[start:stop], target[start:stop]
        at_y = (torch.arange(stop - start, device=device), yb)
        out = grad[start:stop] if grad is not None else None
        row_loss: Optional[Tensor] = None
        if use_bs:
            assert log_counts is not None
            assert bs_factor is not None
            buf = out if out is not None else work[: stop - start]  # type: ignore[index]
            torch.add(zb, log_counts, out=buf)  # shifted logits x = z + log n
            buf.sub_(buf.amax(dim=1, keepdim=True))  # x - max x, as log_softmax does
            shifted_y = buf[at_y]
            exp_sum = buf.exp_().sum(dim=1)
            bs = exp_sum.log() - shifted_y  # lse(x) - x_y, without cancellation at |z| = 1e4
            row_loss = bs if alpha == 0.0 else (1.0 - alpha) * bs
            if out is not None:
                factor = bs_factor[start:stop]
                out.mul_((factor / exp_sum).unsqueeze(1))  # softmax * (1 - alpha) / scale
                out[at_y] -= factor
        if use_focal:
            # Non-target classes: p = sigmoid(z), log(1 - p) = logsigmoid(-z). The target entry is neutralised
            # (p = 0 and log(1 - p) = 0 contribute exactly nothing) and computed apart from the signed logit z_y.
            p = torch.sigmoid(zb)
            p[at_y] = 0.0
            tmp = torch.neg(zb)
            tmp[at_y] = math.inf
            log_q = _logsigmoid(tmp)  # log(1 - p) <= 0, exactly 0 at the target
            p_gamma = None if gamma == 0.0 else (p if gamma == 1.0 else p.pow(gamma))
            work2 = None
            if p_gamma is None:
                focal = -log_q.sum(dim=1)
            else:
                work2 = torch.mul(p_gamma, log_q)
                focal = -work2.sum(dim=1)  # pairwise sum, as accurate as the reference
            s = zb[at_y]
            log_p_t, log_q_t = F.logsigmoid(s), F.logsigmoid(-s)
            q_gamma_t = torch.exp(gamma * log_q_t) if gamma != 0.0 else torch.ones_like(s)
            focal = focal - q_gamma_t * log_p_t
            cb = w_y[start:stop] * focal
            row_loss = cb if row_loss is None else alpha * cb + row_loss
            if out is not None:
                grad_t = q_gamma_t * (gamma * torch.sigmoid(s) * log_p_t - torch.sigmoid(-s))
                if p_gamma is None:  # gamma = 0: binary cross-entropy, gradient p
                    if use_bs:
                        out.add_(p)
                    else:
                        out.copy_(p)
                else:
                    g = torch.exp(log_q, out=work2).mul_(log_q)  # (1 - p) log(1 - p)
                    torch.add(p, g, alpha=-gamma, out=g)  # p - gamma (1 - p) log(1 - p)
                    if use_bs:
                        out.addcmul_(p_gamma, g)
                    else:
                        torch.mul(p_gamma, g, out=out)
                out[at_y] += grad_t
        assert row_loss is not None  # internal invariant
        loss[start:stop] = row_loss
    return loss, scale


class _FusedLoss(torch.autograd.Function):
    """Per-sample loss whose forward also computes the gradient; backward is one in-place row scaling."""

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        log_counts: Optional[Tensor],
        weights: Optional[Tensor],
        alpha: float,
        gamma: float,
        reference: ReferenceFn,
    ) -> Tensor:
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        loss, scale = _forward(logits, target, log_counts, weights, alpha, gamma, grad)
        ctx.save_for_backward(logits)
        ctx.grad, ctx.scale, ctx.reference = grad, scale, reference
        ctx.args = (target, log_counts, weights, alpha, gamma)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Optional[Tensor], ...]:
        nones = (None,) * 6
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        if torch.is_grad_enabled():
            # create_graph=True (double backward): the gradient must itself be differentiable, so recompute it
            # from the saved logits with the reference path, with a graph.
            (logits,) = ctx.saved_tensors
            with torch.enable_grad():
                (g,) = torch.autograd.grad(ctx.reference(logits), logits, grad_output, create_graph=True)
            return (g, *nones)
        grad = ctx.grad
        if grad is None:
            # A second backward through a retained graph: the buffer was handed over; recompute it exactly.
            (logits,) = ctx.saved_tensors
            grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
            target, log_counts, weights, alpha, gamma = ctx.args
            _forward(logits, target, log_counts, weights, alpha, gamma, grad)
        ctx.grad = None  # hand the buffer over: autograd can keep it as .grad without a copy
        grad.mul_((grad_output * ctx.scale).unsqueeze(1))
        return (grad, *nones)


def fused_loss(
    logits: Tensor,
    target: Tensor,
    *,
    log_counts: Optional[Tensor],
    weights: Optional[Tensor],
    alpha: float,
    gamma: float,
    reference: ReferenceFn,
) -> Tensor:
    r"""Per-sample ``alpha * CB focal + (1 - alpha) * BS`` on prepared inputs, computed by the fast path.

    Args:
        logits: Prepared logits (float32 or float64).
        target: Labels in ``[0, C)`` (ignored samples already replaced by a valid label).
        log_counts: :math:`\\log n` in the dtype of ``logits`` (used when ``alpha < 1``).
        weights: Class-balanced weights in the dtype of ``logits`` (used when ``alpha > 0``).
        alpha: Weight of the focal term; ``0`` is balanced softmax, ``1`` is class-balanced focal.
        gamma: Focusing parameter of the focal term.
        reference: The reference per-sample loss as a function of the logits alone; backward uses it for
            double backward.

    Shape:
        logits: :math:`(N, C)`.
        output: :math:`(N)`, not masked (the caller zeroes ignored samples).
    """
    if torch.is_grad_enabled() and logits.requires_grad:
        out: Tensor = _FusedLoss.apply(logits, target, log_counts, weights, alpha, gamma, reference)
        return out
    return _forward(logits, target, log_counts, weights, alpha, gamma, None)[0]
