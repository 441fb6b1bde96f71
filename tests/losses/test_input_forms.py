"""Every input form of F.cross_entropy, through the shared engine, against F.cross_entropy or a float64 re-derivation.

Forms: logits (C,), (N, C), (N, C, d1, d2); class-index targets with ignore_index, the same with
label_smoothing, probability targets (mixup-like), probability targets with label_smoothing. Every reduction;
values and gradients. The engine is tested once in every combination of these, through BWLM (the mixture of both
of its parts plus the penalty); every other loss of the family once per form, with every reduction. Logit
adjustment and LDAM check each form in their own files.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from longtail_losses import functional as LF
from tests import reference as ref
from tests.inputs import COUNTS, FORMS, REDUCTIONS, C, forms, make_inputs
from tests.losses import _paths

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
# Forms as the engine sees them: class indices of batched forms have ignored entries.
ENGINE_FORMS = [(f, k) for f in FORMS for k in ("index" if f == "unbatched" else "index_ignore", "probs")]


def expected(name: str, logits: torch.Tensor, target: torch.Tensor, reduction: str, smoothing: float) -> torch.Tensor:
    """The reference value, computed from the float64 formulas on rows."""
    per_sample = LOSSES[name][1]
    if per_sample is None:  # balanced softmax *is* F.cross_entropy of the shifted logits, in every form
        shift = torch.tensor(COUNTS).double().log()
        shift = shift.view(-1, *([1] * (logits.ndim - 2))) if logits.ndim > 2 else shift
        return F.cross_entropy(logits + shift, target, reduction=reduction, label_smoothing=smoothing)
    counts = torch.tensor(COUNTS)

    def per_rows(z: torch.Tensor, dist: torch.Tensor, labels: Any) -> tuple[torch.Tensor, None]:
        return ref.expected_over_classes(per_sample, z, dist, counts), None

    out = ref.form_loss(logits, target, per_rows, reduction=reduction, smoothing=smoothing)
    if name == "bwlm":  # the penalty, added once to the reduced loss, or spread over the kept samples of 'none'
        _, _, keep, _, shape = ref.form_rows(logits, target)
        penalty = ref.penalty(WEIGHT, WEIGHT_DECAY)
        out = out + (penalty if reduction != "none" else keep.reshape(shape) * penalty / keep.sum())
    return out


def value_and_grad(fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor):
    z = logits.clone().requires_grad_(True)
    out = fn(z)
    (grad,) = torch.autograd.grad(out.sum(), z)
    return out, grad


def assert_matches_expected(name: str, logits: torch.Tensor, target: torch.Tensor, reduction: str, smoothing: float):
    call, _ = LOSSES[name]
    got, got_grad = value_and_grad(
        lambda z: call(z, target, COUNTS, reduction=reduction, label_smoothing=smoothing), logits
    )
    want, want_grad = value_and_grad(lambda z: expected(name, z, target, reduction, smoothing), logits)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
    assert got.shape == want.shape


@pytest.mark.parametrize(("form", "kind"), ENGINE_FORMS)
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_engine_matches_reference_in_every_form(form: str, kind: str, smoothing: float, reduction: str) -> None:
    logits, target = make_inputs(form, kind)
    assert_matches_expected("bwlm", logits, target, reduction, smoothing)


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"bwlm"}))
@pytest.mark.parametrize(("form", "kind"), ENGINE_FORMS)
def test_every_loss_matches_reference_in_every_form(name: str, form: str, kind: str) -> None:
    # Each loss's own formula once per form: every reduction, with and without label smoothing.
    logits, target = make_inputs(form, kind, seed=1)
    for reduction in REDUCTIONS:
        for smoothing in (0.0, 0.2):
            assert_matches_expected(name, logits, target, reduction, smoothing)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_empty_batch(name: str) -> None:
    # N = 0: 'none' is empty, 'sum' is 0 (plus BWLM's penalty), 'mean' is 0 / 0 = nan (F.cross_entropy's rule).
    logits, target = make_inputs("batched", "index", batch=0)
    call, _ = LOSSES[name]
    for reduction in REDUCTIONS:
        got, got_grad = value_and_grad(lambda z, r=reduction: call(z, target, COUNTS, reduction=r), logits)
        want = expected(name, logits, target, reduction, 0.0)
        torch.testing.assert_close(got, want, equal_nan=True)
        assert got_grad.shape == (0, C)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("form", FORMS)
def test_one_hot_probabilities_equal_class_indices(name: str, form: str) -> None:
    logits, target = make_inputs(form, "index", seed=3)  # no ignored entries: probabilities cannot express them
    class_dim = 0 if form == "unbatched" else 1
    one_hot = F.one_hot(target, C).movedim(-1, class_dim).double()
    call, _ = LOSSES[name]
    for reduction in REDUCTIONS:
        a, grad_a = value_and_grad(lambda z, r=reduction: call(z, target, COUNTS, reduction=r), logits)
        b, grad_b = value_and_grad(lambda z, r=reduction: call(z, one_hot, COUNTS, reduction=r), logits)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(grad_a, grad_b)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mixup_mixes_the_losses(name: str) -> None:
    # The meaning of probability targets: lam * e_a + (1 - lam) * e_b gives lam * loss(a) + (1 - lam) * loss(b).
    logits, _ = make_inputs("batched", "probs", seed=4)
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
    _paths.fused_everywhere(monkeypatch)
    logits, target = make_inputs("spatial", "index_ignore", seed=5)
    call, _ = LOSSES[name]
    fast = value_and_grad(lambda z: call(z, target, COUNTS, reduction="mean"), logits)
    with _paths.reference_path():
        slow = value_and_grad(lambda z: call(z, target, COUNTS, reduction="mean"), logits)
    torch.testing.assert_close(fast, slow)


@given(problem=forms(), name=st.sampled_from(sorted(LOSSES)), reduction=st.sampled_from(REDUCTIONS))
def test_property_every_form(problem: tuple, name: str, reduction: str) -> None:
    logits, target = problem
    call, _ = LOSSES[name]
    torch.testing.assert_close(
        call(logits, target, COUNTS, reduction=reduction), expected(name, logits, target, reduction, 0.0)
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_probability_targets_are_checked(name: str) -> None:
    logits, probs = make_inputs("batched", "probs")
    call, _ = LOSSES[name]
    with pytest.raises(ValueError, match=r"`target` of class probabilities to be finite, >= 0 and to sum to 1"):
        call(logits, probs * 2, COUNTS)
    with pytest.raises(ValueError, match=r"`target` of class probabilities to have the shape of `logits`"):
        call(logits, probs[:, :3], COUNTS)
    with pytest.raises(ValueError, match=r"`target` of class indices to have shape \(6,\)"):
        call(logits, torch.zeros(6, 2, dtype=torch.long), COUNTS)
