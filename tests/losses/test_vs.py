"""VS loss (Kini et al. 2021) against a float64 re-derivation; CDT, logit adjustment, balanced softmax and CE as
special cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests import reference as ref
from tests.inputs import COUNTS, FORM_KINDS, REDUCTIONS, C, make_inputs
from tests.losses import _checks as checks

WEIGHT = torch.tensor([0.2, 0.5, 1.0, 1.5, 1.8], dtype=torch.float64)


class TestVSLoss:
    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_matches_reference(self, form: str, kind: str) -> None:
        # One equivalence per input form: every reduction, with and without label smoothing and class weights.
        logits, target = make_inputs(form, kind, seed=40 + len(form) + len(kind))
        checks.assert_weighted_softmax_matches(
            lambda x, r, s, w: LF.vs_loss(
                x, target, COUNTS, gamma=0.4, tau=1.3, class_weights=w, reduction=r, label_smoothing=s
            ),
            lambda z, dist, w: ref.vs_rows(z, dist, COUNTS, 0.4, 1.3, w),
            logits,
            target,
            WEIGHT,
        )

    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_special_cases(self, form: str, kind: str) -> None:
        logits, target = make_inputs(form, kind, seed=50)
        for reduction in REDUCTIONS:
            o = {"reduction": reduction}
            # tau = 0: CDT, the logits divided by (n_max / n_j)^gamma.
            checks.assert_matches(
                lambda x, o=o: LF.vs_loss(x, target, COUNTS, gamma=0.5, tau=0.0, **o),
                lambda x, o=o: ref.form_loss(
                    x, target, lambda z, d, y: (ref.cdt_rows(z, d, COUNTS, 0.5), None), reduction=o["reduction"]
                ),
                logits,
            )
            # gamma = 0: logit adjustment with the same tau; gamma = 0, tau = 1: balanced softmax.
            for tau in (0.7, 1.0):
                vs = checks.grad(lambda x, o=o, t=tau: LF.vs_loss(x, target, COUNTS, gamma=0.0, tau=t, **o), logits)
                la = checks.grad(lambda x, o=o, t=tau: LF.logit_adjusted_loss(x, target, COUNTS, tau=t, **o), logits)
                torch.testing.assert_close(vs, la)
            bs = checks.grad(lambda x, o=o: LF.balanced_softmax_loss(x, target, COUNTS, **o), logits)
            torch.testing.assert_close(
                checks.grad(lambda x, o=o: LF.vs_loss(x, target, COUNTS, gamma=0.0, **o), logits), bs
            )
            # gamma = tau = 0: weighted cross-entropy.
            ce = checks.grad(lambda x, o=o: F.cross_entropy(x, target, weight=WEIGHT, **o), logits)
            vs0 = checks.grad(
                lambda x, o=o: LF.vs_loss(x, target, COUNTS, gamma=0.0, tau=0.0, class_weights=WEIGHT, **o), logits
            )
            torch.testing.assert_close(vs0, ce)

    def test_known_values(self) -> None:
        # counts (90, 10): Delta = (1, (1/9)^0.3), iota = log(0.9), log(0.1).
        d1 = (10 / 90) ** 0.3
        a = [2.0 + math.log(0.9), 0.0 * d1 + math.log(0.1)]
        b = [0.0 + math.log(0.9), 1.0 * d1 + math.log(0.1)]
        l0 = -a[0] + math.log(math.exp(a[0]) + math.exp(a[1]))
        l1 = -b[1] + math.log(math.exp(b[0]) + math.exp(b[1]))
        logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        out = LF.vs_loss(logits, torch.tensor([0, 1]), [90, 10], reduction="none")
        torch.testing.assert_close(out, torch.tensor([l0, l1], dtype=torch.float64))

    def test_unchecked_invalid_label_gives_nan(self) -> None:
        logits, target = make_inputs("batched", "index", seed=51)
        target[0] = C + 3
        out = LF.vs_loss(logits, target, COUNTS, validate_args=False, reduction="none")
        assert math.isnan(out[0])
        assert torch.isfinite(out[1:]).all()

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_computes_in_float32(self, dtype: torch.dtype) -> None:
        checks.assert_half_in_float32(LF.vs_loss, dtype, seed=52)

    def test_exceptions(self) -> None:
        logits, target = make_inputs("batched", "index")
        with pytest.raises(ValueError, match=r"Expected `gamma` to be a finite number >= 0, but got -0\.1"):
            LF.vs_loss(logits, target, COUNTS, gamma=-0.1)
        with pytest.raises(ValueError, match="Expected `tau` to be a finite number"):
            ltl.VSLoss(COUNTS, tau=math.inf)
        with pytest.raises(ValueError, match=r"Expected `class_weights` to have shape \(5,\), but got"):
            LF.vs_loss(logits, target, COUNTS, class_weights=torch.ones(3))
        with pytest.raises(ValueError, match="Expected every `target` label to be in"):
            LF.vs_loss(logits, torch.full_like(target, -1), COUNTS)

    def test_gradcheck(self) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=53)
        assert torch.autograd.gradcheck(
            lambda x: LF.vs_loss(x, target, COUNTS, class_weights=WEIGHT), (logits.requires_grad_(),), fast_mode=True
        )

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_module_equals_functional(self, reduction: str) -> None:
        options = {"gamma": 0.2, "tau": 1.5, "class_weights": WEIGHT, "reduction": reduction, "label_smoothing": 0.1}
        fields = "gamma=0.2, tau=1.5, weighted=True"
        checks.assert_module_equals_functional(ltl.VSLoss, LF.vs_loss, options, seed=54, fields=fields)

    def test_state_dict_pickle_roundtrip(self) -> None:
        logits, target = make_inputs("batched", "index", seed=55)
        checks.roundtrip_checks(ltl.VSLoss(COUNTS), logits, target)
        checks.roundtrip_checks(ltl.VSLoss(COUNTS, class_weights=WEIGHT), logits, target)

    def test_to_moves_buffers(self) -> None:
        module = ltl.VSLoss(COUNTS, class_weights=WEIGHT).half()
        assert module.class_counts.dtype == torch.int64
        assert module.class_weights is not None
        assert module.class_weights.dtype == torch.float64
        assert module.to("meta").class_counts.device.type == "meta"
