"""The multi-label losses: asymmetric, distribution-balanced, class-balanced focal and logit-adjusted BCE.

The engine's multi-hot path is tested once per input form (with the asymmetric loss, whose formula covers both
exponents and the shift); each loss once per formula against the float64 re-derivations of ``tests.reference``,
with soft labels and unknown elements, in every reduction.
"""

from __future__ import annotations

import io
import math
import pickle
from functools import partial

import pytest
import torch
import torch.nn.functional as F

import longtail_losses as ltl
from longtail_losses import functional as LF
from longtail_losses.losses import _kernel
from tests import reference as ref
from tests.inputs import (
    FORMS,
    IGNORE_INDEX,
    MULTIHOT_COUNTS,
    MULTIHOT_KINDS,
    MULTIHOT_SAMPLES,
    REDUCTIONS,
    make_multihot,
)
from tests.losses._checks import grad

COUNTS, N = torch.tensor(MULTIHOT_COUNTS), MULTIHOT_SAMPLES
DB = {"alpha": 0.1, "beta": 10.0, "mu": 0.2, "gamma": 2.0, "lam": 2.0, "kappa": 0.05}

# Each loss: its function with hyperparameters that exercise every term, and its float64 per-element reference.
SPEC = {
    "asl": (
        partial(LF.asymmetric_loss, gamma_neg=3.0, gamma_pos=0.5, clip=0.1),
        partial(ref.asl_elements, gamma_neg=3.0, gamma_pos=0.5, clip=0.1),
    ),
    "db": (
        partial(LF.distribution_balanced_loss, class_counts=COUNTS, num_samples=N, lambda_=2.0),
        partial(ref.db_elements, counts=COUNTS, num_samples=N, **DB),
    ),
    "cb_focal": (
        partial(LF.multilabel_class_balanced_focal_loss, class_counts=COUNTS, beta=0.99, gamma=1.5),
        lambda z, t: ref.cb_weights(COUNTS, 0.99) * ref.focal_elements(z, t, 1.5),
    ),
    "la_bce": (
        partial(LF.logit_adjusted_bce_loss, class_counts=COUNTS, num_samples=N, tau=1.5),
        partial(ref.la_bce_elements, counts=COUNTS, num_samples=N, tau=1.5),
    ),
}


def check(loss, elements, logits, target, reduction, **kw):
    """Values and gradients of ``loss`` equal the reference's, for a random positive cotangent."""
    library = lambda z: loss(z, target, reduction=reduction, **kw)  # noqa: E731
    mean_over = kw.get("mean_over", "elements")
    expected = lambda z: ref.multihot_apply(elements, z, target, reduction, mean_over=mean_over)  # noqa: E731
    for got, want in zip(grad(library, logits), grad(expected, logits)):
        torch.testing.assert_close(got, want)


# ----------------------------------------------------------------------------------------------------------------
# The engine: every input form, reduction and target kind, once (asymmetric loss)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", MULTIHOT_KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_engine_input_forms(form, kind, reduction):
    logits, target = make_multihot(form, kind, seed=3)
    loss, elements = SPEC["asl"]
    check(loss, elements, logits, target, reduction)
    out = loss(logits, target, reduction=reduction)
    assert out.shape == (logits.shape if reduction == "none" else ())


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_mean_over_samples_and_weight(path):
    logits, target = make_multihot("spatial", "hard_unknown", seed=4)
    loss, elements = SPEC["asl"]
    with _kernel.reference_path(path == "reference"):
        check(loss, elements, logits, target, "mean", mean_over="samples")
        weight = torch.rand(logits.shape[1], 1, 1, dtype=torch.float64)  # broadcast like BCEWithLogitsLoss
        got = loss(logits, target, reduction="none", weight=weight)
        torch.testing.assert_close(got, weight * loss(logits, target, reduction="none"))
        # 'mean' with a weight divides by the known elements, not by the summed weights (BCEWithLogitsLoss).
        full = make_multihot("batched", "hard", seed=5)
        w = torch.rand(full[0].shape, dtype=torch.float64)
        bce = F.binary_cross_entropy_with_logits(full[0], full[1].double(), weight=w)
        torch.testing.assert_close(LF.asymmetric_loss(*full, gamma_neg=0, gamma_pos=0, clip=0, weight=w), bce)


def test_target_dtypes_and_smoothing():
    logits, target = make_multihot("batched", "hard", seed=6)
    expected = LF.asymmetric_loss(logits, target)
    for dtype in (torch.bool, torch.uint8, torch.int32, torch.float16, torch.float32):
        torch.testing.assert_close(LF.asymmetric_loss(logits, target.to(dtype)), expected)
    # label_smoothing eps: t (1 - eps) + eps / 2, each binary label on its own.
    smoothed = target.double() * 0.8 + 0.1
    torch.testing.assert_close(
        LF.asymmetric_loss(logits, target, label_smoothing=0.2), LF.asymmetric_loss(logits, smoothed)
    )


def test_unchecked_invalid_target_is_nan():
    logits, target = make_multihot("batched", "hard", seed=7)
    target[1, 2] = 3
    out = LF.asymmetric_loss(logits, target, reduction="none", validate_args=False)
    assert math.isnan(out[1, 2])
    assert torch.isfinite(out[torch.arange(6) != 1]).all()
    with pytest.raises(ValueError, match=r"multi-hot `target` value to be in \[0, 1\] .* got 3 at position 7"):
        LF.asymmetric_loss(logits, target)


def test_exceptions():
    z, t = make_multihot("batched", "hard")
    with pytest.raises(ValueError, match=r"Expected multi-hot `target` to have the shape of `logits` \(6, 5\)"):
        LF.asymmetric_loss(z, t[:, :3])
    with pytest.raises(TypeError, match="Expected `logits` to be a floating-point tensor"):
        LF.asymmetric_loss(t, t)
    with pytest.raises(ValueError, match=r"`weight` to be broadcastable to the shape of `logits` \(6, 5\)"):
        LF.asymmetric_loss(z, t, weight=torch.ones(6))
    with pytest.raises(ValueError, match=r"Expected `mean_over` to be one of \('elements', 'samples'\)"):
        LF.asymmetric_loss(z, t, mean_over="rows")
    with pytest.raises(ValueError, match=r"Expected `clip` to be in \[0, 1\)"):
        ltl.AsymmetricLoss(clip=1.0)
    with pytest.raises(ValueError, match="Expected `gamma_neg` to be a finite number >= 0"):
        LF.asymmetric_loss(z, t, gamma_neg=-1.0)
    with pytest.raises(TypeError, match="Expected `detach_focal_weight` to be a bool"):
        ltl.AsymmetricLoss(detach_focal_weight=1)
    with pytest.raises(ValueError, match="Expected `logits` to have C = 4 classes"):
        ltl.AsymmetricLoss(num_classes=4)(z, t)
    with pytest.raises(ValueError, match=r"`class_counts` to be < num_samples=90 .* got 90 for class 0"):
        LF.distribution_balanced_loss(z, t, COUNTS, 90)
    with pytest.raises(ValueError, match="Expected every entry of `class_counts` to be > 0"):
        ltl.LogitAdjustedBCE([3, 0, 1, 1, 1], 10)
    with pytest.raises(ValueError, match="Expected `lambda_` to be a finite number > 0"):
        ltl.DistributionBalancedLoss(COUNTS, N, lambda_=0.0)
    with pytest.raises(ValueError, match=r"Expected `logits` to have C = 5 classes on dimension 1"):
        LF.logit_adjusted_bce_loss(z[:, :4], t[:, :4], COUNTS, N)


# ----------------------------------------------------------------------------------------------------------------
# Each loss against its float64 re-derivation, soft labels and unknown elements, every reduction


@pytest.mark.parametrize("name", SPEC)
@pytest.mark.parametrize("kind", ["hard_unknown", "soft"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_reference(name, kind, reduction):
    logits, target = make_multihot("batched", kind, seed=11)
    check(*SPEC[name], logits, target, reduction)


@pytest.mark.parametrize("name", SPEC)
def test_fast_path_equals_reference(name):
    loss, _ = SPEC[name]
    logits, target = make_multihot("spatial", "hard_unknown", seed=12)
    fn = lambda z: loss(z, target, reduction="none")  # noqa: E731
    fast = grad(fn, logits)
    with _kernel.reference_path():
        slow = grad(fn, logits)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)
    # Double backward goes through the reference.
    x = logits.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(x, target), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    with _kernel.reference_path():
        y = logits.clone().requires_grad_()
        (h,) = torch.autograd.grad(loss(y, target), y, create_graph=True)
        (hh,) = torch.autograd.grad(h.sum(), y)
    torch.testing.assert_close(gg, hh)


@pytest.mark.parametrize("name", SPEC)
def test_gradcheck(name):
    loss, _ = SPEC[name]
    logits, target = make_multihot("batched", "soft", seed=13, scale=1.0)
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: loss(z, target, reduction="none"), (x,), fast_mode=True)


@pytest.mark.parametrize("name", SPEC)
@pytest.mark.parametrize("path", ["reference", "fast"])
def test_finite_at_large_logits(name, path):
    loss, _ = SPEC[name]
    logits = torch.tensor([[1e4, -1e4, 0.0, 30.0, -30.0], [-1e4, 1e4, 1e-3, -90.0, 90.0]], dtype=torch.float32)
    for target in (torch.tensor([[1, 1, 0, 1, 0], [0, 0, 1, 0, 1]]), torch.full((2, 5), 0.5)):
        with _kernel.reference_path(path == "reference"):
            out, g = grad(lambda z: loss(z, target, reduction="none"), logits)  # noqa: B023
        assert torch.isfinite(out).all(), out
        assert torch.isfinite(g).all(), g
    # A logit of 1e4 on the wrong side costs about 1e4 per unit of weight, as BCE: no overflow, no saturation to 0.
    bce = LF.asymmetric_loss(logits, torch.ones(2, 5), gamma_neg=0, gamma_pos=0, clip=0, reduction="none")
    torch.testing.assert_close(bce, F.binary_cross_entropy_with_logits(logits, torch.ones(2, 5), reduction="none"))


@pytest.mark.parametrize("name", SPEC)
def test_autocast_bfloat16(name):
    loss, _ = SPEC[name]
    logits, target = make_multihot("batched", "soft", seed=14, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(logits.bfloat16(), target)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, loss(logits.bfloat16().float(), target))


# ----------------------------------------------------------------------------------------------------------------
# Degenerate settings give the simpler loss exactly, gradients included


def _bce(z, t):
    return F.binary_cross_entropy_with_logits(z, t.to(z.dtype))


@pytest.mark.parametrize(
    ("loss", "simpler"),
    [
        (partial(LF.asymmetric_loss, gamma_neg=0.0, gamma_pos=0.0, clip=0.0), _bce),
        (partial(LF.logit_adjusted_bce_loss, class_counts=COUNTS, num_samples=N, tau=0.0), _bce),
        (partial(LF.multilabel_class_balanced_focal_loss, class_counts=COUNTS, beta=0.0, gamma=0.0), _bce),
        (
            partial(LF.distribution_balanced_loss, class_counts=COUNTS, num_samples=N, rebalance=False, kappa=0.0,
                    lambda_=1.0, gamma=0.0),
            _bce,
        ),
        (
            partial(LF.distribution_balanced_loss, class_counts=COUNTS, num_samples=N, rebalance=False, kappa=0.0,
                    lambda_=1.0, gamma=2.0),
            partial(LF.asymmetric_loss, gamma_neg=2.0, gamma_pos=2.0, clip=0.0),
        ),
        (
            partial(LF.multilabel_class_balanced_focal_loss, class_counts=COUNTS, beta=0.0, gamma=2.0),
            partial(LF.asymmetric_loss, gamma_neg=2.0, gamma_pos=2.0, clip=0.0),
        ),
    ],
)  # fmt: skip
def test_degenerate_is_simpler_loss(loss, simpler):
    logits, target = make_multihot("batched", "soft", seed=15)
    for got, want in zip(grad(lambda z: loss(z, target), logits), grad(lambda z: simpler(z, target), logits)):
        torch.testing.assert_close(got, want)


def test_asl_detached_focal_weight():
    """The value is unchanged; the gradient treats (1-p)^g+ and p_m^g- as constants (ASL's official option)."""
    logits, target = make_multihot("batched", "hard", seed=16)
    opts = {"gamma_neg": 4.0, "gamma_pos": 1.0, "clip": 0.05}
    torch.testing.assert_close(
        LF.asymmetric_loss(logits, target, detach_focal_weight=True, **opts), LF.asymmetric_loss(logits, target, **opts)
    )

    def detached(z):
        t, p = target.double(), torch.sigmoid(z)
        p_m = (p - 0.05).clamp_min(0)
        loss = -t * (1 - p).detach() * torch.log(p) - (1 - t) * (p_m**4).detach() * torch.log(1 - p_m)
        return loss.mean()

    for path in (True, False):
        with _kernel.reference_path(path):
            got = grad(lambda z: LF.asymmetric_loss(z, target, detach_focal_weight=True, **opts), logits)
        torch.testing.assert_close(got[1], grad(detached, logits)[1])


def test_db_bias_sign_is_the_reference_codes():
    """Rare classes: the loss sees z + (kappa / lambda) logit(p) < z; the paper's form is kappa -> -lambda kappa."""
    logits, target = make_multihot("batched", "hard", seed=17)
    off = {"rebalance": False, "gamma": 0.0, "lambda_": 1.0}
    got = LF.distribution_balanced_loss(logits, target, COUNTS, N, kappa=0.5, reduction="none", **off)
    shift = 0.5 * torch.log(COUNTS / (N - COUNTS)).double()
    torch.testing.assert_close(
        got, F.binary_cross_entropy_with_logits(logits + shift, target.double(), reduction="none")
    )
    assert (shift[2:] < 0).all()


def test_db_weights_rows_without_positive():
    w = LF.rebalanced_weights(torch.zeros(2, 5, dtype=torch.float64), COUNTS, alpha=0.1, beta=10.0, mu=0.2)
    torch.testing.assert_close(w, torch.full((2, 5), 1.1, dtype=torch.float64))
    logits = torch.randn(2, 5, dtype=torch.float64)
    assert torch.isfinite(LF.distribution_balanced_loss(logits, torch.zeros(2, 5), COUNTS, N)).all()


# ----------------------------------------------------------------------------------------------------------------
# Modules


MODULES = {
    "asl": (lambda **o: ltl.AsymmetricLoss(gamma_neg=3.0, gamma_pos=0.5, clip=0.1, **o), "asl"),
    "db": (lambda **o: ltl.DistributionBalancedLoss(COUNTS, N, **o), "db"),
    "cb_focal": (lambda **o: ltl.MultiLabelClassBalancedFocal(COUNTS, beta=0.99, gamma=1.5, **o), "cb_focal"),
    "la_bce": (lambda **o: ltl.LogitAdjustedBCE(COUNTS, N, tau=1.5, **o), "la_bce"),
}


@pytest.mark.parametrize("name", MODULES)
def test_module_equals_functional(name):
    make, _ = MODULES[name]
    logits, target = make_multihot("spatial", "hard_unknown", seed=18)
    weight = torch.rand(logits.shape, dtype=torch.float64)
    module = make(reduction="sum")
    torch.testing.assert_close(
        module(logits, target, weight), SPEC[name][0](logits, target, reduction="sum", weight=weight)
    )
    assert repr(module).startswith(type(module).__name__ + "(")
    assert "reduction='sum'" in repr(module)


@pytest.mark.parametrize("name", MODULES)
def test_state_dict_pickle_roundtrip_and_to(name):
    make, _ = MODULES[name]
    module = make()
    logits, target = make_multihot("batched", "soft", seed=19)
    expected = module(logits, target)
    torch.testing.assert_close(pickle.loads(pickle.dumps(module))(logits, target), expected)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    fresh = make()
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    torch.testing.assert_close(fresh(logits, target), expected)
    half = make().half()
    for value in half.buffers():
        assert value.dtype == torch.int64  # counts survive .half()
    torch.testing.assert_close(half(logits.float(), target.float()), expected.float())


def test_module_load_state_dict_checks_counts():
    module = ltl.DistributionBalancedLoss(COUNTS, N)
    with pytest.raises(ValueError, match=r"state_dict\['class_counts'\]"):
        module.load_state_dict({"class_counts": torch.tensor([1, 0, 1, 1, 1])})


@pytest.mark.slow
@pytest.mark.parametrize("name", SPEC)
def test_compile_fullgraph(name):
    loss, _ = SPEC[name]
    logits, target = make_multihot("batched", "hard_unknown", seed=20, dtype=torch.float32)
    compiled = torch.compile(lambda z, t: loss(z, t, validate_args=False), fullgraph=True, backend="eager")
    got = grad(lambda z: compiled(z, target), logits)
    with _kernel.reference_path():
        want = grad(lambda z: loss(z, target), logits)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_kernel_shift_matches_naive_and_autograd():
    """focal_terms with clip: value against the naive formula (where it is accurate), derivative against autograd."""
    s = torch.tensor([-1e4, -30.0, -5.0, -1.0, -0.1, 0.0, 0.1, 1.0, 3.0, 5.0, 30.0, 1e4], dtype=torch.float64)
    for gamma in (0.0, 0.5, 1.0, 4.0):
        for clip in (0.0, 0.05, 0.3):
            for detach in (False, True):
                x = s.clone().requires_grad_()
                value, derivative = _kernel.focal_terms(x, gamma, clip=clip, detach=detach)
                (auto,) = torch.autograd.grad(value.sum(), x)
                torch.testing.assert_close(auto, derivative.detach())
                q_m = (torch.sigmoid(-s) - clip).clamp_min(0)
                naive = -(q_m**gamma) * torch.log(1 - q_m)
                moderate = s.abs() <= 5
                torch.testing.assert_close(value.detach()[moderate], naive[moderate])
                assert torch.isfinite(value).all()


def test_ignore_index_custom():
    logits, target = make_multihot("batched", "hard", seed=21)
    target[0, :2] = -1
    got = LF.asymmetric_loss(logits, target, ignore_index=-1, reduction="sum")
    mask = target != -1
    want = LF.asymmetric_loss(logits, target.clamp_min(0), reduction="none")[mask].sum()
    torch.testing.assert_close(got, want)
    assert IGNORE_INDEX == -100
