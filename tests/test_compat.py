"""Renamed keyword arguments: the old name still works, with a FutureWarning; old and new together are a TypeError."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import pytest
import torch
from torch import nn

from longtail_losses import functional as LF
from longtail_losses import metrics, twostage
from longtail_losses._compat import renamed_argument

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
