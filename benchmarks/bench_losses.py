"""Time and memory of every loss against ``F.cross_entropy`` and the PyPI peers (forward + backward).

Usage::

    python benchmarks/bench_losses.py            # C in {1000, 10000, 50000}, >= 30 interleaved runs per case
    python benchmarks/bench_losses.py --quick    # C in {1000, 10000}, 10 runs: under two minutes

Writes ``benchmarks/results/bench_losses.json`` and ``benchmarks/results/bench_losses.md`` (``--out`` changes the
folder). Install the peers first, without their dependencies so that torch is not replaced::

    pip install --no-deps balanced-loss cbloss pytorch-focalloss focal-loss-torch imbalanced-losses

A peer that fails to import is skipped and listed as such in the results. The peers are in ``_peers.py``; the
timing, memory and fresh-process machinery, shared with ``bench_linear.py``, in ``_harness.py``.

Two regimes, both printed with the absolute time of ``F.cross_entropy``:

* **pairwise** (``--regime pairwise``): each loss timed interleaved with ``F.cross_entropy`` alone, in a fresh
  process per (loss, C), so that neither the heap left by other cases nor their caches move the floor; and
  ``F.cross_entropy`` alone in a fresh process before and after them, the floor each ratio is also given to;
* **table** (``--regime table``, the default of earlier versions): every case of one C interleaved in one process,
  with the PyPI peers, and memory.

``--regime both`` (the default) runs the pairwise regime first, then the table.

Compiled columns: ``<loss> (compiled_path)`` is the module under ``ltl.compiled_path()`` (the library's own
compiled kernel); ``torch.compile(<function>)`` is what a user who compiles the loss gets (the reference graph,
fused by inductor), ``torch.compile(F.cross_entropy)`` the compiled floor. Compiling happens in the warm-up runs.

Method:

* Time: B = 256 float32 logits (requires_grad) and int64 labels; one run is ``loss(z, y).backward()``. All cases
  of one C run interleaved (case 1, case 2, ..., case 1, ...) after warm-up runs, so that a change in machine
  load hits every case alike; the table gives the median and the interquartile range, and the ratio of medians
  to ``F.cross_entropy`` measured in the same process. On CUDA each run is timed with a device synchronisation.
* Memory on a CPU: each (case, C) runs in a fresh subprocess with ``MALLOC_MMAP_THRESHOLD_=65536``, so that glibc
  serves every large tensor by ``mmap`` and returns it on free (the resident size then follows the live
  tensors, with no dependence on what an earlier case left in the heap). The subprocess allocates the inputs,
  runs one warm-up forward + backward (lazy initialisation), drops the gradient, resets the kernel's
  high-water mark (``echo 5 > /proc/self/clear_refs``) and records the resident size; it then runs forward +
  backward once and reads the high-water mark (``VmHWM``). "Peak extra memory" is the difference: every
  temporary of forward and backward plus the gradient it leaves in ``z.grad``.
* Memory on CUDA: ``torch.cuda.max_memory_allocated`` over the same run, minus the memory allocated before it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import _harness as harness  # first: it puts this checkout on sys.path
import torch
from _harness import ALPHA, BETA, GAMMA, ROOT, class_counts
from _peers import PEERS, Builder, Loss, cross_entropy

import longtail_losses as ltl

BATCH = 256
FEATURE_DIM = 64  # classifier width for BWLM's penalty: ResNet-32 on CIFAR-LT, the paper's backbone
TARGETS = {  # (time, memory) ratios to F.cross_entropy, from the issues (issue 23: C = 1k / C >= 10k for compiled)
    "BalancedSoftmax": (1.1, 1.1),
    "ClassBalancedFocal": (2.0, 1.25),
    "BFS": (2.0, 1.25),
    "BWLM": (2.0, 1.25),
    "BalancedSoftmax (compiled_path)": (1.05, 1.05),
    "ClassBalancedFocal (compiled_path)": ("1.6 / 1.3", 1.05),
    "BFS (compiled_path)": ("1.6 / 1.3", 1.05),
    "BWLM (compiled_path)": ("1.6 / 1.3", 1.05),
    "torch.compile(balanced_softmax_loss)": (1.1, None),
    "torch.compile(class_balanced_focal_loss)": (1.5, None),
    "torch.compile(bfs_loss)": (1.5, None),
}

# ---------------------------------------------------------------------------------------------------------------
# Cases: name -> (group, builder). A builder takes (counts, device, classifier) and returns loss(z, y) or raises.
# ---------------------------------------------------------------------------------------------------------------


def _ours(name: str) -> Builder:
    def build(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
        if name == "BalancedSoftmax":
            module: torch.nn.Module = ltl.BalancedSoftmax(counts, validate_args=False)
        elif name == "ClassBalancedFocal":
            module = ltl.ClassBalancedFocal(counts, beta=BETA, gamma=GAMMA, validate_args=False)
        elif name == "BFS":
            module = ltl.BFS(counts, alpha=ALPHA, beta=BETA, gamma=GAMMA, validate_args=False)
        else:
            module = ltl.BWLM(counts, classifier=classifier, alpha=ALPHA, beta=BETA, gamma=GAMMA, validate_args=False)
        return module.to(device)

    return build


def _compiled_path(name: str) -> Builder:
    """Our module run under ``ltl.compiled_path()`` (the library's own compiled kernel)."""

    def build(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
        module = _ours(name)(counts, device, classifier)

        def loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with ltl.compiled_path():
                return module(z, y)

        return loss

    return build


def _user_compiled(name: str) -> Builder:
    """``torch.compile`` of the functional loss, as a user who compiles their step gets it (the reference graph)."""

    def build(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
        n = counts.to(device)
        functions: dict[str, Loss] = {
            "F.cross_entropy": lambda z, y: torch.nn.functional.cross_entropy(z, y),
            "balanced_softmax_loss": lambda z, y: ltl.functional.balanced_softmax_loss(z, y, n, validate_args=False),
            "class_balanced_focal_loss": lambda z, y: ltl.functional.class_balanced_focal_loss(
                z, y, n, beta=BETA, gamma=GAMMA, validate_args=False
            ),
            "bfs_loss": lambda z, y: ltl.functional.bfs_loss(
                z, y, n, alpha=ALPHA, beta=BETA, gamma=GAMMA, validate_args=False
            ),
        }
        return torch.compile(functions[name])

    return build


OURS = ("BalancedSoftmax", "ClassBalancedFocal", "BFS", "BWLM")
USER_COMPILED = ("F.cross_entropy", "balanced_softmax_loss", "class_balanced_focal_loss", "bfs_loss")
BASELINE = "F.cross_entropy (the floor)"
CASES: dict[str, tuple[str, Builder]] = {
    BASELINE: ("baseline", cross_entropy),
    **{name: ("ours", _ours(name)) for name in OURS},
    **{f"{name} (compiled_path)": ("ours", _compiled_path(name)) for name in OURS},
    **{f"torch.compile({name})": ("ours", _user_compiled(name)) for name in USER_COMPILED},
    **{name: ("peer", build) for name, build in PEERS.items()},
}


def make_inputs(
    num_classes: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(BATCH, num_classes, generator=gen) * 2).to(device=device, dtype=dtype).requires_grad_()
    y = torch.randint(0, num_classes, (BATCH,), generator=gen).to(device)
    classifier = (torch.randn(num_classes, FEATURE_DIM, generator=gen) * 0.05).to(device=device, dtype=dtype)
    return z, y, classifier.requires_grad_()


def build_case(name: str, counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    return CASES[name][1](counts, device, classifier)


def step(loss: Loss, z: torch.Tensor, y: torch.Tensor, classifier: torch.Tensor) -> None:
    z.grad = None
    classifier.grad = None
    loss(z, y).backward()


# ---------------------------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------------------------


def time_cases(
    names: list[str], num_classes: int, device: torch.device, dtype: torch.dtype, repeats: int, warmup: int
) -> tuple[dict[str, dict[str, float | None]], dict[str, str]]:
    counts = class_counts(num_classes)
    z, y, classifier = make_inputs(num_classes, device, dtype)
    losses: dict[str, Loss] = {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            loss = build_case(name, counts, device, classifier)
            step(loss, z, y, classifier)
        except Exception as error:  # a peer that does not import or does not run: skip it, say why
            skipped[name] = f"{type(error).__name__}: {error}"[:200]
            continue
        losses[name] = loss
    steps: dict[str, Callable[[], object]] = {
        name: partial(step, loss, z, y, classifier) for name, loss in losses.items()
    }
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    samples = harness.interleaved(steps, repeats, warmup=warmup, sync=sync)
    results: dict[str, dict[str, float | None]] = {}
    for name, values in samples.items():
        median, iqr = harness.quartiles(values)
        results[name] = {"median_ms": median * 1e3, "iqr_ms": iqr * 1e3, "runs": len(values)}
    return results, skipped


def pairwise_child(name: str, num_classes: int, repeats: int) -> None:
    """Run in a fresh process: time ``name`` interleaved with ``F.cross_entropy`` alone; print both as JSON.

    ``name`` may be the baseline itself: then ``F.cross_entropy`` runs alone (the floor of a fresh process).
    """
    harness.threads_from_env()
    names = [BASELINE] if name == BASELINE else [BASELINE, name]
    results, skipped = time_cases(names, num_classes, torch.device("cpu"), torch.float32, repeats, 3)
    harness.child_result({"cases": results, "skipped": skipped})


def fresh_floor(num_classes: int, repeats: int) -> float | None:
    """Median ms of ``F.cross_entropy`` alone in a fresh process: the floor no other case's allocations moved."""
    args = ["--pairwise-child", BASELINE, "--classes", str(num_classes), "--repeats", str(repeats)]
    result, _ = harness.run_child(__file__, args, threads=torch.get_num_threads(), timeout=1200)
    return None if result is None else float(result["cases"][BASELINE]["median_ms"])


def pairwise(names: list[str], num_classes: int, repeats: int) -> dict[str, dict]:
    """Each loss of ``names`` against ``F.cross_entropy`` in its own fresh process (CPU, float32).

    Also ``F.cross_entropy`` alone in a fresh process before and after them (key ``"floor"``): in a process shared
    with a loss, the heap that the loss leaves behind can move the time of cross-entropy itself (a trimmed heap
    pays its page faults again), so each ratio is given to both.
    """
    out: dict[str, dict] = {"floor": {"before_ms": fresh_floor(num_classes, repeats)}}
    for name in names:
        args = ["--pairwise-child", name, "--classes", str(num_classes), "--repeats", str(repeats)]
        result, stderr = harness.run_child(__file__, args, threads=torch.get_num_threads(), timeout=1200)
        if result is None:
            out[name] = {"error": stderr.strip().splitlines()[-1:]}
            continue
        if name not in result["cases"]:
            out[name] = {"error": result["skipped"].get(name, "skipped")}
            continue
        loss, floor = result["cases"][name], result["cases"][BASELINE]
        out[name] = {
            "median_ms": loss["median_ms"],
            "iqr_ms": loss["iqr_ms"],
            "ce_median_ms": floor["median_ms"],
            "ratio": loss["median_ms"] / floor["median_ms"],
        }
    out["floor"]["after_ms"] = fresh_floor(num_classes, repeats)
    return out


def pairwise_markdown(report: dict) -> list[str]:
    section = report["pairwise"]
    classes = section["classes"]
    lines = [
        "## Regime 1: each loss alone with F.cross_entropy, fresh process per cell (CPU float32)",
        "",
        "Each cell: median ms of the loss, then median ms of `F.cross_entropy` in the same process, then the ratio;",
        "in brackets, the ratio to the floor: `F.cross_entropy` alone in a fresh process (the lower of the runs",
        "before and after the losses).",
        "",
    ]
    floors: dict[int, float | None] = {}
    for c in classes:
        floor = section["results"][str(c)].get("floor", {})
        known = [v for v in (floor.get("before_ms"), floor.get("after_ms")) if v is not None]
        floors[c] = min(known) if known else None
        shown = " and ".join(f"{v:.3f}" for v in known) or "not measured"
        lines.append(f"- floor at C = {c:,}: {shown} ms (before and after)")
    lines += [
        "",
        "| loss | " + " | ".join(f"C = {c:,}" for c in classes) + " | time target |",
        "|---|" + "---|" * len(classes) + "---|",
    ]
    for name in section["names"]:
        cells = []
        for c in classes:
            cell = section["results"][str(c)][name]
            if "error" in cell:
                cells.append("failed")
                continue
            to_floor = f" [{cell['median_ms'] / floors[c]:.2f}x]" if floors[c] else ""
            cells.append(f"{cell['median_ms']:.2f} vs {cell['ce_median_ms']:.2f} ({cell['ratio']:.2f}x){to_floor}")
        target = TARGETS.get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {f'<= {target[0]}x' if target else ''} |")
    return [*lines, ""]


# ---------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------


def memory_child(name: str, num_classes: int) -> None:
    """Run in a fresh process: print the peak extra resident memory (bytes) of one forward + backward."""
    harness.threads_from_env()
    device = torch.device("cpu")
    counts = class_counts(num_classes)
    z, y, classifier = make_inputs(num_classes, device, torch.float32)
    loss = build_case(name, counts, device, classifier)
    step(loss, z, y, classifier)  # warm-up: lazy initialisation, thread pools
    z.grad = None
    classifier.grad = None
    harness.child_result({"extra_bytes": harness.peak_extra_bytes(partial(step, loss, z, y, classifier))})


def memory_cpu(name: str, num_classes: int) -> float | None:
    args = ["--memory-child", name, "--classes", str(num_classes)]
    result, _ = harness.run_child(__file__, args, threads=torch.get_num_threads(), timeout=600, memory=True)
    return None if result is None else float(result["extra_bytes"])


def memory_cuda(name: str, num_classes: int, dtype: torch.dtype) -> float | None:
    device = torch.device("cuda")
    counts = class_counts(num_classes)
    z, y, classifier = make_inputs(num_classes, device, dtype)
    try:
        loss = build_case(name, counts, device, classifier)
        step(loss, z, y, classifier)
    except Exception:
        return None
    z.grad = None
    classifier.grad = None
    return harness.cuda_peak_extra_bytes(partial(step, loss, z, y, classifier))


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def ratio_cell(case: dict[str, float | None], base: dict[str, float | None], key: str, unit: float, fmt: str) -> str:
    value, floor = case.get(key), base.get(key)
    if value is None:
        return "n/a"
    text = fmt.format(value / unit)
    return f"{text} ({value / floor:.2f}x)" if floor else text


def markdown(report: dict) -> str:
    meta = report["machine"]
    lines = [
        "# Loss benchmark: forward + backward, B = 256",
        "",
        harness.machine_line(meta, gpu=True) + f" ({meta['mode']} run).",
        "",
        "Each cell: median time in ms (ratio to `F.cross_entropy`) / peak extra memory in MiB (ratio). "
        f"Interleaved runs ({report['repeats']} per case); memory of one forward + backward in a fresh process. "
        f"Hyperparameters: alpha={ALPHA}, beta={BETA}, gamma={GAMMA}; BWLM's penalty is on a C x {FEATURE_DIM} "
        "classifier (its gradient included).",
        "",
    ]
    for section in report["sections"]:
        classes = section["classes"]
        lines += [f"## Regime 2, the full table: {section['device']} {section['dtype']}", ""]
        base_times = [section["results"][str(c)]["cases"].get(BASELINE, {}).get("median_ms") for c in classes]
        lines += [
            "F.cross_entropy's own time in this process: "
            + ", ".join(f"C = {c:,}: {t:.2f} ms" for c, t in zip(classes, base_times) if t is not None),
            "",
        ]
        lines.append("| loss | " + " | ".join(f"C = {c:,}" for c in classes) + " | target (time / memory) |")
        lines.append("|---|" + "---|" * len(classes) + "---|")
        for name in CASES:
            cells = []
            for c in classes:
                per_c = section["results"][str(c)]
                case, base = per_c["cases"].get(name), per_c["cases"].get(BASELINE)
                if case is None:
                    cells.append("skipped")
                    continue
                time_text = ratio_cell(case, base, "median_ms", 1.0, "{:.1f}")
                iqr = f" ±{case['iqr_ms'] / 2:.1f}"
                memory_text = ratio_cell(case, base, "memory_bytes", 2**20, "{:.0f}")
                cells.append(f"{time_text.split(' (')[0]}{iqr} ({time_text.split(' (')[-1]} / {memory_text}")
            target = TARGETS.get(name)
            target_text = ""
            if target:
                target_text = f"<= {target[0]}x / <= {target[1]}x" if target[1] else f"<= {target[0]}x"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {target_text} |")
        lines.append("")
        skipped = {name: why for c in classes for name, why in section["results"][str(c)]["skipped"].items()}
        for name, why in skipped.items():
            lines.append(f"- skipped {name}: {why}")
        if skipped:
            lines.append("")
    lines.append("(± is half the interquartile range of the times.)")
    if "pairwise" in report:
        lines += ["", *pairwise_markdown(report)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="C in {1000, 10000}, 10 runs (under two minutes)")
    parser.add_argument("--classes", type=int, nargs="+", help="numbers of classes (default 1000 10000 50000)")
    parser.add_argument("--repeats", type=int, help="timed runs per case (default 30, 10 with --quick)")
    parser.add_argument("--no-peers", action="store_true", help="only F.cross_entropy and our losses")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    parser.add_argument(
        "--regime", choices=["both", "pairwise", "table"], default="both", help="which regime(s) to run"
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--pairwise-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.classes[0])
        return
    if args.pairwise_child:
        pairwise_child(args.pairwise_child, args.classes[0], args.repeats)
        return
    classes = args.classes or ([1000, 10000] if args.quick else [1000, 10000, 50000])
    repeats = args.repeats or (10 if args.quick else 30)
    warmup = 2 if args.quick else 3
    names = [name for name, (group, _) in CASES.items() if not (args.no_peers and group == "peer")]
    torch.manual_seed(0)
    report: dict = {"machine": harness.machine_info(), "repeats": repeats, "batch": BATCH, "sections": []}
    report["machine"]["mode"] = "quick" if args.quick else "full"
    if args.regime in ("both", "pairwise"):
        ours = [name for name, (group, _) in CASES.items() if group == "ours"]
        report["pairwise"] = {"classes": classes, "names": ours, "results": {}}
        for c in classes:
            started = time.perf_counter()
            report["pairwise"]["results"][str(c)] = pairwise(ours, c, repeats)
            print(f"pairwise C={c}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    configs = [(torch.device("cpu"), torch.float32)] if args.regime != "pairwise" else []
    if torch.cuda.is_available() and args.regime != "pairwise":
        configs += [(torch.device("cuda"), torch.float32), (torch.device("cuda"), torch.bfloat16)]
    for device, dtype in configs:
        section: dict = {"device": device.type, "dtype": str(dtype).replace("torch.", ""), "classes": classes}
        section["results"] = {}
        for c in classes:
            started = time.perf_counter()
            cases, skipped = time_cases(names, c, device, dtype, repeats, warmup)
            for name in cases:
                if args.no_memory:
                    cases[name]["memory_bytes"] = None
                elif device.type == "cpu":
                    cases[name]["memory_bytes"] = memory_cpu(name, c)
                else:
                    cases[name]["memory_bytes"] = memory_cuda(name, c, dtype)
            section["results"][str(c)] = {"cases": cases, "skipped": skipped}
            print(f"{device.type} {section['dtype']} C={c}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        report["sections"].append(section)
    report["machine"]["load_average_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_losses.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "bench_losses.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
