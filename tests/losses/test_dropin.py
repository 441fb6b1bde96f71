"""Regression tests of the drop-in defects: inputs that once gave a wrong number, or an error from deep in torch."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests.inputs import COUNTS
from tests.losses import _paths

FC = nn.Linear(3, len(COUNTS))
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "balanced_softmax": LF.balanced_softmax_loss,
    "class_balanced_focal": LF.class_balanced_focal_loss,
    "bfs": LF.bfs_loss,
    "bwlm": lambda z, y, n, **kw: LF.bwlm_loss(z, y, n, torch.ones(len(n), 3), **kw),
}
MODULES: dict[str, Callable[..., nn.Module]] = {
    "balanced_softmax": ltl.BalancedSoftmax,
    "class_balanced_focal": ltl.ClassBalancedFocal,
    "bfs": ltl.BFS,
    "bwlm": lambda n, **kw: ltl.BWLM(n, classifier=FC, **kw),
}
names = pytest.mark.parametrize("name", sorted(LOSSES))


@names
def test_uint8_labels_are_not_read_as_ignore_index(name: str) -> None:
    # uint8 156 used to compare equal to ignore_index=-100 (which wraps to 156 in uint8): the sample was dropped.
    counts = list(range(1, 201))
    logits = torch.randn(4, 200, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 156, 0])
    wide = LOSSES[name](logits, labels, counts, reduction="none")
    narrow = LOSSES[name](logits, labels.to(torch.uint8), counts, reduction="none")
    torch.testing.assert_close(narrow, wide)
    assert narrow[2] > 0


@names
@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32])
def test_narrow_signed_labels_keep_ignore_index(name: str, dtype: torch.dtype) -> None:
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, -100, 4])
    torch.testing.assert_close(
        LOSSES[name](logits, labels.to(dtype), COUNTS, reduction="none"),
        LOSSES[name](logits, labels, COUNTS, reduction="none"),
    )


@names
@pytest.mark.parametrize("large", [False, True])
def test_unchecked_bad_label_is_nan_not_another_class(name: str, large: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # validate_args=False once read -1 as class C-1 (and the two balanced-softmax paths disagreed).
    if large:
        _paths.fused_everywhere(monkeypatch)
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    for bad in (-1, 5, 1000):
        labels = torch.tensor([0, bad, 4])
        out = LOSSES[name](logits, labels, COUNTS, reduction="none", validate_args=False)
        assert torch.isnan(out[1])
        assert torch.isfinite(out[[0, 2]]).all()
        assert torch.isnan(LOSSES[name](logits, labels, COUNTS, validate_args=False))
        with pytest.raises(ValueError, match=rf"`target` label to be in \[0, 5\).*got {bad} at position 1"):
            LOSSES[name](logits, labels, COUNTS)


@names
def test_options_checked_at_construction(name: str) -> None:
    with pytest.raises(ValueError, match=r"`ignore_index` to fit in int64.*got 1180591620717411303424"):
        MODULES[name](COUNTS, ignore_index=2**70)
    with pytest.raises(TypeError, match=r"`validate_args` to be a bool, but got 'no'"):
        MODULES[name](COUNTS, validate_args="no")
    with pytest.raises(ValueError, match=r"`label_smoothing` to be in \[0, 1\], but got 1.5"):
        MODULES[name](COUNTS, label_smoothing=1.5)
    logits, labels = torch.zeros(2, 5), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"`ignore_index` to fit in int64"):
        LOSSES[name](logits, labels, COUNTS, ignore_index=2**70)
    with pytest.raises(TypeError, match=r"`validate_args` to be a bool"):
        LOSSES[name](logits, labels, COUNTS, validate_args="no")


@names
def test_load_state_dict_checks_counts(name: str) -> None:
    module = MODULES[name](COUNTS)
    for bad, match in [
        (torch.tensor([0.5, -1.0, 0.0, 3.0, float("nan")]), r"state_dict\['class_counts'\]` to hold finite whole"),
        (torch.tensor([3, 0, 1, 1, 1]), r"every entry of `state_dict\['class_counts'\]` to be > 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            module.load_state_dict({"class_counts": bad})
    assert module.class_counts.tolist() == COUNTS  # untouched
    module.load_state_dict({"class_counts": torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])})  # whole floats are fine
    assert module.class_counts.dtype == torch.int64
    assert module.class_counts.tolist() == [5, 4, 3, 2, 1]


@names
def test_compile_fullgraph_with_the_defaults(name: str) -> None:
    pytest.importorskip("torch._dynamo")
    module = MODULES[name](COUNTS)
    logits, labels = torch.randn(6, 5, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 3, 4, 0])
    compiled = torch.compile(module, fullgraph=True, backend="eager")  # the graph capture is what is tested
    torch.testing.assert_close(compiled(logits, labels), module(logits, labels))
    functional = torch.compile(lambda z, y: LOSSES[name](z, y, torch.tensor(COUNTS)), fullgraph=True, backend="eager")
    torch.testing.assert_close(functional(logits, labels), LOSSES[name](logits, labels, COUNTS))


@pytest.mark.slow
@names
def test_compile_inductor_with_the_defaults(name: str) -> None:
    module = MODULES[name](COUNTS)
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    compiled = torch.compile(module, fullgraph=True)
    (got,) = torch.autograd.grad(compiled(logits, labels), logits)
    (want,) = torch.autograd.grad(module(logits, labels), logits)
    torch.testing.assert_close(got, want)


@names
def test_per_sample_gradients_with_vmap(name: str) -> None:
    layer = nn.Linear(3, 5)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 4, 2])
    module = MODULES[name](COUNTS)

    def loss_of(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = torch.func.functional_call(layer, p, (xi.unsqueeze(0),))
        return module(logits, yi.unsqueeze(0))

    per_sample = torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))(params, x, y)
    for i in range(4):
        layer.zero_grad()
        module(layer(x[i : i + 1]), y[i : i + 1]).backward()
        torch.testing.assert_close(per_sample["weight"][i], layer.weight.grad)


def test_balanced_softmax_is_cross_entropy_in_the_callers_form() -> None:
    # The README's drop-in claim for the forms nn.CrossEntropyLoss takes, in one line each.
    counts = torch.tensor(COUNTS)
    z = torch.randn(2, 5, 3, 3)
    y = torch.randint(0, 5, (2, 3, 3))
    y[0, 0, 0] = -100
    shifted = z + counts.log().view(5, 1, 1)
    torch.testing.assert_close(
        ltl.BalancedSoftmax(counts, label_smoothing=0.1)(z, y), F.cross_entropy(shifted, y, label_smoothing=0.1)
    )


def test_losses_build_on_the_meta_device() -> None:
    with torch.device("meta"):  # deferred initialisation of a model that owns its loss, as nn.CrossEntropyLoss
        for module in (
            ltl.BalancedSoftmax([90, 10]),
            ltl.BWLM([90, 10], classifier=torch.nn.Linear(3, 2)),
            ltl.LDAMLoss([9, 1], class_weights=[1.0, 2.0]),
            ltl.LinearBFS([5, 4], 3),
        ):
            assert module.class_counts.device.type == "meta"


def test_counts_beyond_int64_are_refused_not_wrapped() -> None:
    with pytest.raises(ValueError, match=r"`class_counts` to fit in int64, but got 1e\+19 for class 0"):
        ltl.BalancedSoftmax([1e19, 1.0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_probability_targets_pass(dtype: torch.dtype) -> None:
    logits = torch.randn(64, 5)
    probs = torch.softmax(torch.randn(64, 5), dim=1).to(dtype)  # row sums off 1 by its rounding
    loss = LF.balanced_softmax_loss(logits, probs, [5, 4, 3, 2, 1])
    torch.testing.assert_close(loss, F.cross_entropy(logits + torch.tensor([5, 4, 3, 2, 1.0]).log(), probs.float()))
    with pytest.raises(ValueError, match="to sum to 1"):
        LF.balanced_softmax_loss(logits, (probs.float() * 1.1).to(dtype), [5, 4, 3, 2, 1])
