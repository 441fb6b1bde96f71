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
backward allocate one (N, C) tensor. Every intermediate lives in that buffer or in a work buffer of at most five
blocks of :data:`BLOCK_ELEMENTS` logits, which on a CPU is kept per thread and reused (:func:`_workspace`). The
reference runs instead:

* under :func:`reference_path` (tests, debugging);
* while ``torch.compile``/dynamo traces, or inside ``torch.func`` transforms (:func:`tracing`);
* for dtypes other than float32/float64 (the losses compute half/bfloat16 inputs in float32 anyway).

With :func:`compiled_path` on, the dense fast path of the paper's losses runs :func:`row_terms` compiled by
``torch.compile`` (inductor: C++ on CPU, Triton on CUDA) with a dynamic batch size, so a new batch size does not
recompile (a new number of classes compiles once more): loss and gradient in one generated kernel. Where
compiling fails (no C++ toolchain, no Triton) it warns once and the eager fast path runs.

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

#: Most elements in one block of rows of the dense fast path (4 MiB of float32). The reused CPU work buffer holds at
#: most five blocks (20 MiB of float32 per thread); measured on a 2-core CPU, 2**18 and 2**22 were both slower.
BLOCK_ELEMENTS = 1 << 20

_state = threading.local()


def focal_terms(
    s: Tensor, gamma: Union[float, Tensor], *,
    clip: float = 0.0, detach: bool = False, derivative: bool = True, work: Optional[Tensor] = None,
    fused: bool = False,
) -> tuple[Tensor, Optional[Tensor]]:  # fmt: skip
    r"""The sigmoid focal loss :math:`f(s)` of signed logits and, with ``derivative``, :math:`f'(s)`, element-wise.

    :math:`\sigma(\pm s)` are two ``sigmoid`` (so that :math:`\sigma(-s)` keeps its relative accuracy where
    :math:`1 - \sigma(s)` would round to 0) and :math:`\log\sigma(s) = \min(\log\max(\sigma(s), t), s)` one
    ``log``, with :math:`t` the smallest normal number of the dtype to the power 0.9 (:math:`e^{-78.6}` in float32,
    :math:`e^{-637}` in float64): below it :math:`\log\sigma(s) = s - \log(1 + e^{s})` equals :math:`s` to the last
    bit, and above it the ``log`` of the rounded :math:`\sigma(s)` is accurate to the rounding of :math:`\sigma(s)`
    (and :math:`1/\sigma(s)` in its derivative finite). So the value is finite for any finite :math:`s` without the
    slow ``log1p``/``logsigmoid``/``softplus`` kernels. The focusing weight is :math:`\sigma(-s)^\gamma` itself for
    :math:`\gamma \in \{0, 1\}`, its square for :math:`\gamma = 2`, and :math:`2^{\gamma \log_2(e) \log\sigma(-s)}`
    otherwise, with :math:`\log\sigma(-s)` from a second ``log`` as above (``exp2`` is the fast exponential on
    CPUs; :math:`\log\sigma(s) - s` would lose the derivative's accuracy to cancellation at large :math:`|s|`).
    The value is differentiable by autograd (the reference path), with the exact derivative also at :math:`s = 0`.

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
        work: For the fast paths without autograd (``clip = 0``, float ``gamma``): a buffer of
            :func:`focal_planes` planes of the shape of ``s`` that every intermediate is written into, so that
            nothing is allocated; the results are views of it (``s`` may not alias it).
        fused: For a kernel that a compiler generates whole (:func:`row_terms`): the floor of :math:`\sigma(\pm s)`
            is :math:`t\,\sigma(\mp s)` instead of :math:`t`, the same value wherever it is not overruled by
            the minimum with :math:`s` (:math:`\sigma(\mp s) \le 1`), which inductor keeps in registers instead
            of writing :math:`\sigma(s)` and :math:`\log\sigma(s)` out; the plain floor costs less elsewhere
            (one operation fewer eager, a smaller backward graph under ``torch.compile`` of the caller).

    Returns:
        ``(f(s), f'(s))``, the second ``None`` without ``derivative``.
    """
    if clip > 0.0:
        return _shifted_focal_terms(s, gamma, clip, detach=detach, derivative=derivative)
    a, b, c, d = (None,) * 4 if work is None else (*work.unbind(0), None)[:4]
    p, q, log_p = _log_sigmoids(s, out=(a, b, c), fused=fused)
    constant = isinstance(gamma, (int, float))
    if constant and gamma == 0.0:
        q_gamma: Optional[Tensor] = None
    elif constant and gamma == 1.0:
        q_gamma = q
    elif constant and gamma == 2.0:
        q_gamma = torch.mul(q, q, out=d)
    else:  # q ** gamma = 2 ** (-gamma log2(e) (-log q)), -log q = max(-log max(q, floor), s) as log p above
        floored = _floored(q, p, s, out=d, fused=fused)
        minus_log_q = torch.maximum(torch.neg(torch.log(floored, out=d), out=d), s, out=d)
        q_gamma = torch.exp2(torch.mul(minus_log_q, -gamma * _LOG2_E, out=d), out=d)
    if detach and q_gamma is not None:
        q_gamma = q_gamma.detach()
    zero = s.new_zeros(())  # addcmul(zero, u, v, value=-1) is -(u * v) in one pass
    if derivative:  # f'(s) = -q^gamma (q - gamma p log p), with p log p computed before log p is overwritten
        if q_gamma is None:
            grad: Optional[Tensor] = torch.neg(q, out=a)
        elif detach:
            grad = torch.addcmul(zero, q_gamma, q, value=-1.0, out=a)
        else:
            p_log_p = torch.mul(p, log_p, out=a)
            if isinstance(gamma, Tensor):
                inner = torch.sub(q, torch.mul(p_log_p, gamma, out=a), out=a)
            else:
                inner = torch.sub(q, p_log_p, alpha=gamma, out=a)
            grad = torch.addcmul(zero, q_gamma, inner, value=-1.0, out=a)
    else:
        grad = None
    value = torch.neg(log_p, out=c) if q_gamma is None else torch.addcmul(zero, q_gamma, log_p, value=-1.0, out=c)
    return value, grad


def focal_planes(gamma: Union[float, Tensor]) -> int:
    """Planes of the ``work`` buffer that :func:`focal_terms` uses for this ``gamma``."""
    return 3 if isinstance(gamma, (int, float)) and gamma in (0.0, 1.0) else 4


_LOG2_E = 1.0 / math.log(2.0)


def _log_sigmoids(
    s: Tensor, out: tuple[Optional[Tensor], ...] = (None, None, None), *, fused: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    r""":math:`\sigma(s)`, :math:`\sigma(-s)` and :math:`\log\sigma(s)`, finite for finite ``s`` (:func:`focal_terms`).

    ``out`` are three tensors of the shape of ``s`` to write them into, or Nones.
    """
    p = torch.sigmoid(s, out=out[0])
    q = torch.sigmoid(torch.neg(s, out=out[1]), out=out[1])
    log_p = torch.minimum(torch.log(_floored(p, q, s, out=out[2], fused=fused), out=out[2]), s, out=out[2])
    return p, q, log_p


def _floored(p: Tensor, q: Tensor, s: Tensor, *, out: Optional[Tensor], fused: bool) -> Tensor:
    """``max(p, floor)``, or ``max(p, floor * q)`` when ``fused`` (see :func:`focal_terms`)."""
    if not fused:
        return torch.clamp(p, min=_floor(s), out=out)
    return torch.maximum(p, torch.mul(q, _floor(s), out=out), out=out)


def _floor(s: Tensor) -> float:
    r"""Below this probability :math:`\log\sigma(s) = s` to the last bit: the smallest normal number to the 0.9."""
    return torch.finfo(s.dtype).tiny ** 0.9


def _shifted_focal_terms(
    s: Tensor, gamma: Union[float, Tensor], clip: float, *, detach: bool, derivative: bool
) -> tuple[Tensor, Optional[Tensor]]:
    """:func:`focal_terms` with the probability shift ``clip > 0`` (see there)."""
    _, q, log_p = _log_sigmoids(s)
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
    pq = torch.exp(2.0 * log_p - s)  # sigma(s) sigma(-s) = exp(log p + log q), no underflow of a factor
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
    r"""Per row, :math:`\operatorname{lse}(x) - x_y`, and its gradient :math:`\operatorname{softmax}(x) - e_y`.

    Not differentiable (for the fast path); the gradient overwrites ``x``. The softmax is
    :math:`2^{\log_2(e) \log\operatorname{softmax}(x)}`: ``exp2`` is the fast exponential on CPUs, and the rounding of
    the product moves no probability by more than :math:`\max_t t e^{-t} = 1/e` times the unit roundoff.
    """
    log_probs = torch.log_softmax(x, dim=1, out=x)
    at_y = (torch.arange(x.shape[0], device=x.device), labels)
    value = -log_probs[at_y]
    grad = torch.exp2(log_probs.mul_(_LOG2_E), out=log_probs)
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
    generates (C++ on CPU, Triton on CUDA) from the same focal term as the eager paths, with a dynamic
    batch size: a new batch size does not recompile (a new number of classes compiles once more). The first call
    compiles, which takes seconds; hence off by default.
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
    z: Tensor, labels: Tensor, shift: Optional[Tensor], row_weights: Optional[Tensor], alpha: float, gamma: float
) -> tuple[Tensor, Tensor]:
    r"""Per row :math:`\alpha w_y \sum_j f(s_j) + (1-\alpha) \mathrm{CE}(z + \text{shift}, y)` and its gradient.

    The function the compiled path compiles: :func:`focal_terms` for the focal part, the softmax term written with
    masks instead of in-place indexing (so that inductor fuses it into the same loops); what the eager
    :func:`_forward` computes, by the same definitions, without the row scaling trick. ``row_weights`` is
    :math:`w_y` per row, gathered by the caller: an indexed load in the kernel would carry a bounds check, and
    inductor does not parallelise a CPU kernel that can raise.
    """
    is_target = torch.arange(z.shape[1], device=z.device) == labels.unsqueeze(1)
    loss: Union[Tensor, float] = 0.0
    grad: Union[Tensor, float] = 0.0
    if alpha > 0.0:
        assert row_weights is not None
        value, derivative = focal_terms(torch.where(is_target, z, -z), gamma, fused=True)
        assert derivative is not None
        w = alpha * row_weights
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


def _compiled(
    z: Tensor, labels: Tensor, shift: Optional[Tensor], weights: Optional[Tensor], alpha: float, gamma: float
) -> Optional[tuple[Tensor, Tensor]]:
    """:func:`row_terms` compiled (built on first use), or None after compiling failed (warned once)."""
    global _compiled_row_terms
    if _compiled_global["failed"]:
        return None
    try:
        if _compiled_row_terms is None:
            # dynamic=False: nothing becomes dynamic unless marked; alpha and gamma stay constants of the graph,
            # guarded by value (automatic dynamic shapes would turn them into symbolic floats, and a kernel
            # compiled for one gamma then ran for another, giving wrong gradients, on torch 2.14).
            _compiled_row_terms = torch.compile(row_terms, dynamic=False)
        # The batch dimension is marked dynamic (no recompile per batch size) and the classes stay static: with a
        # static row length inductor parallelises the kernel's loops over rows (on 2 cores 0.36 ms, not 0.67 ms,
        # at 256 x 1,000). A view is marked, not the caller's tensor; a new number of classes compiles once more.
        z = z.view(z.shape)
        row_weights = weights[labels] if weights is not None else None
        mark = getattr(torch._dynamo, "maybe_mark_dynamic", torch._dynamo.mark_dynamic)  # here: dynamo is heavy
        for tensor in (z, labels, row_weights):
            if tensor is not None:
                mark(tensor, 0)
        return _compiled_row_terms(z, labels, shift, row_weights, alpha, gamma)
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
    """Per-row loss and, if ``grad`` is given, its gradient: the gradient of row i is ``scale[i] * grad[i]``.

    Works through blocks of at most :data:`BLOCK_ELEMENTS` logits, writing every intermediate into one work buffer
    of a few blocks (the focal term's planes, see :func:`focal_terms`) and into ``grad`` itself: apart from the
    (N,) results and row-sized index tensors, nothing else is allocated, whatever the number of rows.
    """
    n, c = z.shape
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
    rows = max(1, min(n, BLOCK_ELEMENTS // max(1, c)))
    # The focal term's planes, and one for the signed logits when there is no gradient buffer to hold them; the
    # softmax term works in the first plane (in the gradient buffer itself when it is alone).
    planes = focal_planes(gamma) + (grad is None) if use_focal else int(grad is None)
    work = _workspace(planes * min(rows, n) * c, z).view(planes, min(rows, n), c) if planes else None
    for start in range(0, n, rows):
        zb, yb = z[start : start + rows], labels[start : start + rows]
        m = zb.shape[0]
        at_y = (torch.arange(m, device=z.device), yb)
        out = grad[start : start + m] if grad is not None else None
        block = work[:, :m] if work is not None else None
        row_loss: Union[Tensor, float] = 0.0
        if use_focal:
            assert block is not None
            signed = torch.neg(zb, out=out if out is not None else block[-1])  # s = -z, and z_y at the target
            signed[at_y] = zb[at_y]
            focal_work = block[: planes - (out is None)]
            value, derivative = focal_terms(signed, gamma, derivative=out is not None, work=focal_work)
            row_loss = scale[start : start + m] * value.sum(dim=1)
            if out is not None:
                assert derivative is not None
                torch.neg(derivative, out=out)
                out[at_y] = derivative[at_y]
        if use_softmax:
            assert shift is not None
            alone = out is not None and not use_focal
            x = torch.add(zb, shift, out=out if alone else block[0])  # type: ignore[index]
            value, softmax_grad = softmax_terms(x, yb)
            row_loss = row_loss + (1.0 - alpha) * value
            if out is not None and use_focal:
                out.addcmul_(softmax_grad, ((1.0 - alpha) / scale[start : start + m]).unsqueeze(1))
        loss[start : start + m] = row_loss
    return loss, scale


def _workspace(numel: int, like: Tensor) -> Tensor:
    """``numel`` elements of scratch memory for :func:`_forward`; on a CPU, kept per thread and dtype and reused.

    A CPU allocation of a few MiB is served by ``mmap`` or a heap that is trimmed back after the call, so a fresh
    buffer pays a page fault per 4 KiB on every call, which can cost more than the arithmetic; the buffer (at most
    five planes of :data:`BLOCK_ELEMENTS`) is therefore kept. CUDA's caching allocator already reuses memory.
    """
    if like.device.type != "cpu":
        return torch.empty(numel, dtype=like.dtype, device=like.device)
    cache = getattr(_state, "workspace", None)
    if cache is None:
        cache = _state.workspace = {}
    buffer = cache.get(like.dtype)
    if buffer is None or buffer.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor, writable in and out of inference mode
            buffer = cache[like.dtype] = torch.empty(numel, dtype=like.dtype, device="cpu")
    return buffer[:numel]


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
