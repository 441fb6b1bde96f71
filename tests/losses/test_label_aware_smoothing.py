"""Label-aware smoothing (Zhong et al. 2021, MiSLAS) against a float64 re-derivation of the released code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import longtail_losses as ltl
from longtail_losses import functional as LF
from longtail_losses.twostage import train_classifier
from tests import reference as ref
from tests.inputs import COUNTS, FORM_KINDS, REDUCTIONS, C, make_inputs
from tests.losses import _checks as checks

SHAPES = [("concave", None), ("linear", None), ("convex", None), ("exp", 2.0)]


class TestLabelAwareSmoothing:
    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_matches_reference(self, form: str, kind: str) -> None:
        logits, target = make_inputs(form, kind, seed=60 + len(form) + len(kind))
        eps = ref.las_factors(COUNTS, 0.4, 0.1, "concave")
        for reduction in REDUCTIONS:
            for smoothing in (0.0, 0.2):
                checks.assert_matches(
                    lambda x, r=reduction, s=smoothing: LF.label_aware_smoothing_loss(
                        x, target, COUNTS, smooth_head=0.4, smooth_tail=0.1, reduction=r, label_smoothing=s
                    ),
                    lambda x, r=reduction, s=smoothing: ref.form_loss(
                        x, target, lambda z, d, y: (ref.las_rows(z, d, eps), None), reduction=r, smoothing=s
                    ),
                    logits,
                )

    @pytest.mark.parametrize(("shape", "power"), SHAPES)
    def test_factors(self, shape: str, power: float | None) -> None:
        got = LF.label_aware_smoothing_factors(COUNTS, smooth_head=0.4, smooth_tail=0.1, shape=shape, power=power,
                                               dtype=torch.float64)  # fmt: skip
        torch.testing.assert_close(got, ref.las_factors(COUNTS, 0.4, 0.1, shape, power))
        assert got[0].item() == pytest.approx(0.4)
        assert got[-1].item() == pytest.approx(0.1)
        # Equal counts: every class is the tail.
        flat = LF.label_aware_smoothing_factors([7, 7, 7], smooth_head=0.4, smooth_tail=0.1, shape=shape, power=power)
        torch.testing.assert_close(flat, torch.full((3,), 0.1))

    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_equal_factors_equal_label_smoothing(self, form: str, kind: str) -> None:
        logits, target = make_inputs(form, kind, seed=61)
        for reduction in REDUCTIONS:
            las = checks.grad(
                lambda x, r=reduction: LF.label_aware_smoothing_loss(
                    x, target, COUNTS, smooth_head=0.25, smooth_tail=0.25, reduction=r
                ),
                logits,
            )
            ce = checks.grad(
                lambda x, r=reduction: F.cross_entropy(x, target, label_smoothing=0.25, reduction=r), logits
            )
            torch.testing.assert_close(las, ce)
            zero = checks.grad(
                lambda x, r=reduction: LF.label_aware_smoothing_loss(
                    x, target, COUNTS, smooth_head=0.0, smooth_tail=0.0, reduction=r
                ),
                logits,
            )
            torch.testing.assert_close(
                zero, checks.grad(lambda x, r=reduction: F.cross_entropy(x, target, reduction=r), logits)
            )

    def test_stage2_loss_in_twostage(self) -> None:
        torch.manual_seed(0)
        feats = torch.randn(60, 4)
        labels = torch.tensor([0] * 30 + [1] * 15 + [2] * 10 + [3] * 4 + [4] * 1)
        head = nn.Linear(4, C)
        criterion = ltl.LabelAwareSmoothing(ltl.class_counts(labels, num_classes=C))
        losses = train_classifier(head, feats, labels, criterion, epochs=3, batch_size=16, lr=0.1)
        assert len(losses) == 3
        assert all(math.isfinite(v) for v in losses)
        assert losses[-1] < losses[0]

    def test_exceptions(self) -> None:
        logits, target = make_inputs("batched", "index")
        with pytest.raises(ValueError, match="Expected `smooth_head` to be"):
            LF.label_aware_smoothing_loss(logits, target, COUNTS, smooth_head=1.5)
        with pytest.raises(ValueError, match="Expected `shape` to be one of"):
            ltl.LabelAwareSmoothing(COUNTS, shape="round")
        with pytest.raises(TypeError, match="Expected `power` to be a real number, but got None"):
            ltl.LabelAwareSmoothing(COUNTS, shape="exp")
        with pytest.raises(ValueError, match="Expected `power` to be None unless shape='exp', but got 2"):
            LF.label_aware_smoothing_factors(COUNTS, power=2)

    def test_gradcheck(self) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=62)
        assert torch.autograd.gradcheck(
            lambda x: LF.label_aware_smoothing_loss(x, target, COUNTS), (logits.requires_grad_(),), fast_mode=True
        )

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_module_equals_functional(self, reduction: str) -> None:
        options = {"smooth_head": 0.4, "smooth_tail": 0.1, "shape": "linear", "reduction": reduction,
                   "label_smoothing": 0.1}  # fmt: skip
        fields = "smooth_head=0.4, smooth_tail=0.1, shape='linear'"
        checks.assert_module_equals_functional(
            ltl.LabelAwareSmoothing, LF.label_aware_smoothing_loss, options, seed=63, fields=fields
        )
        assert "power=2.0" in repr(ltl.LabelAwareSmoothing(COUNTS, shape="exp", power=2.0))
        torch.testing.assert_close(
            ltl.LabelAwareSmoothing(COUNTS).smoothing, ref.las_factors(COUNTS, 0.3, 0.0, "concave").float()
        )

    def test_state_dict_pickle_roundtrip(self) -> None:
        logits, target = make_inputs("batched", "index", seed=64)
        checks.roundtrip_checks(ltl.LabelAwareSmoothing(COUNTS), logits, target)

    def test_half_and_unchecked_label(self) -> None:
        checks.assert_half_in_float32(LF.label_aware_smoothing_loss, torch.bfloat16, seed=65)
        logits, target = make_inputs("batched", "index", seed=66)
        target[0] = C
        out = LF.label_aware_smoothing_loss(logits, target, COUNTS, validate_args=False, reduction="none")
        assert math.isnan(out[0])
        assert torch.isfinite(out[1:]).all()
