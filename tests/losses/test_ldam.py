"""LDAM (Cao et al. 2019) and deferred re-weighting, against float64 re-derivations of the paper's equations."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests import reference as ref
from tests.inputs import COUNTS, FORM_KINDS, REDUCTIONS, C, make_inputs, problems
from tests.losses import _checks as checks

WEIGHT = torch.tensor([0.2, 0.5, 1.0, 1.5, 1.8], dtype=torch.float64)


class TestLDAMLoss:
    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_matches_reference(self, form: str, kind: str) -> None:
        # One equivalence per input form, against the float64 formula: every reduction, with and without label
        # smoothing and class weights.
        logits, target = make_inputs(form, kind, seed=len(form) + len(kind))
        logits = torch.tanh(logits)  # cosine-like scores, as in Cao et al.
        counts = torch.tensor(COUNTS)
        checks.assert_weighted_softmax_matches(
            lambda x, r, s, w: LF.ldam_loss(
                x, target, counts, max_margin=0.4, scale=10.0, class_weights=w, reduction=r, label_smoothing=s
            ),
            lambda z, dist, w: ref.ldam_rows(z, dist, counts, 0.4, 10.0, w),
            logits,
            target,
            WEIGHT,
        )

    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    def test_no_margin_equals_weighted_cross_entropy(self, form: str, kind: str) -> None:
        logits, target = make_inputs(form, kind, seed=21)
        for reduction in REDUCTIONS:
            for smoothing in (0.0, 0.3):
                options = {"reduction": reduction, "label_smoothing": smoothing}
                ldam = checks.grad(
                    lambda x, o=options: LF.ldam_loss(
                        x, target, COUNTS, max_margin=0.0, scale=1.0, class_weights=WEIGHT, **o
                    ),
                    logits,
                )
                ce = checks.grad(lambda x, o=options: F.cross_entropy(x, target, weight=WEIGHT, **o), logits)
                torch.testing.assert_close(ldam, ce)

    def test_one_hot_probabilities_equal_class_indices(self) -> None:
        logits, target = make_inputs("spatial", "index", seed=22)
        one_hot = F.one_hot(target, C).movedim(-1, 1).to(torch.float64)
        for reduction in ("none", "sum"):
            options = {"class_weights": WEIGHT, "reduction": reduction}
            by_index = checks.grad(lambda x, o=options: LF.ldam_loss(x, target, COUNTS, **o), logits)
            by_probs = checks.grad(lambda x, o=options: LF.ldam_loss(x, one_hot, COUNTS, **o), logits)
            torch.testing.assert_close(by_index, by_probs)

    def test_margins(self) -> None:
        torch.testing.assert_close(LF.ldam_margins(COUNTS, 0.5, dtype=torch.float64), ref.ldam_margins(COUNTS, 0.5))
        assert LF.ldam_margins(COUNTS).max().item() == pytest.approx(0.5)
        module = ltl.LDAMLoss(COUNTS, max_margin=0.3)
        torch.testing.assert_close(module.margins, ref.ldam_margins(COUNTS, 0.3).float())

    def test_known_values(self) -> None:
        # counts (90, 10): margins (0.5 * (10/90)^(1/4), 0.5); scale 30.
        m0 = 0.5 * (10 / 90) ** 0.25
        a = [30 * (0.8 - m0), 30 * 0.1]
        b = [30 * 0.2, 30 * (0.5 - 0.5)]
        l0 = -a[0] + math.log(math.exp(a[0]) + math.exp(a[1]))
        l1 = -b[1] + math.log(math.exp(b[0]) + math.exp(b[1]))
        logits = torch.tensor([[0.8, 0.1], [0.2, 0.5]], dtype=torch.float64)
        out = LF.ldam_loss(logits, torch.tensor([0, 1]), [90, 10], reduction="none")
        torch.testing.assert_close(out, torch.tensor([l0, l1], dtype=torch.float64))

    def test_stable_for_large_logits(self) -> None:
        logits = torch.tensor([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4]], dtype=torch.float32, requires_grad=True)
        probs = torch.tensor([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]])
        for target in (torch.tensor([1, 0]), probs):
            out = LF.ldam_loss(logits, target, [10, 5, 1], reduction="sum")
            (grad,) = torch.autograd.grad(out, logits)
            assert torch.isfinite(out)
            assert torch.isfinite(grad).all()
        # The leave-one-out log-sum-exp stays accurate next to a dominant logit (float32 against float64).
        z = torch.tensor([[0.9, -0.9, -0.8]])
        p = torch.tensor([[0.7, 0.2, 0.1]])
        torch.testing.assert_close(
            LF.ldam_loss(z, p, [10, 5, 1], scale=60.0),
            LF.ldam_loss(z.double(), p.double(), [10, 5, 1], scale=60.0).float(),
        )

    def test_single_class(self) -> None:
        logits = torch.tensor([[0.3], [0.1]], requires_grad=True)
        for target in (torch.tensor([0, 0]), torch.ones(2, 1)):
            out = LF.ldam_loss(logits, target, [4])
            (grad,) = torch.autograd.grad(out, logits)
            assert out.item() == 0.0
            assert torch.equal(grad, torch.zeros_like(grad))

    def test_ignore_index(self) -> None:
        logits, target = make_inputs("batched", "index", seed=23)
        target[1] = 99
        out = LF.ldam_loss(logits, target, COUNTS, class_weights=WEIGHT, ignore_index=99, reduction="none")
        assert out[1] == 0.0
        kept = torch.arange(len(target)) != 1
        mean = LF.ldam_loss(logits, target, COUNTS, class_weights=WEIGHT, ignore_index=99)
        torch.testing.assert_close(mean, out.sum() / WEIGHT[target[kept]].sum())
        assert LF.ldam_loss(logits[0], torch.tensor(-100), COUNTS, reduction="sum") == 0.0

    def test_unchecked_invalid_label_gives_nan(self) -> None:
        logits, target = make_inputs("batched", "index", seed=24)
        target[0] = C + 3
        out = LF.ldam_loss(logits, target, COUNTS, validate_args=False, reduction="none")
        assert math.isnan(out[0])
        assert torch.isfinite(out[1:]).all()

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_computes_in_float32(self, dtype: torch.dtype) -> None:
        checks.assert_half_in_float32(functools.partial(LF.ldam_loss, scale=5.0), dtype, seed=25)

    def test_exceptions(self) -> None:
        logits, target = make_inputs("batched", "index")
        with pytest.raises(ValueError, match=r"Expected `max_margin` to be a finite number >= 0, but got -0\.1"):
            LF.ldam_loss(logits, target, COUNTS, max_margin=-0.1)
        with pytest.raises(ValueError, match="Expected `scale` to be a finite number > 0, but got 0"):
            ltl.LDAMLoss(COUNTS, scale=0)
        with pytest.raises(TypeError, match="Expected `scale` to be a real number, but got None"):
            ltl.LDAMLoss(COUNTS, scale=None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"Expected `class_weights` to have shape \(5,\), but got"):
            LF.ldam_loss(logits, target, COUNTS, class_weights=torch.ones(3))
        with pytest.raises(ValueError, match=r"Expected `class_weights` to hold finite numbers >= 0, but got -1.0"):
            ltl.LDAMLoss(COUNTS, class_weights=[-1.0] + [1.0] * (C - 1))
        with pytest.raises(TypeError, match=r"Expected `class_weights` to be a sequence, NumPy array or tensor"):
            ltl.LDAMLoss(COUNTS, class_weights="heavy")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected every `target` label to be in"):
            LF.ldam_loss(logits, torch.full_like(target, -1), COUNTS)
        with pytest.raises(ValueError, match="Expected `target` of class probabilities to be finite"):
            LF.ldam_loss(logits, torch.full_like(logits, 0.5), COUNTS)

    def test_gradcheck(self) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=26)
        probs = make_inputs("batched", "probs", seed=26)
        assert torch.autograd.gradcheck(
            lambda x: LF.ldam_loss(x, target, COUNTS, scale=3.0, class_weights=WEIGHT), (logits.requires_grad_(),),
            fast_mode=True,
        )  # fmt: skip
        assert torch.autograd.gradcheck(
            lambda x: LF.ldam_loss(x, probs[1], COUNTS, scale=3.0, class_weights=WEIGHT, label_smoothing=0.1),
            (probs[0].requires_grad_(),),
            fast_mode=True,
        )

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_module_equals_functional(self, reduction: str) -> None:
        options = {
            "max_margin": 0.3,
            "scale": 7.0,
            "class_weights": WEIGHT,
            "reduction": reduction,
            "label_smoothing": 0.1,
        }
        fields = "max_margin=0.3, scale=7.0, weighted=True"
        checks.assert_module_equals_functional(ltl.LDAMLoss, LF.ldam_loss, options, seed=27, fields=fields)

    def test_state_dict_pickle_roundtrip(self) -> None:
        logits, target = make_inputs("batched", "index", seed=28)
        checks.roundtrip_checks(ltl.LDAMLoss(COUNTS, scale=5.0), logits, target)
        checks.roundtrip_checks(ltl.LDAMLoss(COUNTS, scale=5.0, class_weights=WEIGHT), logits, target)

    def test_drw_checkpoint_loads_into_a_fresh_module(self) -> None:
        logits, target = make_inputs("batched", "index", seed=29)
        trained = ltl.LDAMLoss(COUNTS)
        trained.class_weights = ltl.drw_weights(COUNTS, 5, 3, dtype=torch.float64)
        fresh = ltl.LDAMLoss(COUNTS)
        fresh.load_state_dict(trained.state_dict())
        assert fresh.weighted
        torch.testing.assert_close(fresh(logits, target), trained(logits, target))

    def test_to_moves_buffers(self) -> None:
        module = ltl.LDAMLoss(COUNTS, class_weights=WEIGHT.float()).to(torch.float64)
        assert module.class_weights is not None
        assert module.class_weights.dtype == torch.float64
        assert module.class_counts.dtype == torch.int64
        meta = module.to("meta")
        assert meta.class_counts.device.type == "meta"
        assert meta.class_weights is not None
        assert meta.class_weights.device.type == "meta"

    def test_drw_training_step_on_cpu(self) -> None:
        torch.manual_seed(0)
        fc = nn.Linear(4, C)
        criterion = ltl.LDAMLoss(COUNTS, scale=5.0)
        optimizer = torch.optim.SGD(fc.parameters(), lr=0.1)
        x, y = torch.randn(16, 4), torch.randint(0, C, (16,))
        for epoch in range(4):
            criterion.class_weights = ltl.drw_weights(COUNTS, epoch, start_epoch=2)
            loss = criterion(fc(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert torch.isfinite(loss)

    @given(problems(logit_bound=5.0), st.floats(0.0, 1.0), st.floats(0.5, 40.0), st.floats(-20.0, 20.0))
    def test_invariants(
        self, problem: tuple[Tensor, Tensor, Tensor], max_margin: float, scale: float, shift: float
    ) -> None:
        logits, target, counts = problem
        options = {"max_margin": max_margin, "scale": scale}
        none = LF.ldam_loss(logits, target, counts, reduction="none", **options)
        assert torch.isfinite(none).all()
        assert (none >= 0).all()
        total = LF.ldam_loss(logits, target, counts, reduction="sum", **options)
        torch.testing.assert_close(total, none.sum())
        torch.testing.assert_close(LF.ldam_loss(logits + shift, target, counts, reduction="sum", **options), total)
        perm = torch.randperm(counts.numel(), generator=torch.Generator().manual_seed(0))
        inverse = torch.argsort(perm)
        permuted_target = torch.where(target >= 0, inverse[target.clamp_min(0)], target)
        torch.testing.assert_close(
            LF.ldam_loss(logits[:, perm], permuted_target, counts[perm], reduction="sum", **options), total
        )

    def test_no_cuda_in_source(self) -> None:
        root = Path(ltl.__file__).parent
        for name in ("losses/ldam.py", "data/samplers.py", "losses/logit_adjustment.py", "twostage/decoupled.py"):
            assert "cuda" not in (root / name).read_text(), name


class TestDRWWeights:
    def test_matches_reference(self) -> None:
        n = torch.tensor(COUNTS, dtype=torch.float64)
        beta = 0.999
        raw = (1.0 - beta) / (1.0 - beta**n)
        expected = raw / raw.sum() * C
        torch.testing.assert_close(ltl.drw_weights(COUNTS, 10, 10, beta=beta, dtype=torch.float64), expected)
        torch.testing.assert_close(ltl.drw_weights(COUNTS, 11, 10, beta=beta, dtype=torch.float64), expected)
        torch.testing.assert_close(ltl.drw_weights(COUNTS, 9, 10, beta=beta), torch.ones(C))
        assert ltl.drw_weights(COUNTS, 100, 10).sum().item() == pytest.approx(C)

    def test_exceptions(self) -> None:
        with pytest.raises(TypeError, match=r"Expected `epoch` to be an int, but got 1\.5"):
            ltl.drw_weights(COUNTS, 1.5, 3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `start_epoch` to be >= 0, but got -1"):
            ltl.drw_weights(COUNTS, 1, -1)
        with pytest.raises(ValueError, match=r"Expected `beta` to be in \[0, 1\), but got 1.0"):
            ltl.drw_weights(COUNTS, 5, 1, beta=1.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    [lambda: ltl.LogitAdjustedLoss(COUNTS, tau=0.5), lambda: ltl.LDAMLoss(COUNTS, scale=5.0, class_weights=WEIGHT)],
    ids=["LogitAdjustedLoss", "LDAMLoss"],
)
def test_compile(module) -> None:
    criterion = module()
    logits, target = make_inputs("batched", "index", seed=31)
    compiled = torch.compile(criterion, backend="eager", fullgraph=False)
    torch.testing.assert_close(compiled(logits, target), criterion(logits, target))


def test_class_weights_checked_on_load_and_absent_ones_load_as_none() -> None:
    weighted = ltl.LDAMLoss(COUNTS, class_weights=[1.0] * C)
    state = weighted.state_dict()
    state["class_weights"] = torch.ones(C + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`state_dict\['class_weights'\]` to have shape \(5,\)"):
        weighted.load_state_dict(state)
    weighted.load_state_dict(ltl.LDAMLoss(COUNTS).state_dict())  # an unweighted checkpoint: no weights after
    assert weighted.class_weights is None
    assert not weighted.weighted
