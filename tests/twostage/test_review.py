"""Data balanced review (eq. 2): the head/tail split and the stage-2 subset, against the paper's definition."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torch.utils.data import Subset

import longtail_losses as ltl
from longtail_losses.twostage import (
    data_balanced_review,
    head_tail_classes,
)


def cifar100_lt_counts(imbalance_factor: float) -> list[int]:
    # The CIFAR-LT profile written out independently of longtail_losses.data.
    return [int(500 * (1 / imbalance_factor) ** (i / 99)) for i in range(100)]


def labels_from_counts(counts: list[int], order: list[int] | None = None) -> torch.Tensor:
    """Labels with ``counts[c]`` samples of class c, stored class by class in ``order`` (default 0..C-1)."""
    order = list(range(len(counts))) if order is None else order
    return torch.cat([torch.full((counts[c],), c, dtype=torch.int64) for c in order])


def reference_review(labels: torch.Tensor) -> tuple[set[int], set[int], int]:
    """(head classes, tail classes, n_{m+1}) spelled out from the paper's definition with a plain loop."""
    num_classes = int(labels.max()) + 1
    counts = [int((labels == c).sum()) for c in range(num_classes)]
    order = sorted(range(num_classes), key=lambda c: (-counts[c], c))
    m = num_classes // 2
    return set(order[:m]), set(order[m:]), counts[order[m]]


class TestDataBalancedReview:
    def test_cifar100_lt_if100_sizes(self):
        labels = labels_from_counts(cifar100_lt_counts(100))
        assert labels.numel() == 10847  # the paper's Table 1
        stage1, stage2 = data_balanced_review(labels)
        assert stage1.numel() == 9901
        assert stage2.numel() == 3346
        assert stage1.dtype == torch.int64
        assert stage2.dtype == torch.int64
        counts2 = ltl.class_counts(labels[stage2], num_classes=100)
        # Head classes 0..49 are cut to n_51 = 48 (class index 50), the tail is kept whole.
        assert counts2[:50].tolist() == [48] * 50
        assert counts2[50:].tolist() == cifar100_lt_counts(100)[50:]
        assert ltl.class_counts(labels[stage1], num_classes=100)[:50].tolist() == cifar100_lt_counts(100)[:50]

    @pytest.mark.parametrize("imbalance_factor", [10, 50, 200])
    def test_other_imbalance_factors_match_reference(self, imbalance_factor):
        counts = cifar100_lt_counts(imbalance_factor)
        labels = labels_from_counts(counts)
        stage1, stage2 = data_balanced_review(labels)
        assert stage1.numel() == sum(counts[:50])
        assert stage2.numel() == 50 * counts[50] + sum(counts[50:])

    def test_classes_not_in_frequency_order(self):
        # Counts assigned to shuffled class indices, and samples stored interleaved (not grouped by class).
        gen = torch.Generator().manual_seed(1)
        counts = [40, 3, 17, 25, 9, 30, 5, 12]
        labels = labels_from_counts(counts)[torch.randperm(sum(counts), generator=gen)]
        head, _tail, n_review = reference_review(labels)
        assert head == {0, 3, 5, 2}
        assert n_review == 12
        stage1, stage2 = data_balanced_review(labels, seed=3)
        assert set(labels[stage1].tolist()) == head
        assert stage1.tolist() == [i for i in range(labels.numel()) if int(labels[i]) in head]
        counts2 = ltl.class_counts(labels[stage2], num_classes=8)
        assert counts2.tolist() == [12, 3, 12, 12, 9, 12, 5, 12]
        assert torch.equal(head_tail_classes(labels)[0], torch.tensor([0, 5, 3, 2]))
        assert torch.equal(head_tail_classes(labels)[1], torch.tensor([7, 4, 6, 1]))

    def test_ties_lower_index_first(self):
        # Classes 1 and 2 tie for the last head place: class 1 is head, class 2 tail, so n_{m+1} = 5.
        counts = [9, 5, 5, 2]
        labels = labels_from_counts(counts, order=[3, 2, 1, 0])
        head, tail = head_tail_classes(labels)
        assert head.tolist() == [0, 1]
        assert tail.tolist() == [2, 3]
        stage1, stage2 = data_balanced_review(labels)
        assert set(labels[stage1].tolist()) == {0, 1}
        assert ltl.class_counts(labels[stage2]).tolist() == [5, 5, 5, 2]

    def test_odd_number_of_classes(self):
        counts = [10, 8, 6, 4, 2]  # m = 2: head {0, 1}, tail {2, 3, 4}, n_{m+1} = 6
        labels = labels_from_counts(counts)
        stage1, stage2 = data_balanced_review(labels)
        assert stage1.numel() == 18
        assert ltl.class_counts(labels[stage2]).tolist() == [6, 6, 6, 4, 2]

    def test_properties(self):
        labels = labels_from_counts(cifar100_lt_counts(50))[torch.randperm(12608, generator=torch.Generator())]
        _head, tail, _ = reference_review(labels)
        stage1, stage2 = data_balanced_review(labels, seed=7)
        for idx in (stage1, stage2):
            assert torch.equal(idx, torch.sort(idx).values)  # sorted
            assert idx.unique().numel() == idx.numel()  # no duplicates
            assert int(idx.min()) >= 0
            assert int(idx.max()) < labels.numel()
        # Stage 2 keeps every tail sample, and its head samples are a subset of stage 1.
        tail_idx = {i for i in range(labels.numel()) if int(labels[i]) in tail}
        s1, s2 = set(stage1.tolist()), set(stage2.tolist())
        assert tail_idx <= s2
        assert s2 - tail_idx <= s1
        assert s1.isdisjoint(tail_idx)
        assert s1 | tail_idx == set(range(labels.numel()))

    def test_deterministic_by_seed(self):
        labels = labels_from_counts(cifar100_lt_counts(100))
        a1, a2 = data_balanced_review(labels, seed=0)
        b1, b2 = data_balanced_review(labels, seed=0)
        c1, c2 = data_balanced_review(labels, seed=1)
        assert torch.equal(a1, b1)
        assert torch.equal(a2, b2)
        assert torch.equal(a1, c1)
        assert not torch.equal(a2, c2)
        assert a2.numel() == c2.numel()

    def test_head_subset_is_uniform(self):
        # Each sample of a head class is drawn with probability n_{m+1} / n_j: check over seeds.
        labels = labels_from_counts([10, 2])
        hits = torch.zeros(10)
        for seed in range(1000):
            _, stage2 = data_balanced_review(labels, seed=seed)
            hits[stage2[stage2 < 10]] += 1
        assert_close(hits / 1000, torch.full((10,), 0.2), atol=0.05, rtol=0)  # 4 binomial std devs

    def test_accepts_list_array_dataset_and_subset(self):
        numpy = pytest.importorskip("numpy")
        labels = [0, 0, 0, 1, 1, 2]
        expected = data_balanced_review(torch.tensor(labels))

        class WithTargets(torch.utils.data.Dataset):
            targets = labels

            def __len__(self):
                return len(labels)

            def __getitem__(self, i):
                raise AssertionError("must not decode samples")

        for source in (labels, numpy.array(labels), WithTargets()):
            got = data_balanced_review(source)
            assert torch.equal(got[0], expected[0])
            assert torch.equal(got[1], expected[1])
        sub = Subset(WithTargets(), [5, 4, 3, 2, 1, 0])  # reversed: positions refer to the subset
        s1, _ = data_balanced_review(sub)
        assert s1.tolist() == [3, 4, 5]

    def test_exceptions(self):
        with pytest.raises(ValueError, match="at least 2 classes"):
            data_balanced_review([0, 0, 0])
        with pytest.raises(ValueError, match="first tail class"):
            data_balanced_review([3, 3, 0])  # counts 1, 0, 0, 2: class 1 is the first tail class and has none
        with pytest.raises(TypeError, match="`seed` to be an int"):
            data_balanced_review([0, 1], seed=1.5)
        with pytest.raises(TypeError, match="integer class indices"):
            data_balanced_review(torch.tensor([0.0, 1.0]))
        with pytest.raises(ValueError, match="1-D"):
            head_tail_classes(torch.zeros(2, 2, dtype=torch.int64))
