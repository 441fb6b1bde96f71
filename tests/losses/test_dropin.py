"""Regression tests of the drop-in defects: inputs that once gave a wrong number, or an error from deep in torch."""

from __future__ import annotations

import copy
import io
import pickle
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

import longtail_losses as ltl
from longtail_losses import functional as LF
from longtail_losses import twostage
from longtail_losses.losses import _engine

COUNTS = [500, 120, 40, 9, 2]
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
        monkeypatch.setattr(_engine, "BALANCED_SOFTMAX_MIN_ELEMENTS", 0)
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


class TestBWLMFollowsTheLiveClassifier:
    def test_deepcopy_refers_to_the_live_classifier(self) -> None:
        fc = nn.Linear(3, 5)
        criterion = ltl.BWLM(COUNTS, classifier=fc, weight_decay=0.5)
        clone = copy.deepcopy(criterion)
        assert clone.classifier_weight is fc.weight
        with torch.no_grad():
            fc.weight.mul_(2)
        z, y = torch.zeros(2, 5), torch.tensor([0, 1])
        torch.testing.assert_close(clone(z, y), criterion(z, y))

    @pytest.mark.parametrize("loss_first", [False, True])
    def test_deepcopy_with_the_model_follows_the_copy(self, loss_first: bool) -> None:
        model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5))
        loss = ltl.BWLM(COUNTS, classifier=model[1])
        state = copy.deepcopy({"loss": loss, "model": model} if loss_first else {"model": model, "loss": loss})
        assert state["model"][1] is not model[1]
        assert state["loss"].classifier_weight is state["model"][1].weight

    def test_deepcopy_of_a_module_that_registers_the_loss_before_the_network(self) -> None:
        class Task(nn.Module):  # an EMA copy of such a module must not share the live classifier
            def __init__(self) -> None:
                super().__init__()
                head = nn.Linear(3, 5)
                self.loss = ltl.BWLM(COUNTS, classifier=head)
                self.net = nn.Sequential(nn.Linear(4, 3), head)

        task = Task()
        ema = copy.deepcopy(task)
        assert ema.net[1] is not task.net[1]
        assert ema.loss.classifier_weight is ema.net[1].weight
        assert task.loss.classifier_weight is task.net[1].weight

    def test_shallow_copy_shares_the_classifier(self) -> None:
        fc = nn.Linear(3, 5)
        criterion = ltl.BWLM(COUNTS, classifier=fc, weight_decay=0.5)
        clone = copy.copy(criterion)
        assert clone is not criterion and clone.classifier_weight is fc.weight
        assert clone.class_counts is criterion.class_counts

    def test_pickle_is_refused_with_the_way_out(self) -> None:
        criterion = ltl.BWLM(COUNTS, classifier=nn.Linear(3, 5))
        with pytest.raises(TypeError, match=r"not to be pickled.*Save `criterion.state_dict\(\)`"):
            pickle.dumps(criterion)
        with pytest.raises(TypeError, match=r"not to be pickled"):
            torch.save(criterion, io.BytesIO())

    @pytest.mark.parametrize("by_tensor", [False, True])
    def test_replace_classifier_then_rebind(self, by_tensor: bool) -> None:
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5))
        criterion = ltl.BWLM(COUNTS, classifier=model[1].weight if by_tensor else model[1])
        new = twostage.replace_classifier(model, 5, classifier_attr="1")
        x, y = torch.randn(2, 4), torch.tensor([0, 1])
        with pytest.raises(RuntimeError, match=r"was replaced by Linear in twostage.replace_classifier.*rebind"):
            criterion(model(x), y)
        old = criterion._classifier[0]
        assert not [k for k in vars(old) if "ltl" in k]  # nothing written onto the user's layer or weight
        assert criterion.rebind(new) is criterion
        assert criterion.classifier_weight is new.weight
        criterion(model(x), y).backward()
        assert new.weight.grad is not None

    def test_conv_1x1_classifier_for_dense_heads(self) -> None:
        head = nn.Conv2d(3, 5, kernel_size=1)
        criterion = ltl.BWLM(COUNTS, classifier=head, weight_decay=0.1)
        features, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 5, (2, 4, 4))
        loss = criterion(head(features), labels)
        expected = LF.bfs_loss(head(features), labels, COUNTS) + 0.05 * head.weight.pow(2).sum()
        torch.testing.assert_close(loss, expected)


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


def test_bwlm_none_summed_equals_sum_when_nothing_is_kept() -> None:
    fc = nn.Linear(3, 5)
    z, y = torch.randn(4, 5), torch.full((4,), -100)
    none = LF.bwlm_loss(z, y, COUNTS, fc, weight_decay=0.3, reduction="none")
    total = LF.bwlm_loss(z, y, COUNTS, fc, weight_decay=0.3, reduction="sum")
    torch.testing.assert_close(total, 0.15 * fc.weight.detach().pow(2).sum())
    torch.testing.assert_close(none.sum(), total)


class TestClassNormDecay:
    def test_refuses_a_step_that_flips_signs(self) -> None:
        fc = nn.Linear(3, 5)
        before = fc.weight.detach().clone()
        hook = ltl.ClassNormDecay(fc, weight_decay=5.0, per_class=[1, 1, 1, 1, 3])
        with pytest.raises(ValueError, match=r"`lr \* weight_decay \* per_class` to be <= 1.*0.1 \* 5.0 \* 3.0 = 1.5"):
            hook.apply(0.1)
        torch.testing.assert_close(fc.weight.detach(), before)
        hook.apply(0.05)  # 0.75 <= 1 is fine: the rows shrink
        assert bool((fc.weight.sign() == before.sign()).all())

    def test_conv_1x1_classifier(self) -> None:
        head = nn.Conv2d(3, 5, kernel_size=1)
        before = head.weight.detach().clone()
        ltl.ClassNormDecay(head, weight_decay=0.5, per_class=[1, 2, 0, 1, 1], max_norm=0.3).apply(0.1)
        factors = torch.tensor([0.95, 0.9, 1.0, 0.95, 0.95]).view(5, 1, 1, 1)
        expected = torch.renorm(before * factors, p=2, dim=0, maxnorm=0.3)
        torch.testing.assert_close(head.weight.detach(), expected)

    def test_type_checks(self) -> None:
        fc = nn.Linear(3, 5)
        with pytest.raises(TypeError, match=r"`per_class` to be a sequence, NumPy array or tensor of real numbers"):
            ltl.ClassNormDecay(fc, weight_decay=0.1, per_class=object())
        with pytest.raises(TypeError, match=r"`per_class` to hold real numbers, but got dtype torch.bool"):
            ltl.ClassNormDecay(fc, weight_decay=0.1, per_class=[True] * 5)
        hook = ltl.ClassNormDecay(fc, weight_decay=0.1)
        with pytest.raises(TypeError, match=r"`optimizer` to be a torch.optim.Optimizer, but got list"):
            hook.attach([fc.weight])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"`lr` to be a real number, but got '0.1'"):
            hook.apply("0.1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"`lr` to be a finite number >= 0, but got -1"):
            hook.apply(-1)


class _DictSamples(Dataset):
    def __init__(self, labels: list[int]) -> None:
        self.labels = labels
        self.reads = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.reads += 1
        return {"image": torch.zeros(2), "label": self.labels[i]}


class TestClassCountsOfDataSets:
    def test_tensor_dataset_subset_and_loader(self) -> None:
        data = TensorDataset(torch.zeros(6, 2), torch.tensor([0, 2, 2, 1, 2, 0]))
        assert ltl.class_counts(data).tolist() == [2, 1, 3]
        assert ltl.class_counts(Subset(data, [1, 2, 3])).tolist() == [0, 1, 2]
        assert ltl.class_counts(DataLoader(data, batch_size=4), num_classes=4).tolist() == [2, 1, 3, 0]

    def test_any_map_style_data_set_with_label_fn(self) -> None:
        data = _DictSamples([1, 1, 0, 3])
        assert ltl.class_counts(data, label_fn=lambda s: s["label"]).tolist() == [1, 2, 0, 1]
        assert ltl.class_counts(Subset(data, [0, 3]), label_fn=lambda s: s["label"]).tolist() == [0, 1, 0, 1]
        with pytest.raises(TypeError, match=r"each sample of the `labels` data set to be an \(input, label"):
            ltl.class_counts(data)

    def test_tuple_samples_without_targets(self) -> None:
        pairs = [(torch.zeros(1), 2), (torch.zeros(1), 0)]

        class Pairs(Dataset):
            def __len__(self) -> int:
                return 2

            def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
                return pairs[i]

        assert ltl.class_counts(Pairs()).tolist() == [1, 0, 1]


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
