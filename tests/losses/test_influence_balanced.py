"""Influence-balanced loss (Park et al. 2021) against a float64 re-derivation of the released code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests import reference as ref
from tests.inputs import COUNTS, FORM_KINDS, REDUCTIONS, C, make_inputs
from tests.losses import _checks as checks

D = 3


def features_for(logits: Tensor, seed: int) -> Tensor:
    """Features of the shape of ``logits`` with D in place of C."""
    shape = (D,) if logits.ndim == 1 else (logits.shape[0], D, *logits.shape[2:])
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class TestIBLoss:
    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_matches_reference(self, form: str, kind: str) -> None:
        logits, target = make_inputs(form, kind, seed=70 + len(form) + len(kind))
        feats = features_for(logits, 71)
        norms = ref.rows_of(feats).abs().sum(dim=1)
        for reduction in REDUCTIONS:
            for smoothing, reweight in [(0.0, True), (0.2, True), (0.0, False)]:
                checks.assert_matches(
                    lambda x, r=reduction, s=smoothing, w=reweight: LF.influence_balanced_loss(
                        x, target, feats, COUNTS, alpha=10.0, reweight=w, reduction=r, label_smoothing=s
                    ),
                    lambda x, r=reduction, s=smoothing, w=reweight: ref.form_loss(
                        x,
                        target,
                        lambda z, d, y: (ref.ib_rows(z, d, norms, COUNTS, 10.0, 1e-3, w), None),
                        reduction=r,
                        smoothing=s,
                    ),
                    logits,
                )

    def test_gradient_flows_through_the_features_as_in_the_code(self) -> None:
        logits, target = make_inputs("batched", "index", seed=72)
        feats = features_for(logits, 73).requires_grad_()
        z = logits.clone().requires_grad_()
        LF.influence_balanced_loss(z, target, feats, COUNTS).backward()
        # The released code: ib = alpha / (sum|softmax - onehot| * ||h||_1 + eps), mean of ib * weighted CE.
        z2, f2 = logits.clone().requires_grad_(), feats.detach().clone().requires_grad_()
        n = torch.tensor(COUNTS, dtype=torch.float64)
        w = (1 / n) / (1 / n).sum() * C
        grads = (F.softmax(z2, dim=1) - F.one_hot(target, C)).abs().sum(1)
        ib = 1000.0 / (grads * f2.abs().sum(1) + 1e-3)
        (F.cross_entropy(z2, target, reduction="none", weight=w) * ib).mean().backward()
        torch.testing.assert_close(z.grad, z2.grad)
        torch.testing.assert_close(feats.grad, f2.grad)
        assert feats.grad is not None
        assert feats.grad.abs().sum() > 0

    def test_start_epoch(self) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=74)
        feats = features_for(logits, 75)
        criterion = ltl.IBLoss(COUNTS, start_epoch=2, reduction="sum")
        for epoch in range(4):
            criterion.set_epoch(epoch)
            if epoch < 2:  # plain unweighted cross-entropy, features not needed
                assert not criterion.active
                torch.testing.assert_close(criterion(logits, target), F.cross_entropy(logits, target, reduction="sum"))
            else:
                assert criterion.active
                torch.testing.assert_close(
                    criterion(logits, target, feats),
                    LF.influence_balanced_loss(logits, target, feats, COUNTS, reduction="sum"),
                )
        with pytest.raises(ValueError, match=r"Expected `features` \(the classifier's inputs\) from epoch 2 on"):
            criterion(logits, target)

    def test_training_loop_with_a_hook(self) -> None:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, C))
        captured: dict[str, Tensor] = {}
        model[2].register_forward_pre_hook(lambda module, args: captured.update(features=args[0]))
        criterion = ltl.IBLoss(COUNTS, start_epoch=1)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        x, y = torch.randn(16, 4), torch.randint(0, C, (16,))
        for epoch in range(3):
            criterion.set_epoch(epoch)
            loss = criterion(model(x), y, captured["features"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert math.isfinite(loss.item())

    def test_exceptions(self) -> None:
        logits, target = make_inputs("batched", "index")
        feats = features_for(logits, 0)
        with pytest.raises(ValueError, match="Expected `alpha` to be a finite number > 0, but got 0"):
            LF.influence_balanced_loss(logits, target, feats, COUNTS, alpha=0)
        with pytest.raises(ValueError, match=r"Expected `features` to have shape \(6, D\) to match logits \(6, 5\)"):
            LF.influence_balanced_loss(logits, target, feats[:3], COUNTS)
        with pytest.raises(TypeError, match="Expected `features` to be a floating-point tensor"):
            LF.influence_balanced_loss(logits, target, feats.long(), COUNTS)
        with pytest.raises(ValueError, match="Expected `start_epoch` to be"):
            ltl.IBLoss(COUNTS, start_epoch=-1)
        with pytest.raises(TypeError, match="Expected `reweight` to be"):
            ltl.IBLoss(COUNTS, reweight=1)  # type: ignore[arg-type]

    def test_gradcheck(self) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=76)
        feats = features_for(logits, 77).requires_grad_()
        assert torch.autograd.gradcheck(
            lambda x, h: LF.influence_balanced_loss(x, target, h, COUNTS, alpha=1.0),
            (logits.requires_grad_(), feats), fast_mode=True,
        )  # fmt: skip

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_module_equals_functional(self, reduction: str) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=78)
        feats = features_for(logits, 79)
        options = {"alpha": 5.0, "reweight": False, "reduction": reduction, "label_smoothing": 0.1}
        module = ltl.IBLoss(COUNTS, **options)
        torch.testing.assert_close(
            module(logits, target, feats), LF.influence_balanced_loss(logits, target, feats, COUNTS, **options)
        )
        assert repr(module) == (
            f"IBLoss(num_classes={C}, alpha=5.0, epsilon=0.001, reweight=False, start_epoch=0, epoch=0, "
            f"reduction={reduction!r}, ignore_index=-100, label_smoothing=0.1)"
        )

    def test_state_dict_keeps_the_epoch(self) -> None:
        trained = ltl.IBLoss(COUNTS, start_epoch=3)
        trained.set_epoch(5)
        fresh = ltl.IBLoss([1] * C, start_epoch=3)
        fresh.load_state_dict(trained.state_dict())
        assert fresh.epoch == 5
        assert fresh.active
        assert torch.equal(fresh.class_counts, torch.tensor(COUNTS))
        assert fresh.half().class_counts.dtype == torch.int64
