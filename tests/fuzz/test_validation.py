"""Fuzz the checks: every bad input raises ValueError or TypeError naming the argument, never a wrong number."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import fuzz_settings
from tests.fuzz._losses import NAMES, SPECS
from tests.inputs import IGNORE_INDEX, cases

COUNTED = [name for name in NAMES if name != "eqlv2"]  # EQLv2 takes no counts
COUNTS_ARG = {"seesaw": "accumulated_counts"}

BAD_HYPER = {
    "logit_adjusted": [("tau", float("nan")), ("tau", float("inf")), ("tau", "1")],
    "class_balanced_focal": [("beta", 1.0), ("beta", -0.1), ("gamma", -1.0), ("gamma", float("nan"))],
    "bfs": [("alpha", 1.5), ("alpha", -0.1), ("beta", 1.0), ("gamma", -1.0)],
    "bwlm": [("alpha", 1.5), ("beta", 1.0), ("gamma", -1.0), ("weight_decay", -1.0), ("weight_decay", float("nan"))],
    "ldam": [("max_margin", -1.0), ("scale", 0.0), ("scale", -1.0), ("scale", float("nan"))],
    "seesaw": [("p", -1.0), ("q", -1.0), ("eps", 0.0), ("eps", 2.0), ("p", float("nan"))],
    "eqlv2": [("gamma", -1.0), ("alpha", -1.0), ("mu", float("nan"))],
}


def assert_refused(fn: Any, names: tuple[str, ...], quote: str = "`") -> None:
    """``fn()`` raises ValueError or TypeError whose message names one of ``names`` in backticks (or ``quote``)."""
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    quoted = set(re.findall(f"{quote}([^{quote}]+){quote}", str(info.value)))
    assert quoted & set(names), f"message {str(info.value)!r} names none of {names}"


def good_case(data: st.DataObject, name: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    kinds = ("index", "index_ignore", "probs") if SPECS[name].probs else ("index", "index_ignore")
    case = data.draw(cases(kinds=kinds, min_batch=1, min_classes=2, scales=(1.0,)), label="case")
    return case.logits, case.target, case.counts


@fuzz_settings()
@given(name=st.sampled_from(COUNTED), data=st.data())
def test_bad_counts_are_refused(name: str, data: st.DataObject) -> None:
    z, y, counts = good_case(data, name)
    arg = COUNTS_ARG.get(name, "class_counts")
    low = -1 if name == "seesaw" else 0  # Seesaw's accumulated counts may be 0
    bad_value = data.draw(st.sampled_from([low, -5, float("nan"), float("inf"), 1.5, -(2**70), 2**70]), label="bad")
    where = data.draw(st.integers(0, len(counts) - 1), label="where")
    corruption = data.draw(st.sampled_from(["value", "length", "2d", "type"]), label="corruption")
    if corruption == "value":
        bad: Any = [*counts[:where], bad_value, *counts[where + 1 :]]
        if isinstance(bad_value, int) and abs(bad_value) >= 2**63:
            bad = torch.tensor([float(c) for c in bad], dtype=torch.float64)
        names: tuple[str, ...] = (arg,)
    elif corruption == "length":
        bad = [*counts, 1] if data.draw(st.booleans(), label="longer") else counts[:-1]
        names = (arg, "logits", "target")
    elif corruption == "2d":
        bad = [counts]
        names = (arg,)
    else:
        bad = data.draw(st.sampled_from(["abc", None, 3, {"a": 1}]), label="type")
        names = (arg,)
    assert_refused(lambda: SPECS[name].functional(z, y, bad), names)
    if corruption != "length" and name != "seesaw":  # the modules check their counts once, in __init__
        assert_refused(lambda: SPECS[name].module(bad, {}, {}), (arg, "num_classes"))


@fuzz_settings()
@given(name=st.sampled_from(NAMES), data=st.data())
def test_bad_target_is_refused(name: str, data: st.DataObject) -> None:
    z, y, counts = good_case(data, name)
    num_classes = z.shape[0 if z.dim() == 1 else 1]
    corruption = data.draw(st.sampled_from(["label", "shape", "dtype"]), label="corruption")
    if corruption == "label":
        if y.is_floating_point():
            y = y.argmax(dim=0 if z.dim() == 1 else 1)
        label = data.draw(st.integers(num_classes, num_classes + 1000) | st.integers(-1000, -1), label="label")
        if label == IGNORE_INDEX:
            label = -1
        y = y.clone().long()
        y.view(-1)[data.draw(st.integers(0, y.numel() - 1), label="where")] = label
    elif corruption == "shape":
        y = torch.stack([y, y], dim=-1)  # a trailing dimension of 2: the shape of no form
    else:
        y = y.bool() if not y.is_floating_point() else y.to(torch.complex64)
    assert_refused(lambda: SPECS[name].functional(z, y, counts), ("target", "logits"))


@fuzz_settings()
@given(name=st.sampled_from(NAMES), data=st.data())
def test_bad_logits_or_options_are_refused(name: str, data: st.DataObject) -> None:
    z, y, counts = good_case(data, name)
    corruption = data.draw(st.sampled_from(["dtype", "ndim", "reduction", "smoothing", "ignore", "hyper"]), label="c")
    call: dict[str, Any] = {}
    names: tuple[str, ...]
    if corruption == "dtype":
        z, names = (
            z.to(data.draw(st.sampled_from([torch.int64, torch.int32, torch.bool, torch.complex64]))),
            ("logits",),
        )
    elif corruption == "ndim":
        z, names = torch.zeros(()), ("logits", "target")
    elif corruption == "reduction":
        call, names = {"reduction": data.draw(st.sampled_from(["avg", "Mean", "", None, 1]))}, ("reduction",)
    elif corruption == "smoothing":
        call, names = {"label_smoothing": data.draw(st.sampled_from([-0.1, 1.5, float("nan")]))}, ("label_smoothing",)
    elif corruption == "ignore":
        call, names = {"ignore_index": data.draw(st.sampled_from([1.5, "x", None]))}, ("ignore_index",)
    else:
        key, value = data.draw(st.sampled_from([*BAD_HYPER.get(name, []), ("betta", 0.5)]), label="hyper")
        call, names = {key: value}, (key,)
    if name in ("seesaw", "eqlv2") and corruption == "smoothing":
        call = {"label_smoothing": 0.1}  # must be 0 for them
    # an unknown keyword is named in quotes, as Python's own TypeError does
    quote = "'" if "betta" in call else "`"
    assert_refused(lambda: SPECS[name].functional(z, y, counts, **call), names, quote)


@fuzz_settings()
@given(name=st.sampled_from(NAMES), data=st.data())
def test_unchecked_bad_label_gives_nan_never_another_class(name: str, data: st.DataObject) -> None:
    """With ``validate_args=False`` an out-of-range label makes its row nan (or raises), never a number."""
    case = data.draw(cases(kinds=("index",), forms=("batched",), min_batch=1, min_classes=2, scales=(1.0,)))
    y = case.target.clone().long()
    where = data.draw(st.integers(0, y.numel() - 1), label="where")
    y[where] = data.draw(
        st.integers(case.num_classes, case.num_classes + 100)
        | st.integers(-100, -1).filter(lambda v: v != IGNORE_INDEX)
    )
    try:
        out = SPECS[name].functional(case.logits, y, case.counts, reduction="none", validate_args=False)
    except (ValueError, TypeError):
        return
    assert torch.isnan(out[where]), f"label {int(y[where])} of {case.num_classes} classes gave {out[where]}"
