"""The names of 0.1 keep working with a FutureWarning that says where to go: module paths and keyword arguments."""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any, Callable

import pytest
import torch
from torch import nn

import longtail_losses as ltl
from longtail_losses import _compat, metrics, training, twostage
from longtail_losses import functional as LF
from longtail_losses._compat import renamed_argument

# --------------------------------------------------------------------------------------------------------------------
# Keyword arguments renamed to the library's one name for a concept
# --------------------------------------------------------------------------------------------------------------------

COUNTS = [5, 3]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 2))


def _bwlm(**kwargs: Any) -> Any:
    fc = kwargs.get("classifier", kwargs.get("weight"))
    logits = fc(torch.ones(3, 4))
    return LF.bwlm_loss(logits, torch.tensor([0, 1, 1]), COUNTS, weight_decay=0.1, **kwargs)


# (call with one keyword, the old name, the new name, a value for it, how to compare two results)
RENAMES: list[tuple[str, Callable[..., Any], str, str, Callable[[], Any]]] = [
    ("bwlm_loss", _bwlm, "weight", "classifier", lambda: _net()[1]),
    ("classifier_norm_penalty", LF.classifier_norm_penalty, "weight", "classifier", lambda: _net()[1]),
    (
        "classifier_weight_norms",
        metrics.classifier_weight_norms,
        "classifier_or_weight",
        "classifier",
        lambda: _net()[1],
    ),
    ("get_classifier", lambda **kw: twostage.get_classifier(_net(), **kw), "attr", "classifier_attr", lambda: "1"),
    (
        "replace_classifier",
        lambda **kw: twostage.replace_classifier(_net(), 3, **kw).out_features,
        "attr",
        "classifier_attr",
        lambda: "1",
    ),
    (
        "per_class_accuracy",
        lambda **kw: metrics.per_class_accuracy(torch.tensor([0, 1, 1]), num_classes=2, **kw),
        "targets",
        "target",
        lambda: torch.tensor([0, 1, 0]),
    ),
    (
        "shot_accuracy(targets)",
        lambda **kw: metrics.shot_accuracy(torch.tensor([0, 1, 2]), class_counts=[500, 50, 5], **kw),
        "targets",
        "target",
        lambda: torch.tensor([0, 1, 0]),
    ),
    (
        "shot_accuracy(train_counts)",
        lambda **kw: metrics.shot_accuracy(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 0]), **kw),
        "train_counts",
        "class_counts",
        lambda: [500, 50, 5],
    ),
    ("shot_groups", metrics.shot_groups, "train_counts", "class_counts", lambda: [500, 50, 5]),
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, nn.Module):
        return type(a) is type(b) and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    return bool(a == b)


@pytest.mark.parametrize(("name", "call", "old", "new", "value"), RENAMES, ids=[r[0] for r in RENAMES])
class TestRenamedArguments:
    def test_old_name_warns_and_gives_the_same_result(
        self, name: str, call: Callable[..., Any], old: str, new: str, value: Callable[[], Any]
    ) -> None:
        want = call(**{new: value()})
        with pytest.warns(FutureWarning, match=rf"the argument `{old}` is now called `{new}`"):
            got = call(**{old: value()})
        assert _same(got, want)

    def test_both_names_is_a_type_error(
        self, name: str, call: Callable[..., Any], old: str, new: str, value: Callable[[], Any]
    ) -> None:
        with pytest.raises(TypeError, match=rf"got both `{new}` and its old name `{old}`"):
            call(**{old: value(), new: value()})

    def test_signature_and_doc_show_the_new_name(
        self, name: str, call: Callable[..., Any], old: str, new: str, value: Callable[[], Any]
    ) -> None:
        name = name.split("(")[0]  # "shot_accuracy(targets)": one row per renamed argument
        function = getattr(LF, name, None) or getattr(metrics, name, None) or getattr(twostage, name)
        parameters = inspect.signature(function).parameters
        assert new in parameters
        assert old not in parameters
        assert f"``{new}`` was called ``{old}``" in inspect.getdoc(function)


def test_renamed_argument_refuses_a_wrong_declaration() -> None:
    def f(x: int, *, new: int = 0) -> int:
        return x + new

    with pytest.raises(TypeError, match="to have a parameter `other` and none `old`"):
        renamed_argument("old", "other")(f)
    with pytest.raises(TypeError, match="to have a parameter `new` and none `x`"):
        renamed_argument("x", "new")(f)
    g = renamed_argument("old", "new")(f)
    assert g(1, new=2) == 3
    assert g.__doc__ is None
    assert g.__wrapped__ is f  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------------------------
# Module paths and names that moved
# --------------------------------------------------------------------------------------------------------------------


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


def test_a_warning_inside_a_renamed_function_names_the_callers_line() -> None:
    # shot_accuracy warns about an empty group; two rename wrappers stand between it and this test.
    with pytest.warns(UserWarning, match="no class in the") as record:
        metrics.shot_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]), [5, 4])
    assert record[0].filename == __file__
