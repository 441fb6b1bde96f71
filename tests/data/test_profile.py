"""The long-tailed profile (Cao et al.'s exponential counts) and the subsampling that draws it, against LDAM's code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from longtail_losses import data as D
from tests.reference import ldam_subset


class TestLongtailCounts:
    @pytest.mark.parametrize(
        ("imbalance_factor", "total"),
        [(200, 9502), (100, 10847), (50, 12608), (10, 19573)],
    )
    def test_paper_table1_cifar100(self, imbalance_factor, total):
        counts = D.longtail_counts(100, 500, imbalance_factor)
        assert sum(counts) == total
        assert counts[0] == 500
        assert counts[-1] == 500 // imbalance_factor

    def test_known_values(self):
        # 100 * 10 ** (-i / 4) = 100, 56.23, 31.62, 17.78, 10
        assert D.longtail_counts(5, 100, 10) == [100, 56, 31, 17, 10]
        assert D.longtail_counts(3, 7, 1) == [7, 7, 7]
        assert D.longtail_counts(2, 9, 2.5) == [9, 3]
        assert D.longtail_counts(1, 42, 100) == [42]

    def test_matches_ldam_formula(self):
        # LDAM's get_img_num_per_cls: int(img_max * imb_factor ** (cls_idx / (cls_num - 1.0))), imb_factor = 1 / IF
        for c, m, f in [(10, 5000, 100), (100, 500, 200), (10, 6000, 10)]:
            expected = [int(m * (1 / f) ** (i / (c - 1.0))) for i in range(c)]
            assert D.longtail_counts(c, m, f) == expected

    def test_non_increasing(self):
        counts = D.longtail_counts(1000, 1280, 256)
        assert all(a >= b for a, b in zip(counts, counts[1:]))
        assert counts[-1] == 5

    def test_exceptions(self):
        with pytest.raises(ValueError, match="`num_classes` to be >= 1, but got 0"):
            D.longtail_counts(0, 10, 2)
        with pytest.raises(TypeError, match="`num_classes` to be an int"):
            D.longtail_counts(10.0, 10, 2)
        with pytest.raises(TypeError, match="`max_count` to be an int"):
            D.longtail_counts(10, True, 2)
        with pytest.raises(ValueError, match="`max_count` to be >= 1, but got 0"):
            D.longtail_counts(10, 0, 2)
        with pytest.raises(ValueError, match=r"`imbalance_factor`.*>= 1, but got 0.5"):
            D.longtail_counts(10, 10, 0.5)
        with pytest.raises(ValueError, match=r"`imbalance_factor`.*but got inf"):
            D.longtail_counts(10, 10, float("inf"))
        with pytest.raises(TypeError, match="`imbalance_factor` to be a real number"):
            D.longtail_counts(10, 10, "100")
        with pytest.raises(ValueError, match="tail class keeps at least one sample"):
            D.longtail_counts(10, 50, 100)


class TestLongtailIndices:
    def test_matches_ldam_reference(self):
        labels = np.random.default_rng(3).permutation(np.repeat(np.arange(10), 30))
        counts = D.longtail_counts(10, 30, 10)
        for seed in (0, 1):
            idx = D.longtail_indices(torch.as_tensor(labels), counts, seed=seed)
            assert idx.dtype == torch.int64
            np.testing.assert_array_equal(idx.numpy(), ldam_subset(labels.tolist(), counts, seed))

    def test_counts_and_validity(self):
        labels = torch.randint(0, 5, (400,), generator=torch.Generator().manual_seed(0))
        counts = [30, 20, 10, 5, 0]
        idx = D.longtail_indices(labels, counts, seed=7)
        assert idx.numel() == len(set(idx.tolist())) == 65
        assert_close(torch.bincount(labels[idx], minlength=5), torch.tensor(counts))
        # class-ordered output
        assert labels[idx].tolist() == sorted(labels[idx].tolist())

    def test_seed(self):
        labels = torch.arange(100) % 4
        a = D.longtail_indices(labels, [10, 5, 3, 1], seed=0)
        assert torch.equal(a, D.longtail_indices(labels.tolist(), [10, 5, 3, 1], seed=0))
        assert not torch.equal(a, D.longtail_indices(labels, [10, 5, 3, 1], seed=1))

    def test_exceptions(self):
        with pytest.raises(ValueError, match=r"class 1 to have at least counts\[1\] = 3 samples.*has 2"):
            D.longtail_indices([0, 0, 0, 1, 1], [2, 3])
        with pytest.raises(ValueError, match=r"label to be in .*\[0, 2\), but got 2 at position 1"):
            D.longtail_indices([0, 2], [1, 1])
        with pytest.raises(ValueError, match="`counts` to be >= 0, but got -1 for class 1"):
            D.longtail_indices([0, 1], [1, -1])
        with pytest.raises(TypeError, match="`labels` to hold integer"):
            D.longtail_indices(torch.tensor([0.0, 1.0]), [1, 1])
        with pytest.raises(ValueError, match=r"`counts` to hold finite whole numbers, but got 1\.5"):
            D.longtail_indices([0, 1], [1.5, 1])
        with pytest.raises(ValueError, match="`labels` to be 1-D"):
            D.longtail_indices(torch.zeros(2, 2, dtype=torch.long), [1])
