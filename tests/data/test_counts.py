"""`class_counts` of tensors, datasets with targets, subsets and loaders, without decoding an image."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

import longtail_losses as ltl
from longtail_losses import data as D
from tests._fabricate import (
    make_fake_cifar100,
    make_fake_fashion_mnist,
    make_fake_imagenet_lt,
)


class WithTargets(torch.utils.data.Dataset):
    def __init__(self, targets: list[int]) -> None:
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        raise AssertionError("class_counts must not decode samples")


class TestClassCounts:
    def test_from_tensor_list_numpy(self) -> None:
        np = pytest.importorskip("numpy")
        expected = torch.tensor([2, 0, 3])
        assert torch.equal(ltl.class_counts(torch.tensor([0, 2, 2, 0, 2])), expected)
        assert torch.equal(ltl.class_counts([0, 2, 2, 0, 2]), expected)
        assert torch.equal(ltl.class_counts(np.array([0, 2, 2, 0, 2])), expected)
        assert ltl.class_counts([0, 2]).dtype == torch.int64

    def test_num_classes_pads_missing_classes(self) -> None:
        assert ltl.class_counts([1, 1], num_classes=4).tolist() == [0, 2, 0, 0]

    def test_dataset_targets_without_decoding(self) -> None:
        ds = WithTargets([0, 1, 1, 3])
        assert ltl.class_counts(ds).tolist() == [1, 2, 0, 1]
        assert ltl.class_counts(Subset(ds, [1, 2, 3]), num_classes=4).tolist() == [0, 2, 0, 1]

    def test_exceptions(self) -> None:
        with pytest.raises(TypeError, match=r"`labels` to hold integer class indices"):
            ltl.class_counts(torch.tensor([0.0, 1.0]))
        with pytest.raises(ValueError, match=r"`labels` to be >= 0, but got -1"):
            ltl.class_counts([0, -1])
        with pytest.raises(ValueError, match=r"`labels` to be < num_classes=2, but got 2"):
            ltl.class_counts([0, 2], num_classes=2)
        with pytest.raises(ValueError, match=r"`labels` to be 1-D, but got shape \(1, 2\)"):
            ltl.class_counts([[0, 1]])
        with pytest.raises(TypeError, match=r"`num_classes` to be None or an int"):
            ltl.class_counts([0], num_classes=2.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"`labels`"):
            ltl.class_counts(TensorDataset(torch.zeros(2)))

    def test_counts_feed_the_losses(self) -> None:
        counts = ltl.class_counts([0, 0, 0, 1], num_classes=3)
        with pytest.raises(ValueError, match=r"got 0 for class 2"):
            ltl.BalancedSoftmax(counts)


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


def test_empty_labels_count_zeros_or_ask_for_num_classes() -> None:
    import numpy as np

    for empty in ([], np.array([]), torch.tensor([], dtype=torch.long)):
        assert ltl.class_counts(empty, num_classes=3).tolist() == [0, 0, 0]
        with pytest.raises(ValueError, match="non-empty when `num_classes` is not given"):
            ltl.class_counts(empty)
    with pytest.raises(ValueError, match="to hold at least one label"):
        ltl.data.ClassAwareSampler([])
