"""Fuzz the two-stage tools: shapes preserved, tau=0 is the identity, partitions of the classes and samples."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from longtail_losses import twostage
from tests.fuzz import fuzz_settings

sizes = st.tuples(st.integers(1, 6), st.integers(1, 5))  # (C, D)
taus = st.sampled_from([0.0, 0.5, 1.0]) | st.floats(-2.0, 3.0, allow_nan=False)


def linear(c: int, d: int, seed: int, bias: bool, dtype: torch.dtype = torch.float64, zero_row: bool = False):
    torch.manual_seed(seed)
    fc = nn.Linear(d, c, bias=bias, dtype=dtype)
    if zero_row:
        with torch.no_grad():
            fc.weight[0] = 0
    return fc


@fuzz_settings()
@given(size=sizes, seed=st.integers(0, 2**16), tau=taus, bias=st.booleans(), keep=st.booleans(), zero=st.booleans())
def test_tau_normalize(size, seed: int, tau: float, bias: bool, keep: bool, zero: bool) -> None:
    c, d = size
    fc = linear(c, d, seed, bias, zero_row=zero)
    before = fc.weight.detach().clone()
    new = twostage.tau_normalize(fc, tau, keep_bias=keep)
    assert isinstance(new, nn.Linear)
    assert new.weight.shape == (c, d)
    assert new.weight.dtype == fc.weight.dtype
    assert torch.equal(fc.weight, before), "the classifier is not modified"
    assert torch.isfinite(new.weight).all()
    if zero:
        assert torch.equal(new.weight[0], torch.zeros(d, dtype=new.weight.dtype)), "a zero row stays zero"
    if tau == 0.0:
        torch.testing.assert_close(new.weight, fc.weight)
    if tau == 1.0:
        norms = new.weight.norm(dim=1)
        nonzero = fc.weight.norm(dim=1) > 0
        torch.testing.assert_close(norms[nonzero], torch.ones_like(norms[nonzero]))
    if keep and bias:
        torch.testing.assert_close(new.bias, fc.bias)
    elif not keep:
        assert new.bias is None


@fuzz_settings()
@given(size=sizes, n=st.integers(0, 5), seed=st.integers(0, 2**16), bias=st.booleans())
def test_learnable_weight_scaling_starts_as_the_classifier(size, n: int, seed: int, bias: bool) -> None:
    c, d = size
    fc = linear(c, d, seed, bias)
    lws = twostage.LearnableWeightScaling(fc)
    x = torch.randn(n, d, dtype=torch.float64)
    out = lws(x)
    assert out.shape == (n, c)
    torch.testing.assert_close(out, fc(x))
    assert [name for name, p in lws.named_parameters() if p.requires_grad] == ["scales"]


@fuzz_settings()
@given(size=sizes, n=st.integers(1, 12), seed=st.integers(0, 2**16), extra=st.integers(0, 2))
def test_nearest_class_mean_cosines(size, n: int, seed: int, extra: int) -> None:
    c, d = size
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=g)
    num_classes = int(labels.max()) + 1 + extra
    ncm = twostage.nearest_class_mean(features, labels, num_classes)
    assert ncm.means.shape == (num_classes, d)
    present = torch.bincount(labels, minlength=num_classes) > 0
    assert torch.equal(ncm.means[~present], torch.zeros_like(ncm.means[~present]))
    out = ncm(torch.randn(5, d, generator=g, dtype=torch.float64))
    assert out.shape == (5, num_classes)
    assert ((out >= -1 - 1e-12) & (out <= 1 + 1e-12)).all()
    assert torch.equal(out[:, ~present], torch.zeros_like(out[:, ~present]))


@fuzz_settings()
@given(labels=st.lists(st.integers(0, 7), min_size=2, max_size=80), seed=st.integers(0, 2**16))
def test_data_balanced_review_and_head_tail(labels: list[int], seed: int) -> None:
    y = torch.tensor(labels)
    c = int(y.max()) + 1
    if c < 2:
        return
    head, tail = twostage.head_tail_classes(labels)
    assert sorted(torch.cat([head, tail]).tolist()) == list(range(c))
    assert len(head) == c // 2
    counts = torch.bincount(y, minlength=c)
    order = torch.cat([head, tail])
    assert (counts[order].diff() <= 0).all(), "most frequent first"
    if counts[tail[0]] == 0:  # a head cut to 0 samples: refused, naming `labels`
        with pytest.raises(ValueError, match="`labels`"):
            twostage.data_balanced_review(labels, seed=seed)
        return
    stage1, stage2 = twostage.data_balanced_review(labels, seed=seed)
    for idx in (stage1, stage2):
        assert idx.dtype == torch.int64
        assert torch.equal(idx, idx.sort().values)
        assert len(set(idx.tolist())) == len(idx)
    assert sorted(stage1.tolist()) == [i for i, v in enumerate(labels) if v in set(head.tolist())]
    cut = int(counts[tail[0]])
    stage2_counts = torch.bincount(y[stage2], minlength=c)
    assert torch.equal(stage2_counts[head], torch.full_like(stage2_counts[head], cut).minimum(counts[head]))
    assert torch.equal(stage2_counts[tail], counts[tail])
    again = twostage.data_balanced_review(labels, seed=seed)
    assert torch.equal(again[1], stage2), "the same seed gives the same subset"


@fuzz_settings(scale=0.5)
@given(d=st.integers(1, 4), c=st.integers(1, 5), new_c=st.integers(1, 6), bias=st.booleans(), freeze=st.booleans())
def test_replace_classifier_and_freeze_backbone(d: int, c: int, new_c: int, bias: bool, freeze: bool) -> None:
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Linear(3, d), nn.BatchNorm1d(d)))
    model.add_module("fc", nn.Linear(d, c))
    fc = twostage.replace_classifier(model, new_c, classifier_attr="fc", bias=bias, freeze=freeze)
    assert model.fc is fc
    assert fc.weight.shape == (new_c, d)
    assert (fc.bias is not None) == bias
    out = model.train()(torch.randn(4, 3))
    assert out.shape == (4, new_c)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if freeze:
        assert trainable == {name for name, _ in model.named_parameters() if name.startswith("fc.")}
        assert int(model.body[1].num_batches_tracked) == 0, "frozen statistics do not move"
    model2 = nn.Sequential()
    model2.add_module("body", nn.Linear(3, d))
    model2.add_module("fc", nn.Linear(d, c))
    handle = twostage.freeze_backbone(model2, "fc")
    assert not model2.body.weight.requires_grad
    assert model2.fc.weight.requires_grad
    handle.remove()
    assert model2.body.weight.requires_grad
