"""What one eager forward + backward is made of: the operator profile of a loss next to ``F.cross_entropy``'s.

Usage::

    python benchmarks/profile_losses.py                         # BFS and F.cross_entropy at C = 1,000 and 10,000
    python benchmarks/profile_losses.py --loss ClassBalancedFocal --classes 50000

For each C it runs ``--runs`` forward + backward passes of each case (the inputs and modules of
``bench_losses.py``: B = 256 float32 logits, its hyperparameters) under :mod:`torch.profiler` after warm-up runs,
and prints, per case, the operators by self CPU time per call of the loss (microseconds), how many of each a call
runs, and the total; then the time of a call outside the profiler. It writes
``benchmarks/results/profile_losses.md`` (``--out`` changes the folder).

This is what the Performance page's "what bounds it" rests on: which element-wise kernels the eager path runs,
how many, and what each costs on this machine, next to the two kernels of cross-entropy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Callable

import _harness as harness  # first: it puts this checkout on sys.path
import bench_losses as bench
import torch
from _harness import ROOT, class_counts
from torch.profiler import ProfilerActivity, profile


def build(name: str, num_classes: int) -> Callable[[], None]:
    """A forward + backward step of the case ``name`` of ``bench_losses.py`` (the same inputs and modules)."""
    z, y, classifier = bench.make_inputs(num_classes, torch.device("cpu"), torch.float32)
    loss = bench.build_case(name, class_counts(num_classes), torch.device("cpu"), classifier)
    return partial(bench.step, loss, z, y, classifier)


def profile_case(name: str, num_classes: int, runs: int) -> tuple[list[tuple[str, float, float]], float, float]:
    """(operator, self µs per call, calls per call) by self time, the profiled total per call and the plain time."""
    step = build(name, num_classes)
    for _ in range(5):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            step()
    rows = [
        (event.key, event.self_cpu_time_total / runs, event.count / runs)
        for event in prof.key_averages()
        if event.self_cpu_time_total > 0
    ]
    rows.sort(key=lambda row: -row[1])
    total = sum(row[1] for row in rows)
    return rows, total, statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", default="BFS", help="a case of bench_losses.py (default BFS)")
    parser.add_argument("--classes", type=int, nargs="+", default=[1000, 10000], help="numbers of classes")
    parser.add_argument("--runs", type=int, default=30, help="profiled and timed runs per case")
    parser.add_argument("--top", type=int, default=14, help="operators listed per case")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    args = parser.parse_args()
    info = harness.machine_info()
    lines: list[str] = []
    for c in args.classes:
        for name in (bench.BASELINE, args.loss):
            rows, total, plain = profile_case(name, c, args.runs)
            lines += [
                f"## {name}, C = {c:,}",
                "",
                f"Outside the profiler: {plain:.0f} µs per call (median of {args.runs}); under it, the operators' "
                f"self time adds up to {total:.0f} µs per call. Load average {os.getloadavg()[0]:.2f}.",
                "",
                "| operator | self µs per call | calls per call |",
                "|---|---|---|",
                *[f"| `{key}` | {us:.0f} | {count:g} |" for key, us, count in rows[: args.top]],
                f"| (the other {max(0, len(rows) - args.top)}) | {sum(r[1] for r in rows[args.top :]):.0f} | |",
                "",
            ]
    info["load_average_end"] = os.getloadavg()
    head = ["# Operator profile of one eager forward + backward, B = 256", "", harness.machine_line(info) + ".", ""]
    text = "\n".join(head + lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_losses.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
