"""BalancedSoftmax (Ren et al. 2020): values by hand, the identities with cross-entropy, invariances."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from longtail_losses import functional as LF
from tests.inputs import problems


class TestBalancedSoftmax:
    def test_known_values(self) -> None:
        # By hand: sample 0 -> log(1 + 10 e^0 / (90 e^2)), sample 1 -> log(1 + 90 e^0 / (10 e^1)).
        logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        out = LF.balanced_softmax_loss(logits, torch.tensor([0, 1]), [90, 10], reduction="none")
        expected = [math.log(1 + 10 / (90 * math.e**2)), math.log(1 + 90 / (10 * math.e))]
        torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))

    @given(problem=problems(ignore=False))
    def test_equal_counts_is_cross_entropy(self, problem: tuple) -> None:
        logits, target, counts = problem
        equal = torch.full_like(counts, 7)
        a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        ours = LF.balanced_softmax_loss(a, target, equal)
        theirs = F.cross_entropy(b, target)
        torch.testing.assert_close(ours, theirs)
        ours.backward()
        theirs.backward()
        torch.testing.assert_close(a.grad, b.grad)

    @given(problem=problems(), shift=st.floats(-50, 50))
    def test_invariant_to_row_shift_and_count_scaling(self, problem: tuple, shift: float) -> None:
        logits, target, counts = problem
        base = LF.balanced_softmax_loss(logits, target, counts, reduction="none")
        torch.testing.assert_close(LF.balanced_softmax_loss(logits + shift, target, counts, reduction="none"), base)
        torch.testing.assert_close(LF.balanced_softmax_loss(logits, target, counts * 13, reduction="none"), base)

    @given(problem=problems(ignore=False))
    def test_gradient_rows_sum_to_zero(self, problem: tuple) -> None:
        logits, target, counts = problem
        z = logits.clone().requires_grad_(True)
        LF.balanced_softmax_loss(z, target, counts, reduction="sum").backward()
        torch.testing.assert_close(z.grad.sum(dim=1), torch.zeros(z.shape[0], dtype=torch.float64))

    def test_prior_pushes_towards_rare_classes(self) -> None:
        # Same logits: the head-class sample costs less than plain CE, the tail-class sample more.
        logits = torch.zeros(2, 2)
        out = LF.balanced_softmax_loss(logits, torch.tensor([0, 1]), [90, 10], reduction="none")
        ce = F.cross_entropy(logits, torch.tensor([0, 1]), reduction="none")
        assert out[0] < ce[0]
        assert out[1] > ce[1]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_unchecked_invalid_label_is_nan_in_the_shortcut(reduction: str) -> None:
    z, y = torch.randn(3, 4), torch.tensor([0, 7, -100])
    out = LF.balanced_softmax_loss(z, y, [5, 4, 3, 2], reduction=reduction, validate_args=False)
    expected = torch.tensor([False, True, False]) if reduction == "none" else torch.tensor(True)
    assert torch.equal(out.isnan(), expected)
