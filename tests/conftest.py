"""Shared pytest configuration: hypothesis profiles, markers, doctest namespace."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The fuzz tests (tests/fuzz) use one of these, on top of the profile loaded above (so CI stays derandomized):
# a modest budget in the normal run, 20 times that with LTL_FUZZ=large.
FUZZ_EXAMPLES = 50
settings.register_profile("fuzz", settings.default, max_examples=FUZZ_EXAMPLES)
settings.register_profile("fuzz-large", settings.default, max_examples=20 * FUZZ_EXAMPLES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
