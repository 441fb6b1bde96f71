"""The fused fast path equals the straightforward reference path it is switched against: values and gradients."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from longtail_losses import functional as LF
from tests.inputs import alphas, betas, gammas, make_counts, make_inputs, reductions
from tests.losses import _paths

LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "balanced_softmax": lambda z, y, n, **kw: LF.balanced_softmax_loss(
        z, y, n, reduction=kw["reduction"], ignore_index=-100
    ),
    "class_balanced_focal": lambda z, y, n, **kw: LF.class_balanced_focal_loss(
        z, y, n, beta=kw["beta"], gamma=kw["gamma"], reduction=kw["reduction"]
    ),
    "bfs": lambda z, y, n, **kw: LF.bfs_loss(
        z, y, n, alpha=kw["alpha"], beta=kw["beta"], gamma=kw["gamma"], reduction=kw["reduction"]
    ),
}


@pytest.fixture(autouse=True)
def _fused_balanced_softmax_at_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small balanced-softmax inputs normally take F.cross_entropy(z + log n); here the fused kernel is under test.
    _paths.fused_everywhere(monkeypatch)


def run(fn: Callable[..., torch.Tensor], z: torch.Tensor, *args: Any, reference: bool, **kw: Any):
    """Loss and gradient (of the summed loss) with the fast or the reference path."""
    logits = z.detach().clone().requires_grad_()
    with _paths.reference_path(reference):
        loss = fn(logits, *args, **kw)
        (grad,) = torch.autograd.grad(loss.sum(), logits)
    return loss, grad


def assert_fast_equals_reference(fn, z, *args, **kw) -> None:
    fast_loss, fast_grad = run(fn, z, *args, reference=False, **kw)
    ref_loss, ref_grad = run(fn, z, *args, reference=True, **kw)
    torch.testing.assert_close(fast_loss, ref_loss, equal_nan=True)
    torch.testing.assert_close(fast_grad, ref_grad, equal_nan=True)
    assert fast_grad.dtype == z.dtype


def make_case(batch: int, classes: int, dtype: torch.dtype, seed: int, scale: float = 4.0):
    z, y = make_inputs("batched", "index", seed=seed, dtype=dtype, batch=batch, num_classes=classes, scale=scale)
    return z, y, make_counts(classes, seed=seed)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    batch = draw(st.integers(1, 9))
    classes = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**16))
    z, y, counts = make_case(batch, classes, torch.float64, seed, scale=draw(st.sampled_from([0.1, 3.0, 30.0])))
    ignored = draw(st.lists(st.booleans(), min_size=batch, max_size=batch))
    y[torch.tensor(ignored)] = -100
    return {
        "z": z,
        "y": y,
        "counts": counts,
        "beta": draw(betas),
        "gamma": draw(gammas),
        "alpha": draw(alphas),
        "reduction": draw(reductions),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("classes", [1, 3])
def test_subnormal_alpha_gives_a_finite_gradient(dtype: torch.dtype, classes: int) -> None:
    # alpha * w_y subnormal: the balanced-softmax part, stored divided by it, overflowed to inf - inf = nan
    # (found by hypothesis: alpha = 2.2e-311, one class).
    z = torch.linspace(-1, 1, 2 * classes, dtype=dtype).reshape(2, classes)
    alpha = float(torch.finfo(dtype).tiny) / 16
    fast_loss, fast_grad = run(
        LF.bfs_loss, z, torch.zeros(2, dtype=torch.long), [345] * classes, reference=False, alpha=alpha
    )
    ref_loss, ref_grad = run(
        LF.bfs_loss, z, torch.zeros(2, dtype=torch.long), [345] * classes, reference=True, alpha=alpha
    )
    assert torch.isfinite(fast_grad).all()
    torch.testing.assert_close(fast_loss, ref_loss)
    torch.testing.assert_close(fast_grad, ref_grad)


@pytest.mark.parametrize("name", sorted(LOSSES))
@given(case=cases())
def test_fast_equals_reference_float64(name: str, case: dict[str, Any]) -> None:
    z, y, counts = case.pop("z"), case.pop("y"), case.pop("counts")
    assert_fast_equals_reference(LOSSES[name], z, y, counts, **case)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_fast_equals_reference_many_blocks(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, name: str, reduction: str
) -> None:
    # 300 classes and a budget of 1000 elements: focal blocks of 3 rows, the last one short.
    _paths.small_blocks(monkeypatch, 1000)
    spy = _paths.FastPathCalls(monkeypatch)
    z, y, counts = make_case(32, 300, dtype, seed=1)
    y[5] = -100
    assert_fast_equals_reference(LOSSES[name], z, y, counts, beta=0.999, gamma=1.5, alpha=0.3, reduction=reduction)
    assert spy.calls == 1  # the fast run went through the fused kernel once, the reference run not at all


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_work_buffer_is_reused_bounded_and_overwritten(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    # The CPU work buffer outlives the call: whatever an earlier call left in it (nan here) must not reach a result,
    # and it never grows beyond five planes of one block, whatever the batch.
    _paths.small_blocks(monkeypatch, 1000)
    _paths.drop_workspace()  # what earlier tests left may be larger
    shapes = [(32, 300, 1.5, 0.3), (7, 40, 1.0, 0.0), (64, 10, 2.0, 1.0), (3, 900, 0.0, 0.5)]
    for batch, classes, gamma, alpha in shapes:
        z, y, counts = make_case(batch, classes, dtype, seed=batch)
        kw = {"beta": 0.99, "gamma": gamma, "alpha": alpha, "reduction": "none"}
        _paths.poison_workspace()
        assert_fast_equals_reference(LOSSES["bfs"], z, y, counts, **kw)
        _paths.poison_workspace()
        with torch.no_grad():  # the forward without a gradient buffer holds the signed logits in a plane
            fast = LOSSES["bfs"](z, y, counts, **kw)
        with _paths.reference_path():
            torch.testing.assert_close(fast, LOSSES["bfs"](z, y, counts, **kw))
        assert 0 < _paths.workspace_elements(dtype) <= 5 * 1000


@pytest.mark.parametrize("first", ["inference_mode", "meta default device"])
def test_a_new_work_buffer_serves_every_later_call(first: str) -> None:
    # The first call of a thread may be an evaluation under inference_mode, or run under another default device: the
    # buffer it leaves must be a normal CPU tensor that later calls, training included, can write into.
    _paths.drop_workspace()
    z, y, counts = make_case(16, 700, torch.float32, seed=3)
    kw = {"beta": 0.99, "gamma": 2.0, "alpha": 0.5, "reduction": "mean"}
    with _paths.reference_path():
        expected = LOSSES["bfs"](z, y, counts, **kw)
    with torch.inference_mode() if first == "inference_mode" else torch.device("meta"):
        torch.testing.assert_close(LOSSES["bfs"](z, y, counts, **kw), expected)
    assert_fast_equals_reference(LOSSES["bfs"], z, y, counts, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
def test_saturated_logits(dtype: torch.dtype, gamma: float, alpha: float) -> None:
    z, y, counts = make_case(6, 5, dtype, seed=2)
    z[0] = 1e4  # every logit saturated high
    z[1] = -1e4  # every logit saturated low
    z[2, ::2], z[2, 1::2] = 1e4, -1e4
    z[3, y[3]] = -1e4  # the hardest sample: its own class saturated low
    z[4, y[4]] = 1e4
    loss, grad = run(LF.bfs_loss, z, y, counts, reference=False, alpha=alpha, gamma=gamma, reduction="none")
    assert torch.isfinite(loss).all()
    assert torch.isfinite(grad).all()
    assert loss[3] > 1e3  # the hard sample is counted, not dropped (Cui et al.'s released code gives nan here)
    assert_fast_equals_reference(LF.bfs_loss, z, y, counts, alpha=alpha, beta=0.99, gamma=gamma, reduction="none")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_sample_ignored(name: str) -> None:
    z, y, counts = make_case(4, 3, torch.float64, seed=3)
    y[:] = -100
    for reduction in ("none", "mean", "sum"):  # "mean" is nan, as F.cross_entropy gives
        assert_fast_equals_reference(LOSSES[name], z, y, counts, beta=0.9, gamma=1.0, alpha=0.5, reduction=reduction)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_empty_batch(name: str) -> None:
    z, y, counts = make_case(0, 3, torch.float64, seed=4)
    assert_fast_equals_reference(LOSSES[name], z, y, counts, beta=0.9, gamma=1.0, alpha=0.5, reduction="sum")


def test_gradcheck_and_gradgradcheck_through_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _paths.FastPathCalls(monkeypatch)
    z, y, counts = make_case(3, 3, torch.float64, seed=5)
    y[1] = -100
    z.requires_grad_()

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return LF.bfs_loss(logits, y, counts, alpha=0.3, beta=0.9, gamma=0.5, reduction="none")

    assert torch.autograd.gradcheck(loss, (z,), fast_mode=True)
    assert torch.autograd.gradgradcheck(
        loss, (z,), fast_mode=True
    )  # double backward recomputes with the reference path
    assert spy.calls > 0


def test_second_backward_through_a_retained_graph() -> None:
    z, y, counts = make_case(7, 6, torch.float32, seed=6)
    z.requires_grad_()
    loss = LF.bfs_loss(z, y, counts, alpha=0.2)
    (first,) = torch.autograd.grad(loss, z, retain_graph=True)
    (second,) = torch.autograd.grad(loss, z)
    assert torch.equal(first, second)  # bit-identical: gradcheck's reentrancy check demands it


def test_backward_accumulates_into_grad() -> None:
    z, y, counts = make_case(7, 6, torch.float64, seed=7)
    z.requires_grad_()
    LF.balanced_softmax_loss(z, y, counts).backward()
    once = z.grad.clone()
    LF.balanced_softmax_loss(z, y, counts).backward()
    torch.testing.assert_close(z.grad, 2 * once)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_no_grad_forward_equals_reference(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    spy = _paths.FastPathCalls(monkeypatch)
    z, y, counts = make_case(9, 40, torch.float64, seed=8)
    kw = {"beta": 0.99, "gamma": 2.0, "alpha": 0.1, "reduction": "none"}
    with torch.no_grad():
        fast = LOSSES[name](z, y, counts, **kw)
        with _paths.reference_path():
            reference = LOSSES[name](z, y, counts, **kw)
    torch.testing.assert_close(fast, reference)
    assert spy.calls == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_inputs_under_autocast(dtype: torch.dtype, name: str) -> None:
    gen = torch.Generator().manual_seed(9)
    features = torch.randn(8, 16, generator=gen)
    fc = torch.nn.Linear(16, 10)
    y = torch.randint(0, 10, (8,), generator=gen)
    counts = torch.randint(1, 100, (10,), generator=gen)
    kw = {"beta": 0.99, "gamma": 1.0, "alpha": 0.1, "reduction": "mean"}
    results = []
    for reference in (False, True):
        fc.zero_grad()
        with _paths.reference_path(reference), torch.autocast("cpu", dtype=dtype):
            logits = fc(features)
            logits.retain_grad()
            loss = LOSSES[name](logits, y, counts, **kw)
        loss.backward()
        assert logits.dtype == torch.bfloat16 or dtype == torch.float16  # autocast on CPU may keep fp16 as fp32
        assert loss.dtype == torch.float32
        assert logits.grad.dtype == logits.dtype
        results.append((loss, logits.grad, fc.weight.grad.clone()))
    for fast, reference in zip(*results):
        torch.testing.assert_close(fast, reference)


def test_dispatch_rule() -> None:
    z = torch.zeros(2, 3)
    assert _paths.use_fast_path(z)
    assert _paths.use_fast_path(z.double())
    assert not _paths.use_fast_path(z.half())
    with _paths.reference_path():
        assert not _paths.use_fast_path(z)
        with _paths.reference_path(False):
            assert _paths.use_fast_path(z)
        assert not _paths.use_fast_path(z)
    assert _paths.use_fast_path(z)


def test_functorch_transforms_use_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _paths.FastPathCalls(monkeypatch)
    z, y, counts = make_case(4, 5, torch.float64, seed=11)
    grad = torch.func.grad(lambda logits: LF.bfs_loss(logits, y, counts))(z)
    logits = z.clone().requires_grad_()
    with _paths.reference_path():
        (reference,) = torch.autograd.grad(LF.bfs_loss(logits, y, counts), logits)
    torch.testing.assert_close(grad, reference)
    assert spy.calls == 0


@pytest.mark.parametrize("module", ["BalancedSoftmax", "BFS"])
def test_cached_statistics_follow_the_counts(module: str) -> None:
    # The log prior and class weights are cached per counts buffer: an in-place change, .double() and a new
    # buffer must each give the loss of a freshly built module.
    import longtail_losses as ltl

    z, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = getattr(ltl, module)([5, 4, 3, 2])
    loss(z, y)
    loss.class_counts[0] = 50
    torch.testing.assert_close(loss(z, y), getattr(ltl, module)([50, 4, 3, 2])(z, y))
    torch.testing.assert_close(loss.double()(z.double(), y), getattr(ltl, module)([50, 4, 3, 2])(z.double(), y))
    loss.class_counts = torch.tensor([1, 1, 1, 1])
    torch.testing.assert_close(loss(z, y), getattr(ltl, module)([1, 1, 1, 1])(z, y))
