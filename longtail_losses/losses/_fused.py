r"""Fast paths of the losses: the loss and its gradient in one chunked pass, at the cost of a cross-entropy.

Every loss of the library is, per sample, a mixture of two terms on the logits :math:`z` (shape (N, C)):

* balanced softmax, :math:`\ell_{BS} = \operatorname{lse}(z + \log n) - (z_y + \log n_y)`, whose gradient is
  :math:`\operatorname{softmax}(z + \log n) - \operatorname{onehot}(y)`;
* the class-balanced sigmoid focal term, :math:`\ell_{CB} = w_y \sum_j f(s_j)` with the signed logit
  :math:`s_j = z_j` for the target and :math:`-z_j` otherwise and
  :math:`f(s) = -\sigma(-s)^\gamma \log\sigma(s)`, whose derivative is

  .. math::
      f'(s) = \sigma(-s)^\gamma \bigl(\gamma\, \sigma(s) \log\sigma(s) - \sigma(-s)\bigr),

  so :math:`\partial \ell / \partial z_j = w_y f'(z_y)` for the target and, with :math:`p = \sigma(z_j)`,
  :math:`w_y\, p^\gamma \bigl(p - \gamma (1-p) \log(1-p)\bigr)` for every other class.

The straightforward implementation (``F.cross_entropy(z + log n)``, ``logsigmoid`` terms) allocates several
(N, C) temporaries, and autograd keeps some of them alive until backward; on a CPU every fresh (N, C)
allocation also pays its page faults. The fast path instead walks over large blocks of rows (usually one),
computes the per-sample loss *and* the gradient of each block with in-place work on at most two block-sized
buffers, and writes the gradient straight into one (N, C) buffer that the autograd function owns. Its
gradient is ``row_scale[:, None] * buffer`` for a per-row scale (``alpha * w_y``); backward multiplies the
buffer in place by ``grad_output * row_scale`` and hands it to autograd, so the whole forward and backward
allocates one (N, C) tensor, the gradient itself (cross-entropy allocates three).

The reference path (the plain autograd code in :mod:`longtail_losses.losses._engine`) stays the definition; the fast
path is tested equal to it, and :mod:`longtail_losses.losses._engine` alone decides which runs. The reference runs
instead of the fast path:

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
import threading
from collections.abc import Iterator
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fused_loss", "reference_path", "use_fast_path"]

#: Most elements in one block of rows (64 MiB of float32). Blocks bound the focal term's two block-sized
#: buffers; they are few and large because every tensor op is one parallel region, and on a busy CPU the cost of a
#: region is dominated by waiting for the other threads to be scheduled, not by the work.
BLOCK_ELEMENTS = 1 << 24

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


def tracing() -> bool:
    """Whether ``torch.compile`` or a ``torch.func`` transform (``vmap``, ``grad``) is tracing the call."""
    return torch.jit.is_scripting() or _is_compiling() or _functorch_active()


def use_fast_path(logits: Tensor) -> bool:
    """Whether the fused fast path applies to these (prepared, 2-D) logits; see the module docstring."""
    if tracing() or getattr(_state, "force_reference", False):
        return False
    return logits.dtype in (torch.float32, torch.float64) and logits.device.type in ("cpu", "cuda")


def _log_one_minus_sigmoid(z: Tensor, p: Tensor, *, out: Tensor, scratch: Optional[Tensor]) -> Tensor:
    r""":math:`\log(1 - \sigma(z)) = \log\sigma(-z)` into ``out``, from ``p = sigmoid(z)``, with vectorised kernels.

    :math:`\log\sigma(-z) = \log\max(p, 1-p) - \max(z, 0)`: for :math:`z > 0` it is :math:`\log p - z` and for
    :math:`z \le 0` it is :math:`\log(1-p)`, and in both branches the argument of the log lies in
    :math:`[\tfrac12, 1]`, where it is accurate to the rounding of ``p``. This replaces ``F.logsigmoid``, whose
    CPU kernel costs about ten exp-sized passes, by one log and three memory-bound passes.
    """
    torch.neg(p, out=out).add_(1.0)
    torch.maximum(p, out, out=out).log_()
    relu = torch.clamp(z, min=0.0, out=scratch) if scratch is not None else z.clamp_min(0.0)
    return out.sub_(relu)


def _block_rows(logits: Tensor) -> int:
    """Rows per block: the whole batch, unless one block-sized buffer would exceed ``BLOCK_ELEMENTS``."""
    n, c = logits.shape
    return max(1, min(n, BLOCK_ELEMENTS // max(1, c)))


def _forward(
    z: Tensor,
    target: Tensor,
    *,
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
        if weights is None:
            raise ValueError("Expected `weights` for alpha > 0, but got None")
        w_y = weights[target]
        scale = w_y if alpha == 1.0 else alpha * w_y
        if use_bs:
            # The balanced-softmax part is stored divided by the row scale: (1 - alpha) / scale must stay finite.
            # A scale below 2 (1 - alpha) / max (a subnormal alpha * w_y) is raised to it; that overstates only a
            # focal gradient term below 1e-307 (float64) or 1e-37 (float32), and changes no other row.
            scale = scale.clamp(min=2.0 * (1.0 - alpha) / torch.finfo(dtype).max)
    else:
        scale = torch.ones(n, dtype=dtype, device=device)
    if use_bs and log_counts is None:
        raise ValueError("Expected `log_counts` for alpha < 1, but got None")
    if n == 0:
        return loss, scale
    rows = _block_rows(z)
    # Block-sized buffers: `a` and `b` for the focal term, `a` for balanced softmax when there is no `grad`.
    a_buf = torch.empty(min(rows, n), c, dtype=dtype, device=device) if use_focal or grad is None else None
    b_buf = torch.empty(min(rows, n), c, dtype=dtype, device=device) if use_focal else None
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        zb, yb = z[start:stop], target[start:stop]
        at_y = (torch.arange(stop - start, device=device), yb)
        out = grad[start:stop] if grad is not None else None
        a = a_buf[: stop - start] if a_buf is not None else None
        b = b_buf[: stop - start] if b_buf is not None else None
        row_loss: Optional[Tensor] = None
        if use_focal:
            assert a is not None and b is not None  # noqa: PT018 - allocated above when use_focal
            # Non-target classes: p = sigmoid(z) in `a`, log(1 - p) = logsigmoid(-z) in `b`. The target entry is
            # neutralised (p = 0 and log(1 - p) = 0 contribute exactly nothing) and computed apart from z_y.
            torch.sigmoid(zb, out=a)
            a[at_y] = 0.0
            log_q = _log_one_minus_sigmoid(zb, a, out=b, scratch=out)  # `out` is free until the gradient below
            log_q[at_y] = 0.0
            if out is not None:
                if gamma == 0.0:  # binary cross-entropy: gradient p
                    out.copy_(a)
                else:
                    torch.exp(log_q, out=out).mul_(log_q)  # (1 - p) log(1 - p)
                    torch.add(a, out, alpha=-gamma, out=out)  # p - gamma (1 - p) log(1 - p)
            if gamma not in (0.0, 1.0):
                a.pow_(gamma)  # p ** gamma
            if gamma != 0.0:
                if out is not None:
                    out.mul_(a)
                log_q.mul_(a)  # p ** gamma * log(1 - p)
            focal = -log_q.sum(dim=1)  # pairwise sum, as accurate as the reference
            s = zb[at_y]
            log_p_t, log_q_t = F.logsigmoid(s), F.logsigmoid(-s)
            q_gamma_t = torch.exp(gamma * log_q_t) if gamma != 0.0 else torch.ones_like(s)
            cb = w_y[start:stop] * (focal - q_gamma_t * log_p_t)
            row_loss = cb if alpha == 1.0 else alpha * cb
            if out is not None:
                out[at_y] += q_gamma_t * (gamma * torch.sigmoid(s) * log_p_t - torch.sigmoid(-s))
        if use_bs:
            assert log_counts is not None  # checked above
            # log-softmax of the shifted logits x = z + log n: in `a` when the focal term is done with it, else
            # in place in the gradient buffer (or `a` without one).
            target_buf = a if a is not None else out
            assert target_buf is not None  # one of them exists by construction
            torch.add(zb, log_counts, out=target_buf)
            torch.log_softmax(target_buf, dim=1, out=target_buf)
            bs = -target_buf[at_y]
            row_loss = bs if row_loss is None else row_loss + (1.0 - alpha) * bs
            if out is not None:
                if use_focal:
                    # softmax * (1 - alpha) / scale, added to the focal gradient; minus the same at the target
                    factor = (1.0 - alpha) / scale[start:stop]
                    out.addcmul_(target_buf.exp_(), factor.unsqueeze(1))
                    out[at_y] -= factor
                else:
                    out.exp_()
                    out[at_y] -= 1.0
        assert row_loss is not None  # alpha is in [0, 1]
        loss[start:stop] = row_loss
    return loss, scale


class _FusedLoss(torch.autograd.Function):
    """Per-sample loss whose forward also computes the gradient; backward is one in-place row scaling."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, kwargs: dict[str, Any], reference: ReferenceFn) -> Tensor:
        """``kwargs``: ``log_counts``, ``weights``, ``alpha`` and ``gamma``, as for :func:`fused_loss`."""
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        loss, scale = _forward(logits, target, **kwargs, grad=grad)
        ctx.save_for_backward(logits)
        ctx.grad, ctx.scale, ctx.reference = grad, scale, reference
        ctx.args = (target, kwargs)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Optional[Tensor], ...]:
        nones = (None, None, None)
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
            target, kwargs = ctx.args
            _forward(logits, target, **kwargs, grad=grad)
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
        log_counts: The logit shift of the softmax term (:math:`\log n`, times ``tau``), in the dtype of
            ``logits`` (used when ``alpha < 1``).
        weights: Class-balanced weights in the dtype of ``logits`` (used when ``alpha > 0``).
        alpha: Weight of the focal term; ``0`` is balanced softmax, ``1`` is class-balanced focal.
        gamma: Focusing parameter of the focal term.
        reference: The reference per-sample loss as a function of the logits alone; backward uses it for
            double backward.

    Shape:
        logits: :math:`(N, C)`.
        output: :math:`(N)`, not masked (the caller zeroes ignored samples).
    """
    kwargs: dict[str, Any] = {"log_counts": log_counts, "weights": weights, "alpha": alpha, "gamma": gamma}
    if torch.is_grad_enabled() and logits.requires_grad:
        out: Tensor = _FusedLoss.apply(logits, target, kwargs, reference)
        return out
    return _forward(logits, target, **kwargs, grad=None)[0]
