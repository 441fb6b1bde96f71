from __future__ import annotations

import importlib.metadata
import importlib.resources
import re

import longtail_losses as ltl
from longtail_losses import functional as LF


def test_version() -> None:
    # One version: the installed distribution's metadata is read from the package's __version__ (hatch).
    assert importlib.metadata.version("longtail-losses") == ltl.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", ltl.__version__)


def test_public_api() -> None:
    for name in ["BFS", "BWLM", "BalancedSoftmax", "ClassBalancedFocal", "ClassNormDecay", "class_counts"]:
        assert name in ltl.__all__
    assert len(set(ltl.__all__)) == len(ltl.__all__)
    for name in ltl.__all__:  # every public name resolves, without a warning, and is documented
        assert name in vars(ltl), name
        assert getattr(ltl, name).__doc__ or name == "__version__", name
    # Every loss module is public at the top level.
    assert set(ltl.losses.__all__) <= set(ltl.__all__)
    for name in LF.__all__:
        assert getattr(LF, name).__doc__
    assert {"balanced_softmax_loss", "class_balanced_focal_loss", "bfs_loss", "bwlm_loss"} <= set(LF.__all__)


def test_ships_py_typed() -> None:
    assert importlib.resources.files("longtail_losses").joinpath("py.typed").is_file()
