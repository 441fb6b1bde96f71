from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import longtail_losses as ltl
from longtail_losses import data as D
from tests._fabricate import (
    label_grey,
    make_fake_cifar100,
    make_fake_fashion_mnist,
    make_fake_imagenet_lt,
    write_idx,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _shared_imagenet_lt_dir() -> Path:
    env = os.environ.get("LTL_IMAGENET_LT_SPLITS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "imagenet_lt"


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


def _ldam_reference(targets, img_num_per_cls, seed):
    """LDAM's IMBALANCECIFAR.gen_imbalanced_data, as written there (global NumPy RNG seeded in __init__)."""
    np.random.seed(seed)
    targets_np = np.array(targets, dtype=np.int64)
    classes = np.unique(targets_np)
    selected = []
    for the_class, the_img_num in zip(classes, img_num_per_cls):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        selected.append(idx[:the_img_num])
    return np.concatenate(selected)


class TestLongtailIndices:
    def test_matches_ldam_reference(self):
        labels = np.random.default_rng(3).permutation(np.repeat(np.arange(10), 30))
        counts = D.longtail_counts(10, 30, 10)
        for seed in (0, 1):
            idx = D.longtail_indices(torch.as_tensor(labels), counts, seed=seed)
            assert idx.dtype == torch.int64
            np.testing.assert_array_equal(idx.numpy(), _ldam_reference(labels.tolist(), counts, seed))

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
        with pytest.raises(TypeError, match="`counts` to hold ints"):
            D.longtail_indices([0, 1], [1.0, 1.0])
        with pytest.raises(ValueError, match="`labels` to be 1-D"):
            D.longtail_indices(torch.zeros(2, 2, dtype=torch.long), [1])


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
        expected_idx = _ldam_reference(labels, counts, seed=0)
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


class TestImagenetLT:
    def test_fabricated_folder(self, tmp_path):
        counts = [6, 3, 1]
        splits = make_fake_imagenet_lt(tmp_path, counts, per_class_eval=2, image_size=8)
        ds = D.imagenet_lt(tmp_path, splits["train"])
        assert len(ds) == 10
        assert_close(ds.class_counts, torch.tensor(counts))
        assert_close(ltl.class_counts(ds), torch.tensor(counts))
        path, label = ds.samples[7]
        assert Path(path).is_file()
        assert label == ds.targets[7] == 1
        img, y = ds[7]
        assert img.mode == "RGB"
        assert img.size == (8, 8)
        assert y == 1
        # JPEG is lossy, but a solid grey survives within a couple of levels
        assert np.abs(np.asarray(img).astype(int) - label_grey(1)).max() <= 2
        test = D.imagenet_lt(tmp_path, splits["test"], transform=lambda im: np.asarray(im).mean())
        assert_close(test.class_counts, torch.tensor([2, 2, 2]))
        value, y = test[5]
        assert abs(value - label_grey(2)) <= 2
        assert y == 2

    def test_num_classes(self, tmp_path):
        split = tmp_path / "s.txt"
        split.write_text("a/b.JPEG 1\n\n")
        assert D.imagenet_lt(tmp_path, split, num_classes=4).class_counts.tolist() == [0, 1, 0, 0]
        with pytest.raises(ValueError, match="< num_classes=1, but got 1"):
            D.imagenet_lt(tmp_path, split, num_classes=1)

    def test_malformed_line(self, tmp_path):
        split = tmp_path / "bad.txt"
        split.write_text("train/a/x.JPEG 0\ntrain/a/y.JPEG\n")
        with pytest.raises(ValueError, match=r"'train/a/y.JPEG' at .*bad.txt:2"):
            D.imagenet_lt(tmp_path, split)
        split.write_text("train/a/x.JPEG zero\n")
        with pytest.raises(ValueError, match=r"bad.txt:1"):
            D.imagenet_lt(tmp_path, split)
        split.write_text("\n")
        with pytest.raises(ValueError, match="at least one"):
            D.imagenet_lt(tmp_path, split)

    def test_missing(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"split file not found.*OLTR"):
            D.imagenet_lt(tmp_path, tmp_path / "ImageNet_LT_train.txt")
        split = tmp_path / "s.txt"
        split.write_text("a 0\n")
        with pytest.raises(FileNotFoundError, match="is not a folder"):
            D.imagenet_lt(tmp_path / "nope", split)

    @pytest.mark.parametrize(("split", "per_class"), [("test", 50), ("val", 20)])
    def test_shared_split_files(self, split, per_class, tmp_path):
        path = _shared_imagenet_lt_dir() / f"ImageNet_LT_{split}.txt"
        if not path.is_file():
            pytest.skip(f"{path} is absent (set LTL_IMAGENET_LT_SPLITS to the folder of the ImageNet-LT split lists)")
        ds = D.imagenet_lt(tmp_path, path)
        assert len(ds) == 1000 * per_class
        assert_close(ds.class_counts, torch.full((1000,), per_class))
        assert ds.samples[0][0].startswith(str(tmp_path))


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


def test_class_counts_never_decodes(tmp_path, monkeypatch):
    def fail(self, index):
        raise AssertionError("class_counts decoded an image")

    monkeypatch.setattr(D.InMemoryImageDataset, "__getitem__", fail)
    monkeypatch.setattr(D.ImageListDataset, "__getitem__", fail)
    make_fake_fashion_mnist(tmp_path / "f", per_class_train=10)
    splits = make_fake_imagenet_lt(tmp_path / "i", [3, 1])
    cifar = make_fake_cifar100(tmp_path / "c", per_class_train=4, per_class_test=1, num_classes=3)
    for ds, expected in [
        (D.fashion_mnist_lt(tmp_path / "f", 10), D.longtail_counts(10, 10, 10)),
        (D.imagenet_lt(tmp_path / "i", splits["train"]), [3, 1]),
        (D.cifar100_lt(cifar, 4), D.longtail_counts(3, 4, 4)),
    ]:
        assert ltl.class_counts(ds).tolist() == expected
