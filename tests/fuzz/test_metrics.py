"""Fuzz the metrics and the post-hoc tools: accuracies in [0, 1], groups that partition, tau among the candidates."""

from __future__ import annotations

import math
import warnings

import torch
from hypothesis import given
from hypothesis import strategies as st

import longtail_losses as ltl
from longtail_losses import metrics
from tests.fuzz import fuzz_settings
from tests.inputs import betas, cases, counts_lists


@st.composite
def predictions(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Logits (N, C) or predicted indices (N), true labels (N), and C."""
    c, n = draw(st.integers(1, 8)), draw(st.integers(0, 40))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    target = torch.randint(0, c, (n,), generator=g)
    if draw(st.booleans()):
        return torch.randn(n, c, generator=g), target, c
    return torch.randint(0, c, (n,), generator=g), target, c


@fuzz_settings()
@given(problem=predictions())
def test_per_class_accuracy_in_unit_interval_nan_without_samples(problem) -> None:
    pred, target, c = problem
    acc = metrics.per_class_accuracy(pred, target, c)
    assert acc.shape == (c,)
    present = torch.bincount(target, minlength=c) > 0
    assert torch.isnan(acc[~present]).all()
    assert ((acc[present] >= 0) & (acc[present] <= 1)).all()
    hard = pred.argmax(1) if pred.is_floating_point() else pred
    torch.testing.assert_close(metrics.per_class_accuracy(hard, target, c), acc, equal_nan=True)


thresholds = st.tuples(st.floats(0, 1000, allow_nan=False), st.floats(0, 1000, allow_nan=False)).map(sorted)
relative = st.tuples(st.floats(0, 1, allow_nan=False), st.floats(0, 1, allow_nan=False)).map(sorted)


@fuzz_settings()
@given(data=st.data(), rel=st.booleans())
def test_shot_groups_partition_the_classes(data: st.DataObject, rel: bool) -> None:
    counts = data.draw(st.integers(1, 10).flatmap(lambda c: counts_lists(c, high=2000)))
    few, many = data.draw(relative if rel else thresholds)
    groups = metrics.shot_groups(counts, many_threshold=many, few_threshold=few, relative=rel)
    assert set(groups) == {"many", "medium", "few"}
    joined = torch.cat([groups["many"], groups["medium"], groups["few"]]).sort().values
    assert joined.tolist() == list(range(len(counts)))
    n = torch.tensor(counts, dtype=torch.float64)
    scale = n.max() if rel else 1.0
    assert (n[groups["many"]] > many * scale).all()
    assert (n[groups["few"]] < few * scale).all()


@fuzz_settings()
@given(problem=predictions(), data=st.data())
def test_shot_accuracy_groups_average_per_class_accuracy(problem, data: st.DataObject) -> None:
    pred, target, c = problem
    counts = data.draw(counts_lists(c, high=300))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty groups are warned about, and give nan
        result = metrics.shot_accuracy(pred, target, counts)
    acc = metrics.per_class_accuracy(pred, target, c)
    for key, value in result.items():
        assert math.isnan(value) or 0.0 <= value <= 1.0, (key, value)
    all_mean = acc[~acc.isnan()].mean().item() if (~acc.isnan()).any() else float("nan")
    assert (math.isnan(all_mean) and math.isnan(result["all"])) or math.isclose(
        result["all"], all_mean, rel_tol=1e-5, abs_tol=1e-6
    )


@fuzz_settings()
@given(data=st.data(), taus=st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=6))
def test_tune_tau_returns_a_candidate(data: st.DataObject, taus: list[float]) -> None:
    case = data.draw(cases(kinds=("index", "index_ignore"), forms=("batched",), min_kept=1, min_batch=1))
    tau = ltl.tune_tau(case.logits, case.target, case.counts, taus=taus)
    assert isinstance(tau, float)
    assert tau in taus


@fuzz_settings()
@given(data=st.data(), tau=st.floats(-3, 3, allow_nan=False))
def test_posthoc_adjust_shape_dtype_and_tau_zero(data: st.DataObject, tau: float) -> None:
    case = data.draw(cases(kinds=("index",), dtypes=(torch.float32, torch.float64)))
    adjusted = ltl.posthoc_adjust(case.logits, case.counts, tau=tau)
    assert adjusted.shape == case.logits.shape
    assert adjusted.dtype == case.logits.dtype
    torch.testing.assert_close(ltl.posthoc_adjust(case.logits, case.counts, tau=0.0), case.logits)
    # the adjustment is the same per-class shift for every sample: differences between samples are kept
    shift = adjusted - case.logits
    if case.form != "unbatched" and shift.numel():
        # (z + s) - z is s rounded at the scale of |z|
        atol = 4 * torch.finfo(shift.dtype).eps * (1 + case.logits.abs().max().item() + adjusted.abs().max().item())
        torch.testing.assert_close(shift, shift.select(0, 0).unsqueeze(0).expand_as(shift), rtol=0, atol=atol)


@fuzz_settings()
@given(
    data=st.data(),
    beta=betas,
    start=st.integers(0, 10),
    epoch=st.integers(0, 20),
)
def test_drw_weights_ones_then_sum_to_num_classes(data: st.DataObject, beta: float, start: int, epoch: int) -> None:
    counts = data.draw(st.integers(1, 10).flatmap(counts_lists))
    w = ltl.drw_weights(counts, epoch, start, beta=beta)
    assert w.shape == (len(counts),)
    assert torch.isfinite(w).all()
    assert (w > 0).all()
    if epoch < start:
        torch.testing.assert_close(w, torch.ones_like(w))
    else:
        # float32 weights: the sum is rounded over C terms
        torch.testing.assert_close(w.sum(), torch.tensor(float(len(counts))), rtol=1e-5, atol=1e-5)
        n = torch.tensor(counts)
        order = torch.argsort(n)
        assert (w[order].diff() <= 1e-6 * w.max()).all(), "a rarer class never weighs less"
