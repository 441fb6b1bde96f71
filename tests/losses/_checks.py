"""Checks the loss test classes share: value and gradient against a reference, half inputs, modules, round trips."""

from __future__ import annotations

import copy
import io
import pickle
from typing import Any, Callable

import torch
from torch import Tensor, nn

from tests import reference as ref
from tests.inputs import COUNTS, REDUCTIONS, C, make_inputs


def _cotangent(out: Tensor) -> Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(out.shape, generator=g, dtype=out.dtype) + 0.5


def grad(fn: Callable[[Tensor], Tensor], logits: Tensor) -> tuple[Tensor, Tensor]:
    """``fn(logits)`` and its gradient for a random positive cotangent (so 'none' weighs its entries unequally)."""
    x = logits.detach().clone().requires_grad_(True)
    out = fn(x)
    (gradient,) = torch.autograd.grad((out * _cotangent(out)).sum(), x)
    return out.detach(), gradient


def assert_matches(library: Callable[[Tensor], Tensor], reference: Callable[[Tensor], Tensor], logits: Tensor) -> None:
    """``library`` and ``reference`` agree at ``logits``, in value (and shape) and gradient."""
    for got, want in zip(grad(library, logits), grad(reference, logits)):
        torch.testing.assert_close(got, want)


def assert_weighted_softmax_matches(
    library: Callable[[Tensor, str, float, Any], Tensor],
    rows: Callable[[Tensor, Tensor, Any], Tensor],
    logits: Tensor,
    target: Tensor,
    weight: Tensor,
) -> None:
    """Every reduction x label smoothing x (no class weights, ``weight``): ``library(x, reduction, smoothing, w)``
    equals the float64 per-row formula ``rows(z, dist, w)`` reduced with cross-entropy's weighted mean."""
    for reduction in REDUCTIONS:
        for smoothing, w in [(0.0, None), (0.2, None), (0.0, weight), (0.2, weight)]:

            def per_rows(z: Tensor, dist: Tensor, labels: Any, w: Any = w) -> tuple[Tensor, Any]:
                return rows(z, dist, w), None if w is None or labels is None else w[labels]

            assert_matches(
                lambda x, r=reduction, s=smoothing, w=w: library(x, r, s, w),
                lambda x, r=reduction, s=smoothing, p=per_rows: ref.form_loss(x, target, p, reduction=r, smoothing=s),
                logits,
            )


def assert_half_in_float32(loss: Callable[..., Tensor], dtype: torch.dtype, seed: int) -> None:
    """Half or bfloat16 logits give a float32 loss equal to that of the logits cast to float32."""
    logits, target = make_inputs("batched", "index", seed=seed, dtype=dtype)
    out = loss(logits, target, COUNTS)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, loss(logits.float(), target, COUNTS))


def assert_module_equals_functional(
    cls: Callable[..., nn.Module], function: Callable[..., Tensor], options: dict[str, Any], seed: int, fields: str
) -> None:
    """``cls(COUNTS, **options)`` gives what ``function`` gives, and its repr is ``cls(num_classes=C, <fields>)``.

    ``fields`` are the hyperparameters as the repr writes them; the call options of ``options`` follow them.
    """
    logits, target = make_inputs("spatial", "index_ignore", seed=seed)
    module = cls(COUNTS, **options)
    torch.testing.assert_close(module(logits, target), function(logits, target, COUNTS, **options))
    call = f"reduction={options['reduction']!r}, ignore_index=-100, label_smoothing={options['label_smoothing']}"
    assert repr(module) == f"{cls.__name__}(num_classes={C}, {fields}, {call})"


def roundtrip_checks(module: nn.Module, logits: Tensor, target: Tensor) -> None:
    """Pickle, deepcopy and a state_dict loaded into a fresh module (int64 counts) give the same loss."""
    expected = module(logits, target)
    clone = pickle.loads(pickle.dumps(module))
    torch.testing.assert_close(clone(logits, target), expected)
    torch.testing.assert_close(copy.deepcopy(module)(logits, target), expected)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert state["class_counts"].dtype == torch.int64
    fresh = type(module)([1] * len(COUNTS))
    fresh.__dict__.update({k: v for k, v in module.__dict__.items() if not k.startswith("_")})
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(logits, target), expected)
