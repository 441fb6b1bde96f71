"""What the loss tests of logit adjustment and LDAM share: inputs in every form, float64 references, round trips."""

from __future__ import annotations

import copy
import io
import pickle
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COUNTS = [500, 120, 40, 9, 2]


C = len(COUNTS)


FORMS = ["unbatched", "batched", "spatial"]


KINDS = ["index", "index_ignore", "probs"]


# An unbatched target is one sample, either kept or ignored: its ignore_index case is in test_ignore_index.
FORM_KINDS = [(f, k) for f in FORMS for k in KINDS if (f, k) != ("unbatched", "index_ignore")]


REDUCTIONS = ["none", "mean", "sum"]


def log_softmax(a: Tensor) -> Tensor:
    """log(e^{a_k} / sum_j e^{a_j}), with the row maximum subtracted first (the ratio is unchanged)."""
    shifted = a - a.max(dim=1, keepdim=True).values.detach()
    return shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))


def ref_reduce(per_row: Tensor, keep: Tensor, reduction: str, row_weight: Tensor | None = None) -> Tensor:
    """'mean' divides by the kept rows, or by their summed weights (F.cross_entropy's rule with ``weight``)."""
    per_row = torch.where(keep, per_row, torch.zeros_like(per_row))
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if row_weight is None:
        return per_row.sum() / keep.sum()
    return per_row.sum() / torch.where(keep, row_weight, torch.zeros_like(row_weight)).sum()


def make_inputs(form: str, kind: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = {"unbatched": (C,), "batched": (7, C), "spatial": (3, C, 2, 2)}[form]
    logits = (torch.randn(shape, generator=g, dtype=torch.float64) * 2.0).to(dtype)
    class_dim = 0 if form == "unbatched" else 1
    if kind == "probs":
        target = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 2.0, dim=class_dim).to(dtype)
        return logits, target
    index_shape = shape[:class_dim] + shape[class_dim + 1 :]
    target = torch.randint(0, C, index_shape, generator=g)
    if kind == "index_ignore":
        target = target.clone().reshape(-1)
        target[::3] = -100
        target = target.reshape(index_shape)
    return logits, target


def rows_of(logits: Tensor, target: Tensor, smoothing: float) -> tuple[Tensor, Tensor, Tensor, Tensor | None, tuple]:
    """Rows (M, C), target distributions (M, C), kept mask (M,), labels (M,) or None, and the 'none' shape."""
    if logits.ndim == 1:
        z, t, shape = logits.unsqueeze(0), target.unsqueeze(0), ()
    elif logits.ndim == 2:
        z, t, shape = logits, target, (logits.shape[0],)
    else:
        z = logits.movedim(1, -1).reshape(-1, logits.shape[1])
        t = target.movedim(1, -1).reshape(-1, logits.shape[1]) if target.dtype.is_floating_point else target
        shape = tuple(target.shape) if not target.dtype.is_floating_point else (logits.shape[0], *logits.shape[2:])
    z = z.to(torch.float64)
    num_classes = z.shape[1]
    if t.dtype.is_floating_point:
        dist = t.to(torch.float64)
        keep = torch.ones(z.shape[0], dtype=torch.bool)
        labels = None
    else:
        y = t.reshape(-1)
        keep = y != -100
        labels = torch.where(keep, y, torch.zeros_like(y))
        dist = F.one_hot(labels, num_classes).to(torch.float64)
    dist = dist * (1.0 - smoothing) + smoothing / num_classes
    return z, dist, keep, labels, shape


def _cotangent(out: Tensor) -> Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(out.shape, generator=g, dtype=out.dtype) + 0.5


def grad(fn, logits: Tensor) -> tuple[Tensor, Tensor]:
    x = logits.detach().clone().requires_grad_(True)
    out = fn(x)
    (grad,) = torch.autograd.grad((out * _cotangent(out)).sum(), x)
    return out.detach(), grad


def assert_matches(library: Callable[[Tensor], Tensor], reference: Callable[[Tensor], Tensor], logits: Tensor) -> None:
    """``library`` and ``reference`` agree at ``logits``, in value and gradient."""
    for got, want in zip(grad(library, logits), grad(reference, logits)):
        torch.testing.assert_close(got, want)


def reference_loss(x: Tensor, target: Tensor, smoothing: float, reduction: str, per_rows: Callable[..., Any]) -> Tensor:
    """Reduce the reference ``per_rows(z, dist, labels) -> (per-row losses, per-row weights or None)``."""
    z, dist, keep, labels, shape = rows_of(x, target, smoothing)
    per_row, row_weight = per_rows(z, dist, labels)
    out = ref_reduce(per_row, keep, reduction, row_weight)
    return out.reshape(shape) if reduction == "none" else out


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
