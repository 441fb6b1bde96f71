"""Every internal hook the loss tests use, in one place: the fast path, its reference, and their thresholds.

The tests otherwise call only the public API. When the engine's internals move, re-point these functions; no
test module imports ``longtail_losses.losses._engine`` or ``_kernel`` itself.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from torch import Tensor

from longtail_losses.losses import _engine, _kernel


def reference_path(enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """Context manager: the losses run the straightforward reference path instead of the fused kernel."""
    return _kernel.reference_path(enabled)


def use_fast_path(logits: Tensor) -> bool:
    """Whether the fused kernel would run on ``logits`` here (dtype, autograd mode, ``reference_path``)."""
    return _kernel.use_fast_path(logits)


def fused_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Balanced softmax takes the fused kernel at every size (small inputs otherwise take F.cross_entropy)."""
    monkeypatch.setattr(_engine, "BALANCED_SOFTMAX_MIN_ELEMENTS", 0)


def small_blocks(monkeypatch: pytest.MonkeyPatch, elements: int = 1000) -> None:
    """The fused kernel works in blocks of ``elements`` logits, so a small problem spans several blocks."""
    monkeypatch.setattr(_kernel, "BLOCK_ELEMENTS", elements)


def focal_terms(s: Tensor, gamma: float, *, fused: bool) -> tuple[Tensor, Tensor]:
    """The kernel's focal value and derivative, in the spelling of the compiled kernel (``fused``) or the plain one."""
    value, derivative = _kernel.focal_terms(s, gamma, fused=fused)
    assert derivative is not None
    return value, derivative


def poison_workspace(value: float = float("nan")) -> None:
    """Fill this thread's reused CPU work buffers of the fused kernel with ``value`` (what a call must overwrite)."""
    for buffer in getattr(_kernel._state, "workspace", {}).values():
        buffer.fill_(value)


def drop_workspace() -> None:
    """Forget this thread's reused CPU work buffers: the next fused call makes new ones."""
    getattr(_kernel._state, "workspace", {}).clear()


def workspace_elements(dtype: torch.dtype) -> int:
    """Elements of this thread's reused CPU work buffer of the fused kernel for ``dtype`` (0 if none yet)."""
    buffer = getattr(_kernel._state, "workspace", {}).get(dtype)
    return 0 if buffer is None else buffer.numel()


class FastPathCalls:
    """Counts calls of the fused kernel's forward, so a test knows the fast path really ran (or did not)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = _kernel._forward

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(_kernel, "_forward", spy)


def compile_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.compile`` raises inside the compiled path (no C++ compiler, no Triton), as on a bare machine."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(_kernel, "_compiled_row_terms", None)
    monkeypatch.setitem(_kernel._compiled_global, "failed", False)
    monkeypatch.setattr(_kernel.torch, "compile", broken)


def compiled_kernel_ran(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at each call of the compiled kernel (so a test knows it really ran)."""
    calls: list[int] = []
    original = _kernel._compiled

    def spy(*args: Any) -> Any:
        out = original(*args)
        calls.append(int(out is not None))
        return out

    monkeypatch.setattr(_kernel, "_compiled", spy)
    return calls
