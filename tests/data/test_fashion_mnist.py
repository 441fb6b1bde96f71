"""IDX files and Fashion-MNIST-LT: fabricated files, and Debian's data set when it is installed."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import longtail_losses as ltl
from longtail_losses import data as D
from tests._fabricate import (
    make_fake_fashion_mnist,
    write_idx,
)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


class TestReadIdx:
    @pytest.mark.parametrize("gz", [True, False])
    @pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
    def test_roundtrip(self, tmp_path, gz, dtype):
        array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        path = write_idx(tmp_path / "x", array, gz=gz)
        out = D.read_idx(path)
        assert out.shape == (2, 3, 4)
        assert_close(out, torch.from_numpy(array.copy()))

    def test_handwritten_bytes(self, tmp_path):
        # magic 0x00000B01: int16, 1-D of size 2, values 258 and -2 big-endian
        (tmp_path / "h").write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
        assert D.read_idx(tmp_path / "h").tolist() == [258, -2]

    def test_exceptions(self, tmp_path):
        (tmp_path / "a").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x00")
        with pytest.raises(ValueError, match="Expected an IDX file"):
            D.read_idx(tmp_path / "a")
        (tmp_path / "b").write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2])))
        with pytest.raises(ValueError, match=r"Expected 3 bytes of data for shape \(3,\).*got 2"):
            D.read_idx(tmp_path / "b")
        with pytest.raises(FileNotFoundError):
            D.read_idx(tmp_path / "missing")

    @pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist package")
    def test_real_file_matches_torchvision(self, tmp_path):
        mnist = pytest.importorskip("torchvision.datasets.mnist")
        raw = tmp_path / "t10k-labels-idx1-ubyte"
        raw.write_bytes(gzip.decompress((DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes()))
        assert torch.equal(D.read_idx(DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz"), mnist.read_label_file(str(raw)))


class TestFashionMnistLT:
    @pytest.mark.parametrize(("gz", "torchvision_layout"), [(True, False), (False, True)])
    def test_fabricated(self, tmp_path, gz, torchvision_layout):
        make_fake_fashion_mnist(
            tmp_path, per_class_train=20, per_class_test=3, gz=gz, torchvision_layout=torchvision_layout
        )
        ds = D.fashion_mnist_lt(tmp_path, 10)
        assert ds.class_counts.tolist() == D.longtail_counts(10, 20, 10)
        assert ds.data.shape == (len(ds), 28, 28)
        assert ds.data.dtype == torch.uint8
        assert ds.data[:, 0, 0].tolist() == ds.targets
        assert_close(ltl.class_counts(ds), ds.class_counts)
        img, y = ds[0]
        assert img.mode == "L"
        assert img.size == (28, 28)
        assert y == ds.targets[0]
        test = D.fashion_mnist_lt(tmp_path, 10, train=False)
        assert test.class_counts.tolist() == [3] * 10
        assert test.classes[9] == "Ankle boot"
        x, yy = test.as_tensors()
        assert x.shape == (30, 1, 28, 28)
        assert yy.tolist() == test.targets

    def test_max_count(self, tmp_path):
        make_fake_fashion_mnist(tmp_path, per_class_train=20)
        assert D.fashion_mnist_lt(tmp_path, 4, max_count=8).class_counts.tolist() == D.longtail_counts(10, 8, 4)

    def test_missing(self, tmp_path):
        with pytest.raises(
            FileNotFoundError, match=r"train-images-idx3-ubyte.*FashionMNIST.raw.*dataset-fashion-mnist"
        ):
            D.fashion_mnist_lt(tmp_path, 10)

    @pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist package")
    def test_real_files(self):
        ds = D.fashion_mnist_lt(DEBIAN_FASHION, 100, max_count=500)
        assert ds.class_counts.tolist() == D.longtail_counts(10, 500, 100) == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
        full = D.fashion_mnist_lt(DEBIAN_FASHION, 100)
        assert full.class_counts[0] == 6000
        assert len(full) == sum(D.longtail_counts(10, 6000, 100))
        test = D.fashion_mnist_lt(DEBIAN_FASHION, 100, train=False)
        assert test.class_counts.tolist() == [1000] * 10
