"""BFS and BWLM (Fan et al. 2024): the mixture's endpoints, the penalty as weight decay, the live classifier."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from hypothesis import given
from torch import nn

import longtail_losses as ltl
from longtail_losses import functional as LF
from longtail_losses import twostage
from tests.inputs import COUNTS, betas, gammas, problems, reductions


class TestBFS:
    @given(problem=problems(), beta=betas, gamma=gammas, reduction=reductions)
    def test_alpha_endpoints_are_the_two_losses(
        self, problem: tuple, beta: float, gamma: float, reduction: str
    ) -> None:
        logits, target, counts = problem
        torch.testing.assert_close(
            LF.bfs_loss(logits, target, counts, alpha=1.0, beta=beta, gamma=gamma, reduction=reduction),
            LF.class_balanced_focal_loss(logits, target, counts, beta=beta, gamma=gamma, reduction=reduction),
            rtol=0,
            atol=0,
        )
        torch.testing.assert_close(
            LF.bfs_loss(logits, target, counts, alpha=0.0, beta=beta, gamma=gamma, reduction=reduction),
            LF.balanced_softmax_loss(logits, target, counts, reduction=reduction),
            rtol=0,
            atol=0,
        )

    def test_default_alpha_is_papers(self) -> None:
        assert ltl.BFS([1, 2]).alpha == 0.1
        assert ltl.BFS([1, 2]).beta == 0.9999
        assert ltl.BFS([1, 2]).gamma == 1.0


class TestBWLM:
    def _setup(self) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        fc = nn.Linear(4, len(COUNTS)).double()
        x = torch.randn(6, 4, dtype=torch.float64)
        return fc, x, torch.randint(0, len(COUNTS), (6,))

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_is_bfs_plus_half_weight_decay_norm(self, reduction: str) -> None:
        fc, x, target = self._setup()
        hyper = {"alpha": 0.2, "beta": 0.99, "gamma": 1.5}
        loss = LF.bwlm_loss(fc(x), target, COUNTS, fc, weight_decay=0.3, reduction=reduction, **hyper)
        bfs = LF.bfs_loss(fc(x), target, COUNTS, reduction=reduction, **hyper)
        penalty = 0.15 * (fc.weight**2).sum()  # bias excluded
        if reduction == "none":
            torch.testing.assert_close(loss.sum(), bfs.sum() + penalty)
        else:
            torch.testing.assert_close(loss, bfs + penalty)

    def test_gradient_adds_exactly_weight_decay_times_theta(self) -> None:
        fc, x, target = self._setup()
        LF.bfs_loss(fc(x), target, COUNTS).backward()
        bfs_grad_w, bfs_grad_b = fc.weight.grad.clone(), fc.bias.grad.clone()
        fc.zero_grad()
        ltl.BWLM(COUNTS, classifier=fc, weight_decay=0.05)(fc(x), target).backward()
        torch.testing.assert_close(fc.weight.grad, bfs_grad_w + 0.05 * fc.weight.detach())
        torch.testing.assert_close(fc.bias.grad, bfs_grad_b)

    def test_matches_sgd_weight_decay_on_the_classifier(self) -> None:
        fc, x, target = self._setup()
        twin = copy.deepcopy(fc)
        opt = torch.optim.SGD(fc.parameters(), lr=0.1, momentum=0.9)
        opt_twin = torch.optim.SGD(
            [{"params": [twin.weight], "weight_decay": 0.05}, {"params": [twin.bias]}], lr=0.1, momentum=0.9
        )
        criterion = ltl.BWLM(COUNTS, classifier=fc, weight_decay=0.05)
        for _ in range(3):
            opt.zero_grad()
            criterion(fc(x), target).backward()
            opt.step()
            opt_twin.zero_grad()
            LF.bfs_loss(twin(x), target, COUNTS).backward()
            opt_twin.step()
        torch.testing.assert_close(fc.weight, twin.weight)
        torch.testing.assert_close(fc.bias, twin.bias)

    def test_gradcheck_wrt_classifier(self) -> None:
        fc, x, target = self._setup()
        features = x.detach()

        def f(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return LF.bwlm_loss(features @ weight.T + bias, target, COUNTS, weight, weight_decay=0.1)

        w = fc.weight.detach().clone().requires_grad_(True)
        b = fc.bias.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(f, (w, b), fast_mode=True)

    def test_classifier_not_registered(self) -> None:
        fc, _, _ = self._setup()
        criterion = ltl.BWLM(COUNTS, classifier=fc)
        assert list(criterion.parameters()) == []
        assert list(criterion.state_dict()) == ["class_counts"]
        assert criterion.classifier_weight is fc.weight
        assert criterion.weight_decay == 5e-3

    def test_accepts_weight_tensor(self) -> None:
        fc, x, target = self._setup()
        a = ltl.BWLM(COUNTS, classifier=fc.weight, weight_decay=0.1)(fc(x), target)
        b = ltl.BWLM(COUNTS, classifier=fc, weight_decay=0.1)(fc(x), target)
        torch.testing.assert_close(a, b)

    def test_none_reduction_spreads_penalty_over_kept_samples(self) -> None:
        fc, x, target = self._setup()
        target[0] = -100
        out = LF.bwlm_loss(fc(x), target, COUNTS, fc, weight_decay=0.2, reduction="none")
        assert out[0] == 0
        total = LF.bwlm_loss(fc(x), target, COUNTS, fc, weight_decay=0.2, reduction="sum")
        torch.testing.assert_close(out.sum(), total)

    def test_exceptions(self) -> None:
        fc, x, target = self._setup()
        with pytest.raises(ValueError, match=r"`classifier` weight to have one row per class \(5\)"):
            ltl.BWLM(COUNTS, classifier=nn.Linear(4, 3))
        with pytest.raises(TypeError, match=r"`classifier` to have a `.weight`"):
            ltl.BWLM(COUNTS, classifier=nn.ReLU())
        with pytest.raises(ValueError, match=r"`classifier` weight to be at least 2-D"):
            ltl.BWLM(COUNTS, classifier=torch.ones(5))
        with pytest.raises(ValueError, match=r"`weight_decay` to be a finite number >= 0, but got -1"):
            ltl.BWLM(COUNTS, classifier=fc, weight_decay=-1)
        with pytest.raises(ValueError, match=r"`classifier` weight to have one row per class \(5\)"):
            LF.bwlm_loss(fc(x), target, COUNTS, torch.ones(3, 4, dtype=torch.float64))
        with pytest.raises(TypeError, match=r"'classifier'"):
            ltl.BWLM(COUNTS)  # type: ignore[call-arg]  # classifier is required


class TestBWLMFollowsTheLiveClassifier:
    def test_deepcopy_refers_to_the_live_classifier(self) -> None:
        fc = nn.Linear(3, 5)
        criterion = ltl.BWLM(COUNTS, classifier=fc, weight_decay=0.5)
        clone = copy.deepcopy(criterion)
        assert clone.classifier_weight is fc.weight
        with torch.no_grad():
            fc.weight.mul_(2)
        z, y = torch.zeros(2, 5), torch.tensor([0, 1])
        torch.testing.assert_close(clone(z, y), criterion(z, y))

    @pytest.mark.parametrize("loss_first", [False, True])
    def test_deepcopy_with_the_model_follows_the_copy(self, loss_first: bool) -> None:
        model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5))
        loss = ltl.BWLM(COUNTS, classifier=model[1])
        state = copy.deepcopy({"loss": loss, "model": model} if loss_first else {"model": model, "loss": loss})
        assert state["model"][1] is not model[1]
        assert state["loss"].classifier_weight is state["model"][1].weight

    def test_deepcopy_of_a_module_that_registers_the_loss_before_the_network(self) -> None:
        class Task(nn.Module):  # an EMA copy of such a module must not share the live classifier
            def __init__(self) -> None:
                super().__init__()
                head = nn.Linear(3, 5)
                self.loss = ltl.BWLM(COUNTS, classifier=head)
                self.net = nn.Sequential(nn.Linear(4, 3), head)

        task = Task()
        ema = copy.deepcopy(task)
        assert ema.net[1] is not task.net[1]
        assert ema.loss.classifier_weight is ema.net[1].weight
        assert task.loss.classifier_weight is task.net[1].weight

    def test_shallow_copy_shares_the_classifier(self) -> None:
        fc = nn.Linear(3, 5)
        criterion = ltl.BWLM(COUNTS, classifier=fc, weight_decay=0.5)
        clone = copy.copy(criterion)
        assert clone is not criterion
        assert clone.classifier_weight is fc.weight
        assert clone.class_counts is criterion.class_counts

    def test_pickle_is_refused_with_the_way_out(self) -> None:
        criterion = ltl.BWLM(COUNTS, classifier=nn.Linear(3, 5))
        with pytest.raises(TypeError, match=r"not to be pickled.*Save `criterion.state_dict\(\)`"):
            pickle.dumps(criterion)
        with pytest.raises(TypeError, match=r"not to be pickled"):
            torch.save(criterion, io.BytesIO())

    @pytest.mark.parametrize("by_tensor", [False, True])
    def test_replace_classifier_then_rebind(self, by_tensor: bool) -> None:
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5))
        criterion = ltl.BWLM(COUNTS, classifier=model[1].weight if by_tensor else model[1])
        new = twostage.replace_classifier(model, 5, classifier_attr="1")
        x, y = torch.randn(2, 4), torch.tensor([0, 1])
        with pytest.raises(RuntimeError, match=r"was replaced by Linear in twostage.replace_classifier.*rebind"):
            criterion(model(x), y)
        old = criterion._classifier[0]
        assert not [k for k in vars(old) if "ltl" in k]  # nothing written onto the user's layer or weight
        assert criterion.rebind(new) is criterion
        assert criterion.classifier_weight is new.weight
        criterion(model(x), y).backward()
        assert new.weight.grad is not None

    def test_conv_1x1_classifier_for_dense_heads(self) -> None:
        head = nn.Conv2d(3, 5, kernel_size=1)
        criterion = ltl.BWLM(COUNTS, classifier=head, weight_decay=0.1)
        features, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 5, (2, 4, 4))
        loss = criterion(head(features), labels)
        expected = LF.bfs_loss(head(features), labels, COUNTS) + 0.05 * head.weight.pow(2).sum()
        torch.testing.assert_close(loss, expected)


def test_empty_batch_keeps_the_penalty_except_in_reduction_none() -> None:
    fc = nn.Linear(2, 5)
    with torch.no_grad():
        fc.weight.fill_(1.0)
    z, y = torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)
    penalty = torch.tensor(0.5 * 0.1 * 10.0)
    torch.testing.assert_close(LF.bwlm_loss(z, y, COUNTS, fc, weight_decay=0.1, reduction="sum"), penalty)
    assert LF.bwlm_loss(z, y, COUNTS, fc, weight_decay=0.1, reduction="none").shape == (0,)  # documented
