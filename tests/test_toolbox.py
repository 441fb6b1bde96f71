"""The long-tail toolbox (#12): logit adjustment, LDAM-DRW, class-aware sampling, decoupled classifiers.

Every reference below is a float64 re-derivation written from the papers' equations; none calls the library.
"""

from __future__ import annotations

import copy
import functools
import io
import math
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses import data as ltd
from longtail_losses import functional as LF
from longtail_losses import twostage
from tests.strategies import problems

COUNTS = [500, 120, 40, 9, 2]
C = len(COUNTS)
FORMS = ["unbatched", "batched", "spatial"]
KINDS = ["index", "index_ignore", "probs"]
# An unbatched target is one sample, either kept or ignored: its ignore_index case is in test_ignore_index.
FORM_KINDS = [(f, k) for f in FORMS for k in KINDS if (f, k) != ("unbatched", "index_ignore")]
REDUCTIONS = ["none", "mean", "sum"]


# ----------------------------------------------------------------------------------------------------------------
# Float64 references from the papers' equations
# ----------------------------------------------------------------------------------------------------------------


def _log_softmax(a: Tensor) -> Tensor:
    """log(e^{a_k} / sum_j e^{a_j}), with the row maximum subtracted first (the ratio is unchanged)."""
    shifted = a - a.max(dim=1, keepdim=True).values.detach()
    return shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))


def ref_la_rows(z: Tensor, dist: Tensor, counts: Tensor, tau: float) -> Tensor:
    """Menon et al. eq. (10): -sum_k t_k log(e^{z_k + tau log pi_k} / sum_j e^{z_j + tau log pi_j})."""
    n = counts.to(torch.float64)
    pi = n / n.sum()
    return -(dist * _log_softmax(z + tau * torch.log(pi))).sum(dim=1)


def ref_margins(counts: Tensor, max_margin: float) -> Tensor:
    """Cao et al.: Delta_j = C / n_j^(1/4); their code: m = 1 / n^(1/4), rescaled so that max_j m_j = max_margin."""
    m = 1.0 / torch.sqrt(torch.sqrt(counts.to(torch.float64)))
    return m * (max_margin / m.max())


def ref_ldam_rows(
    z: Tensor, dist: Tensor, counts: Tensor, max_margin: float, scale: float, weight: Tensor | None
) -> Tensor:
    """Cao et al. eq. (13), expected over t: -w_k log(e^{s(z_k - m_k)} / (e^{s(z_k - m_k)} + sum_{j!=k} e^{s z_j}))."""
    m = ref_margins(counts, max_margin)
    w = torch.ones(z.shape[1], dtype=torch.float64) if weight is None else weight.to(torch.float64)
    total = torch.zeros(z.shape[0], dtype=torch.float64)
    for k in range(z.shape[1]):
        is_k = torch.arange(z.shape[1]) == k
        a = torch.where(is_k, scale * (z - m[k]), scale * z)
        total = total + dist[:, k] * w[k] * (-_log_softmax(a)[:, k])
    return total


def ref_reduce(per_row: Tensor, keep: Tensor, reduction: str, row_weight: Tensor | None = None) -> Tensor:
    """'mean' divides by the kept rows, or by their summed weights (F.cross_entropy's rule with ``weight``)."""
    per_row = torch.where(keep, per_row, torch.zeros_like(per_row))
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if row_weight is None:
        return per_row.sum() / keep.sum()
    return per_row.sum() / torch.where(keep, row_weight, torch.zeros_like(row_weight)).sum()


def make_inputs(form: str, kind: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = {"unbatched": (C,), "batched": (7, C), "spatial": (3, C, 2, 2)}[form]
    logits = (torch.randn(shape, generator=g, dtype=torch.float64) * 2.0).to(dtype)
    class_dim = 0 if form == "unbatched" else 1
    if kind == "probs":
        target = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 2.0, dim=class_dim).to(dtype)
        return logits, target
    index_shape = shape[:class_dim] + shape[class_dim + 1 :]
    target = torch.randint(0, C, index_shape, generator=g)
    if kind == "index_ignore":
        target = target.clone().reshape(-1)
        target[::3] = -100
        target = target.reshape(index_shape)
    return logits, target


def rows_of(logits: Tensor, target: Tensor, smoothing: float) -> tuple[Tensor, Tensor, Tensor, Tensor | None, tuple]:
    """Rows (M, C), target distributions (M, C), kept mask (M,), labels (M,) or None, and the 'none' shape."""
    if logits.ndim == 1:
        z, t, shape = logits.unsqueeze(0), target.unsqueeze(0), ()
    elif logits.ndim == 2:
        z, t, shape = logits, target, (logits.shape[0],)
    else:
        z = logits.movedim(1, -1).reshape(-1, logits.shape[1])
        t = target.movedim(1, -1).reshape(-1, logits.shape[1]) if target.dtype.is_floating_point else target
        shape = tuple(target.shape) if not target.dtype.is_floating_point else (logits.shape[0], *logits.shape[2:])
    z = z.to(torch.float64)
    num_classes = z.shape[1]
    if t.dtype.is_floating_point:
        dist = t.to(torch.float64)
        keep = torch.ones(z.shape[0], dtype=torch.bool)
        labels = None
    else:
        y = t.reshape(-1)
        keep = y != -100
        labels = torch.where(keep, y, torch.zeros_like(y))
        dist = F.one_hot(labels, num_classes).to(torch.float64)
    dist = dist * (1.0 - smoothing) + smoothing / num_classes
    return z, dist, keep, labels, shape


def _cotangent(out: Tensor) -> Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(out.shape, generator=g, dtype=out.dtype) + 0.5


def _grad(fn, logits: Tensor) -> tuple[Tensor, Tensor]:
    x = logits.detach().clone().requires_grad_(True)
    out = fn(x)
    (grad,) = torch.autograd.grad((out * _cotangent(out)).sum(), x)
    return out.detach(), grad


def _assert_matches(library: Callable[[Tensor], Tensor], reference: Callable[[Tensor], Tensor], logits: Tensor) -> None:
    """``library`` and ``reference`` agree at ``logits``, in value and gradient."""
    for got, want in zip(_grad(library, logits), _grad(reference, logits)):
        torch.testing.assert_close(got, want)


def _reference_loss(
    x: Tensor, target: Tensor, smoothing: float, reduction: str, per_rows: Callable[..., Any]
) -> Tensor:
    """Reduce the reference ``per_rows(z, dist, labels) -> (per-row losses, per-row weights or None)``."""
    z, dist, keep, labels, shape = rows_of(x, target, smoothing)
    per_row, row_weight = per_rows(z, dist, labels)
    out = ref_reduce(per_row, keep, reduction, row_weight)
    return out.reshape(shape) if reduction == "none" else out


def _assert_half_in_float32(loss: Callable[..., Tensor], dtype: torch.dtype, seed: int) -> None:
    """Half or bfloat16 logits give a float32 loss equal to that of the logits cast to float32."""
    logits, target = make_inputs("batched", "index", seed=seed, dtype=dtype)
    out = loss(logits, target, COUNTS)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, loss(logits.float(), target, COUNTS))


def _assert_module_equals_functional(
    cls: Callable[..., nn.Module], function: Callable[..., Tensor], options: dict[str, Any], seed: int
) -> nn.Module:
    """``cls(COUNTS, **options)`` gives what ``function`` gives; returns the module (for its repr)."""
    logits, target = make_inputs("spatial", "index_ignore", seed=seed)
    module = cls(COUNTS, **options)
    torch.testing.assert_close(module(logits, target), function(logits, target, COUNTS, **options))
    return module


def _roundtrip_checks(module: nn.Module, logits: Tensor, target: Tensor) -> None:
    expected = module(logits, target)
    clone = pickle.loads(pickle.dumps(module))
    torch.testing.assert_close(clone(logits, target), expected)
    torch.testing.assert_close(copy.deepcopy(module)(logits, target), expected)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert state["class_counts"].dtype == torch.int64
    fresh = type(module)([1] * len(COUNTS))
    fresh.__dict__.update({k: v for k, v in module.__dict__.items() if not k.startswith("_")})
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(logits, target), expected)


# ----------------------------------------------------------------------------------------------------------------
# Logit adjustment
# ----------------------------------------------------------------------------------------------------------------


class TestLogitAdjustedLoss:
    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("smoothing", [0.0, 0.2])
    @pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 1.7])
    def test_matches_reference(self, form: str, kind: str, reduction: str, smoothing: float, tau: float) -> None:
        logits, target = make_inputs(form, kind, seed=int(10 * tau) + len(form))
        counts = torch.tensor(COUNTS)

        def library(x: Tensor) -> Tensor:
            return LF.logit_adjusted_loss(x, target, counts, tau=tau, reduction=reduction, label_smoothing=smoothing)

        def per_rows(z: Tensor, dist: Tensor, labels: Tensor | None) -> tuple[Tensor, None]:
            return ref_la_rows(z, dist, counts, tau), None

        _assert_matches(library, lambda x: _reference_loss(x, target, smoothing, reduction, per_rows), logits)

    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_tau_one_equals_balanced_softmax(self, form: str, kind: str, reduction: str) -> None:
        logits, target = make_inputs(form, kind, seed=3)
        la = _grad(lambda x: LF.logit_adjusted_loss(x, target, COUNTS, tau=1.0, reduction=reduction), logits)
        bs = _grad(lambda x: LF.balanced_softmax_loss(x, target, COUNTS, reduction=reduction), logits)
        torch.testing.assert_close(la, bs, rtol=0, atol=0)  # the same computation: exactly equal
        module = ltl.LogitAdjustedLoss(COUNTS, tau=1.0, reduction=reduction)
        torch.testing.assert_close(
            module(logits, target), ltl.BalancedSoftmax(COUNTS, reduction=reduction)(logits, target)
        )

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_tau_zero_equals_cross_entropy(self, reduction: str) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=4)
        la = _grad(lambda x: LF.logit_adjusted_loss(x, target, COUNTS, tau=0.0, reduction=reduction), logits)
        ce = _grad(lambda x: F.cross_entropy(x, target, reduction=reduction), logits)
        torch.testing.assert_close(la, ce)

    def test_known_values(self) -> None:
        logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        # pi = (0.9, 0.1), tau = 0.5: shifted logits z + 0.5 log pi.
        a0 = [2.0 + 0.5 * math.log(0.9), 0.5 * math.log(0.1)]
        a1 = [0.5 * math.log(0.9), 1.0 + 0.5 * math.log(0.1)]
        l0 = -a0[0] + math.log(math.exp(a0[0]) + math.exp(a0[1]))
        l1 = -a1[1] + math.log(math.exp(a1[0]) + math.exp(a1[1]))
        out = LF.logit_adjusted_loss(logits, torch.tensor([0, 1]), [90, 10], tau=0.5, reduction="none")
        torch.testing.assert_close(out, torch.tensor([l0, l1], dtype=torch.float64))

    def test_ignore_index(self) -> None:
        logits, target = make_inputs("batched", "index", seed=5)
        target[2] = 7
        out = LF.logit_adjusted_loss(logits, target, COUNTS, tau=0.7, ignore_index=7, reduction="none")
        assert out[2] == 0.0
        mean = LF.logit_adjusted_loss(logits, target, COUNTS, tau=0.7, ignore_index=7)
        torch.testing.assert_close(mean, out.sum() / 6)
        unbatched = LF.logit_adjusted_loss(logits[0], torch.tensor(-100), COUNTS, reduction="sum")
        assert unbatched == 0.0

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_computes_in_float32(self, dtype: torch.dtype) -> None:
        _assert_half_in_float32(functools.partial(LF.logit_adjusted_loss, tau=0.5), dtype, seed=6)

    def test_exceptions(self) -> None:
        logits, target = make_inputs("batched", "index")
        with pytest.raises(ValueError, match="Expected `tau` to be a finite number, but got inf"):
            LF.logit_adjusted_loss(logits, target, COUNTS, tau=math.inf)
        with pytest.raises(ValueError, match="Expected `tau` to be a real number, but got nan"):
            ltl.LogitAdjustedLoss(COUNTS, tau=math.nan)
        with pytest.raises(TypeError, match="Expected `tau` to be a real number, but got '1'"):
            ltl.LogitAdjustedLoss(COUNTS, tau="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `logits` to have C = len"):
            LF.logit_adjusted_loss(logits[:, :3], target, COUNTS)
        with pytest.raises(ValueError, match="Expected every `target` label to be in"):
            LF.logit_adjusted_loss(logits, torch.full_like(target, C), COUNTS)
        with pytest.raises(ValueError, match="Expected every entry of `class_counts` to be > 0"):
            ltl.LogitAdjustedLoss([3, 0, 1, 1, 1])

    def test_gradcheck(self) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=7)
        probs = make_inputs("batched", "probs", seed=7)
        assert torch.autograd.gradcheck(
            lambda x: LF.logit_adjusted_loss(x, target, COUNTS, tau=0.6), (logits.requires_grad_(),), fast_mode=True
        )
        assert torch.autograd.gradcheck(
            lambda x: LF.logit_adjusted_loss(x, probs[1], COUNTS, tau=1.4, label_smoothing=0.1),
            (probs[0].requires_grad_(),),
            fast_mode=True,
        )

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_module_equals_functional(self, reduction: str) -> None:
        options = {"tau": 0.3, "reduction": reduction, "label_smoothing": 0.1}
        module = _assert_module_equals_functional(ltl.LogitAdjustedLoss, LF.logit_adjusted_loss, options, seed=8)
        assert repr(module) == (
            f"LogitAdjustedLoss(num_classes={C}, tau=0.3, reduction={reduction!r}, ignore_index=-100, "
            "label_smoothing=0.1)"
        )

    def test_state_dict_pickle_roundtrip(self) -> None:
        logits, target = make_inputs("batched", "index", seed=9)
        _roundtrip_checks(ltl.LogitAdjustedLoss(COUNTS, tau=0.4), logits, target)

    def test_to_moves_buffers(self) -> None:
        module = ltl.LogitAdjustedLoss(COUNTS).to("meta")
        assert module.class_counts.device.type == "meta"
        assert ltl.LogitAdjustedLoss(COUNTS).half().class_counts.dtype == torch.int64

    @given(problems(), st.floats(-3.0, 3.0), st.floats(-50.0, 50.0), st.integers(1, 100))
    def test_invariances(self, problem: tuple[Tensor, Tensor, Tensor], tau: float, shift: float, factor: int) -> None:
        logits, target, counts = problem
        out = LF.logit_adjusted_loss(logits, target, counts, tau=tau, reduction="sum")
        assert torch.isfinite(out)
        assert out >= 0
        torch.testing.assert_close(
            LF.logit_adjusted_loss(logits + shift, target, counts, tau=tau, reduction="sum"), out
        )
        torch.testing.assert_close(
            LF.logit_adjusted_loss(logits, target, counts * factor, tau=tau, reduction="sum"), out
        )


class TestPosthocAdjust:
    @pytest.mark.parametrize("form", FORMS)
    @pytest.mark.parametrize("tau", [0.0, 1.0, 2.5])
    def test_matches_reference(self, form: str, tau: float) -> None:
        logits, _ = make_inputs(form, "index", seed=11)
        n = torch.tensor(COUNTS, dtype=torch.float64)
        log_pi = torch.log(n / n.sum())
        view = log_pi if logits.ndim <= 2 else log_pi.view(-1, 1, 1)
        _assert_matches(lambda x: ltl.posthoc_adjust(x, COUNTS, tau=tau), lambda x: x - tau * view, logits)

    def test_known_values_and_argmax(self) -> None:
        logits = torch.tensor([[2.0, 1.5]])
        out = ltl.posthoc_adjust(logits, [90, 10])
        torch.testing.assert_close(out, torch.tensor([[2.0 - math.log(0.9), 1.5 - math.log(0.1)]]))
        assert out.argmax(1).item() == 1

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
    def test_keeps_dtype(self, dtype: torch.dtype) -> None:
        logits = torch.zeros(2, C, dtype=dtype)
        assert ltl.posthoc_adjust(logits, COUNTS).dtype == dtype

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match=r"Expected `logits` to have C = len\(class_counts\) = 5 classes on dim"):
            ltl.posthoc_adjust(torch.zeros(2, 3), COUNTS)
        with pytest.raises(ValueError, match="Expected `logits` to have C = len"):
            ltl.posthoc_adjust(torch.tensor(1.0), [1])
        with pytest.raises(TypeError, match="Expected `logits` to be a floating-point tensor, but got dtype"):
            ltl.posthoc_adjust(torch.zeros(2, C, dtype=torch.int64), COUNTS)
        with pytest.raises(TypeError, match=r"Expected `logits` to be a torch\.Tensor, but got list"):
            ltl.posthoc_adjust([0.0] * C, COUNTS)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `tau` to be a finite number"):
            ltl.posthoc_adjust(torch.zeros(2, C), COUNTS, tau=-math.inf)

    def test_gradcheck(self) -> None:
        logits, _ = make_inputs("spatial", "index", seed=12)
        assert torch.autograd.gradcheck(
            lambda x: ltl.posthoc_adjust(x, COUNTS, tau=0.8), (logits.requires_grad_(),), fast_mode=True
        )


def _ref_balanced_accuracy(pred: list[int], target: list[int]) -> float:
    per_class = []
    for c in sorted(set(target)):
        idx = [i for i, y in enumerate(target) if y == c]
        per_class.append(sum(pred[i] == c for i in idx) / len(idx))
    return sum(per_class) / len(per_class)


class TestTuneTau:
    def test_matches_brute_force(self) -> None:
        g = torch.Generator().manual_seed(0)
        counts = torch.tensor(COUNTS)
        target = torch.arange(200) % C
        # A model biased towards the head, as cross-entropy on long-tailed data gives.
        logits = torch.randn(200, C, generator=g, dtype=torch.float64) + 2.0 * F.one_hot(target, C)
        logits = logits + torch.log(counts.double() / counts.sum())
        taus = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
        n = counts.double()
        scores = []
        for tau in taus:
            pred = (logits - tau * torch.log(n / n.sum())).argmax(1).tolist()
            scores.append(_ref_balanced_accuracy(pred, target.tolist()))
        best = taus[max(range(len(taus)), key=lambda i: (scores[i], -i))]
        assert ltl.tune_tau(logits, target, counts, taus=taus) == best
        assert best > 0.0  # the adjustment helps here
        assert ltl.tune_tau(logits, target, counts, taus=torch.tensor(taus)) == best

    def test_ties_go_to_the_first(self) -> None:
        logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
        assert ltl.tune_tau(logits, torch.tensor([0, 1]), [2, 1], taus=[0.3, 0.0, 0.1]) == 0.3

    def test_ignore_index(self) -> None:
        logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [9.0, 0.0]])
        target = torch.tensor([0, 1, -100])
        assert ltl.tune_tau(logits, target, [2, 1], taus=[0.0, 1.0]) == 0.0

    def test_exceptions(self) -> None:
        logits, target = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
        with pytest.raises(ValueError, match="Expected `taus` to hold at least one value, but got an empty"):
            ltl.tune_tau(logits, target, [2, 1], taus=[])
        with pytest.raises(ValueError, match="Expected `tau` to be a real number, but got nan"):
            ltl.tune_tau(logits, target, [2, 1], taus=[0.0, math.nan])
        with pytest.raises(TypeError, match="Expected `taus` to be a sequence of real numbers, but got float"):
            ltl.tune_tau(logits, target, [2, 1], taus=1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `logits` of shape"):
            ltl.tune_tau(torch.zeros(2, 2, 3), torch.zeros(2, 3, dtype=torch.int64), [2, 1])
        with pytest.raises(ValueError, match="Expected every `target` label to be in"):
            ltl.tune_tau(logits, torch.tensor([0, 1, 2, 1]), [2, 1])
        with pytest.raises(ValueError, match="Expected `target` to hold at least one label that is not ignore_index"):
            ltl.tune_tau(logits, torch.full((4,), -100), [2, 1])


# ----------------------------------------------------------------------------------------------------------------
# LDAM and DRW
# ----------------------------------------------------------------------------------------------------------------

WEIGHT = torch.tensor([0.2, 0.5, 1.0, 1.5, 1.8], dtype=torch.float64)


class TestLDAMLoss:
    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("smoothing", [0.0, 0.2])
    @pytest.mark.parametrize("weighted", [False, True])
    def test_matches_reference(self, form: str, kind: str, reduction: str, smoothing: float, weighted: bool) -> None:
        logits, target = make_inputs(form, kind, seed=len(form) + len(kind))
        logits = torch.tanh(logits)  # cosine-like scores, as in Cao et al.
        counts = torch.tensor(COUNTS)
        weight = WEIGHT if weighted else None
        options = {"max_margin": 0.4, "scale": 10.0, "weight": weight}

        def library(x: Tensor) -> Tensor:
            return LF.ldam_loss(x, target, counts, reduction=reduction, label_smoothing=smoothing, **options)

        def per_rows(z: Tensor, dist: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
            row_weight = None if weight is None or labels is None else weight[labels]
            return ref_ldam_rows(z, dist, counts, 0.4, 10.0, weight), row_weight

        _assert_matches(library, lambda x: _reference_loss(x, target, smoothing, reduction, per_rows), logits)

    @pytest.mark.parametrize(("form", "kind"), FORM_KINDS)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("smoothing", [0.0, 0.3])
    def test_no_margin_equals_weighted_cross_entropy(
        self, form: str, kind: str, reduction: str, smoothing: float
    ) -> None:
        logits, target = make_inputs(form, kind, seed=21)
        options = {"reduction": reduction, "label_smoothing": smoothing}
        ldam = _grad(
            lambda x: LF.ldam_loss(x, target, COUNTS, max_margin=0.0, scale=1.0, weight=WEIGHT, **options), logits
        )
        ce = _grad(lambda x: F.cross_entropy(x, target, weight=WEIGHT, **options), logits)
        torch.testing.assert_close(ldam, ce)

    def test_one_hot_probabilities_equal_class_indices(self) -> None:
        logits, target = make_inputs("spatial", "index", seed=22)
        one_hot = F.one_hot(target, C).movedim(-1, 1).to(torch.float64)
        for reduction in ("none", "sum"):
            options = {"weight": WEIGHT, "reduction": reduction}
            by_index = _grad(lambda x, o=options: LF.ldam_loss(x, target, COUNTS, **o), logits)
            by_probs = _grad(lambda x, o=options: LF.ldam_loss(x, one_hot, COUNTS, **o), logits)
            torch.testing.assert_close(by_index, by_probs)

    def test_margins(self) -> None:
        torch.testing.assert_close(
            LF.ldam_margins(COUNTS, 0.5, dtype=torch.float64), ref_margins(torch.tensor(COUNTS), 0.5)
        )
        assert LF.ldam_margins(COUNTS).max().item() == pytest.approx(0.5)
        module = ltl.LDAMLoss(COUNTS, max_margin=0.3)
        torch.testing.assert_close(module.margins, ref_margins(torch.tensor(COUNTS), 0.3).float())

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
        out = LF.ldam_loss(logits, target, COUNTS, weight=WEIGHT, ignore_index=99, reduction="none")
        assert out[1] == 0.0
        kept = torch.arange(7) != 1
        mean = LF.ldam_loss(logits, target, COUNTS, weight=WEIGHT, ignore_index=99)
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
        _assert_half_in_float32(functools.partial(LF.ldam_loss, scale=5.0), dtype, seed=25)

    def test_exceptions(self) -> None:
        logits, target = make_inputs("batched", "index")
        with pytest.raises(ValueError, match=r"Expected `max_margin` to be a finite number >= 0, but got -0\.1"):
            LF.ldam_loss(logits, target, COUNTS, max_margin=-0.1)
        with pytest.raises(ValueError, match="Expected `scale` to be a finite number > 0, but got 0"):
            ltl.LDAMLoss(COUNTS, scale=0)
        with pytest.raises(TypeError, match="Expected `scale` to be a real number, but got None"):
            ltl.LDAMLoss(COUNTS, scale=None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"Expected `weight` to have shape \(5,\), one weight per class, but got"):
            LF.ldam_loss(logits, target, COUNTS, weight=torch.ones(3))
        with pytest.raises(TypeError, match="Expected `weight` to be a floating-point tensor, but got dtype"):
            ltl.LDAMLoss(COUNTS, weight=torch.ones(C, dtype=torch.int64))
        with pytest.raises(TypeError, match=r"Expected `weight` to be None or a torch\.Tensor, but got list"):
            ltl.LDAMLoss(COUNTS, weight=[1.0] * C)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected every `target` label to be in"):
            LF.ldam_loss(logits, torch.full_like(target, -1), COUNTS)
        with pytest.raises(ValueError, match="Expected `target` of class probabilities to be finite"):
            LF.ldam_loss(logits, torch.full_like(logits, 0.5), COUNTS)

    def test_gradcheck(self) -> None:
        logits, target = make_inputs("spatial", "index_ignore", seed=26)
        probs = make_inputs("batched", "probs", seed=26)
        assert torch.autograd.gradcheck(
            lambda x: LF.ldam_loss(x, target, COUNTS, scale=3.0, weight=WEIGHT), (logits.requires_grad_(),),
            fast_mode=True,
        )  # fmt: skip
        assert torch.autograd.gradcheck(
            lambda x: LF.ldam_loss(x, probs[1], COUNTS, scale=3.0, weight=WEIGHT, label_smoothing=0.1),
            (probs[0].requires_grad_(),),
            fast_mode=True,
        )

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_module_equals_functional(self, reduction: str) -> None:
        options = {"max_margin": 0.3, "scale": 7.0, "weight": WEIGHT, "reduction": reduction, "label_smoothing": 0.1}
        module = _assert_module_equals_functional(ltl.LDAMLoss, LF.ldam_loss, options, seed=27)
        assert repr(module) == (
            f"LDAMLoss(num_classes={C}, max_margin=0.3, scale=7.0, weighted=True, reduction={reduction!r}, "
            "ignore_index=-100, label_smoothing=0.1)"
        )

    def test_state_dict_pickle_roundtrip(self) -> None:
        logits, target = make_inputs("batched", "index", seed=28)
        _roundtrip_checks(ltl.LDAMLoss(COUNTS, scale=5.0), logits, target)
        _roundtrip_checks(ltl.LDAMLoss(COUNTS, scale=5.0, weight=WEIGHT), logits, target)

    def test_drw_checkpoint_loads_into_a_fresh_module(self) -> None:
        logits, target = make_inputs("batched", "index", seed=29)
        trained = ltl.LDAMLoss(COUNTS)
        trained.weight = ltl.drw_weights(COUNTS, 5, 3, dtype=torch.float64)
        fresh = ltl.LDAMLoss(COUNTS)
        fresh.load_state_dict(trained.state_dict())
        assert fresh.weighted
        torch.testing.assert_close(fresh(logits, target), trained(logits, target))

    def test_to_moves_buffers(self) -> None:
        module = ltl.LDAMLoss(COUNTS, weight=WEIGHT.float()).to(torch.float64)
        assert module.weight is not None
        assert module.weight.dtype == torch.float64
        assert module.class_counts.dtype == torch.int64
        meta = module.to("meta")
        assert meta.class_counts.device.type == "meta"
        assert meta.weight is not None
        assert meta.weight.device.type == "meta"

    def test_drw_training_step_on_cpu(self) -> None:
        torch.manual_seed(0)
        fc = nn.Linear(4, C)
        criterion = ltl.LDAMLoss(COUNTS, scale=5.0)
        optimizer = torch.optim.SGD(fc.parameters(), lr=0.1)
        x, y = torch.randn(16, 4), torch.randint(0, C, (16,))
        for epoch in range(4):
            criterion.weight = ltl.drw_weights(COUNTS, epoch, start_epoch=2)
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


# ----------------------------------------------------------------------------------------------------------------
# Class-aware sampling
# ----------------------------------------------------------------------------------------------------------------

SAMPLER_COUNTS = [300, 60, 12, 3]
SAMPLER_LABELS = torch.repeat_interleave(torch.arange(4), torch.tensor(SAMPLER_COUNTS))[
    torch.randperm(375, generator=torch.Generator().manual_seed(0))
]


def _sampler_rank(rank: int, world_size: int, folder: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    try:
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=50, seed=6)
        assert (sampler.num_replicas, sampler.rank) == (world_size, rank)
        sampler.set_epoch(3)
        torch.save(torch.tensor(list(sampler)), f"{folder}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


class TestClassAwareSampler:
    @pytest.mark.parametrize("power", [0.0, 0.5, 1.0, -0.5])
    def test_class_frequencies(self, power: float) -> None:
        n = torch.tensor(SAMPLER_COUNTS, dtype=torch.float64)
        expected = n**power / (n**power).sum()
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, power=power, num_samples=40_000, seed=1)
        torch.testing.assert_close(sampler.class_probabilities(), expected)
        drawn = SAMPLER_LABELS[torch.tensor(list(sampler))]
        observed = torch.bincount(drawn, minlength=4).double()
        sigma = torch.sqrt(40_000 * expected * (1 - expected))
        assert ((observed - 40_000 * expected).abs() < 5 * sigma).all(), (observed, 40_000 * expected)

    def test_uniform_within_class(self) -> None:
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, power=0.0, num_samples=20_000, seed=2)
        draws = torch.tensor(list(sampler))
        tail = (SAMPLER_LABELS == 3).nonzero().flatten()
        hits = torch.stack([(draws == i).sum() for i in tail]).double()
        expected = hits.sum() / 3
        assert ((hits - expected).abs() < 5 * torch.sqrt(expected)).all()
        assert set(draws.tolist()) <= set(range(375))

    @pytest.mark.parametrize(("num_samples", "replicas"), [(100, 4), (101, 4), (7, 3), (2, 5)])
    def test_shards_disjoint_and_covering(self, num_samples: int, replicas: int) -> None:
        shards = [
            ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=num_samples, seed=3, num_replicas=replicas, rank=r)
            for r in range(replicas)
        ]
        for s in shards:
            s.set_epoch(2)
        total = shards[0].total_size
        assert total == replicas * math.ceil(num_samples / replicas)
        assert all(len(s) == total // replicas for s in shards)
        draws = shards[0].epoch_draws()
        positions = [list(range(r, total, replicas)) for r in range(replicas)]
        assert sorted(p for ps in positions for p in ps) == list(range(total))  # disjoint and covering
        for s, ps in zip(shards, positions):
            assert list(s) == draws[ps].tolist()
        if num_samples % replicas == 0:
            single = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=num_samples, seed=3, num_replicas=1, rank=0)
            single.set_epoch(2)
            interleaved = torch.stack([torch.tensor(list(s)) for s in shards], dim=1).reshape(-1)
            assert interleaved.tolist() == list(single)

    def test_set_epoch_reshuffles_and_is_deterministic(self) -> None:
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=64, seed=4)
        first = list(sampler)
        assert list(sampler) == first
        sampler.set_epoch(1)
        second = list(sampler)
        assert second != first
        again = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=64, seed=4)
        again.set_epoch(1)
        assert list(again) == second
        assert list(ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=64, seed=5)) != first

    def test_progressive(self) -> None:
        n = torch.tensor(SAMPLER_COUNTS, dtype=torch.float64)
        instance, balanced = n / n.sum(), torch.full((4,), 0.25, dtype=torch.float64)
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, power=0.0, progressive_epochs=10)
        torch.testing.assert_close(sampler.class_probabilities(), instance)
        sampler.set_epoch(4)
        torch.testing.assert_close(sampler.class_probabilities(), 0.6 * instance + 0.4 * balanced)
        torch.testing.assert_close(sampler.class_probabilities(25), balanced)

    def test_defaults_from_torch_distributed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda: 2)
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=10)
        assert (sampler.num_replicas, sampler.rank, len(sampler)) == (4, 2, 3)

    @pytest.mark.slow
    def test_real_process_group(self, tmp_path: Path) -> None:
        # Two gloo processes: each sampler reads its rank and the world size from torch.distributed.
        torch.multiprocessing.spawn(_sampler_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
        shards = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
        single = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=50, seed=6, num_replicas=1, rank=0)
        single.set_epoch(3)
        assert torch.stack(shards, dim=1).reshape(-1).tolist() == list(single)

    def test_missing_class_never_drawn(self) -> None:
        labels = torch.tensor([0, 0, 2, 2, 2, 0])
        sampler = ltd.ClassAwareSampler(labels, num_samples=500)
        assert sampler.class_probabilities()[1] == 0.0
        assert 1 not in labels[torch.tensor(list(sampler))].tolist()

    def test_reads_data_sets_and_works_with_dataloader(self) -> None:
        dataset = torch.utils.data.TensorDataset(torch.randn(375, 2), SAMPLER_LABELS)
        sampler = ltd.ClassAwareSampler(dataset, num_samples=32)
        batches = list(torch.utils.data.DataLoader(dataset, batch_size=8, sampler=sampler))
        assert len(batches) == 4
        assert sum(b[1].numel() for b in batches) == 32
        assert "ClassAwareSampler(num_classes=4, power=0.0" in repr(sampler)

    def test_exceptions(self) -> None:
        with pytest.raises(TypeError, match="Expected `power` to be a real number, but got '1'"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, power="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `power` to be a real number, but got nan"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, power=math.nan)
        with pytest.raises(ValueError, match=r"Expected `rank` to be in \[0, num_replicas=2\), but got 2"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, num_replicas=2, rank=2)
        with pytest.raises(ValueError, match="Expected `num_replicas` to be >= 1, but got 0"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, num_replicas=0, rank=0)
        with pytest.raises(TypeError, match=r"Expected `num_samples` to be an int, but got 2\.0"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=2.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `labels` to hold at least one label, but got none"):
            ltd.ClassAwareSampler(torch.tensor([], dtype=torch.int64))
        with pytest.raises(ValueError, match="Expected every entry of `labels` to be >= 0, but got -1"):
            ltd.ClassAwareSampler(torch.tensor([0, -1]))
        with pytest.raises(TypeError, match="Expected `labels` to hold integer class indices, but got dtype"):
            ltd.ClassAwareSampler(torch.tensor([0.0, 1.0]))
        with pytest.raises(ValueError, match="Expected `epoch` to be >= 0, but got -1"):
            ltd.ClassAwareSampler(SAMPLER_LABELS).set_epoch(-1)
        with pytest.raises(ValueError, match="Expected `progressive_epochs` to be >= 1, but got 0"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, progressive_epochs=0)


# ----------------------------------------------------------------------------------------------------------------
# Decoupled classifiers
# ----------------------------------------------------------------------------------------------------------------


def _classifier(seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    fc = nn.Linear(6, C, bias=bias).double()
    with torch.no_grad():
        fc.weight.mul_(torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64).unsqueeze(1))
    return fc


class TestTauNormalize:
    @pytest.mark.parametrize("tau", [0.0, 0.5, 0.7, 1.0, 2.0])
    def test_matches_reference(self, tau: float) -> None:
        fc = _classifier()
        before = fc.weight.detach().clone()
        out = twostage.tau_normalize(fc, tau)
        expected = torch.stack([w / torch.sqrt((w * w).sum()) ** tau for w in before])
        torch.testing.assert_close(out.weight.detach(), expected)
        assert out.bias is None
        assert torch.equal(fc.weight, before)  # the input is untouched
        if tau == 1.0:
            torch.testing.assert_close(out.weight.norm(dim=1), torch.ones(C, dtype=torch.float64))

    def test_bias_and_zero_rows(self) -> None:
        fc = _classifier()
        with torch.no_grad():
            fc.weight[2] = 0.0
        out = twostage.tau_normalize(fc, 1.0, keep_bias=True)
        assert out.bias is not None
        assert torch.equal(out.bias, fc.bias)
        assert torch.equal(out.weight[2], torch.zeros(6, dtype=torch.float64))
        assert out.weight.dtype == torch.float64
        assert twostage.tau_normalize(_classifier(bias=False), 1.0, keep_bias=True).bias is None

    def test_exceptions(self) -> None:
        with pytest.raises(TypeError, match=r"Expected `classifier` to be an nn\.Module"):
            twostage.tau_normalize(torch.ones(3, 2), 1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `tau` to be a finite number, but got inf"):
            twostage.tau_normalize(_classifier(), math.inf)
        with pytest.raises(ValueError, match=r"Expected `classifier` weight to have shape \(num_classes, features\)"):
            twostage.tau_normalize(nn.Conv2d(3, 4, 1), 1.0)


class TestLearnableWeightScaling:
    def test_matches_reference_and_only_scales_train(self) -> None:
        fc = _classifier(1)
        lws = twostage.LearnableWeightScaling(fc)
        assert [n for n, p in lws.named_parameters() if p.requires_grad] == ["scales"]
        with torch.no_grad():
            lws.scales.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0], dtype=torch.float64))
        x = torch.randn(8, 6, dtype=torch.float64)
        y = torch.randint(0, C, (8,))
        f = lws.scales.detach().clone().requires_grad_(True)
        reference = F.cross_entropy((x @ fc.weight.detach().T + fc.bias.detach()) * f, y)
        (ref_grad,) = torch.autograd.grad(reference, f)
        loss = F.cross_entropy(lws(x), y)
        loss.backward()
        torch.testing.assert_close(loss, reference)
        assert lws.scales.grad is not None
        torch.testing.assert_close(lws.scales.grad, ref_grad)
        assert fc.weight.grad is None
        lws.unfreeze()
        assert fc.weight.requires_grad

    def test_without_bias_equals_scaled_rows(self) -> None:
        fc = _classifier(2, bias=False)
        lws = twostage.LearnableWeightScaling(fc)
        with torch.no_grad():
            lws.scales.copy_(torch.linspace(0.5, 2.0, C, dtype=torch.float64))
        x = torch.randn(3, 6, dtype=torch.float64)
        torch.testing.assert_close(lws(x), x @ (lws.scales.detach().unsqueeze(1) * fc.weight.detach()).T)

    def test_state_dict_pickle_and_gradcheck(self) -> None:
        lws = twostage.LearnableWeightScaling(_classifier(3))
        assert set(lws.state_dict()) == {"scales", "classifier.weight", "classifier.bias"}
        x = torch.randn(2, 6, dtype=torch.float64)
        torch.testing.assert_close(pickle.loads(pickle.dumps(lws))(x), lws(x))
        assert repr(lws).startswith("LearnableWeightScaling(\n  num_classes=5")
        assert torch.autograd.gradcheck(
            lambda s: (lws.classifier(x) * s).sum(), (lws.scales.detach().clone().requires_grad_(),)
        )

    def test_exceptions(self) -> None:
        with pytest.raises(TypeError, match=r"Expected `classifier` to have a `\.weight` tensor"):
            twostage.LearnableWeightScaling(nn.ReLU())


class TestNearestClassMean:
    def test_matches_reference(self) -> None:
        g = torch.Generator().manual_seed(0)
        features = torch.randn(40, 6, generator=g, dtype=torch.float64)
        labels = torch.arange(40) % 4
        ncm = twostage.nearest_class_mean(features, labels, num_classes=5)
        for c in range(4):
            torch.testing.assert_close(ncm.means[c], features[labels == c].mean(0))
        assert torch.equal(ncm.means[4], torch.zeros(6, dtype=torch.float64))  # no sample: zero mean
        x = torch.randn(3, 6, generator=g, dtype=torch.float64)
        expected = torch.tensor(
            [[float(xi @ m / (xi.norm() * m.norm())) if m.norm() > 0 else 0.0 for m in ncm.means] for xi in x],
            dtype=torch.float64,
        )
        torch.testing.assert_close(ncm(x), expected)

    def test_module_roundtrip(self) -> None:
        ncm = twostage.nearest_class_mean(torch.eye(3), torch.tensor([0, 1, 2]))
        assert set(ncm.state_dict()) == {"means"}
        assert ncm.to(torch.float64).means.dtype == torch.float64
        clone = copy.deepcopy(ncm)
        torch.testing.assert_close(clone(torch.eye(3, dtype=torch.float64)), torch.eye(3, dtype=torch.float64))
        assert repr(ncm) == "NearestClassMean(num_classes=3, features=3)"

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match=r"Expected `labels` to have shape \(3,\) to match features"):
            twostage.nearest_class_mean(torch.zeros(3, 2), torch.tensor([0, 1]))
        with pytest.raises(ValueError, match=r"Expected every label to be in \[0, 2\), but got labels in \[0, 2\]"):
            twostage.nearest_class_mean(torch.zeros(3, 2), torch.tensor([0, 1, 2]), num_classes=2)
        with pytest.raises(TypeError, match="Expected `labels` to hold integer class indices"):
            twostage.nearest_class_mean(torch.zeros(3, 2), torch.zeros(3))
        with pytest.raises(ValueError, match="Expected `features` to have shape"):
            twostage.nearest_class_mean(torch.zeros(3), torch.tensor([0, 1, 2]))
        with pytest.raises(ValueError, match="Expected `features` to hold at least one sample"):
            twostage.nearest_class_mean(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
        with pytest.raises(ValueError, match="Expected `means` to have shape"):
            twostage.NearestClassMean(torch.zeros(3))


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    [lambda: ltl.LogitAdjustedLoss(COUNTS, tau=0.5), lambda: ltl.LDAMLoss(COUNTS, scale=5.0, weight=WEIGHT)],
    ids=["LogitAdjustedLoss", "LDAMLoss"],
)
def test_compile(module) -> None:
    criterion = module()
    logits, target = make_inputs("batched", "index", seed=31)
    compiled = torch.compile(criterion, backend="eager", fullgraph=False)
    torch.testing.assert_close(compiled(logits, target), criterion(logits, target))


@pytest.mark.slow
def test_offline_toolbox_demo_reduced(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    examples = str(Path(__file__).resolve().parent.parent / "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)
    import offline_toolbox_demo

    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    det = torch.are_deterministic_algorithms_enabled()
    try:
        assert offline_toolbox_demo.main(["--epochs", "2", "--stage2-epochs", "2", "--seeds", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
        torch.use_deterministic_algorithms(det)
    text = capsys.readouterr().out
    for row in ("naive", "+CE", "+BWLM", "LA", "LDAM-DRW", "naive+posthoc-LA", "s1+cRT", "s1+LWS", "s1+NCM"):
        assert f"| {row} |" in text
