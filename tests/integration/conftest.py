"""Fixtures shared by the tests of the evidence studies in ``benchmarks/`` (package ``benchmarks/study``).

The studies run on fabricated Fashion-MNIST files (:func:`tests._fabricate.make_fake_fashion_mnist`): the real
reader, the real long-tailed subsample and the real pipeline, on random images, so no test needs the data set
and none asserts an accuracy.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests._fabricate import make_fake_fashion_mnist

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their package ``study`` the same way

# Enough images per class for a head class of 500 plus the method study's 30 validation images per class.
TRAIN_PER_CLASS, TEST_PER_CLASS = 540, 12


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder with the four Fashion-MNIST IDX files, fabricated (pixel (0, 0) holds the label)."""
    root = tmp_path_factory.mktemp("fashion-mnist")
    return str(make_fake_fashion_mnist(root, per_class_train=TRAIN_PER_CLASS, per_class_test=TEST_PER_CLASS))


@pytest.fixture(scope="session")
def run_quick(fake_root: str) -> Callable[..., None]:
    """``run_quick(script, out, *flags)``: ``python benchmarks/<script>.py --quick --jobs 1`` on the fake data.

    It runs in this process (``--jobs 1`` uses no worker process); the jobs set one intra-op thread, so the
    session's thread count is restored afterwards.
    """

    def run(script: str, out: Path, *flags: str) -> None:
        threads = torch.get_num_threads()
        try:
            code = importlib.import_module(script).main(
                ["--quick", "--jobs", "1", "--root", fake_root, "--out", str(out), *flags]
            )
        finally:
            torch.set_num_threads(threads)
        assert code == 0

    return run
