"""Time and memory of every loss against ``F.cross_entropy`` and the PyPI peers (forward + backward).

Usage::

    python benchmarks/bench_losses.py            # C in {1000, 10000, 50000}, >= 30 interleaved runs per case
    python benchmarks/bench_losses.py --quick    # C in {1000, 10000}, 10 runs: under two minutes

Writes ``benchmarks/results/bench_losses.json`` and ``benchmarks/results/bench_losses.md`` (``--out`` changes the
folder). Install the peers first, without their dependencies so that torch is not replaced::

    pip install --no-deps balanced-loss cbloss pytorch-focalloss focal-loss-torch imbalanced-losses

A peer that fails to import is skipped and listed as such in the results.

Two regimes, both printed with the absolute time of ``F.cross_entropy``:

* **pairwise** (``--regime pairwise``): each loss timed interleaved with ``F.cross_entropy`` alone, in a fresh
  process per (loss, C), so that neither the heap left by other cases nor their caches move the floor;
* **table** (``--regime table``, the default of earlier versions): every case of one C interleaved in one process,
  with the PyPI peers, and memory.

``--regime both`` (the default) runs the pairwise regime first, then the table.

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
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmark this checkout, not whatever copy is installed

import longtail_losses as ltl  # noqa: E402

BATCH = 256
ALPHA, BETA, GAMMA = 0.1, 0.9999, 1.0  # the library's defaults (Cui et al.'s CIFAR setting, the paper's alpha)
FEATURE_DIM = 64  # classifier width for BWLM's penalty: ResNet-32 on CIFAR-LT, the paper's backbone
TARGETS = {  # (time, memory) ratios to F.cross_entropy, from the issue
    "BalancedSoftmax": (1.2, 1.1),
    "ClassBalancedFocal": (2.0, 1.25),
    "BFS": (2.0, 1.25),
    "BWLM": (2.0, 1.25),
}

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def class_counts(num_classes: int) -> torch.Tensor:
    """A long-tailed profile (imbalance 100, CIFAR-LT's exponential decay) with at least one sample per class."""
    decay = torch.arange(num_classes, dtype=torch.float64) / max(1, num_classes - 1)
    return (1000.0 * 0.01**decay).round().clamp_min(1).long()


def effective_weights(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    return ltl.functional.class_balanced_weights(counts, BETA).to(device)


# ---------------------------------------------------------------------------------------------------------------
# Cases: name -> (group, builder). A builder takes (counts, device, classifier) and returns loss(z, y) or raises.
# ---------------------------------------------------------------------------------------------------------------


def _ours(name: str) -> Callable[..., Loss]:
    def build(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
        kwargs = {"validate_args": False}
        if name == "BalancedSoftmax":
            module: torch.nn.Module = ltl.BalancedSoftmax(counts, **kwargs)
        elif name == "ClassBalancedFocal":
            module = ltl.ClassBalancedFocal(counts, beta=BETA, gamma=GAMMA, **kwargs)
        elif name == "BFS":
            module = ltl.BFS(counts, alpha=ALPHA, beta=BETA, gamma=GAMMA, **kwargs)
        else:
            module = ltl.BWLM(counts, classifier=classifier, alpha=ALPHA, beta=BETA, gamma=GAMMA, **kwargs)
        return module.to(device)

    return build


def _cross_entropy(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    return lambda z, y: F.cross_entropy(z, y)


def _bs_one_liner(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    log_counts = counts.to(device).float().log()
    return lambda z, y: F.cross_entropy(z + log_counts, y)


def _balanced_loss(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    from balanced_loss import Loss as BalancedLoss  # balanced-loss 0.1.1: sigmoid CB focal (Cui et al.'s code)

    peer = BalancedLoss(
        loss_type="focal_loss", beta=BETA, fl_gamma=GAMMA, samples_per_class=counts.tolist(), class_balanced=True
    )
    return lambda z, y: peer(z, y)


def _imbalanced_losses(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    from imbalanced_losses import SigmoidFocalLoss  # imbalanced-losses: sigmoid focal, per-sample weights

    peer = SigmoidFocalLoss(alpha=-1, gamma=GAMMA, reduction="sum")
    weights = effective_weights(counts, device)

    def loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(y, z.shape[1]).to(z.dtype)
        return peer(z, onehot, sample_weight=weights[y].unsqueeze(1)) / z.shape[0]

    return loss


def _cbloss(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    from cbloss.loss import ClassBalancedLoss, FocalLoss  # cbloss: softmax focal times CB weights

    num_classes = counts.shape[0]
    peer = ClassBalancedLoss(counts.numpy(), BETA, num_classes, FocalLoss(num_classes, gamma=GAMMA, reduction="none"))
    peer.weights = peer.weights.to(device)
    return lambda z, y: peer(z, y)


def _pytorch_focalloss(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    from torch_focalloss import MultiClassFocalLoss  # pytorch-focalloss: softmax focal with class alpha

    peer = MultiClassFocalLoss(gamma=GAMMA, alpha=effective_weights(counts, device))
    return lambda z, y: peer(z, y)


def _focal_loss_torch(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
    from focal_loss.focal_loss import FocalLoss  # focal-loss-torch: focal on probabilities, class weights

    peer = FocalLoss(gamma=GAMMA, weights=effective_weights(counts, device))
    return lambda z, y: peer(torch.softmax(z, dim=-1), y)


def _bfs_one_liner(focal: Callable[..., Loss]) -> Callable[..., Loss]:
    """The BFS a user writes from two peers: alpha * (peer's CB focal) + (1 - alpha) * CE(z + log n)."""

    def build(counts: torch.Tensor, device: torch.device, classifier: torch.Tensor) -> Loss:
        focal_loss, balanced_softmax = focal(counts, device, classifier), _bs_one_liner(counts, device, classifier)
        return lambda z, y: ALPHA * focal_loss(z, y) + (1 - ALPHA) * balanced_softmax(z, y)

    return build


CASES: dict[str, tuple[str, Callable[..., Loss]]] = {
    "F.cross_entropy (the floor)": ("baseline", _cross_entropy),
    "BalancedSoftmax": ("ours", _ours("BalancedSoftmax")),
    "ClassBalancedFocal": ("ours", _ours("ClassBalancedFocal")),
    "BFS": ("ours", _ours("BFS")),
    "BWLM": ("ours", _ours("BWLM")),
    "balanced softmax as F.cross_entropy(z + log n)": ("peer", _bs_one_liner),
    "sigmoid CB focal (balanced-loss)": ("peer", _balanced_loss),
    "sigmoid focal + CB weights (imbalanced-losses)": ("peer", _imbalanced_losses),
    "softmax focal + CB weights (cbloss)": ("peer", _cbloss),
    "softmax focal + CB alpha (pytorch-focalloss)": ("peer", _pytorch_focalloss),
    "softmax focal + CB weights (focal-loss-torch)": ("peer", _focal_loss_torch),
    "BFS one-liner: balanced-loss + CE(z + log n)": ("peer", _bfs_one_liner(_balanced_loss)),
    "BFS one-liner: imbalanced-losses + CE(z + log n)": ("peer", _bfs_one_liner(_imbalanced_losses)),
}
BASELINE = "F.cross_entropy (the floor)"


def make_inputs(num_classes: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
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
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
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
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for loss in losses.values():
            step(loss, z, y, classifier)
    samples: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(repeats):
        for name, loss in losses.items():
            sync()
            start = time.perf_counter()
            step(loss, z, y, classifier)
            sync()
            samples[name].append(time.perf_counter() - start)
    results = {}
    for name, values in samples.items():
        q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        results[name] = {"median_ms": median * 1e3, "iqr_ms": (q3 - q1) * 1e3, "runs": len(values)}
    return results, skipped


# ---------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """The value of ``field`` (e.g. ``VmHWM``) in /proc/self/status, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def pairwise_child(name: str, num_classes: int, repeats: int) -> None:
    """Run in a fresh process: time ``name`` interleaved with ``F.cross_entropy`` alone; print both as JSON."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    results, skipped = time_cases([BASELINE, name], num_classes, torch.device("cpu"), torch.float32, repeats, 3)
    print(json.dumps({"cases": results, "skipped": skipped}))


def pairwise(names: list[str], num_classes: int, repeats: int) -> dict[str, dict]:
    """Each loss of ``names`` against ``F.cross_entropy`` in its own fresh process (CPU, float32)."""
    env = dict(os.environ, BENCH_THREADS=str(torch.get_num_threads()))
    out: dict[str, dict] = {}
    for name in names:
        command = [
            sys.executable, __file__, "--pairwise-child", name, "--classes", str(num_classes),
            "--repeats", str(repeats),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200)
        if done.returncode != 0:
            out[name] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
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
    return out


def pairwise_markdown(report: dict) -> list[str]:
    section = report["pairwise"]
    classes = section["classes"]
    lines = [
        "## Regime 1: each loss alone with F.cross_entropy, fresh process per cell (CPU float32)",
        "",
        "Each cell: median ms of the loss, then median ms of `F.cross_entropy` in the same process, then the ratio.",
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
            cells.append(f"{cell['median_ms']:.2f} vs {cell['ce_median_ms']:.2f} ({cell['ratio']:.2f}x)")
        target = TARGETS.get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {f'<= {target[0]}x' if target else ''} |")
    return [*lines, ""]


def memory_child(name: str, num_classes: int) -> None:
    """Run in a fresh process: print the peak extra resident memory (bytes) of one forward + backward."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    device = torch.device("cpu")
    counts = class_counts(num_classes)
    z, y, classifier = make_inputs(num_classes, device, torch.float32)
    loss = build_case(name, counts, device, classifier)
    step(loss, z, y, classifier)  # warm-up: lazy initialisation, thread pools
    z.grad = None
    classifier.grad = None
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current resident size (Linux >= 4.0)
    before = status_kib("VmRSS")
    step(loss, z, y, classifier)
    peak = status_kib("VmHWM")
    print(json.dumps({"extra_bytes": (peak - before) * 1024}))


def memory_cpu(name: str, num_classes: int) -> float | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", BENCH_THREADS=str(torch.get_num_threads()))
    command = [sys.executable, __file__, "--memory-child", name, "--classes", str(num_classes)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if done.returncode != 0:
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["extra_bytes"])


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
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(loss, z, y, classifier)
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - before)


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, object]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "longtail_losses"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "torch": torch.__version__,
        "longtail_losses": ltl.__version__,
        "longtail_losses_path": str(Path(ltl.__file__).parent),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg(),
    }


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
        f"torch {meta['torch']}, {meta['cpu']} ({meta['cpu_count']} cores, {meta['torch_threads']} threads)"
        + (f", GPU {meta['cuda']}" if meta["cuda"] else "")
        + f", commit {meta['commit']}, {meta['date']}, load average {meta['load_average_start'][0]:.1f} at the start"
        f" and {meta['load_average_end'][0]:.1f} at the end ({meta['mode']} run).",
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
            target_text = f"<= {target[0]}x / <= {target[1]}x" if target else ""
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
    report: dict = {"machine": machine_info(), "repeats": repeats, "batch": BATCH, "sections": []}
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
