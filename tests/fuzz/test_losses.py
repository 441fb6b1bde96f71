"""Fuzz invariants of every public loss, over every input form, dtype, layout, size and hyperparameter range."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from longtail_losses import functional as LF
from tests.fuzz import fuzz_settings
from tests.fuzz._losses import NAMES, PROBS_NAMES, SPECS, LossSpec
from tests.inputs import FLOAT_DTYPES, IGNORE_INDEX, LOW_DTYPES, REDUCTIONS, Case, cases

names = st.sampled_from(NAMES)
BS_LA = ("balanced_softmax", "logit_adjusted")  # the losses that run as F.cross_entropy of shifted logits
SMOOTHING = [0.0, 0.1, 0.5, 1.0]


def draw_problem(data: st.DataObject, name: str, **case_kw: Any) -> tuple[LossSpec, Case, dict, dict]:
    """A case the loss ``name`` accepts, its hyperparameters and call options (``reduction`` drawn)."""
    spec = SPECS[name]
    if not spec.probs:
        case_kw.setdefault("kinds", ("index", "index_ignore"))
    case = data.draw(cases(**case_kw), label="case")
    ignore_index = data.draw(st.sampled_from([IGNORE_INDEX, -1, 255]), label="ignore_index")
    case = case.with_ignore_index(ignore_index)
    hyper = data.draw(spec.hyper(case.num_classes), label="hyper")
    options: dict[str, Any] = {
        "reduction": data.draw(st.sampled_from(REDUCTIONS), label="reduction"),
        "ignore_index": ignore_index,
    }
    if spec.probs:
        options["label_smoothing"] = data.draw(st.sampled_from(SMOOTHING), label="label_smoothing")
    return spec, case, hyper, options


def call(spec: LossSpec, case: Case, hyper: dict, logits: Tensor | None = None, **options: Any) -> Tensor:
    return spec.functional(case.logits if logits is None else logits, case.target, case.counts, **hyper, **options)


@fuzz_settings()
@given(name=names, data=st.data())
def test_module_equals_functional(name: str, data: st.DataObject) -> None:
    spec, case, hyper, options = draw_problem(data, name)
    module = spec.module(case.counts, hyper, options)
    torch.testing.assert_close(module(case.logits, case.target), call(spec, case, hyper, **options), equal_nan=True)


@fuzz_settings()
@given(name=names, data=st.data())
def test_reductions_agree(name: str, data: st.DataObject) -> None:
    """'none' has the target's shape (0 where ignored), sums to 'sum', and 'mean' divides as documented."""
    spec, case, hyper, options = draw_problem(data, name)
    options.pop("reduction")
    none = call(spec, case, hyper, reduction="none", **options)
    kept = case.kept()
    assert none.shape == kept.shape
    penalty = spec.penalty(case.counts, hyper)
    if kept.numel():  # an empty batch has no entry to carry BWLM's penalty
        # BWLM spreads its penalty over the kept samples, or over all of them if every one is ignored
        spread = penalty / kept.numel() if penalty and not kept.any() else 0.0
        torch.testing.assert_close(none[~kept], torch.full_like(none[~kept], spread))
        total = call(spec, case, hyper, reduction="sum", **options)
        torch.testing.assert_close(none.sum(), total)
    else:
        total = call(spec, case, hyper, reduction="sum", **options)
        torch.testing.assert_close(total, torch.tensor(penalty, dtype=total.dtype))
    mean = call(spec, case, hyper, reduction="mean", **options)
    divisor = spec.mean_divisor(case.target, kept, hyper)
    if divisor > 0:
        torch.testing.assert_close(mean - penalty, (total - penalty) / divisor)
    else:  # nothing to divide by: nan, as F.cross_entropy
        assert torch.isnan(mean), f"'mean' of a batch with nothing to divide by should be nan, got {mean}"


@fuzz_settings()
@given(name=names, dtype=st.sampled_from(FLOAT_DTYPES), data=st.data())
def test_finite_nonnegative_with_finite_gradients(name: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """Finite logits up to |z| ~ 1e4 give a finite, non-negative loss and a finite gradient."""
    spec, case, hyper, options = draw_problem(data, name, dtypes=(dtype,), min_kept=1)
    options["reduction"] = "none"
    z = case.logits.detach().clone().requires_grad_(True)
    out = call(spec, case, hyper, logits=z, **options)
    assert torch.isfinite(out).all(), out
    assert (out >= 0).all(), out
    out.sum().backward()
    assert z.grad is not None
    assert torch.isfinite(z.grad).all(), z.grad


@fuzz_settings()
@given(name=st.sampled_from(PROBS_NAMES), data=st.data())
def test_one_hot_probabilities_equal_class_index(name: str, data: st.DataObject) -> None:
    spec, case, hyper, options = draw_problem(data, name, kinds=("index",))
    options.update(label_smoothing=0.0, reduction="none")
    index = case.target
    if (index == case.ignore_index).any():  # an ignored unbatched sample has no one-hot form
        return
    one_hot = F.one_hot(index.long(), case.num_classes).movedim(-1, case.class_dim).to(case.logits.dtype)
    probs_case = Case(case.logits, one_hot, case.counts, case.form, "probs", case.layout)
    torch.testing.assert_close(call(spec, probs_case, hyper, **options), call(spec, case, hyper, **options))


@fuzz_settings()
@given(name=names, data=st.data())
def test_float32_agrees_with_float64(name: str, data: st.DataObject) -> None:
    spec, case, hyper, options = draw_problem(data, name, scales=(0.0, 1e-3, 1.0, 3.0), min_kept=1)
    options["reduction"] = "none"
    want = call(spec, case, hyper, **options)
    target = case.target.float() if case.target.is_floating_point() else case.target
    got = spec.functional(case.logits.float(), target, case.counts, **hyper, **options)
    assert got.dtype == torch.float32
    # float32 rounding of logits, log-counts and the class weights (counts up to 1e6, beta up to 0.9999)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


@fuzz_settings()
@given(name=names, dtype=st.sampled_from(LOW_DTYPES), data=st.data())
def test_half_and_bfloat16_computed_in_float32(name: str, dtype: torch.dtype, data: st.DataObject) -> None:
    spec, case, hyper, options = draw_problem(data, name, dtypes=(dtype,), scales=(0.0, 1.0, 30.0))
    out = call(spec, case, hyper, **options)
    assert out.dtype == torch.float32
    target = case.target.float() if case.target.is_floating_point() else case.target
    # the checks allow a low-precision target's sums to miss 1 by its rounding; its float32 copy keeps that miss
    checks = {"validate_args": False} if case.kind == "probs" else {}
    want = spec.functional(case.logits.float(), target, case.counts, **hyper, **options, **checks)
    torch.testing.assert_close(out, want, equal_nan=True)


@fuzz_settings()
@given(name=names, data=st.data())
def test_state_dict_round_trip(name: str, data: st.DataObject) -> None:
    """A fresh module (other counts) that loads the state_dict gives the same loss."""
    spec, case, hyper, options = draw_problem(data, name)
    module = spec.module(case.counts, hyper, options)
    fresh = spec.module([1] * case.num_classes, hyper, options)
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh(case.logits, case.target), module(case.logits, case.target), equal_nan=True)


@fuzz_settings()
@given(name=st.sampled_from([n for n in NAMES if SPECS[n].shift_invariant]), data=st.data())
def test_shift_of_a_sample_logits_leaves_loss_unchanged(name: str, data: st.DataObject) -> None:
    spec, case, hyper, options = draw_problem(data, name, scales=(0.0, 1.0, 10.0))
    options["reduction"] = "none"
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    shape = list(case.logits.shape)
    shape[case.class_dim] = 1
    shift = 100 * (2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1)
    # the shift is rounded in the log-sum-exp at a scale of |shift| ~ 1e2
    torch.testing.assert_close(
        call(spec, case, hyper, logits=case.logits + shift, **options),
        call(spec, case, hyper, **options),
        rtol=1e-9,
        atol=1e-9 * (1 + hyper.get("scale", 1.0)) * 100,
    )


@fuzz_settings()
@given(name=names, data=st.data())
def test_ignored_positions_contribute_nothing(name: str, data: st.DataObject) -> None:
    """Changing the logits of ignored samples changes neither the loss nor the other gradients; theirs is 0."""
    spec, case, hyper, options = draw_problem(data, name, kinds=("index_ignore",), forms=("batched", "spatial"))
    ignored = (case.target == case.ignore_index).unsqueeze(case.class_dim).expand_as(case.logits)
    noise = torch.randn(case.logits.shape, generator=torch.Generator().manual_seed(1), dtype=case.logits.dtype)
    other = torch.where(ignored, case.logits + 1e3 * noise, case.logits)
    results = []
    for z in (case.logits, other):
        z = z.detach().clone().requires_grad_(True)
        out = call(spec, case, hyper, logits=z, **options)
        out.sum().backward()
        results.append((out.detach(), z.grad))
    torch.testing.assert_close(results[0][0], results[1][0], equal_nan=True)
    if torch.isfinite(results[0][0]).all():
        torch.testing.assert_close(results[0][1], results[1][1])
        torch.testing.assert_close(results[0][1][ignored], torch.zeros_like(results[0][1][ignored]))


def _ce_options(case: Case, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for ``F.cross_entropy`` itself, which takes no ``ignore_index`` with probability targets."""
    ce = {k: v for k, v in options.items() if k != "validate_args"}
    return {k: v for k, v in ce.items() if k != "ignore_index"} if case.kind == "probs" else ce


@fuzz_settings()
@given(data=st.data())
def test_balanced_softmax_and_la_are_cross_entropy_of_shifted_logits(data: st.DataObject) -> None:
    """Documented: exactly ``F.cross_entropy(logits + tau * log(n), ...)`` in every form and option."""
    spec, case, hyper, options = draw_problem(data, "logit_adjusted", scales=(0.0, 1.0, 30.0))
    shape = [1] * case.logits.dim()
    shape[case.class_dim] = case.num_classes
    log_n = torch.tensor(case.counts, dtype=torch.float64).log().reshape(shape)
    tau = hyper["tau"]
    ce_options = _ce_options(case, options)
    want = F.cross_entropy(
        case.logits + tau * log_n, case.target.long() if case.kind != "probs" else case.target, **ce_options
    )
    torch.testing.assert_close(call(spec, case, hyper, **options), want, equal_nan=True)
    want_bs = F.cross_entropy(
        case.logits + log_n, case.target if case.kind == "probs" else case.target.long(), **ce_options
    )
    torch.testing.assert_close(
        LF.balanced_softmax_loss(case.logits, case.target, case.counts, **options), want_bs, equal_nan=True
    )


@fuzz_settings()
@given(data=st.data(), factor=st.integers(1, 1000))
def test_equal_counts_give_cross_entropy_and_scaled_counts_change_nothing(data: st.DataObject, factor: int) -> None:
    _, case, _, options = draw_problem(data, "balanced_softmax")
    target = case.target if case.kind == "probs" else case.target.long()
    equal = [case.counts[0]] * case.num_classes
    torch.testing.assert_close(
        LF.balanced_softmax_loss(case.logits, case.target, equal, **options),
        F.cross_entropy(case.logits, target, **_ce_options(case, options)),
        equal_nan=True,
    )
    torch.testing.assert_close(
        LF.balanced_softmax_loss(case.logits, case.target, [factor * n for n in case.counts], **options),
        LF.balanced_softmax_loss(case.logits, case.target, case.counts, **options),
        equal_nan=True,
    )


@fuzz_settings()
@given(data=st.data())
def test_degenerate_hyperparameters_give_the_simpler_loss(data: st.DataObject) -> None:
    """tau=0: CE; BFS alpha=0: BS, alpha=1: CB focal; BWLM wd=0: BFS; LDAM m=0, s=1: weighted CE; Seesaw p=q=0: CE."""
    _, case, hyper, options = draw_problem(data, "bfs")
    target = case.target if case.kind == "probs" else case.target.long()
    z, y, n = case.logits, case.target, case.counts
    ce = F.cross_entropy(z, target, **_ce_options(case, options))
    torch.testing.assert_close(LF.logit_adjusted_loss(z, y, n, tau=0.0, **options), ce, equal_nan=True)
    torch.testing.assert_close(LF.ldam_loss(z, y, n, max_margin=0.0, scale=1.0, **options), ce, equal_nan=True)
    b, g = hyper["beta"], hyper["gamma"]
    torch.testing.assert_close(
        LF.bfs_loss(z, y, n, alpha=0.0, beta=b, gamma=g, **options),
        LF.balanced_softmax_loss(z, y, n, **options),
        equal_nan=True,
    )
    torch.testing.assert_close(
        LF.bfs_loss(z, y, n, alpha=1.0, beta=b, gamma=g, **options),
        LF.class_balanced_focal_loss(z, y, n, beta=b, gamma=g, **options),
        equal_nan=True,
    )
    weight = torch.zeros(case.num_classes, 3)
    torch.testing.assert_close(
        LF.bwlm_loss(z, y, n, weight, weight_decay=0.0, **hyper, **options),
        LF.bfs_loss(z, y, n, **hyper, **options),
        equal_nan=True,
    )
    if case.kind != "probs" and options["label_smoothing"] == 0.0:
        plain = {k: v for k, v in options.items() if k != "label_smoothing"}
        torch.testing.assert_close(
            LF.seesaw_loss(z, y, n, p=0.0, q=0.0, **plain), F.cross_entropy(z, target, **plain), equal_nan=True
        )


@fuzz_settings()
@given(data=st.data())
def test_seesaw_module_counts_the_batch_before_the_loss(data: st.DataObject) -> None:
    spec, case, hyper, options = draw_problem(data, "seesaw")
    module = spec.module(case.counts, hyper, options).train()
    kept = case.target[case.target != case.ignore_index].long()
    updated = torch.tensor(case.counts) + torch.bincount(kept.reshape(-1), minlength=case.num_classes)
    out = module(case.logits, case.target)
    assert torch.equal(module.accumulated_counts, updated)
    torch.testing.assert_close(
        out, LF.seesaw_loss(case.logits, case.target, updated, **hyper, **options), equal_nan=True
    )


@fuzz_settings()
@given(data=st.data())
def test_eqlv2_module_statistics_stay_finite_and_nonnegative(data: st.DataObject) -> None:
    spec, case, hyper, options = draw_problem(data, "eqlv2", dtypes=(torch.float32, torch.float64))
    module = spec.module(case.counts, hyper, options).train()
    before = call(spec, case, hyper, **options)
    torch.testing.assert_close(
        module(case.logits, case.target), before.to(torch.float64 if False else before.dtype), equal_nan=True
    )
    for stat in (module.pos_grad, module.neg_grad):
        assert stat.dtype == torch.float64
        assert torch.isfinite(stat).all()
        assert (stat >= 0).all()


@fuzz_settings()
@given(name=names, data=st.data())
def test_validate_args_false_changes_nothing_for_valid_inputs(name: str, data: st.DataObject) -> None:
    """``validate_args`` only decides whether values are checked: valid inputs give the same loss either way."""
    spec, case, hyper, options = draw_problem(data, name)
    torch.testing.assert_close(
        call(spec, case, hyper, **options, validate_args=False), call(spec, case, hyper, **options), equal_nan=True
    )


@pytest.mark.parametrize("name", [*BS_LA, "bfs"])
def test_unchecked_ignored_sample_counts_nothing(name: str) -> None:
    hyper = {"alpha": 0.0} if name == "bfs" else {}
    out = SPECS[name].functional(
        torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([-100]), [1, 1, 1], reduction="none", validate_args=False, **hyper
    )
    torch.testing.assert_close(out, torch.zeros(1))


@pytest.mark.parametrize(("name", "hyper"), [("balanced_softmax", {}), ("logit_adjusted", {}), ("bfs", {"alpha": 0.0})])
def test_probabilities_with_any_ignore_index(name: str, hyper: dict) -> None:
    logits, probs = torch.zeros(2, 3), torch.full((2, 3), 1 / 3)
    fn = SPECS[name].functional
    torch.testing.assert_close(
        fn(logits, probs, [1, 2, 3], **hyper, ignore_index=255), fn(logits, probs, [1, 2, 3], **hyper)
    )


def test_ldam_class_weights_list_read_in_float64() -> None:
    z, y = torch.tensor([[0.0, 1.0]], dtype=torch.float64), torch.tensor([0])
    weight = torch.tensor([1e-50, 1e-50], dtype=torch.float64)
    out = LF.ldam_loss(z, y, [1, 1], max_margin=0.0, scale=1.0, class_weights=weight.tolist())
    torch.testing.assert_close(out, F.cross_entropy(z, y, weight=weight))


def test_ldam_zero_weight_sum_is_nan_as_cross_entropy() -> None:
    z, y, w = torch.zeros(1, 3), torch.tensor([1]), torch.tensor([0.0, 0.0, 1.0])
    out = LF.ldam_loss(z, y, [1, 1, 1], max_margin=0.0, scale=1.0, class_weights=w, label_smoothing=0.1)
    torch.testing.assert_close(out, F.cross_entropy(z, y, weight=w, label_smoothing=0.1), equal_nan=True)
