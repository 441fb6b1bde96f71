"""Hypothesis invariants that hold for every loss, whatever the inputs."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from longtail_losses import functional as LF
from tests.inputs import alphas, betas, gammas, problems

LOSSES = {
    "bs": lambda z, y, n, **kw: LF.balanced_softmax_loss(z, y, n, **kw),
    "cb": lambda z, y, n, **kw: LF.class_balanced_focal_loss(z, y, n, beta=0.999, gamma=2.0, **kw),
    "bfs": lambda z, y, n, **kw: LF.bfs_loss(z, y, n, alpha=0.3, beta=0.99, gamma=0.5, **kw),
}
names = st.sampled_from(sorted(LOSSES))


@given(name=names, problem=problems(logit_bound=1e4), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_nonnegative_and_finite_with_finite_gradients(name: str, problem: tuple, dtype: torch.dtype) -> None:
    logits, target, counts = problem
    z = logits.to(dtype).requires_grad_(True)
    out = LOSSES[name](z, target, counts, reduction="none")
    assert torch.isfinite(out).all()
    assert (out >= 0).all()
    out.sum().backward()
    assert torch.isfinite(z.grad).all()


@given(name=names, problem=problems())
def test_sum_is_none_summed_and_mean_divides_by_kept(name: str, problem: tuple) -> None:
    logits, target, counts = problem
    per_sample = LOSSES[name](logits, target, counts, reduction="none")
    torch.testing.assert_close(LOSSES[name](logits, target, counts, reduction="sum"), per_sample.sum())
    kept = (target != -100).sum()
    torch.testing.assert_close(LOSSES[name](logits, target, counts, reduction="mean"), per_sample.sum() / kept)


@given(name=names, problem=problems(), data=st.data())
def test_consistent_class_permutation_leaves_loss_unchanged(name: str, problem: tuple, data: st.DataObject) -> None:
    logits, target, counts = problem
    perm = torch.tensor(data.draw(st.permutations(range(logits.shape[1]))))
    inverse = torch.argsort(perm)
    permuted_target = torch.where(target == -100, target, inverse[target.clamp_min(0)])
    torch.testing.assert_close(
        LOSSES[name](logits[:, perm], permuted_target, counts[perm], reduction="none"),
        LOSSES[name](logits, target, counts, reduction="none"),
    )


@given(problem=problems(), shift=st.floats(-100, 100))
def test_balanced_softmax_shift_invariant(problem: tuple, shift: float) -> None:
    logits, target, counts = problem
    torch.testing.assert_close(
        LF.balanced_softmax_loss(logits + shift, target, counts, reduction="none"),
        LF.balanced_softmax_loss(logits, target, counts, reduction="none"),
    )


@given(problem=problems(), alpha=alphas, beta=betas, gamma=gammas)
def test_bfs_lies_between_its_parts(problem: tuple, alpha: float, beta: float, gamma: float) -> None:
    logits, target, counts = problem
    cb = LF.class_balanced_focal_loss(logits, target, counts, beta=beta, gamma=gamma, reduction="none")
    bs = LF.balanced_softmax_loss(logits, target, counts, reduction="none")
    mix = LF.bfs_loss(logits, target, counts, alpha=alpha, beta=beta, gamma=gamma, reduction="none")
    low, high = torch.minimum(cb, bs), torch.maximum(cb, bs)
    assert torch.all(mix >= low - 1e-9)  # float64 rounding of the convex combination
    assert torch.all(mix <= high + 1e-9)
