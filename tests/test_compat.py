"""The import paths of 0.1 keep working, with a FutureWarning that names the new place."""

from __future__ import annotations

import importlib
import sys

import pytest

import longtail_losses as ltl
from longtail_losses import _compat, training, twostage


@pytest.mark.parametrize("old", sorted(_compat.MOVED_MODULES))
def test_old_module_path_warns_and_gives_the_same_objects(old: str) -> None:
    sys.modules.pop(old, None)
    vars(ltl).pop(old.rsplit(".", 1)[1], None)
    targets = _compat.MOVED_MODULES[old]
    with pytest.warns(FutureWarning, match=rf"`{old}` has moved to `{targets[0]}"):
        module = importlib.import_module(old)
    names = set()
    for target in targets:
        new = importlib.import_module(target)
        for name in new.__all__:
            assert getattr(module, name) is getattr(new, name), name
        names |= set(new.__all__)
    assert set(module.__all__) == names


def test_from_import_of_an_old_path() -> None:
    sys.modules.pop("longtail_losses.combined", None)
    vars(ltl).pop("combined", None)
    with pytest.warns(FutureWarning, match="longtail_losses.losses.bwlm"):
        from longtail_losses.combined import BWLM
    assert BWLM is ltl.BWLM


def test_old_module_as_an_attribute_of_the_package() -> None:
    sys.modules.pop("longtail_losses.adaptive", None)
    vars(ltl).pop("adaptive", None)  # an earlier import of the old path set the attribute
    with pytest.warns(FutureWarning, match="longtail_losses.losses.seesaw` and `longtail_losses.losses.eqlv2"):
        adaptive = ltl.adaptive
    assert adaptive.SeesawLoss is ltl.SeesawLoss
    assert adaptive.EQLv2Loss is ltl.EQLv2Loss


@pytest.mark.parametrize("name", ["train_one_epoch", "predict", "warn_double_decay"])
def test_loops_moved_from_twostage_to_training(name: str) -> None:
    with pytest.warns(
        FutureWarning, match=rf"`longtail_losses.twostage.{name}` has moved to `longtail_losses.training"
    ):
        moved = getattr(twostage, name)
    assert moved is getattr(training, name)


def test_seeded_batch_sampler_moved_to_data() -> None:
    with pytest.warns(FutureWarning, match="longtail_losses.data.SeededBatchSampler"):
        assert twostage.SeededBatchSampler is ltl.data.SeededBatchSampler


@pytest.mark.parametrize(("module", "name"), [(ltl, "nope"), (twostage, "nope"), (ltl, "_engine")])
def test_unknown_attributes_still_raise(module: object, name: str) -> None:
    with pytest.raises(AttributeError, match=f"has no attribute '{name}'"):
        getattr(module, name)


def test_unrelated_imports_are_not_caught() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("longtail_losses.no_such_module")
