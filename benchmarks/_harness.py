"""What the speed benchmarks share: the problem, the machine record, timing, memory and fresh-process children.

Used by ``bench_losses.py``, ``bench_linear.py`` and ``bench_stage2_cache.py`` (run as scripts, so that this folder
is on ``sys.path``). Importing it puts this checkout first on ``sys.path``: the benchmarks measure the code next to
them, not whatever copy of ``longtail_losses`` is installed.

* The problem: :func:`class_counts` (a long-tailed profile) and the hyperparameters ``ALPHA``, ``BETA``, ``GAMMA``.
* The record: :func:`machine_info` (versions, CPU, GPU, commit, date, load) and :func:`machine_line`, its sentence.
* Time: :func:`interleaved` runs several steps interleaved (step 1, step 2, ..., step 1, ...) so that a change in
  machine load hits every step alike; :func:`quartiles` gives the median and the interquartile range.
* Memory: :func:`peak_extra_bytes` (CPU: the kernel's resident high-water mark, ``VmHWM`` of
  ``/proc/self/status``, reset before the run) and :func:`cuda_peak_extra_bytes`.
* Fresh processes: :func:`run_child` starts ``python <script> <args>`` with ``BENCH_THREADS`` (read back by
  :func:`threads_from_env`) and, for memory, ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc serves every large
  tensor by ``mmap`` and returns it on free; the child prints one JSON line (:func:`child_result`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmark this checkout, not whatever copy is installed

import torch  # noqa: E402

import longtail_losses as ltl  # noqa: E402

ALPHA, BETA, GAMMA = 0.1, 0.9999, 1.0  # the library's defaults (Cui et al.'s CIFAR setting, the paper's alpha)


def class_counts(num_classes: int) -> torch.Tensor:
    """A long-tailed profile (imbalance 100, CIFAR-LT's exponential decay) with at least one sample per class.

    Returns:
        ``(num_classes,)`` int64, from 1000 samples for class 0 down to 10 for the last class.

    >>> class_counts(3).tolist()
    [1000, 100, 10]
    """
    decay = torch.arange(num_classes, dtype=torch.float64) / max(1, num_classes - 1)
    return (1000.0 * 0.01**decay).round().clamp_min(1).long()


# ---------------------------------------------------------------------------------------------------------------
# The machine record
# ---------------------------------------------------------------------------------------------------------------


def git_commit(*, full: bool = False) -> str:
    """The checkout's commit, marked dirty when ``longtail_losses/`` has uncommitted changes; ``"unknown"``.

    Args:
        full: the full hash and ``-dirty`` (the stage-2 benchmark's record); by default the short hash and
            ``+dirty`` (the loss benchmarks').
    """
    try:
        rev = subprocess.run(
            ["git", "rev-parse", *([] if full else ["--short"]), "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "longtail_losses"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (("-dirty" if full else "+dirty") if dirty else "")


def machine_info() -> dict[str, Any]:
    """Versions, CPU, GPU, torch threads, commit, UTC date and the load average at the start of a benchmark."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "torch": torch.__version__,
        "longtail_losses": ltl.__version__,
        "longtail_losses_path": str(Path(ltl.__file__).parent),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg(),
    }


def machine_line(meta: dict[str, Any], *, gpu: bool = False) -> str:
    """The record of :func:`machine_info` (with ``load_average_end`` added) as the opening of a report's sentence.

    Args:
        meta: the record.
        gpu: name the GPU, if the record has one.
    """
    return (
        f"torch {meta['torch']}, {meta['cpu']} ({meta['cpu_count']} cores, {meta['torch_threads']} threads)"
        + (f", GPU {meta['cuda']}" if gpu and meta["cuda"] else "")
        + f", commit {meta['commit']}, {meta['date']}, load average {meta['load_average_start'][0]:.1f} at the start"
        f" and {meta['load_average_end'][0]:.1f} at the end"
    )


# ---------------------------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------------------------


def interleaved(
    steps: dict[str, Callable[[], object]],
    repeats: int,
    *,
    warmup: int = 0,
    sync: Optional[Callable[[], object]] = None,
    progress: Optional[Callable[[int, str, float], object]] = None,
) -> dict[str, list[float]]:
    """Seconds of each step, the steps run interleaved: ``warmup`` untimed rounds, then ``repeats`` timed ones.

    Args:
        steps: name -> a call that runs one step.
        repeats: timed rounds; each step runs once a round.
        warmup: untimed rounds first.
        sync: called before and after each timed step (``torch.cuda.synchronize`` on a GPU).
        progress: called as ``progress(round, name, seconds)`` after each timed step.

    Returns:
        name -> ``repeats`` durations in seconds, in order.

    >>> times = interleaved({"a": lambda: None, "b": lambda: None}, 3, warmup=1)
    >>> {name: len(values) for name, values in times.items()}
    {'a': 3, 'b': 3}
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(repeats):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            samples[name].append(time.perf_counter() - start)
            if progress is not None:
                progress(repeat, name, samples[name][-1])
    return samples


def quartiles(values: list[float]) -> tuple[float, float]:
    """The median and the interquartile range of ``values`` (one value: itself and 0).

    >>> quartiles([1.0, 2.0, 3.0, 4.0, 5.0])
    (3.0, 3.0)
    """
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return median, q3 - q1


# ---------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """The value of ``field`` (e.g. ``VmHWM``) in /proc/self/status, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"field must be a line of /proc/self/status such as 'VmHWM'; got {field!r}, not found")


def peak_extra_bytes(run: Callable[[], object]) -> int:
    """Bytes by which one call of ``run`` raises the resident size above its start (Linux >= 4.0).

    Resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``), records ``VmRSS``, runs, and reads
    ``VmHWM``. Run it in a fresh process started by :func:`run_child` with ``memory=True``, after a warm-up.
    """
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current resident size
    before = status_kib("VmRSS")
    run()
    return (status_kib("VmHWM") - before) * 1024


def cuda_peak_extra_bytes(run: Callable[[], object]) -> float:
    """Bytes of CUDA memory by which one call of ``run`` raises the allocation above its start."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - before)


# ---------------------------------------------------------------------------------------------------------------
# Fresh processes
# ---------------------------------------------------------------------------------------------------------------


def run_child(
    script: str, args: list[str], *, threads: int, timeout: float, memory: bool = False
) -> tuple[Optional[dict[str, Any]], str]:
    """Run ``python script *args`` in a fresh process from the checkout's root.

    Args:
        script: the benchmark's path (its ``__file__``).
        args: its command line.
        threads: torch threads of the child, passed as ``BENCH_THREADS`` (see :func:`threads_from_env`).
        timeout: seconds before the child is killed (``subprocess.TimeoutExpired``).
        memory: set ``MALLOC_MMAP_THRESHOLD_=65536`` for a memory measurement.

    Returns:
        The last line of the child's output as JSON (``None`` when the child failed) and its standard error.
    """
    env = dict(os.environ, BENCH_THREADS=str(threads))
    if memory:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    command = [sys.executable, str(Path(script).resolve()), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    if done.returncode != 0:
        return None, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def threads_from_env() -> None:
    """In a child of :func:`run_child`: use the parent's number of torch threads."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))


def child_result(result: dict[str, Any]) -> None:
    """In a child of :func:`run_child`: hand ``result`` to the parent (one JSON line)."""
    print(json.dumps(result))
