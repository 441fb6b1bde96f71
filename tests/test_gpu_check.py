"""benchmarks/gpu_check.py: on a machine without CUDA it says so and exits 0; every step runs on the CPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_without_cuda_it_says_so_and_exits_0() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout


@pytest.mark.slow
def test_every_step_runs_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--device", "cpu", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert "DIFFERS" not in out
    assert "failed" not in out
    for case in ("BFS float32", "BWLM bfloat16", "torch.compile(bfs_loss)", "linear_balanced_softmax_loss"):
        assert case in out
