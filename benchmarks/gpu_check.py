"""The GPU checks in one run: CUDA tests, fast == reference in float32/bfloat16, the CUDA columns of the benchmark.

Usage::

    python benchmarks/gpu_check.py                 # on a CUDA machine: under 5 minutes, one table at the end
    python benchmarks/gpu_check.py --device cpu --smoke   # every step on the CPU at toy sizes (what tests/ runs)

On a machine without CUDA (and without ``--device cpu``) it says so and exits 0. Steps:

1. the tests marked ``gpu`` (``pytest -m gpu tests``), in a subprocess, with a time limit;
2. fast path == reference path (and ``compiled_path()`` == reference) for ``BalancedSoftmax``,
   ``ClassBalancedFocal``, ``BFS`` and ``BWLM``: loss and gradient, float32 and bfloat16 logits, B = 256,
   C = 1,000 (the bfloat16 losses compute in float32, so both paths see the same numbers);
3. time of forward + backward, B = 256, C in {1,000, 10,000, 50,000}, float32: eager ``F.cross_entropy``, our
   modules eager and under ``compiled_path()``, ``torch.compile`` of ``F.cross_entropy`` and of the functional
   losses (``torch.utils.benchmark.Timer.blocked_autorange``, median; compiling happens in the warm-up);
4. huge C: ``linear_balanced_softmax_loss`` against ``F.linear_cross_entropy`` (default path and
   ``LinearCrossEntropyOptions()``, where the torch installed has it), N = 256, D = 128, C in {10^5, 10^6}: time
   and peak extra memory (``torch.cuda.max_memory_allocated``).

Writes nothing; the table goes to stdout (paste it into the Performance page with the commit and device it names).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils import benchmark

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import longtail_losses as ltl  # noqa: E402  (this checkout, after the path above)
from longtail_losses import functional as LF  # noqa: E402
from longtail_losses.losses import _kernel  # noqa: E402  (reference_path: the switch the tests use)

ALPHA, BETA, GAMMA = 0.1, 0.9999, 1.0
MODULES = ("BalancedSoftmax", "ClassBalancedFocal", "BFS", "BWLM")
Row = tuple[str, str, str]  # (section, case, result)


def counts_for(num_classes: int, device: torch.device) -> torch.Tensor:
    """A long-tailed profile, 5,000 down to 5 samples (as the benchmarks' ``class_counts``)."""
    ranks = torch.arange(num_classes, dtype=torch.float64) / max(1, num_classes - 1)
    return (5000.0 * 0.001**ranks).round().clamp_min(1).long().to(device)


def module(name: str, counts: torch.Tensor, classifier: torch.Tensor) -> torch.nn.Module:
    hyper = {"beta": BETA, "gamma": GAMMA, "validate_args": False}
    if name == "BalancedSoftmax":
        return ltl.BalancedSoftmax(counts, validate_args=False)
    if name == "ClassBalancedFocal":
        return ltl.ClassBalancedFocal(counts, **hyper)
    if name == "BFS":
        return ltl.BFS(counts, alpha=ALPHA, **hyper)
    return ltl.BWLM(counts, classifier=classifier, alpha=ALPHA, **hyper)


def inputs(batch: int, num_classes: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(batch, num_classes, generator=gen) * 2).to(device=device, dtype=dtype).requires_grad_()
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    classifier = (torch.randn(num_classes, 16, generator=gen) * 0.05).to(device).requires_grad_()
    return z, y, classifier


def cuda_tests(timeout: float) -> list[Row]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests"]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [("tests", "pytest -m gpu", f"timed out after {timeout:.0f} s")]
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return [("tests", "pytest -m gpu", f"rc {done.returncode}: {summary} ({time.perf_counter() - started:.0f} s)")]


def loss_and_grad(loss: Callable, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = z.detach().clone().requires_grad_()
    value = loss(logits, y)
    (grad,) = torch.autograd.grad(value, logits)
    return value.detach().float(), grad.float()


def equality(device: torch.device, batch: int, num_classes: int) -> list[Row]:
    rows: list[Row] = []
    for dtype in (torch.float32, torch.bfloat16):
        z, y, classifier = inputs(batch, num_classes, device, dtype)
        counts = counts_for(num_classes, device)
        for name in MODULES:
            loss = module(name, counts, classifier)
            with _kernel.reference_path():
                ref = loss_and_grad(loss, z, y)
            cells = []
            for label, switch in (("fast", ltl.compiled_path(False)), ("compiled", ltl.compiled_path())):
                with switch:
                    got = loss_and_grad(loss, z, y)
                scale = float(ref[1].abs().max())
                error = max(float((got[0] - ref[0]).abs() / ref[0].abs().clamp_min(1e-30)), 0.0)
                grad_error = float((got[1] - ref[1]).abs().max()) / scale
                ok = error < 1e-4 and grad_error < 1e-4  # float32 rounding of sums over C = 1,000 terms
                cells.append(f"{label} {'ok' if ok else 'DIFFERS'} (loss {error:.1e}, grad {grad_error:.1e})")
            rows.append(("fast == reference", f"{name} {str(dtype).replace('torch.', '')}", "; ".join(cells)))
    return rows


def timed(run: Callable[[], Any], sync: Callable[[], None], warmup: int, min_time: float) -> float:
    for _ in range(warmup):
        run()
    sync()

    def step() -> None:
        run()
        sync()

    return benchmark.Timer(stmt="step()", globals={"step": step}).blocked_autorange(min_run_time=min_time).median


def user_compiled(name: str, counts: torch.Tensor) -> Callable:
    functions: dict[str, Callable] = {
        "F.cross_entropy": lambda z, y: F.cross_entropy(z, y),
        "balanced_softmax_loss": lambda z, y: LF.balanced_softmax_loss(z, y, counts, validate_args=False),
        "class_balanced_focal_loss": lambda z, y: LF.class_balanced_focal_loss(
            z, y, counts, beta=BETA, gamma=GAMMA, validate_args=False
        ),
        "bfs_loss": lambda z, y: LF.bfs_loss(z, y, counts, alpha=ALPHA, beta=BETA, gamma=GAMMA, validate_args=False),
    }
    return torch.compile(functions[name])


def loss_columns(device: torch.device, batch: int, classes: list[int], min_time: float) -> list[Row]:
    return [row for c in classes for row in loss_columns_at(device, batch, c, min_time)]


def loss_columns_at(device: torch.device, batch: int, c: int, min_time: float) -> list[Row]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows: list[Row] = []
    z, y, classifier = inputs(batch, c, device, torch.float32)
    counts = counts_for(c, device)

    def fb(loss: Callable, switch: Callable[[], Any] = lambda: ltl.compiled_path(False)) -> Callable[[], None]:
        def run() -> None:
            z.grad = classifier.grad = None
            with switch():
                loss(z, y).backward()

        return run

    floor = timed(fb(F.cross_entropy), sync, 3, min_time)
    rows.append((f"C = {c:,}", "F.cross_entropy (eager)", f"{floor * 1e3:.3f} ms"))
    cases: dict[str, Callable[[], None]] = {}
    for name in MODULES:
        loss = module(name, counts, classifier)
        cases[f"{name} eager"] = fb(loss)
        cases[f"{name} compiled_path"] = fb(loss, ltl.compiled_path)
    for name in ("F.cross_entropy", "balanced_softmax_loss", "class_balanced_focal_loss", "bfs_loss"):
        cases[f"torch.compile({name})"] = fb(user_compiled(name, counts))
    for case, run in cases.items():
        try:
            seconds = timed(run, sync, 3, min_time)
            rows.append((f"C = {c:,}", case, f"{seconds * 1e3:.3f} ms ({seconds / floor:.2f}x CE)"))
        except Exception as error:  # a compiler missing on this machine: say so, go on
            rows.append((f"C = {c:,}", case, f"failed: {type(error).__name__}: {str(error)[:80]}"))
    return rows


def huge_columns(device: torch.device, batch: int, dim: int, classes: list[int], min_time: float) -> list[Row]:
    return [row for c in classes for row in huge_columns_at(device, batch, dim, c, min_time)]


def huge_columns_at(device: torch.device, batch: int, dim: int, c: int, min_time: float) -> list[Row]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows: list[Row] = []
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, dim, generator=gen).to(device).requires_grad_()
    w = (torch.randn(c, dim, generator=gen) * dim**-0.5).to(device).requires_grad_()
    b = torch.zeros(c, device=device, requires_grad=True)
    y = torch.randint(0, c, (batch,), generator=gen).to(device)
    counts = counts_for(c, device)
    cases: dict[str, Callable[[], torch.Tensor]] = {
        "linear_balanced_softmax_loss": lambda: LF.linear_balanced_softmax_loss(
            x, w, y, counts, b, validate_args=False
        ),
    }
    if hasattr(F, "linear_cross_entropy"):
        cases["F.linear_cross_entropy default"] = lambda: F.linear_cross_entropy(
            x, w, y, linear_bias=b + counts.float().log()
        )
        options = getattr(torch.nn, "LinearCrossEntropyOptions", None)
        if options is not None:
            cases["F.linear_cross_entropy options"] = lambda: F.linear_cross_entropy(
                x, w, y, linear_bias=b + counts.float().log(), options=options()
            )
    for case, loss in cases.items():

        def run(loss: Callable[[], torch.Tensor] = loss) -> None:
            x.grad = w.grad = b.grad = None
            loss().backward()

        try:
            seconds = timed(run, sync, 1, min_time)
            memory = ""
            if device.type == "cuda":
                x.grad = w.grad = b.grad = None
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                run()
                torch.cuda.synchronize()
                memory = f", peak extra {(torch.cuda.max_memory_allocated() - before) / 2**20:.0f} MiB"
            rows.append((f"huge C = {c:,}", case, f"{seconds * 1e3:.1f} ms{memory}"))
        except Exception as error:
            rows.append((f"huge C = {c:,}", case, f"failed: {type(error).__name__}: {str(error)[:80]}"))
    return rows


def table(rows: list[Row], device: torch.device) -> str:
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    head = f"gpu_check: {name}, torch {torch.__version__}, longtail_losses {ltl.__version__}"
    width = max(len(case) for _, case, _ in rows)
    lines = [head, "", f"| {'section':<22} | {'case':<{width}} | result |", f"|{'-' * 24}|{'-' * (width + 2)}|---|"]
    lines += [f"| {section:<22} | {case:<{width}} | {result} |" for section, case, result in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the default) or cpu (to try the script here)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, no tests: checks that every step runs")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check (run it where a GPU is).")
        return 0
    device = torch.device(args.device)
    started = time.perf_counter()
    rows: list[Row] = []
    if args.smoke:
        rows += equality(device, 8, 12)
        rows += loss_columns(device, 8, [12], min_time=0.01)
        rows += huge_columns(device, 8, 4, [64], min_time=0.01)
    else:
        rows += cuda_tests(timeout=float(os.environ.get("GPU_CHECK_TEST_TIMEOUT", 120)))
        rows += equality(device, 256, 1000)
        rows += loss_columns(device, 256, [1000, 10000, 50000], min_time=0.2)
        rows += huge_columns(device, 256, 128, [100_000, 1_000_000], min_time=0.5)
    print(table(rows, device))
    print(f"\n({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
