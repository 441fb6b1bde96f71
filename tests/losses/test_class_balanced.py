"""Class-balanced weights and ClassBalancedFocal (Cui et al. 2019): values by hand, the BCE identity, numerics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from longtail_losses import functional as LF
from tests import reference as ref
from tests.inputs import betas, gammas, problems


class TestClassBalancedWeights:
    def test_known_values(self) -> None:
        # By hand: 1 / (1 - 0.9**n) for n = 100, 10, 1 is 1.0000266, 1.5353399, 10; normalised to sum to 3.
        w = LF.class_balanced_weights([100, 10, 1], beta=0.9, dtype=torch.float64)
        raw = torch.tensor([1.0000266, 1.5353399, 10.0], dtype=torch.float64)
        torch.testing.assert_close(w, 3 * raw / raw.sum(), atol=1e-6, rtol=0)

    @given(beta=betas, counts=st.lists(st.integers(1, 100000), min_size=1, max_size=20))
    def test_sum_to_c_and_match_float64_formula(self, beta: float, counts: list[int]) -> None:
        w = LF.class_balanced_weights(counts, beta)
        assert w.dtype == torch.float32
        torch.testing.assert_close(w.sum(), torch.tensor(float(len(counts))))
        torch.testing.assert_close(w, ref.cb_weights(torch.tensor(counts), beta).float())

    def test_beta_zero_and_balanced_give_ones(self) -> None:
        torch.testing.assert_close(LF.class_balanced_weights([1000, 3, 1], 0.0), torch.ones(3))
        torch.testing.assert_close(LF.class_balanced_weights([42, 42, 42], 0.9999), torch.ones(3))

    def test_rarer_class_weighs_more(self) -> None:
        w = LF.class_balanced_weights([500, 100, 20, 5], 0.999)
        assert torch.all(w[1:] > w[:-1])


class TestClassBalancedFocal:
    def test_known_values(self) -> None:
        # By hand for beta=0.99, gamma=1: w = (0.2767980, 1.7232020); focal sums of the two rows are
        # 0.1269280 + 0.3465736 and 0.3465736 + 0.0842010 ... (sigmoid terms written out in tests/reference.py).
        logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        out = LF.class_balanced_focal_loss(logits, torch.tensor([0, 1]), [90, 10], beta=0.99, reduction="none")
        sig = torch.sigmoid
        row0 = -(1 - sig(torch.tensor(2.0))) * torch.log(sig(torch.tensor(2.0))) - 0.5 * torch.log(torch.tensor(0.5))
        row1 = -0.5 * torch.log(torch.tensor(0.5)) - (1 - sig(torch.tensor(1.0))) * torch.log(sig(torch.tensor(1.0)))
        expected = torch.stack([0.2767980 * row0, 1.7232020 * row1]).double()
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)

    @given(problem=problems(), beta=betas)
    def test_gamma_zero_is_weighted_bce_with_logits(self, problem: tuple, beta: float) -> None:
        logits, target, counts = problem
        a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        ours = LF.class_balanced_focal_loss(a, target, counts, beta=beta, gamma=0.0, reduction="sum")
        keep = target != -100
        onehot = F.one_hot(ref.safe(target), logits.shape[1]).double()
        bce = F.binary_cross_entropy_with_logits(b, onehot, reduction="none").sum(dim=1)
        w = LF.class_balanced_weights(counts, beta, dtype=torch.float64)[ref.safe(target)]
        theirs = (w * bce * keep).sum()
        torch.testing.assert_close(ours, theirs)
        ours.backward()
        theirs.backward()
        torch.testing.assert_close(a.grad, b.grad)

    @given(problem=problems(ignore=False), gamma=gammas)
    def test_unweighted_focal_never_above_bce(self, problem: tuple, gamma: float) -> None:
        logits, target, counts = problem
        equal = torch.ones_like(counts)
        focal = LF.class_balanced_focal_loss(logits, target, equal, gamma=gamma, reduction="none")
        bce = LF.class_balanced_focal_loss(logits, target, equal, gamma=0.0, reduction="none")
        assert torch.all(focal <= bce + 1e-12)

    def test_reference_code_overflow_is_avoided(self) -> None:
        # Cui et al.'s modulator exp(-gamma*y*z - gamma*log(1+exp(-z))) overflows for z < -89 in float32.
        z = torch.tensor([[-100.0, 0.0]])
        # For the target logit -100 it should be (1 - sigmoid(-100))**1 = 1; in float32 it collapses to 0,
        # dropping the hardest sample, and its gradient is nan.
        zz = z.clone().requires_grad_(True)
        naive = torch.exp(-1.0 * 1 * zz - 1.0 * torch.log(1 + torch.exp(-zz)))
        assert naive[0, 0] == 0
        naive[0, 0].backward()
        assert torch.isnan(zz.grad[0, 0])
        logits = z.clone().requires_grad_(True)
        loss = LF.class_balanced_focal_loss(logits, torch.tensor([0]), [10, 10], gamma=1.0)
        loss.backward()
        torch.testing.assert_close(loss, torch.tensor(100.0 + 0.5 * torch.log(torch.tensor(2.0)).item()))
        assert torch.isfinite(logits.grad).all()
