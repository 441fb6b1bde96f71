"""The spec table: BalancedSoftmax, ClassBalancedFocal, BFS and BWLM through the same checks.

Shapes, the float64 references, gradients, ignore_index, buffers, half inputs, validation messages. The input forms
are in test_input_forms.py; each loss's own identities in test_balanced_softmax.py, test_class_balanced.py and
test_bwlm.py.
"""

from __future__ import annotations

import copy
import io
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from torch import nn

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests import reference as ref
from tests.inputs import COUNTS, alphas, betas, gammas, make_inputs, problems, reductions


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


def _inputs(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    return make_inputs("batched", "index", dtype=dtype)


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

    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    def test_gradient_matches_reference(self, spec: Spec, reduction: str) -> None:
        logits, target = _inputs()
        mine = logits.clone().requires_grad_(True)
        got = spec.functional(mine, target, COUNTS, reduction=reduction, **spec.hyper)
        got.sum().backward()
        theirs = logits.clone().requires_grad_(True)
        want = spec.expected(theirs, target, COUNTS, reduction, **spec.hyper)
        want.sum().backward()
        torch.testing.assert_close(got, want)
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
