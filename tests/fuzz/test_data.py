"""Fuzz the samplers and class_counts: indices in range, lengths, disjoint covering shards, class frequencies."""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

import longtail_losses as ltl
from longtail_losses.data import ClassAwareSampler, SeededBatchSampler
from tests.fuzz import fuzz_settings

label_lists = st.lists(st.integers(0, 6), min_size=1, max_size=60)
powers = st.sampled_from([0.0, 0.5, 1.0]) | st.floats(-2.0, 3.0, allow_nan=False)


def class_probabilities(labels: list[int], power: float) -> torch.Tensor:
    counts = torch.bincount(torch.tensor(labels)).double()
    present = counts > 0
    w = torch.zeros_like(counts)
    w[present] = counts[present].log().mul(power).exp()
    return w / w.sum()


@fuzz_settings()
@given(labels=label_lists, power=powers, num_samples=st.none() | st.integers(0, 50), seed=st.integers(0, 2**20))
def test_class_aware_indices_in_range_and_length(labels: list[int], power: float, num_samples, seed: int) -> None:
    sampler = ClassAwareSampler(labels, power, num_samples, seed=seed)
    drawn = list(sampler)
    expected = len(labels) if num_samples is None else num_samples
    assert len(sampler) == len(drawn) == expected
    assert all(0 <= i < len(labels) for i in drawn)
    assert drawn == list(ClassAwareSampler(labels, power, num_samples, seed=seed)), "an epoch is a pure function"


@fuzz_settings()
@given(
    labels=label_lists,
    power=powers,
    num_samples=st.integers(0, 40),
    replicas=st.integers(1, 5),
    seed=st.integers(0, 2**20),
    epoch=st.integers(0, 5),
)
def test_class_aware_shards_are_disjoint_and_cover_the_epoch(labels, power, num_samples, replicas, seed, epoch):
    shards = []
    for rank in range(replicas):
        sampler = ClassAwareSampler(labels, power, num_samples, seed=seed, num_replicas=replicas, rank=rank)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1]) == math.ceil(num_samples / replicas)
    if num_samples % replicas == 0:
        single = ClassAwareSampler(labels, power, num_samples, seed=seed)
        single.set_epoch(epoch)
        interleaved = [shards[r][k] for k in range(num_samples // replicas) for r in range(replicas)]
        assert interleaved == list(single)


@fuzz_settings(scale=0.5)
@given(labels=label_lists, power=powers, seed=st.integers(0, 2**20))
def test_class_aware_frequencies_follow_the_class_probabilities(labels: list[int], power: float, seed: int) -> None:
    draws = 4000
    sampler = ClassAwareSampler(labels, power, draws, seed=seed)
    drawn_classes = torch.tensor(labels)[torch.tensor(list(sampler))]
    p = class_probabilities(labels, power)
    freq = torch.bincount(drawn_classes, minlength=len(p)).double() / draws
    assert torch.all(freq[p == 0] == 0), "a class without samples is never drawn"
    # six binomial standard deviations (plus a little) on each class's frequency
    sigma = (p * (1 - p) / draws).sqrt()
    assert torch.all((freq - p).abs() <= 6 * sigma + 1e-3), (freq, p)


@fuzz_settings()
@given(
    labels=label_lists,
    power=powers,
    epochs=st.integers(1, 5),
    epoch=st.integers(0, 8),
    seed=st.integers(0, 2**20),
)
def test_progressive_sampling_stays_in_range(labels, power, epochs, epoch, seed) -> None:
    sampler = ClassAwareSampler(labels, power, 200, seed=seed, progressive_epochs=epochs)
    sampler.set_epoch(epoch)
    drawn = torch.tensor(list(sampler))
    assert len(drawn) == 200
    assert int(drawn.min()) >= 0
    assert int(drawn.max()) < len(labels)


@fuzz_settings()
@given(
    num_samples=st.integers(0, 50),
    batch_size=st.integers(1, 60),
    seed=st.integers(0, 2**20),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    epoch=st.integers(0, 5),
)
def test_seeded_batches_partition_the_data(num_samples, batch_size, seed, shuffle, drop_last, epoch) -> None:
    sampler = SeededBatchSampler(num_samples, batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(sampler) == len(batches)
    assert all(0 < len(b) <= batch_size for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat), "no index twice in an epoch"
    if drop_last:
        assert all(len(b) == batch_size for b in batches)
        assert len(flat) == num_samples - num_samples % batch_size
    else:
        assert sorted(flat) == list(range(num_samples))
    if not shuffle:
        assert flat == list(range(len(flat)))


@fuzz_settings()
@given(labels=st.lists(st.integers(0, 9), max_size=60), extra=st.integers(0, 3))
def test_class_counts_is_the_bincount(labels: list[int], extra: int) -> None:
    num_classes = (max(labels) + 1 if labels else 0) + extra
    counts = ltl.class_counts(labels, num_classes if num_classes else None) if labels or num_classes else None
    if counts is None:
        return
    assert counts.dtype == torch.int64
    assert counts.shape == (num_classes,)
    assert int(counts.sum()) == len(labels)
    torch.testing.assert_close(counts, torch.bincount(torch.tensor(labels, dtype=torch.int64), minlength=num_classes))
