"""Digits-LT: scikit-learn's bundled digits made long-tailed (the offline demo's data set)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import longtail_losses as ltl
from longtail_losses import data as D


class TestDigitsLT:
    def test_split(self):
        pytest.importorskip("sklearn")
        train = D.digits_lt(10)
        test = D.digits_lt(10, train=False)
        assert test.class_counts.tolist() == [50] * 10
        assert train.class_counts.tolist() == D.longtail_counts(10, 124, 10)
        assert not set(train.indices.tolist()) & set(test.indices.tolist())
        assert train.data.shape[1:] == (8, 8)
        assert train.data.dtype == torch.uint8
        assert_close(ltl.class_counts(train), train.class_counts)
        from sklearn.datasets import load_digits

        bunch = load_digits()
        i = int(train.indices[7])
        assert train.targets[7] == int(bunch.target[i])
        assert_close(train.data[7], torch.from_numpy(np.round(bunch.images[i] * 255 / 16)).to(torch.uint8))

    def test_seed_and_args(self):
        pytest.importorskip("sklearn")
        a = D.digits_lt(1, train=False, seed=0).indices
        assert not torch.equal(a, D.digits_lt(1, train=False, seed=1).indices)
        assert len(D.digits_lt(2, test_per_class=100, max_count=50)) == sum(D.longtail_counts(10, 50, 2))
        with pytest.raises(ValueError, match="`test_per_class` < the smallest class"):
            D.digits_lt(10, test_per_class=174)
