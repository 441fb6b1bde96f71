"""Every input form of F.cross_entropy, for every loss, against F.cross_entropy or a float64 re-derivation.

Forms: logits (C,), (N, C), (N, C, d1, d2); class-index targets with ignore_index, the same with
label_smoothing, probability targets (mixup-like), probability targets with label_smoothing. Every reduction;
values and gradients.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from longtail_losses import functional as LF
from longtail_losses.losses import _engine, _kernel
from tests import reference as ref

COUNTS = torch.tensor([500, 120, 40, 9, 2])
C = len(COUNTS)
HYPER = {"alpha": 0.3, "beta": 0.99, "gamma": 1.5}
WEIGHT = torch.randn(C, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
WEIGHT_DECAY = 0.2

# name -> (library call, float64 per-row reference of one class-index row or None for balanced softmax)
LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Any]] = {
    "balanced_softmax": (lambda z, t, n, **kw: LF.balanced_softmax_loss(z, t, n, **kw), None),
    "class_balanced_focal": (
        lambda z, t, n, **kw: LF.class_balanced_focal_loss(z, t, n, beta=0.99, gamma=1.5, **kw),
        lambda z, y, n: ref.cb_focal(z, y, n, 0.99, 1.5),
    ),
    "bfs": (lambda z, t, n, **kw: LF.bfs_loss(z, t, n, **HYPER, **kw), lambda z, y, n: ref.bfs(z, y, n, **HYPER)),
    "bwlm": (
        lambda z, t, n, **kw: LF.bwlm_loss(z, t, n, WEIGHT, weight_decay=WEIGHT_DECAY, **HYPER, **kw),
        lambda z, y, n: ref.bfs(z, y, n, **HYPER),
    ),
}


def make_form(form: str, kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and a target of one form; class-index targets of batched forms have ignored entries."""
    g = torch.Generator().manual_seed(seed)
    shape = {"unbatched": (C,), "batched": (6, C), "spatial": (2, C, 3, 2)}[form]
    logits = 3 * torch.randn(shape, dtype=torch.float64, generator=g)
    if kind == "probs":
        # A mixup of two one-hot targets, plus some mass on a third class.
        raw = torch.rand(shape, dtype=torch.float64, generator=g) ** 4
        class_dim = 0 if form == "unbatched" else 1
        return logits, raw / raw.sum(dim=class_dim, keepdim=True)
    target_shape = shape[:1] + shape[2:] if form != "unbatched" else ()
    target = torch.randint(0, C, target_shape, generator=g)
    if form != "unbatched":
        flat = target.view(-1)
        flat[::3] = -100
    return logits, target


def expected(name: str, logits: torch.Tensor, target: torch.Tensor, reduction: str, smoothing: float) -> torch.Tensor:
    """The reference value, computed from the float64 formulas on rows."""
    per_sample = LOSSES[name][1]
    if per_sample is None:  # balanced softmax *is* F.cross_entropy of the shifted logits, in every form
        shift = COUNTS.double().log()
        shift = shift.view(-1, *([1] * (logits.ndim - 2))) if logits.ndim > 2 else shift
        return F.cross_entropy(logits + shift, target, reduction=reduction, label_smoothing=smoothing)
    z = ref.rows_of(logits)
    if target.dtype.is_floating_point:
        probs, keep = ref.rows_of(target), torch.ones(z.shape[0], dtype=torch.bool)
        out_shape = logits.shape[:1] + logits.shape[2:] if logits.ndim > 1 else ()
    else:
        labels = target.reshape(-1)
        keep = labels != -100
        probs = F.one_hot(ref.safe(labels), C).double()
        out_shape = target.shape
    probs = probs * (1 - smoothing) + smoothing / C
    per_row = torch.where(keep, ref.expected_over_classes(per_sample, z, probs, COUNTS), 0.0)
    if reduction == "none":
        out = per_row.reshape(out_shape)
    elif reduction == "sum":
        out = per_row.sum()
    else:
        out = per_row.sum() / keep.sum()
    if name == "bwlm":
        penalty = ref.penalty(WEIGHT, WEIGHT_DECAY)
        out = out + (penalty if reduction != "none" else keep.reshape(out_shape) * penalty / keep.sum())
    return out


def value_and_grad(fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor):
    z = logits.clone().requires_grad_(True)
    out = fn(z)
    (grad,) = torch.autograd.grad(out.sum(), z)
    return out, grad


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("form", ["unbatched", "batched", "spatial"])
@pytest.mark.parametrize(("kind", "smoothing"), [("index", 0.0), ("index", 0.1), ("probs", 0.0), ("probs", 0.2)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_every_form_matches_reference(name: str, form: str, kind: str, smoothing: float, reduction: str) -> None:
    logits, target = make_form(form, kind)
    call, _ = LOSSES[name]
    got, got_grad = value_and_grad(
        lambda z: call(z, target, COUNTS, reduction=reduction, label_smoothing=smoothing), logits
    )
    want, want_grad = value_and_grad(lambda z: expected(name, z, target, reduction, smoothing), logits)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
    assert got.shape == want.shape


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("form", ["unbatched", "batched", "spatial"])
def test_one_hot_probabilities_equal_class_indices(name: str, form: str) -> None:
    logits, target = make_form(form, "index", seed=3)
    if form != "unbatched":
        target = target.clamp_min(0)  # probabilities cannot express ignore_index
    class_dim = 0 if form == "unbatched" else 1
    one_hot = F.one_hot(target, C).movedim(-1, class_dim).double()
    call, _ = LOSSES[name]
    for reduction in ("none", "mean", "sum"):
        a, grad_a = value_and_grad(lambda z, r=reduction: call(z, target, COUNTS, reduction=r), logits)
        b, grad_b = value_and_grad(lambda z, r=reduction: call(z, one_hot, COUNTS, reduction=r), logits)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(grad_a, grad_b)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mixup_mixes_the_losses(name: str) -> None:
    # The meaning of probability targets: lam * e_a + (1 - lam) * e_b gives lam * loss(a) + (1 - lam) * loss(b).
    logits, _ = make_form("batched", "probs", seed=4)
    a, b = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([4, 4, 1, 0, 2, 3])
    lam = 0.3
    mixed = lam * F.one_hot(a, C).double() + (1 - lam) * F.one_hot(b, C).double()
    call, _ = LOSSES[name]
    kw: dict[str, Any] = {"reduction": "sum"}
    got = call(logits, mixed, COUNTS, **kw)
    want = lam * call(logits, a, COUNTS, **kw) + (1 - lam) * call(logits, b, COUNTS, **kw)
    # (for BWLM, the penalty added once to each side: lam * P + (1 - lam) * P = P)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fused_path_handles_spatial_rows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # (N, C, d1, d2) is flattened to rows, so the fused kernel runs on it too: equal to the reference path.
    monkeypatch.setattr(_engine, "BALANCED_SOFTMAX_MIN_ELEMENTS", 0)
    logits, target = make_form("spatial", "index", seed=5)
    call, _ = LOSSES[name]
    fast = value_and_grad(lambda z: call(z, target, COUNTS, reduction="mean"), logits)
    with _kernel.reference_path():
        slow = value_and_grad(lambda z: call(z, target, COUNTS, reduction="mean"), logits)
    torch.testing.assert_close(fast, slow)


@st.composite
def forms(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """One input strategy for every loss: any form, index (some ignored) or probability targets."""
    form = draw(st.sampled_from(["unbatched", "batched", "spatial"]))
    kind = draw(st.sampled_from(["index", "probs"]))
    return make_form(form, kind, seed=draw(st.integers(0, 2**16)))


@given(problem=forms(), name=st.sampled_from(sorted(LOSSES)), reduction=st.sampled_from(["none", "mean", "sum"]))
def test_property_every_form(problem: tuple, name: str, reduction: str) -> None:
    logits, target = problem
    call, _ = LOSSES[name]
    torch.testing.assert_close(
        call(logits, target, COUNTS, reduction=reduction), expected(name, logits, target, reduction, 0.0)
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_probability_targets_are_checked(name: str) -> None:
    logits, probs = make_form("batched", "probs")
    call, _ = LOSSES[name]
    with pytest.raises(ValueError, match=r"`target` of class probabilities to be finite, >= 0 and to sum to 1"):
        call(logits, probs * 2, COUNTS)
    with pytest.raises(ValueError, match=r"`target` of class probabilities to have the shape of `logits`"):
        call(logits, probs[:, :3], COUNTS)
    with pytest.raises(ValueError, match=r"`target` of class indices to have shape \(6,\)"):
        call(logits, torch.zeros(6, 2, dtype=torch.long), COUNTS)
