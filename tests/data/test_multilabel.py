"""Multi-label statistics, the multi-label class-aware sampler and the Fashion-MNIST mosaics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from longtail_losses import data as ltd
from tests._fabricate import write_idx

LABELS = (
    torch.rand(400, 6, generator=torch.Generator().manual_seed(0)) < torch.tensor([0.6, 0.3, 0.1, 0.05, 0.02, 0.01])
).long()
LABELS[0] = 1  # every class has a positive


class TestMultilabelCounts:
    def test_forms(self):
        counts, n = ltd.multilabel_counts(LABELS)
        torch.testing.assert_close(counts, LABELS.sum(0))
        assert n == 400
        assert counts.dtype == torch.int64
        dataset = TensorDataset(torch.zeros(400, 2), LABELS)
        for source in (LABELS.tolist(), LABELS.numpy(), dataset, DataLoader(dataset, batch_size=7)):
            got, m = ltd.multilabel_counts(source)
            torch.testing.assert_close(got, counts)
            assert m == 400
        sub, m = ltd.multilabel_counts(Subset(dataset, range(10, 30)))
        torch.testing.assert_close(sub, LABELS[10:30].sum(0))
        assert m == 20
        got, _ = ltd.multilabel_counts([{"y": row} for row in LABELS[:5]], label_fn=lambda s: s["y"])
        torch.testing.assert_close(got, LABELS[:5].sum(0))

    def test_soft_and_unknown(self):
        counts, n = ltd.multilabel_counts(torch.tensor([[0.9, -1.0, 0.5], [0.6, 1.0, 0.0]]), ignore_index=-1)
        assert counts.tolist() == [2, 1, 0]
        assert n == 2

    def test_exceptions(self):
        with pytest.raises(ValueError, match=r"Expected multi-hot `labels` to have shape \(N, C\), but got \(3,\)"):
            ltd.multilabel_counts(torch.tensor([1, 0, 1]))
        with pytest.raises(ValueError, match=r"value to be in \[0, 1\] or equal to ignore_index=-100, but got 2"):
            ltd.multilabel_counts(torch.tensor([[1, 2]]))
        with pytest.raises(TypeError, match="Expected `all_reduce` to be a bool"):
            ltd.multilabel_counts(LABELS, all_reduce=1)


def _counts_rank(rank: int, world_size: int, folder: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    try:
        counts, n = ltd.multilabel_counts(LABELS[rank::world_size], all_reduce=True)
        torch.save((counts, n), f"{folder}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_multilabel_counts_all_reduce(tmp_path: Path):
    torch.multiprocessing.spawn(_counts_rank, args=(2, str(tmp_path)), nprocs=2)
    for rank in range(2):
        counts, n = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(counts, LABELS.sum(0))
        assert n == 400


class TestMultiLabelClassAwareSampler:
    def test_class_frequencies_uniform(self):
        """The class of each draw (the sampler's own record) is uniform within 5 sigma; each draw holds its class."""
        sampler = ltd.MultiLabelClassAwareSampler(LABELS, num_samples=30_000, seed=1)
        torch.testing.assert_close(sampler.class_probabilities(), torch.full((6,), 1 / 6, dtype=torch.float64))
        g = torch.Generator().manual_seed(sampler.seed + sampler.epoch)
        classes = torch.multinomial(sampler.class_probabilities(), sampler.total_size, replacement=True, generator=g)
        draws = sampler.epoch_draws()
        assert bool(LABELS[draws, classes].all())  # every draw contains the class it was drawn for
        freq = torch.bincount(classes, minlength=6).double()
        sigma = math.sqrt(30_000 * (1 / 6) * (5 / 6))
        assert ((freq - 5_000).abs() < 5 * sigma).all(), freq
        # The rare classes' positives are seen about as often as the head's: per-class positive frequency.
        seen = LABELS[draws].sum(0).double() / 30_000
        assert seen.min() >= 1 / 6 - 5 * sigma / 30_000

    def test_shards_disjoint_and_covering(self):
        """Rank r takes the draws r, r + R, ... of the epoch's R * ceil(N_s / R) draws: disjoint, covering them."""
        shards = []
        for rank in range(4):
            sampler = ltd.MultiLabelClassAwareSampler(LABELS, num_samples=101, seed=3, num_replicas=4, rank=rank)
            sampler.set_epoch(2)
            shards.append(list(sampler))
            assert len(sampler) == 26
        draws = sampler.epoch_draws().tolist()  # the same on every rank
        assert len(draws) == 104
        interleaved = [shards[i % 4][i // 4] for i in range(104)]
        assert interleaved == draws  # each position of the epoch in exactly one shard

    def test_seeds_and_epochs(self):
        a = ltd.MultiLabelClassAwareSampler(LABELS, seed=5)
        b = ltd.MultiLabelClassAwareSampler(LABELS, seed=5)
        assert list(a) == list(b)
        b.set_epoch(1)
        assert list(a) != list(b)

    def test_exceptions(self):
        with pytest.raises(ValueError, match=r"multi-hot `labels` of real numbers with shape \(N, C\)"):
            ltd.MultiLabelClassAwareSampler(torch.tensor([1, 0]))
        with pytest.raises(ValueError, match="at least one positive"):
            ltd.MultiLabelClassAwareSampler(torch.zeros(3, 2))


@pytest.fixture(scope="module")
def grey_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST files whose images are a constant grey 20 * (label + 1): tiles show their class."""
    root = tmp_path_factory.mktemp("grey")
    for prefix, per_class in (("train", 300), ("t10k", 40)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        np.random.default_rng(0).shuffle(labels)
        images = (20 * (labels.astype(np.uint8) + 1))[:, None, None] * np.ones((1, 28, 28), dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images.astype(np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    return root


class TestFashionMnistMosaic:
    @pytest.mark.parametrize("split", ["train", "val", "test"])
    def test_counts_and_tiles(self, grey_root, split):
        order = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
        data = ltd.fashion_mnist_mosaic(grey_root, 20, split, max_count=100, per_class=30, class_order=order, seed=2)
        y = data.targets
        expected = ltd.longtail_counts(10, 100, 20) if split == "train" else [30] * 10
        assert y.sum(0).tolist() == expected == data.class_counts.tolist()
        assert y.shape[1] == 10
        assert bool((y.sum(1) >= 1).all())
        assert bool((y.sum(1) <= 4).all())
        assert data.data.shape[1:] == (28, 28)
        assert data.data.dtype == torch.uint8
        # Each tile is blank or the grey of one of the mosaic's classes, and every label has its tile.
        tiles = data.data.reshape(-1, 2, 14, 2, 14).permute(0, 1, 3, 2, 4).reshape(-1, 4, 14 * 14)
        for row in range(len(data)):
            greys = sorted(int(t[0]) for t in tiles[row] if int(t.max()) > 0)
            want = sorted(20 * (order[r] + 1) for r in y[row].nonzero().flatten().tolist())
            assert greys == want
        assert data.classes[0] == "Dress"  # Fashion-MNIST class 3, rank 0
        x, labels = data.as_tensors()
        assert x.shape == (len(data), 1, 28, 28)
        assert labels is y

    def test_seeded_and_disjoint(self, grey_root):
        a = ltd.fashion_mnist_mosaic(grey_root, 10, "train", max_count=100, seed=4)
        b = ltd.fashion_mnist_mosaic(grey_root, 10, "train", max_count=100, seed=4)
        assert torch.equal(a.targets, b.targets)
        assert torch.equal(a.data, b.data)
        c = ltd.fashion_mnist_mosaic(grey_root, 10, "train", max_count=100, seed=5)
        assert not torch.equal(a.targets, c.targets)

    def test_exceptions(self, grey_root):
        with pytest.raises(ValueError, match="Expected `split` to be one of"):
            ltd.fashion_mnist_mosaic(grey_root, 10, "dev")
        with pytest.raises(ValueError, match="Expected `class_order` to be a permutation"):
            ltd.fashion_mnist_mosaic(grey_root, 10, class_order=[0] * 10)
        with pytest.raises(ValueError, match="raise `num_mosaics`"):
            ltd.fashion_mnist_mosaic(grey_root, 1, max_count=100, num_mosaics=120)
