"""One harness for every loss: shapes, references, identities, gradients, buffers, numerics."""

from __future__ import annotations

import copy
import io
import math
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests import reference as ref
from tests.strategies import alphas, betas, gammas, problems, reductions


@dataclass
class Spec:
    """How to build and check one loss; ``hyper`` are its keyword hyperparameters."""

    name: str
    module: type
    functional: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]  # per-sample float64 reference (logits, target, counts, **hyper)
    hyper: dict[str, Any] = field(default_factory=dict)
    weight_decay: float = 0.0  # BWLM's penalty on classifier_of(C), added once to the reduced reference

    def expected(self, logits: torch.Tensor, target: torch.Tensor, counts: Any, reduction: str, **hyper: Any):
        counts = torch.as_tensor(counts)
        out = ref.reduce(self.reference(logits, ref.safe(target), counts, **hyper), target, reduction)
        if not self.weight_decay:
            return out
        penalty = ref.penalty(classifier_of(len(counts)), self.weight_decay)
        if reduction != "none":
            return out + penalty
        keep = (target != -100).double()
        return out + keep * penalty / keep.sum()


def classifier_of(num_classes: int) -> torch.Tensor:
    """A fixed classifier weight with one row per class, for BWLM in the spec table."""
    return torch.linspace(-1.0, 1.0, num_classes * 3, dtype=torch.float64).reshape(num_classes, 3)


class _BWLMSpec(ltl.BWLM):
    """BWLM with the spec table's classifier, so that the table builds it like the other modules."""

    def __init__(self, class_counts: Any, **kwargs: Any) -> None:
        kwargs.setdefault("weight_decay", 0.05)
        super().__init__(class_counts, classifier=classifier_of(len(class_counts)), **kwargs)


SPECS = [
    Spec("bs", ltl.BalancedSoftmax, LF.balanced_softmax_loss, lambda z, y, n: ref.balanced_softmax(z, y, n)),
    Spec(
        "cb",
        ltl.ClassBalancedFocal,
        LF.class_balanced_focal_loss,
        lambda z, y, n, beta, gamma: ref.cb_focal(z, y, n, beta, gamma),
        {"beta": 0.99, "gamma": 2.0},
    ),
    Spec(
        "bfs",
        ltl.BFS,
        LF.bfs_loss,
        lambda z, y, n, alpha, beta, gamma: ref.bfs(z, y, n, alpha, beta, gamma),
        {"alpha": 0.3, "beta": 0.999, "gamma": 1.0},
    ),
    Spec(
        "bwlm",
        _BWLMSpec,
        lambda z, y, n, **kw: LF.bwlm_loss(z, y, n, classifier_of(len(n)), weight_decay=0.05, **kw),
        lambda z, y, n, alpha, beta, gamma: ref.bfs(z, y, n, alpha, beta, gamma),
        {"alpha": 0.3, "beta": 0.999, "gamma": 1.0},
        weight_decay=0.05,
    ),
]
IDS = [s.name for s in SPECS]
COUNT_SPECS = SPECS[:3]  # the losses whose only arguments are logits, target and counts
COUNTS = [500, 120, 40, 9, 2]


def _inputs(dtype: torch.dtype = torch.float64, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, len(COUNTS), generator=g)).to(dtype)
    target = torch.randint(0, len(COUNTS), (n,), generator=g)
    return logits, target


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
class TestEveryLoss:
    @pytest.mark.parametrize(("reduction", "shape"), [("none", (6,)), ("mean", ()), ("sum", ())])
    def test_shapes(self, spec: Spec, reduction: str, shape: tuple[int, ...]) -> None:
        logits, target = _inputs(torch.float32)
        out = spec.module(COUNTS, reduction=reduction, **spec.hyper)(logits, target)
        assert out.shape == shape
        assert out.dtype == torch.float32

    @given(problem=problems(), reduction=reductions, alpha=alphas, beta=betas, gamma=gammas)
    def test_matches_reference(
        self, spec: Spec, problem: tuple, reduction: str, alpha: float, beta: float, gamma: float
    ) -> None:
        logits, target, counts = problem
        hyper = {k: v for k, v in {"alpha": alpha, "beta": beta, "gamma": gamma}.items() if k in spec.hyper}
        if spec.name == "bwlm" and reduction == "mean" and bool((target == -100).all()):
            return  # nan + penalty: covered by test_all_ignored_mean_is_nan_like_cross_entropy
        expected = spec.expected(logits, target, counts, reduction, **hyper)
        got = spec.functional(logits, target, counts, reduction=reduction, **hyper)
        torch.testing.assert_close(got, expected)

    def test_module_equals_functional(self, spec: Spec) -> None:
        logits, target = _inputs()
        module = spec.module(COUNTS, **spec.hyper)
        torch.testing.assert_close(module(logits, target), spec.functional(logits, target, COUNTS, **spec.hyper))

    def test_gradcheck(self, spec: Spec) -> None:
        logits, target = _inputs()
        logits.requires_grad_(True)
        target[0] = -100
        assert torch.autograd.gradcheck(
            lambda z: spec.functional(z, target, COUNTS, **spec.hyper), (logits,), fast_mode=True
        )

    def test_gradient_matches_reference(self, spec: Spec) -> None:
        logits, target = _inputs()
        mine = logits.clone().requires_grad_(True)
        spec.functional(mine, target, COUNTS, **spec.hyper).backward()
        theirs = logits.clone().requires_grad_(True)
        spec.expected(theirs, target, COUNTS, "mean", **spec.hyper).backward()
        torch.testing.assert_close(mine.grad, theirs.grad)

    def test_ignore_index(self, spec: Spec) -> None:
        logits, target = _inputs()
        ignored = target.clone()
        ignored[::2] = 7  # a custom ignore_index, outside [0, C)
        per_sample = spec.functional(logits, ignored, COUNTS, reduction="none", ignore_index=7, **spec.hyper)
        assert torch.all(per_sample[::2] == 0)
        kept = spec.functional(logits[1::2], target[1::2], COUNTS, reduction="none", **spec.hyper)
        torch.testing.assert_close(per_sample[1::2], kept)
        mean = spec.functional(logits, ignored, COUNTS, ignore_index=7, **spec.hyper)
        penalty = ref.penalty(classifier_of(len(COUNTS)), spec.weight_decay)  # BWLM's, added once; else 0
        torch.testing.assert_close(mean - penalty, (kept.sum() - penalty) / 3)  # divides by the 3 kept, not by 6
        z = logits.clone().requires_grad_(True)
        spec.functional(z, ignored, COUNTS, ignore_index=7, **spec.hyper).backward()
        assert torch.all(z.grad[::2] == 0)

    def test_all_ignored_mean_is_nan_like_cross_entropy(self, spec: Spec) -> None:
        logits, _ = _inputs()
        target = torch.full((6,), -100)
        assert torch.isnan(spec.functional(logits, target, COUNTS, **spec.hyper))
        assert torch.isnan(F.cross_entropy(logits, target))
        total = spec.functional(logits, target, COUNTS, reduction="sum", **spec.hyper)
        torch.testing.assert_close(total, spec.expected(logits, target, COUNTS, "sum", **spec.hyper))
        none = spec.functional(logits, target, COUNTS, reduction="none", **spec.hyper)
        torch.testing.assert_close(none.sum(), total)  # BWLM: the penalty is spread over all, not lost

    def test_state_dict_pickle_roundtrip(self, spec: Spec) -> None:
        module = spec.module(COUNTS, **spec.hyper)
        assert torch.equal(module.state_dict()["class_counts"], torch.tensor(COUNTS))
        fresh = spec.module([1] * len(COUNTS), **spec.hyper)
        fresh.load_state_dict(module.state_dict())
        logits, target = _inputs()
        torch.testing.assert_close(fresh(logits, target), module(logits, target))
        if spec.name == "bwlm":  # refuses pickling: it would save a dead copy of the classifier
            with pytest.raises(TypeError, match="Expected a BWLM not to be pickled"):
                pickle.dumps(module)
            with pytest.raises(TypeError, match="Expected a BWLM not to be pickled"):
                torch.save(module, io.BytesIO())
            torch.testing.assert_close(copy.deepcopy(module)(logits, target), module(logits, target))
            return
        buffer = io.BytesIO()
        torch.save(module, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        torch.testing.assert_close(loaded(logits, target), module(logits, target))
        torch.testing.assert_close(pickle.loads(pickle.dumps(module))(logits, target), module(logits, target))
        torch.testing.assert_close(copy.deepcopy(module)(logits, target), module(logits, target))

    def test_to_moves_buffers_and_half_cannot_round_counts(self, spec: Spec) -> None:
        counts = [3001, 2049, 257, 3, 1]  # not representable in float16 / bfloat16
        module = spec.module(counts, **spec.hyper)
        module.half()
        assert module.class_counts.dtype == torch.int64
        assert module.class_counts.tolist() == counts
        moved = module.to("meta")
        assert moved.class_counts.device.type == "meta"

    def test_half_inputs_computed_in_float32(self, spec: Spec) -> None:
        logits, target = _inputs(torch.float32)
        for dtype in (torch.float16, torch.bfloat16):
            low = logits.to(dtype)
            z = low.clone().requires_grad_(True)
            out = spec.functional(z, target, COUNTS, **spec.hyper)
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, spec.functional(low.float(), target, COUNTS, **spec.hyper))
            out.backward()
            assert z.grad.dtype == dtype  # the gradient comes back in the dtype of the logits

    def test_autocast_bf16_cpu(self, spec: Spec) -> None:
        layer = nn.Linear(8, len(COUNTS))
        x = torch.randn(6, 8)
        target = torch.randint(0, len(COUNTS), (6,))
        criterion = spec.module(COUNTS, **spec.hyper)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = layer(x)
            loss = criterion(logits, target)
        assert logits.dtype == torch.bfloat16
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, criterion(logits.float(), target))
        loss.backward()
        assert torch.isfinite(layer.weight.grad).all()

    def test_validate_args_false_skips_value_checks_only(self, spec: Spec) -> None:
        logits, target = _inputs(torch.float32)
        module = spec.module(COUNTS, validate_args=False, **spec.hyper)
        torch.testing.assert_close(module(logits, target), spec.module(COUNTS, **spec.hyper)(logits, target))
        with pytest.raises(ValueError, match=r"`target` of class indices to have shape \(\)"):
            module(logits[0], target)  # metadata checks always run

    def test_label_out_of_range(self, spec: Spec) -> None:
        logits, target = _inputs(torch.float32)
        target[2] = len(COUNTS)
        with pytest.raises(ValueError, match=r"`target` label to be in \[0, 5\).*got 5 at position 2"):
            spec.module(COUNTS, **spec.hyper)(logits, target)
        target[2] = -1
        with pytest.raises(ValueError, match=r"got -1 at position 2"):
            spec.functional(logits, target, COUNTS, **spec.hyper)


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


class TestExceptions:
    @pytest.mark.parametrize(
        ("counts", "error", "match"),
        [
            ([], ValueError, "`class_counts` to hold at least one class"),
            ([[1, 2]], ValueError, r"`class_counts` to be 1-D .* got shape \(1, 2\)"),
            ([3, 0, 2], ValueError, "every entry of `class_counts` to be > 0.* got 0 for class 1"),
            ([3, -4], ValueError, "got -4 for class 1"),
            ([3.0, float("nan")], ValueError, "finite whole numbers, but got nan for class 1"),
            ([3.0, float("inf")], ValueError, "finite whole numbers, but got inf for class 1"),
            ([3.5, 2.0], ValueError, "finite whole numbers, but got 3.5 for class 0"),
            ([True, False], TypeError, "`class_counts` to hold real numbers"),
            ("abc", TypeError, "`class_counts` to be a sequence"),
            (None, TypeError, "`class_counts` to be a sequence"),
        ],
    )
    @pytest.mark.parametrize("spec", COUNT_SPECS, ids=IDS[:3])
    def test_bad_counts(self, spec: Spec, counts: Any, error: type, match: str) -> None:
        with pytest.raises(error, match=match):
            spec.module(counts, **spec.hyper)
        logits = torch.zeros(2, 2)
        with pytest.raises(error, match=match):
            spec.functional(logits, torch.tensor([0, 1]), counts, **spec.hyper)

    def test_counts_accept_numpy_and_whole_floats(self) -> None:
        np = pytest.importorskip("numpy")
        module = ltl.BalancedSoftmax(np.array([5, 3]))
        assert module.class_counts.dtype == torch.int64
        assert ltl.BalancedSoftmax(torch.tensor([5.0, 3.0])).class_counts.tolist() == [5, 3]

    @pytest.mark.parametrize("spec", COUNT_SPECS, ids=IDS[:3])
    def test_bad_logits_and_target(self, spec: Spec) -> None:
        crit = spec.module([4, 2, 1], **spec.hyper)
        z, y = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
        with pytest.raises(ValueError, match=r"`target` of class indices to have shape \(4, 1\).*got \(4,\)"):
            crit(z[..., None], y)
        with pytest.raises(ValueError, match=r"`logits` to have shape \(C,\), \(N, C\) or \(N, C, d1, ..., dk\)"):
            crit(z[0, 0], y)
        with pytest.raises(ValueError, match=r"C = 3 classes on dimension 1, but got shape \(4, 2\)"):
            crit(z[:, :2], y)
        with pytest.raises(TypeError, match=r"`logits` to be a floating-point tensor, but got dtype torch.int64"):
            crit(z.long(), y)
        with pytest.raises(TypeError, match=r"`logits` to be a torch.Tensor"):
            crit(z.tolist(), y)
        with pytest.raises(ValueError, match=r"`target` of class probabilities to have the shape of `logits`"):
            crit(z, y.float())
        with pytest.raises(TypeError, match=r"`target` to hold integer class indices or .*torch.bool"):
            crit(z, y.bool())
        with pytest.raises(ValueError, match=r"`target` of class indices to have shape \(4,\).*got \(4, 1\)"):
            crit(z, y[:, None])
        with pytest.raises(ValueError, match=r"got \(3,\)"):
            crit(z, y[:3])

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"beta": 1.0}, ValueError, r"`beta` to be in \[0, 1\), but got 1.0"),
            ({"beta": -0.1}, ValueError, r"`beta` to be in \[0, 1\), but got -0.1"),
            ({"beta": float("nan")}, ValueError, "`beta` to be a real number, but got nan"),
            ({"beta": "0.9"}, TypeError, "`beta` to be a real number"),
            ({"gamma": -1.0}, ValueError, "`gamma` to be a finite number >= 0, but got -1.0"),
            ({"gamma": float("inf")}, ValueError, "`gamma` to be a finite number >= 0"),
            ({"alpha": 1.5}, ValueError, r"`alpha` to be in \[0, 1\], but got 1.5"),
            ({"alpha": -0.1}, ValueError, r"`alpha` to be in \[0, 1\]"),
            ({"reduction": "avg"}, ValueError, r"`reduction` to be one of \('none', 'mean', 'sum'\), but got 'avg'"),
            ({"ignore_index": 1.5}, TypeError, "`ignore_index` to be an int, but got 1.5"),
        ],
    )
    def test_bad_hyperparameters(self, kwargs: dict, error: type, match: str) -> None:
        with pytest.raises(error, match=match):
            ltl.BFS([3, 2], **kwargs)
        with pytest.raises(error, match=match):
            LF.bfs_loss(torch.zeros(1, 2), torch.tensor([0]), [3, 2], **kwargs)
