"""Fuzz the fused linear losses: they equal the loss of the explicit logits, in value and gradients."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests.fuzz import fuzz_settings
from tests.inputs import FLOAT_DTYPES, IGNORE_INDEX, REDUCTIONS, alphas, betas, counts_lists, gammas


@st.composite
def linear_problems(draw: st.DrawFn, dtypes: tuple[torch.dtype, ...] = (torch.float64,)) -> dict[str, Any]:
    """Features (N, D), weight (C, D), bias or None, targets (some ignored), counts, options and BFS hyper."""
    n, d, c = draw(st.integers(0, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 7))
    dtype = draw(st.sampled_from(dtypes))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.0, 1.0, 10.0]))
    target = torch.randint(0, c, (n,), generator=g)
    ignored = torch.rand(n, generator=g) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    return {
        "features": (scale * torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype),
        "weight": torch.randn(c, d, generator=g, dtype=torch.float64).to(dtype),
        "bias": torch.randn(c, generator=g, dtype=torch.float64).to(dtype) if draw(st.booleans()) else None,
        "target": torch.where(ignored, torch.full_like(target, IGNORE_INDEX), target),
        "counts": draw(counts_lists(c)),
        "reduction": draw(st.sampled_from(REDUCTIONS)),
        "label_smoothing": draw(st.sampled_from([0.0, 0.1, 1.0])),
        "weight_decay": draw(st.sampled_from([0.0, 0.5])),
        "chunk_size": draw(st.none() | st.integers(1, c + 2)),
        "bfs": {"alpha": draw(alphas), "beta": draw(betas), "gamma": draw(gammas)},
    }


def value_and_grads(fn: Any, p: dict[str, Any]) -> list[Tensor]:
    leaves = [p["features"], p["weight"]] + ([p["bias"]] if p["bias"] is not None else [])
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    out = fn(*leaves)
    if out.numel() == 0:
        return [out.detach()]
    return [out.detach(), *torch.autograd.grad(out.sum(), leaves, allow_unused=True)]


def logits_of(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    return x @ w.T + (b if b is not None else 0)


def explicit(loss: str, p: dict[str, Any]) -> Any:
    """The same loss on the explicit logits, with the penalty added as documented (spread over kept for 'none')."""

    def fn(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        z, options = logits_of(x, w, b), {"reduction": p["reduction"], "label_smoothing": p["label_smoothing"]}
        if loss == "bs":
            out = LF.balanced_softmax_loss(z, p["target"], p["counts"], **options)
        else:
            out = LF.bfs_loss(z, p["target"], p["counts"], **p["bfs"], **options)
        penalty = 0.5 * p["weight_decay"] * w.pow(2).sum()
        if p["reduction"] != "none":
            return out + penalty
        kept = p["target"] != IGNORE_INDEX
        return out + (kept / kept.sum() if kept.any() else torch.ones_like(out) / max(1, out.numel())) * penalty

    return fn


def fused(loss: str, p: dict[str, Any], **overrides: Any) -> Any:
    def fn(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        kw = {"reduction": p["reduction"], "weight_decay": p["weight_decay"], "chunk_size": p["chunk_size"]}
        kw.update(label_smoothing=p["label_smoothing"], **overrides)
        if loss == "bs":
            return LF.linear_balanced_softmax_loss(x, w, p["target"], p["counts"], b, **kw)
        return LF.linear_bfs_loss(x, w, p["target"], p["counts"], b, **p["bfs"], **kw)

    return fn


@fuzz_settings()
@given(loss=st.sampled_from(["bs", "bfs"]), p=linear_problems())
def test_fused_equals_the_loss_of_the_explicit_logits(loss: str, p: dict[str, Any]) -> None:
    got, want = value_and_grads(fused(loss, p), p), value_and_grads(explicit(loss, p), p)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, equal_nan=True)


@fuzz_settings()
@given(loss=st.sampled_from(["bs", "bfs"]), p=linear_problems(), other=st.none() | st.integers(1, 9))
def test_chunk_size_changes_nothing(loss: str, p: dict[str, Any], other: int | None) -> None:
    for a, b in zip(value_and_grads(fused(loss, p), p), value_and_grads(fused(loss, p, chunk_size=other), p)):
        torch.testing.assert_close(a, b, equal_nan=True)


@fuzz_settings()
@given(loss=st.sampled_from(["bs", "bfs"]), p=linear_problems(dtypes=tuple(FLOAT_DTYPES)))
def test_module_equals_functional_and_round_trips(loss: str, p: dict[str, Any]) -> None:
    d, dtype = p["features"].shape[1], p["features"].dtype
    kw = {"bias": p["bias"] is not None, "weight_decay": p["weight_decay"], "reduction": p["reduction"]}
    kw.update(chunk_size=p["chunk_size"], label_smoothing=p["label_smoothing"])
    if loss == "bs":
        module = ltl.LinearBalancedSoftmax(p["counts"], d, dtype=dtype, **kw)
    else:
        module = ltl.LinearBFS(p["counts"], d, dtype=dtype, **p["bfs"], **kw)
    with torch.no_grad():
        module.weight.copy_(p["weight"])
        if p["bias"] is not None:
            module.bias.copy_(p["bias"])
    out = module(p["features"], p["target"])
    torch.testing.assert_close(out, fused(loss, p)(p["features"], p["weight"], p["bias"]), equal_nan=True)
    fresh = type(module)([1] * len(p["counts"]), d, dtype=dtype, **({} if loss == "bs" else p["bfs"]), **kw)
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh(p["features"], p["target"]), out, equal_nan=True)


@fuzz_settings()
@given(loss=st.sampled_from(["bs", "bfs"]), p=linear_problems(dtypes=(torch.float16, torch.bfloat16)))
def test_half_inputs_computed_in_float32(loss: str, p: dict[str, Any]) -> None:
    out = fused(loss, p)(p["features"], p["weight"], p["bias"])
    assert out.dtype == torch.float32
    b = p["bias"].float() if p["bias"] is not None else None
    # float32 accumulation of the half products in a different order
    torch.testing.assert_close(
        out, fused(loss, p)(p["features"].float(), p["weight"].float(), b), equal_nan=True, rtol=1e-3, atol=1e-3
    )
