"""Fuzz tests: hypothesis invariants over every public loss, sampler, metric and two-stage tool.

The budget is the ``fuzz`` hypothesis profile (modest, the normal run) or ``fuzz-large`` (``LTL_FUZZ=large``,
20 times the examples), both registered in ``tests/conftest.py`` on top of the loaded ``dev``/``ci`` profile, so CI
stays derandomized. Run only these with ``pytest -m fuzz``, or leave them out with ``-m 'not fuzz'``.
"""

from __future__ import annotations

import os

from hypothesis import settings


def fuzz_settings(scale: float = 1.0) -> settings:
    """The fuzz profile the environment selects (``LTL_FUZZ=large``: ``fuzz-large``), ``scale`` times its examples.

    ``scale`` trims the slowest tests (model building, sampling whole epochs) to keep the default run short.
    """
    profile = settings.get_profile("fuzz-large" if os.environ.get("LTL_FUZZ", "").lower() == "large" else "fuzz")
    return settings(profile, max_examples=max(1, round(scale * profile.max_examples)))
