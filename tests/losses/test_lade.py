"""LADE (Hong et al. 2021) against a float64 re-derivation of the released code; shift_prior."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests import reference as ref
from tests.inputs import COUNTS, FORM_KINDS, REDUCTIONS, C, make_inputs
from tests.losses import _checks as checks


def expected(logits: Tensor, target: Tensor, reduction: str, smoothing: float, lam: float, alpha: float) -> Tensor:
    """PC softmax cross-entropy over any form plus alpha * LADER, added once (spread over kept entries for 'none')."""
    z, dist, keep, _, shape = ref.form_rows(logits, target, smoothing)
    n = torch.tensor(COUNTS, dtype=torch.float64)
    ce = -(dist * ref.log_softmax(z + torch.log(n / n.sum()))).sum(dim=1)
    out = ref.reduce_kept(ce, keep, reduction)
    reg = alpha * ref.lader(z, dist, keep, COUNTS, lam)
    if reduction != "none":
        return out + reg
    return (out + keep.double() * reg / keep.sum()).reshape(shape)


class TestLADELoss:
    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_matches_reference(self, form: str, kind: str) -> None:
        logits, target = make_inputs(form, kind, seed=80 + len(form) + len(kind))
        for reduction in REDUCTIONS:
            for smoothing in (0.0, 0.2):
                checks.assert_matches(
                    lambda x, r=reduction, s=smoothing: LF.lade_loss(
                        x, target, COUNTS, remine_lambda=0.3, estim_loss_weight=0.5, reduction=r, label_smoothing=s
                    ),
                    lambda x, r=reduction, s=smoothing: expected(x, target, r, s, 0.3, 0.5),
                    logits,
                )

    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_no_regulariser_is_balanced_softmax(self, form: str, kind: str) -> None:
        logits, target = make_inputs(form, kind, seed=81)
        for reduction in REDUCTIONS:
            for smoothing in (0.0, 0.3):
                o = {"reduction": reduction, "label_smoothing": smoothing}
                lade = checks.grad(lambda x, o=o: LF.lade_loss(x, target, COUNTS, estim_loss_weight=0.0, **o), logits)
                bs = checks.grad(lambda x, o=o: LF.balanced_softmax_loss(x, target, COUNTS, **o), logits)
                torch.testing.assert_close(lade, bs)

    def test_absent_class_and_official_formula(self) -> None:
        # The released code, as written, on a batch where classes 3 and 4 have no sample.
        logits, _ = make_inputs("batched", "index", seed=82)
        target = torch.tensor([0, 0, 1, 2, 1, 0])
        n = torch.tensor(COUNTS, dtype=torch.float64)
        prior = n / n.sum()
        onehot = target == torch.arange(C).view(-1, 1)
        x_p = logits.T * onehot
        x_q = (logits - torch.log(prior + 1e-9) + math.log(1.0 / C + 1e-9)).T
        first = x_p.sum(-1) / (onehot.sum(-1).double() + 1e-8)
        second = torch.logsumexp(x_q, -1) - math.log(logits.shape[0])
        lader = -((first - second - 0.1 * second**2) * prior).sum()
        ce = torch.nn.functional.cross_entropy(logits + torch.log(prior + 1e-9), target)
        got = LF.lade_loss(logits, target, COUNTS)
        torch.testing.assert_close(got, ce + 0.1 * lader, rtol=1e-7, atol=1e-7)  # the code's 1e-9 and 1e-8

    def test_ignored_only_batch(self) -> None:
        logits, target = make_inputs("batched", "index", seed=83)
        target[:] = -100
        assert LF.lade_loss(logits, target, COUNTS, reduction="sum").item() == 0.0
        assert math.isnan(LF.lade_loss(logits, target, COUNTS).item())

    def test_exceptions(self) -> None:
        logits, target = make_inputs("batched", "index")
        with pytest.raises(ValueError, match=r"Expected `remine_lambda` to be a finite number >= 0, but got -1"):
            LF.lade_loss(logits, target, COUNTS, remine_lambda=-1)
        with pytest.raises(ValueError, match="Expected `estim_loss_weight` to be a real number, but got nan"):
            ltl.LADELoss(COUNTS, estim_loss_weight=math.nan)

    def test_gradcheck(self) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=84)
        assert torch.autograd.gradcheck(
            lambda x: LF.lade_loss(x, target, COUNTS, estim_loss_weight=0.5), (logits.requires_grad_(),), fast_mode=True
        )

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_module_equals_functional(self, reduction: str) -> None:
        options = {"remine_lambda": 0.2, "estim_loss_weight": 0.3, "reduction": reduction, "label_smoothing": 0.1}
        fields = "remine_lambda=0.2, estim_loss_weight=0.3"
        checks.assert_module_equals_functional(ltl.LADELoss, LF.lade_loss, options, seed=85, fields=fields)

    def test_state_dict_pickle_roundtrip(self) -> None:
        logits, target = make_inputs("batched", "index", seed=86)
        checks.roundtrip_checks(ltl.LADELoss(COUNTS), logits, target)
        checks.assert_half_in_float32(LF.lade_loss, torch.float16, seed=87)


class TestShiftPrior:
    def test_values(self) -> None:
        logits = torch.randn(4, C, dtype=torch.float64)
        prior = torch.tensor([5.0, 1.0, 1.0, 2.0, 1.0])
        torch.testing.assert_close(ltl.shift_prior(logits, prior), logits + torch.log(prior / prior.sum()).double())
        # A balanced test prior changes no prediction; the spatial form shifts dimension 1.
        balanced = ltl.shift_prior(logits, [1] * C)
        assert torch.equal(balanced.argmax(1), logits.argmax(1))
        spatial = torch.randn(2, C, 3)
        torch.testing.assert_close(
            ltl.shift_prior(spatial, prior), spatial + torch.log(prior / prior.sum()).view(-1, 1)
        )
        assert ltl.shift_prior(logits[0], [0, 1, 1, 1, 1])[0].item() == -math.inf

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="Expected `test_prior` to have a positive sum"):
            ltl.shift_prior(torch.zeros(2, 3), [0, 0, 0])
        with pytest.raises(ValueError, match="Expected `logits` to have C = 3 classes on dimension 1"):
            ltl.shift_prior(torch.zeros(2, 4), [1, 1, 1])
        with pytest.raises(TypeError, match="Expected `logits` to be a floating-point tensor"):
            ltl.shift_prior(torch.zeros(2, 3, dtype=torch.long), [1, 1, 1])
