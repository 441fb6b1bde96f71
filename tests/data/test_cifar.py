"""CIFAR-100-LT and CIFAR-10-LT from fabricated pickles in torchvision's on-disk format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import longtail_losses as ltl
from longtail_losses import data as D
from tests._fabricate import (
    make_fake_cifar100,
)
from tests.reference import ldam_subset


class TestCifar100LT:
    @pytest.fixture(scope="class")
    def root(self, tmp_path_factory):
        return make_fake_cifar100(tmp_path_factory.mktemp("cifar"), per_class_train=20, per_class_test=3)

    def test_train_split(self, root):
        ds = D.cifar100_lt(root, imbalance_factor=10)
        expected = D.longtail_counts(100, 20, 10)  # max_count defaults to the balanced class size
        assert_close(ds.class_counts, torch.tensor(expected))
        assert len(ds) == sum(expected) == len(ds.targets) == ds.data.shape[0]
        assert ds.data.shape[1:] == (32, 32, 3)
        assert ds.data.dtype == np.uint8
        assert ds.classes[:2] == ["class_000", "class_001"]
        assert len(ds.classes) == 100
        assert_close(ltl.class_counts(ds, num_classes=100), ds.class_counts)
        # images stay paired with labels: the fabricator writes the label into pixel (0, 0)
        assert ds.data[:, 0, 0, 0].tolist() == ds.targets
        assert ds.data[:, 0, 0, 2].tolist() == ds.targets

    def test_matches_independent_read(self, root):
        with open(root / "cifar-100-python" / "train", "rb") as f:
            raw = pickle.load(f, encoding="bytes")
        labels = raw[b"fine_labels"]
        counts = D.longtail_counts(100, 20, 5)
        expected_idx = ldam_subset(labels, counts, seed=0)
        ds = D.cifar100_lt(root, 5)
        assert ds.indices.tolist() == expected_idx.tolist()
        expected_img = raw[b"data"][expected_idx[5]].reshape(3, 32, 32).transpose(1, 2, 0)
        np.testing.assert_array_equal(ds.data[5], expected_img)

    def test_getitem_pil_and_transform(self, root):
        ds = D.cifar100_lt(root, 10)
        img, label = ds[3]
        assert img.mode == "RGB"
        assert img.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(img), ds.data[3])
        assert label == ds.targets[3]
        assert isinstance(label, int)
        ds2 = D.cifar100_lt(root, 10, transform=lambda im: np.asarray(im).sum(), target_transform=lambda y: -y)
        assert ds2[3] == (int(ds.data[3].astype(np.int64).sum()), -ds.targets[3])

    def test_test_split_balanced(self, root):
        ds = D.cifar100_lt(root, 100, train=False)
        assert_close(ds.class_counts, torch.full((100,), 3))
        assert len(ds) == 300

    def test_str_keys_and_max_count(self, tmp_path):
        root = make_fake_cifar100(tmp_path, per_class_train=6, per_class_test=1, num_classes=4, str_keys=True)
        ds = D.cifar100_lt(root, 3, max_count=5, seed=2)
        assert ds.class_counts.tolist() == D.longtail_counts(4, 5, 3)
        assert ds.classes == ["class_000", "class_001", "class_002", "class_003"]

    def test_seed_changes_subset(self, root):
        a = D.cifar100_lt(root, 10, seed=0).indices
        b = D.cifar100_lt(root, 10, seed=1).indices
        assert not torch.equal(a, b)

    def test_as_tensors(self, root):
        ds = D.cifar100_lt(root, 10)
        x, y = ds.as_tensors()
        assert x.shape == (len(ds), 3, 32, 32)
        assert x.dtype == torch.float32
        assert_close(x[2], torch.from_numpy(ds.data[2]).permute(2, 0, 1).float() / 255)
        assert y.tolist() == ds.targets

    @pytest.mark.slow
    def test_full_size_table1(self, tmp_path):
        root = make_fake_cifar100(tmp_path, per_class_train=500, per_class_test=1, protocol=pickle.HIGHEST_PROTOCOL)
        sizes = {f: len(D.cifar100_lt(root, f)) for f in (200, 100, 50, 10)}
        assert sizes == {200: 9502, 100: 10847, 50: 12608, 10: 19573}

    def test_missing(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"looked for .*cifar-100-python.train.*download=True"):
            D.cifar100_lt(tmp_path, 100)
        with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.data_batch_1.*cifar-10-python\.tar\.gz"):
            D.cifar10_lt(tmp_path, 100)

    def test_exceptions(self, root, tmp_path):
        with pytest.raises(ValueError, match="`imbalance_factor`"):
            D.cifar100_lt(root, 0.5)
        with pytest.raises(ValueError, match="class 0 to have at least"):
            D.cifar100_lt(root, 10, max_count=21)
        base = tmp_path / "cifar-100-python"
        base.mkdir()
        for name in ("train", "meta"):
            with open(base / name, "wb") as f:
                pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"fine_labels": [0, 1]}, f)
        with pytest.raises(ValueError, match="shape \\(N, 3072\\)"):
            D.cifar100_lt(tmp_path, 1)

    def test_download_delegates_to_torchvision(self, tmp_path, monkeypatch):
        datasets = pytest.importorskip("torchvision.datasets")
        calls = []

        def fake_cifar100(root, train, download):
            calls.append((root, train, download))
            make_fake_cifar100(root, per_class_train=4, per_class_test=1, num_classes=3)

        monkeypatch.setattr(datasets, "CIFAR100", fake_cifar100)
        ds = D.cifar100_lt(tmp_path, 2, download=True)
        assert calls == [(str(tmp_path), True, True)]
        assert ds.class_counts.tolist() == D.longtail_counts(3, 4, 2)
        D.cifar100_lt(tmp_path, 2, download=True)  # files present: no second download
        assert len(calls) == 1

    def test_cifar10_twin(self, tmp_path):
        base = tmp_path / "cifar-10-batches-py"
        base.mkdir()
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            labels = np.repeat(np.arange(10), 4)
            entry = {b"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8), b"labels": labels.tolist()}
            with open(base / name, "wb") as f:
                pickle.dump(entry, f)
        with open(base / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"c{j}".encode() for j in range(10)]}, f)
        ds = D.cifar10_lt(tmp_path, 10)
        assert ds.class_counts.tolist() == D.longtail_counts(10, 20, 10)  # 5 batches x 4 per class
        assert ds.classes[0] == "c0"
        assert len(D.cifar10_lt(tmp_path, 10, train=False)) == 40
