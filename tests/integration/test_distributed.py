"""Distributed runs on two gloo processes equal one process: the class-sharded linear losses, Seesaw and EQLv2."""

from __future__ import annotations

import functools
import itertools
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses.losses.linear import shard_range
from tests.losses.test_linear import REDUCTIONS, _chunked, _problem, _value_and_grads
from tests.losses.test_seesaw_eqlv2 import C, make, statistics


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(worker: Callable[..., Any], port: int, out_dir: str) -> None:
    """Run ``worker(rank, 2, port, out_dir)`` on two processes; fork where it exists (no re-import of torch)."""
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(worker, args=(2, port, out_dir), nprocs=2, join=True, start_method=method)


# ----------------------------------------------------------------------------------------------------------------
# Class-sharded over two gloo processes == one process
# ----------------------------------------------------------------------------------------------------------------


def _sharded_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {}
        # class_weights are all C classes' on every rank, as class_counts
        weighted = {"class_weights": torch.linspace(0.0, 2.0, 11, dtype=torch.float64), "label_smoothing": 0.1}
        cases = itertools.product(REDUCTIONS, [(0.0, 1.0), (0.3, 1.5)], [{}, weighted])
        for reduction, (alpha, gamma), options in cases:
            x, w, b, y, counts = _problem(c=11)
            assert b is not None
            start, stop = shard_range(w.shape[0], rank, world)
            w_local = w.detach()[start:stop].clone().requires_grad_()
            b_local = b.detach()[start:stop].clone().requires_grad_()
            kwargs = {"alpha": alpha, "gamma": gamma, "reduction": reduction, "weight_decay": 0.05, **options}
            sharded = functools.partial(
                _chunked, x, w_local, b_local, y, counts, chunk_size=2, process_group=dist.group.WORLD, **kwargs
            )
            got = _value_and_grads(sharded, [x, w_local, b_local])
            single = functools.partial(_chunked, x, w, b, y, counts, chunk_size=3, **kwargs)
            want = _value_and_grads(single, [x, w, b])
            want[2], want[3] = want[2][start:stop], want[3][start:stop]
            name = f"{reduction}-{alpha}" + ("-weighted-smoothed" if options else "")
            results[name] = max(float((g - e).abs().max()) for g, e in zip(got, want))
        head = ltl.LinearBFS(
            [5, 4, 3, 2, 1], in_features=3, class_weights=[1.0, 2.0, 0.5, 1.0, 3.0], process_group=dist.group.WORLD
        )
        results["module_rows"] = float(head.weight.shape[0] == head.num_local_classes)
        loss = head(torch.ones(2, 3, dtype=torch.float32), torch.tensor([0, 4]))
        loss.backward()
        results["module_finite"] = float(torch.isfinite(loss))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_class_sharded_two_gloo_processes_equal_one_process() -> None:
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    with tempfile.TemporaryDirectory() as out_dir:
        start(_sharded_worker, free_port(), out_dir)
        for rank in range(2):
            results = torch.load(os.path.join(out_dir, f"rank{rank}.pt"))
            assert results.pop("module_rows") == 1.0
            assert results.pop("module_finite") == 1.0
            assert len(results) == 12
            for case, diff in results.items():
                assert diff < 1e-12, (rank, case, diff)  # float64: equal up to summation order


# ----------------------------------------------------------------------------------------------------------------
# Two gloo processes on half batches == one process on the whole batch.

DDP_STEPS, DDP_HALF, DDP_FEATURES = 5, 6, 4


def train(name: str, rank: int, world_size: int) -> list[dict[str, Tensor]]:
    """Train a linear classifier with ``name``'s loss for DDP_STEPS steps; record losses, statistics, weights.

    Every rank gets half of the same global batch of 2 * DDP_HALF samples. The loss is the mean over the rank's
    samples and the ranks' gradients are averaged (as DDP does), so with equal halves and no ignored label the
    averaged gradient is the gradient of the mean over the whole batch: the single process's. The recorded loss is
    the mean of the ranks' losses, which is then the whole batch's mean.
    """
    torch.manual_seed(0)
    model = nn.Linear(DDP_FEATURES, C).double()
    criterion = make(name)
    # SGD and DDP's gradient averaging by hand: building an optimizer or a DistributedDataParallel imports
    # torch._dynamo, seconds per process on a busy machine.
    params = list(model.parameters())
    records = []
    for step in range(DDP_STEPS):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(2 * DDP_HALF, DDP_FEATURES, generator=g, dtype=torch.float64)
        prior = 1.0 / torch.arange(1, C + 1, dtype=torch.float64) ** 2
        y = torch.multinomial(prior, 2 * DDP_HALF, replacement=True, generator=g)
        if world_size > 1:
            x, y = x[rank * DDP_HALF : (rank + 1) * DDP_HALF], y[rank * DDP_HALF : (rank + 1) * DDP_HALF]
        loss = criterion(model(x), y)
        loss.backward()
        with torch.no_grad():
            for p in params:
                if world_size > 1:  # what DDP does in backward: the mean of the ranks' gradients
                    dist.all_reduce(p.grad)
                    p.grad /= world_size
                p -= 0.5 * p.grad
                p.grad = None
        mean_loss = loss.detach().clone()
        if world_size > 1:
            dist.all_reduce(mean_loss)
            mean_loss /= world_size
        records.append({"loss": mean_loss, "weight": model.weight.detach().clone(), **statistics(criterion)})
    return records


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        records = {name: train(name, rank, world_size) for name in ("seesaw", "eqlv2")}
        torch.save(records, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_follow_the_single_process(tmp_path: Path) -> None:
    start(ddp_worker, free_port(), str(tmp_path))
    single = {name: train(name, 0, 1) for name in ("seesaw", "eqlv2")}
    for rank in range(2):
        ranked = torch.load(tmp_path / f"rank{rank}.pt")
        for name, records in single.items():
            assert len(ranked[name]) == DDP_STEPS
            for step, (got, expected) in enumerate(zip(ranked[name], records)):
                assert got.keys() == expected.keys()
                for key in expected:
                    msg = f"{name}, rank {rank}, step {step}, {key}"
                    if expected[key].dtype == torch.int64:  # counts: exactly equal
                        assert torch.equal(got[key], expected[key]), msg
                    else:  # float64 sums in another order: equal up to rounding (default float64 tolerance)
                        torch.testing.assert_close(got[key], expected[key], msg=msg)
        # all-reduced: after the first step each rank's counts hold the whole first batch, not its half
        assert int(ranked["seesaw"][0]["accumulated_counts"].sum()) == 2 * DDP_HALF


# ----------------------------------------------------------------------------------------------------------------
# LADE: the regulariser's batch statistics summed over two gloo processes == one process on the whole batch.

LADE_COUNTS = [40, 20, 10, 5, 2]


def train_lade(rank: int, world_size: int) -> list[dict[str, Tensor]]:
    """DDP_STEPS SGD steps of a linear classifier with LADELoss; the ranks' gradients averaged as DDP does."""
    torch.manual_seed(0)
    model = nn.Linear(DDP_FEATURES, len(LADE_COUNTS)).double()
    criterion = ltl.LADELoss(LADE_COUNTS, estim_loss_weight=0.5)
    records = []
    for step in range(DDP_STEPS):
        g = torch.Generator().manual_seed(100 + step)
        x = torch.randn(2 * DDP_HALF, DDP_FEATURES, generator=g, dtype=torch.float64)
        y = torch.multinomial(torch.tensor(LADE_COUNTS, dtype=torch.float64), 2 * DDP_HALF, True, generator=g)
        if world_size > 1:
            x, y = x[rank * DDP_HALF : (rank + 1) * DDP_HALF], y[rank * DDP_HALF : (rank + 1) * DDP_HALF]
        loss = criterion(model(x), y)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if world_size > 1:
                    dist.all_reduce(p.grad)
                    p.grad /= world_size
                p -= 0.5 * p.grad
                p.grad = None
        mean_loss = loss.detach().clone()
        if world_size > 1:
            dist.all_reduce(mean_loss)
            mean_loss /= world_size
        records.append({"loss": mean_loss, "weight": model.weight.detach().clone()})
    return records


def lade_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.save(train_lade(rank, world_size), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_lade_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    start(lade_worker, free_port(), str(tmp_path))
    single = train_lade(0, 1)
    for rank in range(2):
        ranked = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(ranked) == DDP_STEPS
        for step, (got, want) in enumerate(zip(ranked, single)):
            for key in want:  # float64 sums in another order: equal up to rounding
                torch.testing.assert_close(got[key], want[key], msg=f"rank {rank}, step {step}, {key}")
    # Without the gathered statistics the halves would differ: the rank's own batch gives another regulariser.
    x = torch.randn(2 * DDP_HALF, len(LADE_COUNTS), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.arange(2 * DDP_HALF) % len(LADE_COUNTS)
    whole = ltl.functional.lade_loss(x, y, LADE_COUNTS, estim_loss_weight=0.5)
    halves = [ltl.functional.lade_loss(x[i::2], y[i::2], LADE_COUNTS, estim_loss_weight=0.5) for i in range(2)]
    assert abs(float(sum(halves) / 2 - whole)) > 1e-3
