r"""The element-wise maths of every loss, each written once as value and derivative, and the dense fast path.

Two terms make up every loss of the library:

* the **sigmoid focal term** :math:`f(s) = -\sigma(-s)^\gamma \log\sigma(s)` of a *signed* logit :math:`s`
  (:math:`s = z_j` where class :math:`j` is a positive, :math:`-z_j` where it is a negative), whose derivative is

  .. math::
      f'(s) = \sigma(-s)^\gamma \bigl(\gamma\, \sigma(s) \log\sigma(s) - \sigma(-s)\bigr);

  :func:`focal_terms` is its one definition. :math:`\gamma` may be a tensor (one exponent per element), so
  asymmetric exponents for positives and negatives are a parameter, not another kernel;
* the **softmax term**, the cross-entropy of the adjusted logits :math:`x = z \odot \text{scale} + \text{shift}`
  with an optional margin :math:`m` subtracted at the target (:func:`adjusted_logits`; balanced softmax and logit
  adjustment shift by :math:`\tau \log n`, LDAM scales and subtracts a margin, Seesaw shifts every row by its own
  factors). Its value is :math:`\operatorname{lse}(x) - x_y` and its gradient :math:`\operatorname{softmax}(x) -
  e_y` (:func:`softmax_terms`).

Three paths use them: the reference of :mod:`~longtail_losses.losses._engine` (plain autograd through the values),
the dense fast path below (:func:`fused_loss`: loss and gradient in one pass) and the chunked path of
:mod:`~longtail_losses.losses.linear`. The fast path writes the gradient into one (N, C) buffer that the autograd
function owns; its backward multiplies it in place by ``grad_output`` times a per-row scale, so a forward and
backward allocate one (N, C) tensor besides the block-sized temporaries. The reference runs instead:

* under :func:`reference_path` (tests, debugging);
* while ``torch.compile``/dynamo traces, or inside ``torch.func`` transforms (:func:`tracing`);
* for dtypes other than float32/float64 (the losses compute half/bfloat16 inputs in float32 anyway).

With :func:`compiled_path` on, the dense fast path of the paper's losses runs :func:`row_terms` compiled by
``torch.compile`` (inductor: C++ on CPU, Triton on CUDA) with dynamic shapes, so a new batch size or number of
classes does not recompile: loss and gradient in one generated kernel. Where compiling fails (no C++ toolchain,
no Triton) it warns once and the eager fast path runs.

Double backward (``create_graph=True``) and a second backward through a retained graph recompute the gradient
with the reference path.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

__all__ = [
    "adjusted_logits",
    "compiled_path",
    "focal_terms",
    "fused_loss",
    "fused_multilabel",
    "multilabel_terms",
    "reference_path",
    "softmax_terms",
    "tracing",
    "use_fast_path",
]

#: Most elements in one block of rows of the dense fast path (64 MiB of float32).
BLOCK_ELEMENTS = 1 << 24

_state = threading.local()


def focal_terms(
    s: Tensor, gamma: Union[float, Tensor], *, clip: float = 0.0, detach: bool = False, derivative: bool = True
) -> tuple[Tensor, Optional[Tensor]]:
    r"""The sigmoid focal loss :math:`f(s)` of signed logits and, with ``derivative``, :math:`f'(s)`, element-wise.

    :math:`\sigma(\pm s)` and :math:`\log\sigma(\pm s)` come from two ``sigmoid`` and one ``log`` of a
    number in :math:`[\tfrac12, 1]`: :math:`\log\sigma(s) = \log\max(\sigma(s), \sigma(-s)) - \max(-s, 0)`, so both are
    finite for any finite :math:`s` without the slow ``log1p``/``logsigmoid`` kernels; :math:`\sigma(-s)` itself
    keeps its relative accuracy where :math:`1 - \sigma(s)` would round to 0. The value is differentiable by autograd
    (the reference path), with the exact derivative also at :math:`s = 0`.

    **Probability shifting** (``clip`` :math:`m > 0`, the negatives of the asymmetric loss :cite:`ridnik2021asl`):
    the probability of the wrong side :math:`q = \sigma(-s)` becomes :math:`q_m = \max(q - m, 0)` in both the
    focusing weight and the log-likelihood,

    .. math::
        f_m(s) = -q_m^\gamma \log(1 - q_m), \qquad
        f_m'(s) = \sigma(s)\,\sigma(-s)\, q_m^\gamma \Bigl(\gamma \frac{\log(1 - q_m)}{q_m}
        - \frac{1}{1 - q_m}\Bigr) \ \text{for } q_m > 0, \text{ else } 0.

    :math:`\log(1 - q_m)` is ``log1p(-q_m)`` where :math:`q_m < \tfrac12` (accurate as :math:`q_m \to 0`, where the
    ratio tends to :math:`-1`) and :math:`\log(\sigma(s) + m) = \operatorname{logaddexp}(\log\sigma(s), \log m)`
    elsewhere (accurate as :math:`\sigma(s) \to 0`), so both stay finite for any finite :math:`s`; ``m = 0`` is the
    unshifted term exactly. ``detach`` treats the focusing weight :math:`q_m^\gamma` as a constant (the official
    ASL code's ``disable_torch_grad_focal_loss``): the value is unchanged and the derivative drops the
    :math:`\gamma` term.

    Args:
        s: Signed logits (any shape).
        gamma: Focusing exponent :math:`\gamma \ge 0`, a float or a tensor broadcastable to ``s``.
        clip: Probability shift :math:`m \in [0, 1)` of :math:`\sigma(-s)`; ``0`` (the default) shifts nothing.
        detach: Treat the focusing weight as a constant in autograd and in the derivative.
        derivative: Also return :math:`f'(s)` (not differentiable; for the fast paths).

    Returns:
        ``(f(s), f'(s))``, the second ``None`` without ``derivative``.
    """
    if clip > 0.0:
        return _shifted_focal_terms(s, gamma, clip, detach=detach, derivative=derivative)
    p, q, log_p, log_q = _log_sigmoids(s)
    constant = isinstance(gamma, (int, float))
    if constant and gamma == 0.0:
        q_gamma: Optional[Tensor] = None
    elif constant and gamma == 1.0:
        q_gamma = q
    else:
        q_gamma = torch.exp(gamma * log_q)
    if detach and q_gamma is not None:
        q_gamma = q_gamma.detach()
    value = -log_p if q_gamma is None else -(q_gamma * log_p)
    if not derivative:
        return value, None
    if q_gamma is None:
        grad = -q
    elif detach:
        grad = -(q_gamma * q)
    else:
        grad = q_gamma * (gamma * p * log_p - q)
    return value, grad


def _log_sigmoids(s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r""":math:`\sigma(\pm s)` and :math:`\log\sigma(\pm s)`, finite for finite ``s``.

    Two ``sigmoid`` and one ``log`` of :math:`\max(\sigma(s), \sigma(-s)) \in [\tfrac12, 1]`; no boolean mask (a
    ``where`` on a mask costs several times an ``exp`` on some CPU builds). At :math:`s = 0` autograd gives the
    exact derivative: ``maximum``/``minimum`` split the gradient of a tie evenly, which is the mean of the one-sided
    derivatives of each kinked piece, and the kinks cancel (``relu``/``clamp`` would give 0 or 1 instead).
    """
    p, q = torch.sigmoid(s), torch.sigmoid(-s)
    zero = s.new_zeros(())
    log_max = torch.maximum(p, q).log()  # log sigma(|s|)
    log_p = log_max + torch.minimum(s, zero)  # log sigma(s)
    log_q = log_max - torch.maximum(s, zero)  # log sigma(-s)
    return p, q, log_p, log_q


def _shifted_focal_terms(
    s: Tensor, gamma: Union[float, Tensor], clip: float, *, detach: bool, derivative: bool
) -> tuple[Tensor, Optional[Tensor]]:
    """:func:`focal_terms` with the probability shift ``clip > 0`` (see there)."""
    _, q, log_p, log_q = _log_sigmoids(s)
    q_m = torch.relu(q - clip)  # max(sigma(-s) - m, 0)
    # log(1 - q_m): log1p where q_m is small (1 - q_m near 1), log(sigma(s) + m) where sigma(s) may underflow.
    near = torch.log1p(-torch.clamp(q_m, max=0.5))
    far = torch.logaddexp(log_p, torch.full_like(log_p, math.log(clip)))
    log_a = torch.where(q_m < 0.5, near, far)
    positive = q_m > 0.0
    safe = torch.where(positive, q_m, 1.0)  # the double-where: no 0 * inf in autograd where q_m = 0
    q_gamma = torch.where(positive, torch.exp(gamma * safe.log()), 0.0)
    if detach:
        q_gamma = q_gamma.detach()
    value = -(q_gamma * log_a)
    if not derivative:
        return value, None
    pq = torch.exp(log_p + log_q)  # sigma(s) sigma(-s), no underflow of a factor
    inner = gamma * log_a / safe if not detach else 0.0
    grad = torch.where(positive, pq * q_gamma * (inner - torch.exp(-log_a)), 0.0)
    return value, grad


def adjusted_logits(
    z: Tensor, labels: Optional[Tensor] = None, *,
    shift: Optional[Tensor] = None, scale: Union[float, Tensor] = 1.0, margin: Optional[Tensor] = None,
) -> Tensor:  # fmt: skip
    r"""The logits of the softmax term, :math:`x = \text{scale} \cdot (z - m_y e_y) + \text{shift}`, rows (M, C).

    ``shift`` is (C,) (a per-class log prior) or (M, C) (a per-row shift, Seesaw); ``scale`` a float or (C,);
    ``margin`` (C,) is subtracted from the target logit of each row (needs ``labels``).
    """
    x = z
    if margin is not None:
        assert labels is not None
        is_target = torch.arange(z.shape[1], device=z.device) == labels.unsqueeze(1)
        x = torch.where(is_target, z - margin[labels].unsqueeze(1), z)
    if not (isinstance(scale, float) and scale == 1.0):
        x = x * scale
    return x if shift is None else x + shift


def softmax_terms(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per row, :math:`\operatorname{lse}(x) - x_y`, and its gradient :math:`\operatorname{softmax}(x) - e_y`."""
    log_probs = torch.log_softmax(x, dim=1)
    at_y = (torch.arange(x.shape[0], device=x.device), labels)
    value = -log_probs[at_y]
    grad = log_probs.exp_()
    grad[at_y] -= 1.0
    return value, grad


# ----------------------------------------------------------------------------------------------------------------
# When the fast path runs


@contextlib.contextmanager
def reference_path(enabled: bool = True) -> Iterator[None]:
    """Within this context (per thread), every loss uses its straightforward reference implementation.

    Args:
        enabled: ``True`` forces the reference path, ``False`` restores the automatic choice.

    Example:
        >>> from longtail_losses.functional import bfs_loss
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> with reference_path():
        ...     slow = bfs_loss(logits, target, [90, 10])
        >>> torch.allclose(slow, bfs_loss(logits, target, [90, 10]))
        True
    """
    previous = getattr(_state, "force_reference", False)
    _state.force_reference = enabled
    try:
        yield
    finally:
        _state.force_reference = previous


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or torch._dynamo.is_compiling
_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", None)


def tracing() -> bool:
    """Whether ``torch.compile`` or a ``torch.func`` transform (``vmap``, ``grad``) is tracing the call."""
    return bool(_is_compiling() or torch.jit.is_scripting() or (_functorch_active is not None and _functorch_active()))


def use_fast_path(logits: Tensor) -> bool:
    """Whether the dense fast path applies to these (prepared, 2-D) logits; see the module docstring."""
    if getattr(_state, "force_reference", False) or tracing():
        return False
    return logits.dtype in (torch.float32, torch.float64) and logits.device.type in ("cpu", "cuda")


def _compiled_default() -> bool:
    return os.environ.get("LONGTAIL_LOSSES_COMPILED", "0").strip().lower() in ("1", "true", "yes", "on")


_compiled_global = {"enabled": _compiled_default(), "failed": False}


class compiled_path:
    """Run the fast path of the paper's losses compiled by ``torch.compile`` (off by default).

    ``with compiled_path():`` turns it on for the calls inside (per thread); ``compiled_path(False)`` turns it off;
    :meth:`set_default` sets it for every thread without a ``with`` (the environment variable
    ``LONGTAIL_LOSSES_COMPILED=1`` does so at import). The loss and its gradient come from one kernel that inductor
    generates (C++ on CPU, Triton on CUDA) from the same focal term as the eager paths, with dynamic
    shapes: a new batch size does not recompile. The first call compiles, which takes seconds; hence off by default.
    Where compiling fails (no C++ compiler, no Triton), a :class:`RuntimeWarning` says so once and the eager fast
    path runs from then on. Under ``torch.compile`` of the caller and ``torch.func`` transforms the reference runs
    as always (the caller's compiler fuses it).

    Args:
        enabled: ``True`` turns the compiled path on, ``False`` off.

    Example:
        >>> from longtail_losses.functional import bfs_loss
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> with compiled_path(False):  # off (the default); ``with compiled_path():`` turns it on
        ...     bfs_loss(logits, target, [90, 10])
        tensor(0.7066)
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._previous: list[Optional[bool]] = []

    def __enter__(self) -> compiled_path:
        self._previous.append(getattr(_state, "compiled", None))
        _state.compiled = self.enabled
        return self

    def __exit__(self, *exc: object) -> None:
        _state.compiled = self._previous.pop()

    @staticmethod
    def set_default(enabled: bool) -> None:
        """Turn the compiled path on or off for every thread, outside any ``with compiled_path(...)``."""
        _compiled_global["enabled"] = bool(enabled)

    @staticmethod
    def is_enabled() -> bool:
        """Whether the compiled path would be tried here (this thread's setting, else the default)."""
        local = getattr(_state, "compiled", None)
        return bool(_compiled_global["enabled"] if local is None else local) and not _compiled_global["failed"]


def row_terms(
    z: Tensor, labels: Tensor, shift: Optional[Tensor], weights: Optional[Tensor], alpha: float, gamma: float
) -> tuple[Tensor, Tensor]:
    r"""Per row :math:`\alpha w_y \sum_j f(s_j) + (1-\alpha) \mathrm{CE}(z + \text{shift}, y)` and its gradient.

    The function the compiled path compiles: :func:`focal_terms` for the focal part, the softmax term written with
    masks instead of in-place indexing (so that inductor fuses it into the same loops); what the eager
    :func:`_forward` computes, by the same definitions, without the row scaling trick.
    """
    is_target = torch.arange(z.shape[1], device=z.device) == labels.unsqueeze(1)
    loss: Union[Tensor, float] = 0.0
    grad: Union[Tensor, float] = 0.0
    if alpha > 0.0:
        assert weights is not None
        value, derivative = focal_terms(torch.where(is_target, z, -z), gamma)
        assert derivative is not None
        w = alpha * weights[labels]
        loss = w * value.sum(dim=1)
        grad = w.unsqueeze(1) * torch.where(is_target, derivative, -derivative)
    if alpha < 1.0:
        assert shift is not None
        log_probs = torch.log_softmax(z + shift, dim=1)
        loss = loss + (alpha - 1.0) * torch.where(is_target, log_probs, 0.0).sum(dim=1)
        grad = grad + (1.0 - alpha) * (log_probs.exp() - is_target.to(z.dtype))
    assert isinstance(loss, Tensor)
    assert isinstance(grad, Tensor)
    return loss, grad


_compiled_row_terms: Optional[Callable[..., tuple[Tensor, Tensor]]] = None


def _compiled(*args: Any) -> Optional[tuple[Tensor, Tensor]]:
    """:func:`row_terms` compiled (built on first use), or None after compiling failed (warned once)."""
    global _compiled_row_terms
    if _compiled_global["failed"]:
        return None
    try:
        if _compiled_row_terms is None:
            _compiled_row_terms = torch.compile(row_terms, dynamic=True)
        return _compiled_row_terms(*args)
    except Exception as error:  # no C++ compiler, no Triton, an old torch: the eager fast path runs instead
        _compiled_global["failed"] = True
        warnings.warn(
            f"longtail_losses: the compiled path is off, torch.compile failed ({type(error).__name__}: {error}); "
            "the eager fast path runs instead",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


# ----------------------------------------------------------------------------------------------------------------
# The dense fast path: alpha * w_y * sum_j f(s_j) + (1 - alpha) * CE(z + shift), loss and gradient in one pass


def _forward(
    z: Tensor, labels: Tensor, *,
    shift: Optional[Tensor], weights: Optional[Tensor], alpha: float, gamma: float, grad: Optional[Tensor],
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Per-row loss and, if ``grad`` is given, its gradient: the gradient of row i is ``scale[i] * grad[i]``."""
    n = z.shape[0]
    loss = torch.empty(n, dtype=z.dtype, device=z.device)
    use_softmax, use_focal = alpha < 1.0, alpha > 0.0
    if use_focal:
        assert weights is not None
        scale = alpha * weights[labels]
        if use_softmax:
            # The softmax part is stored divided by the row scale: a subnormal alpha * w_y is raised so that
            # (1 - alpha) / scale stays finite (it overstates only a focal gradient below 1e-37).
            scale = scale.clamp(min=2.0 * (1.0 - alpha) / torch.finfo(z.dtype).max)
    else:
        scale = torch.ones(n, dtype=z.dtype, device=z.device)
    rows = max(1, min(n, BLOCK_ELEMENTS // max(1, z.shape[1])))
    for start in range(0, n, rows):
        zb, yb = z[start : start + rows], labels[start : start + rows]
        at_y = (torch.arange(zb.shape[0], device=z.device), yb)
        out = grad[start : start + rows] if grad is not None else None
        row_loss = torch.zeros(zb.shape[0], dtype=z.dtype, device=z.device)
        if use_focal:
            signed = torch.neg(zb)
            signed[at_y] = zb[at_y]
            value, derivative = focal_terms(signed, gamma, derivative=out is not None)
            row_loss += scale[start : start + rows] * value.sum(dim=1)
            if out is not None:
                assert derivative is not None
                torch.neg(derivative, out=out)
                out[at_y] = derivative[at_y]
        if use_softmax:
            assert shift is not None
            value, softmax_grad = softmax_terms(zb + shift, yb)
            row_loss += (1.0 - alpha) * value
            if out is not None:
                if use_focal:
                    out.addcmul_(softmax_grad, ((1.0 - alpha) / scale[start : start + rows]).unsqueeze(1))
                else:
                    out.copy_(softmax_grad)
        loss[start : start + rows] = row_loss
    return loss, scale


class _FusedLoss(torch.autograd.Function):
    """Per-row loss whose forward also computes the gradient; backward is one in-place row scaling."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor, kwargs: dict[str, Any], reference: Callable) -> Tensor:
        compiled = _compiled(logits, labels, *kwargs.values()) if compiled_path.is_enabled() else None
        if compiled is not None:
            (loss, grad), scale = compiled, None  # the compiled gradient is not scaled per row
        else:
            grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
            loss, scale = _forward(logits, labels, **kwargs, grad=grad)
        ctx.save_for_backward(logits)
        ctx.grad, ctx.scale, ctx.reference, ctx.args = grad, scale, reference, (labels, kwargs)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Optional[Tensor], ...]:
        (logits,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient, from the reference
            with torch.enable_grad():
                (g,) = torch.autograd.grad(ctx.reference(logits), logits, grad_output, create_graph=True)
            return g, None, None, None
        grad, scale = ctx.grad, ctx.scale
        if grad is None:  # a second backward through a retained graph: the buffer was handed over
            grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
            labels, kwargs = ctx.args
            _, scale = _forward(logits, labels, **kwargs, grad=grad)
        ctx.grad = None  # hand the buffer over: autograd can keep it as .grad without a copy
        row = grad_output if scale is None else grad_output * scale
        return grad.mul_(row.unsqueeze(1)), None, None, None


def fused_loss(
    logits: Tensor, labels: Tensor, *,
    shift: Optional[Tensor], weights: Optional[Tensor], alpha: float, gamma: float,
    reference: Callable[[Tensor], Tensor],
) -> Tensor:  # fmt: skip
    r"""Per-row :math:`\alpha\, w_y \sum_j f(s_j) + (1-\alpha)\, \mathrm{CE}(z + \text{shift}, y)` by the fast path.

    ``logits`` (N, C) float32/float64 and ``labels`` (N,) in ``[0, C)`` come prepared by the engine; ``shift`` is
    used when ``alpha < 1``, ``weights`` (C,) when ``alpha > 0``; ``reference`` is the same loss as a function of the
    logits, for double backward. The output (N,) is not masked (the engine zeroes ignored rows).
    """
    kwargs: dict[str, Any] = {"shift": shift, "weights": weights, "alpha": alpha, "gamma": gamma}
    if torch.is_grad_enabled() and logits.requires_grad:
        out: Tensor = _FusedLoss.apply(logits, labels, kwargs, reference)
        return out
    compiled = _compiled(logits, labels, *kwargs.values()) if compiled_path.is_enabled() else None
    return compiled[0] if compiled is not None else _forward(logits, labels, **kwargs, grad=None)[0]


# ----------------------------------------------------------------------------------------------------------------
# Multi-hot targets: t f_pos(x) + (1 - t) f_neg(-x) per element, and its fast path


def multilabel_terms(
    x: Tensor, t: Tensor, *,
    gamma_pos: float, gamma_neg: float, clip: float, neg_scale: float, detach: bool, derivative: bool = True,
) -> tuple[Tensor, Optional[Tensor]]:  # fmt: skip
    r"""Per element :math:`t\, f_{\gamma_+}(x) + (1 - t)\, \lambda^{-1} f_{\gamma_-, m}(-\lambda x)` and its derivative.

    The expectation over a (soft) label :math:`t \in [0, 1]` of the positive term and the negative term, each with
    its own exponent; the negative side has the probability shift ``clip`` :math:`m` of :func:`focal_terms` and the
    scale ``neg_scale`` :math:`\lambda` (the negative-tolerant regularisation of the distribution-balanced loss;
    1 is none). The derivative with respect to :math:`x` is :math:`t f'_+(x) - (1 - t) f'_-(-\lambda x)`.
    """
    pos, d_pos = focal_terms(x, gamma_pos, detach=detach, derivative=derivative)
    neg_x = -x if neg_scale == 1.0 else x * -neg_scale
    neg, d_neg = focal_terms(neg_x, gamma_neg, clip=clip, detach=detach, derivative=derivative)
    if neg_scale != 1.0:
        neg = neg / neg_scale
    value = t * pos + (1.0 - t) * neg
    if not derivative:
        return value, None
    assert d_pos is not None
    assert d_neg is not None
    return value, t * d_pos - (1.0 - t) * d_neg


class _FusedElements(torch.autograd.Function):
    """Per-element multi-label loss whose forward also computes the derivative; backward is one multiplication."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, t: Tensor, kwargs: dict[str, Any], reference: Callable) -> Tensor:
        value, grad = multilabel_terms(x, t, **kwargs)
        ctx.save_for_backward(x, grad)
        ctx.reference = reference
        return value

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Optional[Tensor], ...]:
        x, grad = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient, from the reference
            with torch.enable_grad():
                (g,) = torch.autograd.grad(ctx.reference(x), x, grad_output, create_graph=True)
            return g, None, None, None
        return grad_output * grad, None, None, None


def fused_multilabel(x: Tensor, t: Tensor, *, reference: Callable[[Tensor], Tensor], **kwargs: Any) -> Tensor:
    """:func:`multilabel_terms` by the fast path: value and derivative in one pass, the derivative kept for backward.

    ``reference`` is the same per-element loss as a function of ``x``, for double backward.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        out: Tensor = _FusedElements.apply(x, t, kwargs, reference)
        return out
    return multilabel_terms(x, t, **kwargs, derivative=False)[0]
