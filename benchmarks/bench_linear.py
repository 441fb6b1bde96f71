"""Chunked linear losses against the plain computation: time and memory of forward + backward at large C.

Usage::

    python benchmarks/bench_linear.py                      # time at C = 10^6, memory for C = 10^4 ... 4 x 10^6
    python benchmarks/bench_linear.py --time-classes 100000 --memory-classes 10000 100000 --repeats 3   # quick

Writes ``benchmarks/results/bench_linear.json``, ``bench_linear.md`` and ``bench_linear_memory.png``
(``--out`` changes the folder).

Every case computes the loss of a linear classifier, ``features`` (N = 256, D = 128, requires_grad) times
``weight`` (C, D) plus ``bias`` (C) (both parameters), and its gradients for all three:

* plain: ``loss(F.linear(features, weight, bias), target, counts)``, which holds the (N, C) logits and their
  gradient (``F.cross_entropy`` is the baseline, then our ``balanced_softmax_loss`` and ``bfs_loss``);
* chunked: ``linear_balanced_softmax_loss`` / ``linear_bfs_loss``, which never do;
* torch's own ``F.linear_cross_entropy(features, weight, target, linear_bias=bias + log n)`` (balanced softmax
  through the bias), where the torch installed has it (2.13+): its default path and
  ``options=LinearCrossEntropyOptions()``.

Method:

* Time: the cases run interleaved (case 1, case 2, ..., case 1, ...) after one warm-up run each, so that a change
  in machine load hits every case alike; median and interquartile range of ``--repeats`` runs, and the ratio of
  medians chunked / plain of the same loss, measured in the same process.
* Memory: each (case, C) runs in a fresh subprocess with ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc then serves every
  large tensor by ``mmap`` and returns it on free, so the resident size follows the live tensors). The subprocess
  warms up on a small problem, allocates the inputs, resets the kernel's high-water mark
  (``echo 5 > /proc/self/clear_refs``), records the resident size, runs forward + backward once and reads
  ``VmHWM``. "Peak extra" is the difference; "net" subtracts the bytes of the gradients of features, weight and
  bias, which both computations must produce. Plain cases above ``--plain-max-classes`` are not run (they need
  several GiB of the shared machine's memory).

The timing, memory and fresh-process machinery, shared with ``bench_losses.py``, is in ``_harness.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable

import _harness as harness  # first: it puts this checkout on sys.path
import torch
import torch.nn.functional as F
from _harness import ALPHA, BETA, GAMMA, ROOT, class_counts

from longtail_losses import functional as LF

BATCH, DIM = 256, 128
TARGET_MEMORY, TARGET_TIME = 0.25, 1.5  # chunked / plain, from issue #14
PAIRS = {"BalancedSoftmax": ("plain BalancedSoftmax", "chunked BalancedSoftmax"), "BFS": ("plain BFS", "chunked BFS")}

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_cases(counts: torch.Tensor) -> dict[str, Step]:
    hyper: dict[str, Any] = {"alpha": ALPHA, "beta": BETA, "gamma": GAMMA}
    return {
        "plain F.cross_entropy (baseline)": lambda x, w, b, y, _: F.cross_entropy(F.linear(x, w, b), y),
        "plain BalancedSoftmax": lambda x, w, b, y, n: LF.balanced_softmax_loss(
            F.linear(x, w, b), y, n, validate_args=False
        ),
        "chunked BalancedSoftmax": lambda x, w, b, y, n: LF.linear_balanced_softmax_loss(
            x, w, y, n, b, validate_args=False
        ),
        "plain BFS": lambda x, w, b, y, n: LF.bfs_loss(F.linear(x, w, b), y, n, validate_args=False, **hyper),
        "chunked BFS": lambda x, w, b, y, n: LF.linear_bfs_loss(x, w, y, n, b, validate_args=False, **hyper),
        **torch_linear_cross_entropy(),
    }


def torch_linear_cross_entropy() -> dict[str, Step]:
    """Torch's own ``F.linear_cross_entropy`` (torch >= 2.13) as balanced softmax: the bias plus ``log n``.

    Both of its paths: the default (the reference, which holds the logits) and ``options=LinearCrossEntropyOptions()``
    (chunked over the batch). Absent from the torch installed: no rows.
    """
    if not hasattr(F, "linear_cross_entropy"):
        return {}
    options = getattr(torch.nn, "LinearCrossEntropyOptions", None)

    def balanced(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y: torch.Tensor, n: torch.Tensor, **kw: Any):
        return F.linear_cross_entropy(x, w, y, linear_bias=b + n.to(b.dtype).log(), **kw)

    cases: dict[str, Step] = {"torch F.linear_cross_entropy, default path": balanced}
    if options is not None:
        cases["torch F.linear_cross_entropy, LinearCrossEntropyOptions()"] = partial(balanced, options=options())
    return cases


CASE_NAMES = list(make_cases(torch.ones(1, dtype=torch.long)))


def make_inputs(num_classes: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, DIM, generator=gen).requires_grad_()
    w = (torch.randn(num_classes, DIM, generator=gen) * DIM**-0.5).requires_grad_()
    b = torch.zeros(num_classes).requires_grad_()
    y = torch.randint(0, num_classes, (BATCH,), generator=gen)
    return x, w, b, y, class_counts(num_classes)


def run_once(step: Step, inputs: tuple[torch.Tensor, ...]) -> None:
    x, w, b, y, n = inputs
    x.grad = w.grad = b.grad = None
    step(x, w, b, y, n).backward()


def gradient_bytes(inputs: tuple[torch.Tensor, ...]) -> int:
    return sum(t.numel() * t.element_size() for t in inputs[:3])


# ---------------------------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------------------------


def time_cases(num_classes: int, repeats: int) -> dict[str, dict[str, Any]]:
    inputs = make_inputs(num_classes)
    steps: dict[str, Callable[[], object]] = {
        name: partial(run_once, step, inputs) for name, step in make_cases(inputs[4]).items()
    }

    def progress(repeat: int, name: str, seconds: float) -> None:
        print(f"  run {repeat + 1}/{repeats} C={num_classes:,} {name}: {seconds:.2f} s", flush=True)

    results = {}
    for name, values in harness.interleaved(steps, repeats, warmup=1, progress=progress).items():
        median, iqr = harness.quartiles(values)
        results[name] = {"median_s": median, "iqr_s": iqr, "runs": len(values), "all_s": values}
    return results


def check_equal(num_classes: int) -> dict[str, dict[str, dict[str, float]]]:
    """Chunked against plain (float32): the largest absolute difference, absolute and relative to the plain.

    Per loss, for the value and each gradient; "relative" divides by the largest absolute plain entry.
    """
    inputs = make_inputs(num_classes)
    cases = make_cases(inputs[4])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for family, (plain, chunked) in PAIRS.items():
        results = []
        for name in (plain, chunked):
            x, w, b, y, n = inputs
            x.grad = w.grad = b.grad = None
            loss = cases[name](x, w, b, y, n)
            loss.backward()
            results.append([loss.detach(), *(t.grad.clone() for t in (x, w, b) if t.grad is not None)])
            del loss
        out[family] = {}
        for label, p, c in zip(("loss", "features", "weight", "bias"), *results):
            difference, scale = float((p - c).abs().max()), float(p.abs().max())
            out[family][label] = {"max_abs": difference, "max_abs_plain": scale, "relative": difference / scale}
        del results
    return out


# ---------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------


def memory_child(name: str, num_classes: int) -> None:
    """Run in a fresh process: print the peak extra resident memory (bytes) of one forward + backward."""
    harness.threads_from_env()
    small = make_inputs(1000, seed=1)
    run_once(make_cases(small[4])[name], small)  # warm-up: lazy initialisation, thread pools
    del small
    inputs = make_inputs(num_classes)
    extra = harness.peak_extra_bytes(partial(run_once, make_cases(inputs[4])[name], inputs))
    harness.child_result({"extra_bytes": extra, "gradient_bytes": gradient_bytes(inputs)})


def memory_cpu(name: str, num_classes: int, threads: int) -> dict[str, float] | None:
    args = ["--memory-child", name, "--time-classes", str(num_classes)]
    result, stderr = harness.run_child(__file__, args, threads=threads, timeout=1200, memory=True)
    if result is None:
        print(stderr[-2000:], file=sys.stderr)
        return None
    result["net_bytes"] = result["extra_bytes"] - result["gradient_bytes"]
    return result


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    meta = report["machine"]
    mib = 2.0**20
    lines = [
        f"# Chunked linear losses: forward + backward, N = {BATCH}, D = {DIM}",
        "",
        harness.machine_line(meta) + f". alpha={ALPHA}, beta={BETA}, gamma={GAMMA}.",
        "",
    ]
    lines += [f"- note: {note}" for note in report.get("notes", [])]
    for phase, info in report.get("machine_by_phase", {}).items():
        lines.append(
            f"- {phase} phase: commit {info['commit']}, {info['date']}, {info['torch_threads']} torch threads, "
            f"load average {info['load_average_start'][0]:.1f} -> {info.get('load_average_end', [float('nan')])[0]:.1f}"
        )
    lines.append("")
    for key, timing in report["time"].items():
        c, threads = key.split("@")
        runs = next(iter(timing.values()))["runs"]
        lines += [f"## Time at C = {int(c):,}, {threads} torch thread(s) ({runs} interleaved runs)", ""]
        lines += ["| case | median s | IQR s | chunked / plain |", "|---|---|---|---|"]
        for name, row in timing.items():
            ratio = ""
            for plain, chunked in PAIRS.values():
                if name == chunked:
                    ratio = f"{row['median_s'] / timing[plain]['median_s']:.2f}x (target <= {TARGET_TIME}x)"
            if name.startswith("torch"):
                ours = timing.get(PAIRS["BalancedSoftmax"][1])
                ratio = f"chunked BalancedSoftmax / this: {ours['median_s'] / row['median_s']:.2f}x" if ours else ""
            lines.append(f"| {name} | {row['median_s']:.2f} | {row['iqr_s']:.2f} | {ratio} |")
        lines.append("")
    for c, families in report.get("equality", {}).items():
        lines += [
            f"## Chunked against plain at C = {int(c):,} (float32)",
            "",
            "Largest |chunked - plain| / largest |plain| (and the largest |plain|):",
            "",
            "| loss | loss value | features grad | weight grad | bias grad |",
            "|---|---|---|---|---|",
        ]
        for family, parts in families.items():
            cells = [f"{v['relative']:.1e} (of {v['max_abs_plain']:.3g})" for v in parts.values()]
            lines.append(f"| {family} | " + " | ".join(cells) + " |")
        lines.append("")
    if report["memory"]:
        classes = sorted({int(c) for per in report["memory"].values() for c in per})
        lines += [
            "## Peak extra memory of one forward + backward, net of the gradients (MiB)",
            "",
            "| case | " + " | ".join(f"C = {c:,}" for c in classes) + " |",
            "|---|" + "---|" * len(classes),
        ]
        for name, per in report["memory"].items():
            cells = [f"{per[str(c)]['net_bytes'] / mib:.0f}" if per.get(str(c)) else "not run" for c in classes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Chunked / plain, net (target <= 0.25x):", ""]
        for family, (plain, chunked) in PAIRS.items():
            cells = []
            for c in classes:
                p, q = report["memory"].get(plain, {}).get(str(c)), report["memory"].get(chunked, {}).get(str(c))
                if p and q:
                    cells.append(f"C = {c:,}: {q['net_bytes'] / p['net_bytes']:.3f}x")
            lines.append(f"- {family}: " + ", ".join(cells))
        ours = report["memory"].get(PAIRS["BalancedSoftmax"][1], {})
        for name in (n for n in report["memory"] if n.startswith("torch")):
            cells = [
                f"C = {c:,}: {ours[str(c)]['net_bytes'] / r['net_bytes']:.3f}x"
                for c, r in ((int(k), v) for k, v in report["memory"][name].items())
                if r and r["net_bytes"] > 0 and ours.get(str(c))
            ]
            lines.append(f"- chunked BalancedSoftmax / {name}: " + ", ".join(cells))
        lines += [
            "",
            "Gradient bytes (subtracted above): "
            + ", ".join(f"C = {c:,}: {(BATCH * DIM + c * DIM + c) * 4 / mib:.0f} MiB" for c in classes)
            + ".",
            "",
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"plain": "-", "chunked": "--", "torch": ":"}
    for name, per in report["memory"].items():
        points = sorted((int(c), r["net_bytes"] / 2**20) for c, r in per.items() if r)
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, styles[name.split()[0]], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of classes C")
    ax.set_ylabel("peak extra memory, net of gradients (MiB)")
    ax.set_title(f"forward + backward of a linear head, N = {BATCH}, D = {DIM}, CPU float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time-classes", type=int, nargs="*", default=[1_000_000], help="C for the timing")
    parser.add_argument(
        "--memory-classes",
        type=int,
        nargs="*",
        default=[10_000, 30_000, 100_000, 300_000, 1_000_000, 2_000_000, 4_000_000],
        help="C for the memory curve",
    )
    parser.add_argument("--plain-max-classes", type=int, default=2_000_000, help="largest C of the plain cases")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case")
    parser.add_argument("--memory-threads", type=int, default=1, help="torch threads of the memory subprocesses")
    parser.add_argument("--threads", type=int, help="torch threads of the timing (default: torch's)")
    parser.add_argument("--only", help="memory phase: only the cases whose name starts with this (e.g. chunked)")
    parser.add_argument("--phase", choices=["all", "time", "memory", "check"], default="all", help="measure only this")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.time_classes[0])
        return
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.out / "bench_linear.json"
    # A phase run alone updates that phase of an earlier report and keeps the other.
    report: dict = json.loads(path.read_text()) if args.phase != "all" and path.exists() else {}
    report.setdefault("time", {})
    report.setdefault("max_abs_difference", {})
    report.setdefault("memory", {})
    report.update({"batch": BATCH, "dim": DIM})
    info = harness.machine_info()
    report.setdefault("machine", info)
    report.setdefault("machine_by_phase", {})
    phase = args.phase if args.phase == "memory" else f"{args.phase} ({torch.get_num_threads()} threads)"
    report["machine_by_phase"][phase] = info
    if args.phase in ("all", "time"):
        report["repeats"] = args.repeats
        report["machine"] = info
    time_classes = args.time_classes if args.phase in ("all", "time") else []
    memory_classes = args.memory_classes if args.phase in ("all", "memory") else []
    for c in time_classes:
        key = f"{c}@{torch.get_num_threads()}"  # C and the number of torch threads
        report["time"][key] = time_cases(c, args.repeats)
        for name, row in report["time"][key].items():
            print(f"time C={c:,} {name}: median {row['median_s']:.2f} s, IQR {row['iqr_s']:.2f} s", flush=True)
    for c in args.time_classes if args.phase in ("all", "check") else []:
        report.setdefault("equality", {})[str(c)] = check_equal(c)
    for name in [n for n in CASE_NAMES if n.startswith(args.only or "")] if memory_classes else []:
        per: dict = {}
        for c in memory_classes:
            if name.startswith("plain") and c > args.plain_max_classes:
                continue
            per[str(c)] = memory_cpu(name, c, args.memory_threads)
            if per[str(c)]:
                print(f"memory C={c:,} {name}: net {per[str(c)]['net_bytes'] / 2**20:.0f} MiB", flush=True)
        report["memory"][name] = per
    report["machine_by_phase"][phase]["load_average_end"] = os.getloadavg()
    report["machine"].setdefault("load_average_end", os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench_linear.md").write_text(markdown(report))
    if report["memory"]:
        plot(report, args.out / "bench_linear_memory.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
