"""Class-aware sampling (the schedule, the seeds, the shards of DDP ranks) and the seeded batch sampler."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from longtail_losses import data as ltd
from longtail_losses.data import SeededBatchSampler

SAMPLER_COUNTS = [300, 60, 12, 3]


SAMPLER_LABELS = torch.repeat_interleave(torch.arange(4), torch.tensor(SAMPLER_COUNTS))[
    torch.randperm(375, generator=torch.Generator().manual_seed(0))
]


def _sampler_rank(rank: int, world_size: int, folder: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    try:
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=50, seed=6)
        assert (sampler.num_replicas, sampler.rank) == (world_size, rank)
        sampler.set_epoch(3)
        torch.save(torch.tensor(list(sampler)), f"{folder}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


class TestClassAwareSampler:
    @pytest.mark.parametrize("power", [0.0, 0.5, 1.0, -0.5])
    def test_class_frequencies(self, power: float) -> None:
        n = torch.tensor(SAMPLER_COUNTS, dtype=torch.float64)
        expected = n**power / (n**power).sum()
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, power=power, num_samples=40_000, seed=1)
        torch.testing.assert_close(sampler.class_probabilities(), expected)
        drawn = SAMPLER_LABELS[torch.tensor(list(sampler))]
        observed = torch.bincount(drawn, minlength=4).double()
        sigma = torch.sqrt(40_000 * expected * (1 - expected))
        assert ((observed - 40_000 * expected).abs() < 5 * sigma).all(), (observed, 40_000 * expected)

    def test_uniform_within_class(self) -> None:
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, power=0.0, num_samples=20_000, seed=2)
        draws = torch.tensor(list(sampler))
        tail = (SAMPLER_LABELS == 3).nonzero().flatten()
        hits = torch.stack([(draws == i).sum() for i in tail]).double()
        expected = hits.sum() / 3
        assert ((hits - expected).abs() < 5 * torch.sqrt(expected)).all()
        assert set(draws.tolist()) <= set(range(375))

    @pytest.mark.parametrize(("num_samples", "replicas"), [(100, 4), (101, 4), (7, 3), (2, 5)])
    def test_shards_disjoint_and_covering(self, num_samples: int, replicas: int) -> None:
        shards = [
            ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=num_samples, seed=3, num_replicas=replicas, rank=r)
            for r in range(replicas)
        ]
        for s in shards:
            s.set_epoch(2)
        total = shards[0].total_size
        assert total == replicas * math.ceil(num_samples / replicas)
        assert all(len(s) == total // replicas for s in shards)
        draws = shards[0].epoch_draws()
        positions = [list(range(r, total, replicas)) for r in range(replicas)]
        assert sorted(p for ps in positions for p in ps) == list(range(total))  # disjoint and covering
        for s, ps in zip(shards, positions):
            assert list(s) == draws[ps].tolist()
        if num_samples % replicas == 0:
            single = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=num_samples, seed=3, num_replicas=1, rank=0)
            single.set_epoch(2)
            interleaved = torch.stack([torch.tensor(list(s)) for s in shards], dim=1).reshape(-1)
            assert interleaved.tolist() == list(single)

    def test_set_epoch_reshuffles_and_is_deterministic(self) -> None:
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=64, seed=4)
        first = list(sampler)
        assert list(sampler) == first
        sampler.set_epoch(1)
        second = list(sampler)
        assert second != first
        again = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=64, seed=4)
        again.set_epoch(1)
        assert list(again) == second
        assert list(ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=64, seed=5)) != first

    def test_progressive(self) -> None:
        n = torch.tensor(SAMPLER_COUNTS, dtype=torch.float64)
        instance, balanced = n / n.sum(), torch.full((4,), 0.25, dtype=torch.float64)
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, power=0.0, progressive_epochs=10)
        torch.testing.assert_close(sampler.class_probabilities(), instance)
        sampler.set_epoch(4)
        torch.testing.assert_close(sampler.class_probabilities(), 0.6 * instance + 0.4 * balanced)
        torch.testing.assert_close(sampler.class_probabilities(25), balanced)

    def test_defaults_from_torch_distributed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda: 2)
        sampler = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=10)
        assert (sampler.num_replicas, sampler.rank, len(sampler)) == (4, 2, 3)

    @pytest.mark.slow
    def test_real_process_group(self, tmp_path: Path) -> None:
        # Two gloo processes: each sampler reads its rank and the world size from torch.distributed.
        torch.multiprocessing.spawn(_sampler_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
        shards = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
        single = ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=50, seed=6, num_replicas=1, rank=0)
        single.set_epoch(3)
        assert torch.stack(shards, dim=1).reshape(-1).tolist() == list(single)

    def test_missing_class_never_drawn(self) -> None:
        labels = torch.tensor([0, 0, 2, 2, 2, 0])
        sampler = ltd.ClassAwareSampler(labels, num_samples=500)
        assert sampler.class_probabilities()[1] == 0.0
        assert 1 not in labels[torch.tensor(list(sampler))].tolist()

    def test_reads_data_sets_and_works_with_dataloader(self) -> None:
        dataset = torch.utils.data.TensorDataset(torch.randn(375, 2), SAMPLER_LABELS)
        sampler = ltd.ClassAwareSampler(dataset, num_samples=32)
        batches = list(torch.utils.data.DataLoader(dataset, batch_size=8, sampler=sampler))
        assert len(batches) == 4
        assert sum(b[1].numel() for b in batches) == 32
        assert "ClassAwareSampler(num_classes=4, power=0.0" in repr(sampler)

    def test_exceptions(self) -> None:
        with pytest.raises(TypeError, match="Expected `power` to be a real number, but got '1'"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, power="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `power` to be a real number, but got nan"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, power=math.nan)
        with pytest.raises(ValueError, match=r"Expected `rank` to be in \[0, num_replicas=2\), but got 2"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, num_replicas=2, rank=2)
        with pytest.raises(ValueError, match="Expected `num_replicas` to be >= 1, but got 0"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, num_replicas=0, rank=0)
        with pytest.raises(TypeError, match=r"Expected `num_samples` to be an int, but got 2\.0"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, num_samples=2.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `labels` to hold at least one label, but got none"):
            ltd.ClassAwareSampler(torch.tensor([], dtype=torch.int64))
        with pytest.raises(ValueError, match="Expected every entry of `labels` to be >= 0, but got -1"):
            ltd.ClassAwareSampler(torch.tensor([0, -1]))
        with pytest.raises(TypeError, match="Expected `labels` to hold integer class indices, but got dtype"):
            ltd.ClassAwareSampler(torch.tensor([0.0, 1.0]))
        with pytest.raises(ValueError, match="Expected `epoch` to be >= 0, but got -1"):
            ltd.ClassAwareSampler(SAMPLER_LABELS).set_epoch(-1)
        with pytest.raises(ValueError, match="Expected `progressive_epochs` to be >= 1, but got 0"):
            ltd.ClassAwareSampler(SAMPLER_LABELS, progressive_epochs=0)


class TestSeededBatchSampler:
    def test_batches_are_a_permutation_by_epoch(self):
        sampler = SeededBatchSampler(10, 3, seed=4)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert [len(b) for b in batches] == [3, 3, 3, 1]
            assert len(sampler) == 4
            flat = [i for batch in batches for i in batch]
            assert flat == torch.randperm(10, generator=torch.Generator().manual_seed(4 + epoch)).tolist()
            assert list(sampler) == batches  # same epoch, same batches
        sampler = SeededBatchSampler(10, 3, shuffle=False, drop_last=True)
        assert list(sampler) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]

    def test_exceptions(self):
        with pytest.raises(ValueError, match="`batch_size` to be >= 1"):
            SeededBatchSampler(4, 0)
        with pytest.raises(ValueError, match="`num_samples` to be >= 0"):
            SeededBatchSampler(-1, 2)
        with pytest.raises(TypeError, match="`seed` to be an int"):
            SeededBatchSampler(4, 2, seed=None)


def test_two_dimensional_labels_are_refused_not_flattened() -> None:
    with pytest.raises(ValueError, match=r"Expected `labels` to be 1-D, but got shape \(3, 3\)"):
        ltd.ClassAwareSampler(torch.eye(3, dtype=torch.long))


@pytest.mark.parametrize("power", [-200.0, 200.0, -1e4])
def test_extreme_powers_give_a_distribution(power: float) -> None:
    sampler = ltd.ClassAwareSampler([0] * 100 + [1] * 10 + [2], power=power, seed=0)
    p = sampler.class_probabilities()
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    rarest = 2 if power < 0 else 0  # n^q: a negative power favours the rarest class, a positive the largest
    assert p[rarest] > 0.999
    assert len(list(sampler)) == 111


def test_seeds_and_epochs_are_checked_where_given() -> None:
    with pytest.raises(ValueError, match=r"`seed` to be < 2\*\*63"):
        ltd.ClassAwareSampler([0, 1], seed=2**64)
    with pytest.raises(ValueError, match=r"`seed` to be < 2\*\*63"):
        SeededBatchSampler(4, 2, seed=2**63)
    with pytest.raises(TypeError, match=r"`epoch` to be an int, but got 1.5"):
        SeededBatchSampler(4, 2).set_epoch(1.5)  # type: ignore[arg-type]
