"""The compiled path (``compiled_path``) equals the reference path, compiles once for all batch sizes, falls back."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import longtail_losses as ltl
from tests.losses import _paths

COUNTS = [500, 120, 40, 9, 3, 1]


def saturated(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(n)
    z = (torch.randn(n, len(COUNTS), generator=gen) * 3).to(dtype)
    z[0] = torch.tensor([1e4, -1e4, 80.0, -80.0, 0.0, 30.0], dtype=dtype)  # saturated logits and a zero
    z[1] = torch.tensor([-1e4, 1e4, -30.0, 0.0, 1e3, -1e3], dtype=dtype)
    y = torch.randint(0, len(COUNTS), (n,), generator=gen)
    y[:2] = torch.tensor([0, 0])
    return z, y


def loss_and_grad(module: torch.nn.Module, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = z.clone().requires_grad_()
    loss = module(logits, y)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


MODULES = {
    "ClassBalancedFocal": lambda: ltl.ClassBalancedFocal(COUNTS, beta=0.999, gamma=2.0),
    "BFS": lambda: ltl.BFS(COUNTS),
    "BFS-gamma0.5": lambda: ltl.BFS(COUNTS, alpha=0.3, gamma=0.5),
}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_compiled_equals_reference(name: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = _paths.compiled_kernel_ran(monkeypatch)
    module, (z, y) = MODULES[name](), saturated(8, dtype)
    with _paths.reference_path():
        expected = loss_and_grad(module, z, y)
    with ltl.compiled_path():
        got = loss_and_grad(module, z, y)
        with torch.no_grad():
            value = module(z, y)
    assert ran == [1, 1]
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(value, expected[0])


@pytest.mark.slow
def test_a_second_batch_size_does_not_recompile(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = _paths.compiled_kernel_ran(monkeypatch)
    module = ltl.BFS(COUNTS, gamma=1.5)
    with ltl.compiled_path():
        loss_and_grad(module, *saturated(5, torch.float32))
        graphs, frames = counters["stats"]["unique_graphs"], counters["frames"]["ok"]
        for n in (7, 33, 64):
            z, y = saturated(n, torch.float32)
            got = loss_and_grad(module, z, y)
            with _paths.reference_path():
                torch.testing.assert_close(got, loss_and_grad(module, z, y))
    assert (counters["stats"]["unique_graphs"], counters["frames"]["ok"]) == (graphs, frames)
    assert ran == [1, 1, 1, 1]


@pytest.mark.slow
def test_each_gamma_and_alpha_gets_its_own_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hyperparameters are constants of the compiled graph: a kernel built for one gamma must never serve another
    # (with automatic dynamic shapes torch 2.14 turned them into symbolic floats and reused the kernel, wrongly).
    ran = _paths.compiled_kernel_ran(monkeypatch)
    for n, (alpha, gamma) in enumerate([(0.3, 0.5), (0.1, 1.5), (0.7, 3.0), (0.1, 0.5)], start=5):
        module, (z, y) = ltl.BFS(COUNTS, alpha=alpha, gamma=gamma), saturated(n, torch.float32)
        with ltl.compiled_path():
            got = loss_and_grad(module, z, y)
        with _paths.reference_path():
            torch.testing.assert_close(got, loss_and_grad(module, z, y))
    assert ran == [1, 1, 1, 1]


def test_compile_failure_warns_once_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    _paths.compile_fails(monkeypatch)
    module, (z, y) = ltl.BFS(COUNTS), saturated(6, torch.float32)
    expected = loss_and_grad(module, z, y)
    with ltl.compiled_path(), pytest.warns(RuntimeWarning, match="the compiled path is off"):
        got = loss_and_grad(module, z, y)
    torch.testing.assert_close(got, expected)
    with ltl.compiled_path():
        assert ltl.compiled_path.is_enabled() is False  # failed: not tried again
        torch.testing.assert_close(loss_and_grad(module, z, y), expected)


def test_switch_nests_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_paths._kernel._compiled_global, "enabled", False)
    assert not ltl.compiled_path.is_enabled()
    with ltl.compiled_path():
        assert ltl.compiled_path.is_enabled()
        with ltl.compiled_path(False):
            assert not ltl.compiled_path.is_enabled()
        assert ltl.compiled_path.is_enabled()
    assert not ltl.compiled_path.is_enabled()
    ltl.compiled_path.set_default(True)
    assert ltl.compiled_path.is_enabled()
    ltl.compiled_path.set_default(False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.7])
def test_the_compiled_kernels_spelling_of_the_focal_term_is_the_same_function(dtype: torch.dtype, gamma: float) -> None:
    # The compiled kernel floors sigma(s) at t * sigma(-s), the others at t: equal values and derivatives (both
    # closed-form and by autograd) over the whole range, underflow included.
    s = torch.cat([torch.linspace(-800, 800, 4001, dtype=torch.float64), torch.tensor([-1e4, 0.0, 1e4])]).to(dtype)
    results = []
    for fused in (False, True):
        x = s.clone().requires_grad_()
        value, derivative = _paths.focal_terms(x, gamma, fused=fused)
        (autograd,) = torch.autograd.grad(value.sum(), x)
        results.append((value.detach(), derivative, autograd))
    for plain, fused in zip(*results):
        torch.testing.assert_close(fused, plain, rtol=0, atol=0)


SLOW_SCALAR_KERNELS = ("log1p", "logsigmoid", "log_sigmoid", "softplus")


@pytest.mark.parametrize("name", ["balanced_softmax_loss", "class_balanced_focal_loss", "bfs_loss", "bwlm_loss"])
def test_user_compile_traces_one_graph_without_slow_scalar_kernels(name: str) -> None:
    # A user who compiles their step gets the reference in one graph (fullgraph: no break) built from exp/log/sigmoid.
    from longtail_losses import functional as LF

    seen: list[str] = []

    def record(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        seen.extend(str(node.target) for node in gm.graph.nodes)
        return gm.forward

    fn = getattr(LF, name)
    args = (COUNTS, torch.randn(len(COUNTS), 3, requires_grad=True)) if name == "bwlm_loss" else (COUNTS,)
    compiled = torch.compile(lambda z, y: fn(z, y, *args, validate_args=False), backend=record, fullgraph=True)
    z, y = saturated(5, torch.float32)
    compiled(z.requires_grad_(), y).backward()
    assert seen
    assert not [op for op in seen if any(slow in op for slow in SLOW_SCALAR_KERNELS)], seen
