"""Logit adjustment (Menon et al. 2021): the loss, post-hoc adjustment and tau tuning, against float64 references.

The input forms are the engine's (tests/losses/test_input_forms.py); here each form is checked once, against
``F.cross_entropy`` on the shifted logits, and the formula once more for any tau against Menon et al.'s equation.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests import reference as ref
from tests.inputs import COUNTS, FORM_KINDS, FORMS, REDUCTIONS, C, make_inputs, problems
from tests.losses import _checks as checks


def shifted_cross_entropy(logits: Tensor, target: Tensor, tau: float, **options: object) -> Tensor:
    """F.cross_entropy of the logits plus tau log pi on the class dimension (Menon et al. eq. (10))."""
    n = torch.tensor(COUNTS, dtype=torch.float64)
    shift = tau * torch.log(n / n.sum())
    shift = shift.view(-1, *([1] * (logits.ndim - 2))) if logits.ndim > 2 else shift
    return F.cross_entropy(logits + shift, target, **options)  # type: ignore[arg-type]


class TestLogitAdjustedLoss:
    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_matches_reference(self, form: str, kind: str) -> None:
        # One equivalence per input form, every reduction, with and without label smoothing.
        logits, target = make_inputs(form, kind, seed=len(form) + len(kind))
        counts = torch.tensor(COUNTS)
        for reduction in REDUCTIONS:
            for smoothing in (0.0, 0.2):
                options = {"reduction": reduction, "label_smoothing": smoothing}
                checks.assert_matches(
                    lambda x, o=options: LF.logit_adjusted_loss(x, target, counts, tau=1.7, **o),
                    lambda x, o=options: shifted_cross_entropy(x, target, 1.7, **o),
                    logits,
                )

    @pytest.mark.parametrize(("tau", "kind"), [(0.5, "index_ignore"), (-1.0, "probs")])
    def test_matches_formula(self, tau: float, kind: str) -> None:
        # Any tau, against Menon et al.'s equation written out in float64 (tests/reference.py).
        logits, target = make_inputs("spatial", kind, seed=2)

        def per_rows(z: Tensor, dist: Tensor, labels: Tensor | None) -> tuple[Tensor, None]:
            return ref.logit_adjusted_rows(z, dist, COUNTS, tau), None

        for reduction in REDUCTIONS:
            checks.assert_matches(
                lambda x, r=reduction: LF.logit_adjusted_loss(
                    x, target, COUNTS, tau=tau, reduction=r, label_smoothing=0.2
                ),
                lambda x, r=reduction: ref.form_loss(x, target, per_rows, reduction=r, smoothing=0.2),
                logits,
            )

    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_tau_one_equals_balanced_softmax(self, form: str, kind: str) -> None:
        logits, target = make_inputs(form, kind, seed=3)
        for reduction in REDUCTIONS:
            la = checks.grad(
                lambda x, r=reduction: LF.logit_adjusted_loss(x, target, COUNTS, tau=1.0, reduction=r), logits
            )
            bs = checks.grad(lambda x, r=reduction: LF.balanced_softmax_loss(x, target, COUNTS, reduction=r), logits)
            torch.testing.assert_close(la, bs, rtol=0, atol=0)  # the same computation: exactly equal
            module = ltl.LogitAdjustedLoss(COUNTS, tau=1.0, reduction=reduction)
            torch.testing.assert_close(
                module(logits, target), ltl.BalancedSoftmax(COUNTS, reduction=reduction)(logits, target)
            )

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_tau_zero_equals_cross_entropy(self, reduction: str) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=4)
        la = checks.grad(lambda x: LF.logit_adjusted_loss(x, target, COUNTS, tau=0.0, reduction=reduction), logits)
        ce = checks.grad(lambda x: F.cross_entropy(x, target, reduction=reduction), logits)
        torch.testing.assert_close(la, ce)

    def test_known_values(self) -> None:
        logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        # pi = (0.9, 0.1), tau = 0.5: shifted logits z + 0.5 log pi.
        a0 = [2.0 + 0.5 * math.log(0.9), 0.5 * math.log(0.1)]
        a1 = [0.5 * math.log(0.9), 1.0 + 0.5 * math.log(0.1)]
        l0 = -a0[0] + math.log(math.exp(a0[0]) + math.exp(a0[1]))
        l1 = -a1[1] + math.log(math.exp(a1[0]) + math.exp(a1[1]))
        out = LF.logit_adjusted_loss(logits, torch.tensor([0, 1]), [90, 10], tau=0.5, reduction="none")
        torch.testing.assert_close(out, torch.tensor([l0, l1], dtype=torch.float64))

    def test_ignore_index(self) -> None:
        logits, target = make_inputs("batched", "index", seed=5)
        target[2] = 7
        out = LF.logit_adjusted_loss(logits, target, COUNTS, tau=0.7, ignore_index=7, reduction="none")
        assert out[2] == 0.0
        mean = LF.logit_adjusted_loss(logits, target, COUNTS, tau=0.7, ignore_index=7)
        torch.testing.assert_close(mean, out.sum() / (len(target) - 1))
        unbatched = LF.logit_adjusted_loss(logits[0], torch.tensor(-100), COUNTS, reduction="sum")
        assert unbatched == 0.0

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_computes_in_float32(self, dtype: torch.dtype) -> None:
        checks.assert_half_in_float32(functools.partial(LF.logit_adjusted_loss, tau=0.5), dtype, seed=6)

    def test_exceptions(self) -> None:
        logits, target = make_inputs("batched", "index")
        with pytest.raises(ValueError, match="Expected `tau` to be a finite number, but got inf"):
            LF.logit_adjusted_loss(logits, target, COUNTS, tau=math.inf)
        with pytest.raises(ValueError, match="Expected `tau` to be a real number, but got nan"):
            ltl.LogitAdjustedLoss(COUNTS, tau=math.nan)
        with pytest.raises(TypeError, match="Expected `tau` to be a real number, but got '1'"):
            ltl.LogitAdjustedLoss(COUNTS, tau="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `logits` to have C = "):
            LF.logit_adjusted_loss(logits[:, :3], target, COUNTS)
        with pytest.raises(ValueError, match="Expected every `target` label to be in"):
            LF.logit_adjusted_loss(logits, torch.full_like(target, C), COUNTS)
        with pytest.raises(ValueError, match="Expected every entry of `class_counts` to be > 0"):
            ltl.LogitAdjustedLoss([3, 0, 1, 1, 1])

    def test_gradcheck(self) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=7)
        probs = make_inputs("batched", "probs", seed=7)
        assert torch.autograd.gradcheck(
            lambda x: LF.logit_adjusted_loss(x, target, COUNTS, tau=0.6), (logits.requires_grad_(),), fast_mode=True
        )
        assert torch.autograd.gradcheck(
            lambda x: LF.logit_adjusted_loss(x, probs[1], COUNTS, tau=1.4, label_smoothing=0.1),
            (probs[0].requires_grad_(),),
            fast_mode=True,
        )

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_module_equals_functional(self, reduction: str) -> None:
        options = {"tau": 0.3, "reduction": reduction, "label_smoothing": 0.1}
        module, function = ltl.LogitAdjustedLoss, LF.logit_adjusted_loss
        checks.assert_module_equals_functional(module, function, options, seed=8, fields="tau=0.3")

    def test_state_dict_pickle_roundtrip(self) -> None:
        logits, target = make_inputs("batched", "index", seed=9)
        checks.roundtrip_checks(ltl.LogitAdjustedLoss(COUNTS, tau=0.4), logits, target)

    def test_to_moves_buffers(self) -> None:
        module = ltl.LogitAdjustedLoss(COUNTS).to("meta")
        assert module.class_counts.device.type == "meta"
        assert ltl.LogitAdjustedLoss(COUNTS).half().class_counts.dtype == torch.int64

    @given(problems(), st.floats(-3.0, 3.0), st.floats(-50.0, 50.0), st.integers(1, 100))
    def test_invariances(self, problem: tuple[Tensor, Tensor, Tensor], tau: float, shift: float, factor: int) -> None:
        logits, target, counts = problem
        out = LF.logit_adjusted_loss(logits, target, counts, tau=tau, reduction="sum")
        assert torch.isfinite(out)
        assert out >= 0
        torch.testing.assert_close(
            LF.logit_adjusted_loss(logits + shift, target, counts, tau=tau, reduction="sum"), out
        )
        torch.testing.assert_close(
            LF.logit_adjusted_loss(logits, target, counts * factor, tau=tau, reduction="sum"), out
        )


class TestPosthocAdjust:
    @pytest.mark.parametrize("form", FORMS)
    @pytest.mark.parametrize("tau", [0.0, 1.0, 2.5])
    def test_matches_reference(self, form: str, tau: float) -> None:
        logits, _ = make_inputs(form, "index", seed=11)
        n = torch.tensor(COUNTS, dtype=torch.float64)
        log_pi = torch.log(n / n.sum())
        view = log_pi if logits.ndim <= 2 else log_pi.view(-1, 1, 1)
        checks.assert_matches(lambda x: ltl.posthoc_adjust(x, COUNTS, tau=tau), lambda x: x - tau * view, logits)

    def test_known_values_and_argmax(self) -> None:
        logits = torch.tensor([[2.0, 1.5]])
        out = ltl.posthoc_adjust(logits, [90, 10])
        torch.testing.assert_close(out, torch.tensor([[2.0 - math.log(0.9), 1.5 - math.log(0.1)]]))
        assert out.argmax(1).item() == 1

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
    def test_keeps_dtype(self, dtype: torch.dtype) -> None:
        logits = torch.zeros(2, C, dtype=dtype)
        assert ltl.posthoc_adjust(logits, COUNTS).dtype == dtype

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match=r"Expected `logits` to have C = 5 classes on dim"):
            ltl.posthoc_adjust(torch.zeros(2, 3), COUNTS)
        with pytest.raises(ValueError, match="Expected `logits` to have C = "):
            ltl.posthoc_adjust(torch.tensor(1.0), [1])
        with pytest.raises(TypeError, match="Expected `logits` to be a floating-point tensor, but got dtype"):
            ltl.posthoc_adjust(torch.zeros(2, C, dtype=torch.int64), COUNTS)
        with pytest.raises(TypeError, match=r"Expected `logits` to be a torch\.Tensor, but got list"):
            ltl.posthoc_adjust([0.0] * C, COUNTS)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `tau` to be a finite number"):
            ltl.posthoc_adjust(torch.zeros(2, C), COUNTS, tau=-math.inf)

    def test_gradcheck(self) -> None:
        logits, _ = make_inputs("spatial", "index", seed=12)
        assert torch.autograd.gradcheck(
            lambda x: ltl.posthoc_adjust(x, COUNTS, tau=0.8), (logits.requires_grad_(),), fast_mode=True
        )


def _ref_balanced_accuracy(pred: list[int], target: list[int]) -> float:
    per_class = []
    for c in sorted(set(target)):
        idx = [i for i, y in enumerate(target) if y == c]
        per_class.append(sum(pred[i] == c for i in idx) / len(idx))
    return sum(per_class) / len(per_class)


class TestTuneTau:
    def test_matches_brute_force(self) -> None:
        g = torch.Generator().manual_seed(0)
        counts = torch.tensor(COUNTS)
        target = torch.arange(200) % C
        # A model biased towards the head, as cross-entropy on long-tailed data gives.
        logits = torch.randn(200, C, generator=g, dtype=torch.float64) + 2.0 * F.one_hot(target, C)
        logits = logits + torch.log(counts.double() / counts.sum())
        taus = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
        n = counts.double()
        scores = []
        for tau in taus:
            pred = (logits - tau * torch.log(n / n.sum())).argmax(1).tolist()
            scores.append(_ref_balanced_accuracy(pred, target.tolist()))
        best = taus[max(range(len(taus)), key=lambda i: (scores[i], -i))]
        assert ltl.tune_tau(logits, target, counts, taus=taus) == best
        assert best > 0.0  # the adjustment helps here
        assert ltl.tune_tau(logits, target, counts, taus=torch.tensor(taus)) == best

    def test_ties_go_to_the_first(self) -> None:
        logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
        assert ltl.tune_tau(logits, torch.tensor([0, 1]), [2, 1], taus=[0.3, 0.0, 0.1]) == 0.3

    def test_ignore_index(self) -> None:
        logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [9.0, 0.0]])
        target = torch.tensor([0, 1, -100])
        assert ltl.tune_tau(logits, target, [2, 1], taus=[0.0, 1.0]) == 0.0

    def test_exceptions(self) -> None:
        logits, target = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
        with pytest.raises(ValueError, match="Expected `taus` to hold at least one value, but got an empty"):
            ltl.tune_tau(logits, target, [2, 1], taus=[])
        with pytest.raises(ValueError, match="Expected `tau` to be a real number, but got nan"):
            ltl.tune_tau(logits, target, [2, 1], taus=[0.0, math.nan])
        with pytest.raises(TypeError, match="Expected `taus` to be a sequence of real numbers, but got float"):
            ltl.tune_tau(logits, target, [2, 1], taus=1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `logits` of shape"):
            ltl.tune_tau(torch.zeros(2, 2, 3), torch.zeros(2, 3, dtype=torch.int64), [2, 1])
        with pytest.raises(ValueError, match="Expected every `target` label to be in"):
            ltl.tune_tau(logits, torch.tensor([0, 1, 2, 1]), [2, 1])
        with pytest.raises(ValueError, match="Expected `target` to hold at least one label that is not ignore_index"):
            ltl.tune_tau(logits, torch.full((4,), -100), [2, 1])


@given(st.integers(0, 2**31 - 1), st.integers(2, 6), st.integers(4, 40))
@settings(max_examples=60, deadline=None)
def test_tune_tau_returns_the_first_exact_maximiser(seed: int, num_classes: int, n: int) -> None:
    from fractions import Fraction

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes, generator=g).round(decimals=1)  # coarse logits: many exact ties
    target = torch.randint(0, num_classes, (n,), generator=g)
    counts = torch.randint(1, 50, (num_classes,), generator=g)
    taus = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    log_prior = (counts.double().log() - counts.double().sum().log()).tolist()

    def exact(tau: float) -> Fraction:  # the balanced accuracy as a rational number: no rounding at all
        preds = (logits.double() - tau * torch.tensor(log_prior, dtype=torch.float64)).argmax(1)
        present = [c for c in range(num_classes) if (target == c).any()]
        return sum(
            (Fraction(int(((preds == c) & (target == c)).sum()), int((target == c).sum())) for c in present),
            Fraction(0),
        ) / len(present)

    scores = [exact(t) for t in taus]
    assert ltl.tune_tau(logits, target, counts, taus=taus) == taus[scores.index(max(scores))]


def test_tune_tau_takes_a_numpy_grid() -> None:
    import numpy as np

    logits, target = torch.tensor([[2.0, 0.5], [3.0, 0.0], [1.0, 0.9], [0.0, 1.0]]), torch.tensor([0, 0, 1, 1])
    assert ltl.tune_tau(logits, target, [90, 10], taus=np.array([0.0, 0.5, 1.0])) == 0.5
