"""Running a study: worker processes, the record of the run, the JSON file and the shared command line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .common import DEFAULT_ROOT, RESULTS


def run_all(
    fn: Callable[..., dict[str, Any]],
    calls: Sequence[tuple[Any, ...]],
    jobs: int,
    describe: Callable[[tuple[Any, ...], dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """``fn(*call)`` for every call, on ``jobs`` spawned worker processes (in this process if ``jobs <= 1``).

    Every call must be deterministic given its arguments, so the results do not depend on ``jobs``; they come
    back in the order they finish. ``describe(call, result)`` is printed as each one finishes.
    """
    start = time.perf_counter()
    done: list[dict[str, Any]] = []

    def finished(call: tuple[Any, ...], result: dict[str, Any]) -> None:
        done.append(result)
        took = time.perf_counter() - start
        print(f"  [{len(done)}/{len(calls)}] {describe(call, result)} ({took:.0f} s)", flush=True)

    if jobs <= 1:
        for call in calls:
            finished(call, fn(*call))
        return done
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fn, *call): call for call in calls}
        for fut in as_completed(futures):
            finished(futures[fut], fut.result())
    return done


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_meta(*, command: str, jobs: int, root: str, load_start: Sequence[float], start: float) -> dict[str, Any]:
    """The record of a study's run: command, versions, machine, commit, load and wall time."""
    return {
        "command": command,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jobs": jobs,
        "threads_per_job": 1,
        "commit": _commit(),
        "root": root,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "wall_seconds": time.perf_counter() - start,
    }


def write_json(path: Path, results: dict[str, Any]) -> None:
    """``results`` as indented JSON (``NaN`` and ``Infinity`` allowed), with a final newline."""
    path.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")


def parse_args(
    argv: Optional[Sequence[str]], description: str, quick_help: str, *, seeds: bool = False
) -> argparse.Namespace:
    """The flags of both studies: ``--root --quick --out --jobs --report-only`` (and ``--seeds`` if asked)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", default=DEFAULT_ROOT, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default benchmarks/results; --quick: a new temporary folder)",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    if seeds:
        parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; --quick 2)")
    parser.add_argument("--report-only", action="store_true", help="rebuild Markdown and plots from the JSON in --out")
    return parser.parse_args(argv)


def output_folder(args: argparse.Namespace, stem: str) -> Path:
    """``--out``, else a new temporary folder for ``--quick``, else ``benchmarks/results``."""
    return args.out or (Path(tempfile.mkdtemp(prefix=f"{stem}_quick_")) if args.quick else RESULTS)


def command_line(script: str, argv: Optional[Sequence[str]], sys_argv: Sequence[str]) -> str:
    """How the study was started, for the report: ``python benchmarks/<script> <flags>``."""
    return f"python benchmarks/{script} " + " ".join(sys_argv[1:] if argv is None else argv)


def rebuild_report(
    out: Path, stem: str, key: str, settings: Any, report: Callable[[dict[str, Any], Any, Path], None]
) -> int:
    """``--report-only``: rebuild Markdown and plots from ``out/<stem>.json``, its settings under ``key``."""
    results = json.loads((out / f"{stem}.json").read_text())
    report(results, settings.from_json(results[key]), out)
    print(f"rebuilt the report in {out}")
    return 0
