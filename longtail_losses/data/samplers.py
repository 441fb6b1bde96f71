r"""Class-aware sampling (Kang et al., ICLR 2020): draw classes with probability :math:`\propto n_j^q`.

:class:`ClassAwareSampler` is exported as :class:`longtail_losses.data.ClassAwareSampler`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.data import Sampler

from longtail_losses._validation import check_finite, check_int, check_labels, check_seed
from longtail_losses.data.counts import _labels_of

__all__ = ["ClassAwareSampler", "MultiLabelClassAwareSampler", "SeededBatchSampler"]


def _distributed_defaults(num_replicas: Optional[int], rank: Optional[int]) -> tuple[int, int]:
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if initialised else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    num_replicas = check_int("num_replicas", num_replicas, 1)
    rank = check_int("rank", rank, 0)
    if rank >= num_replicas:
        raise ValueError(f"Expected `rank` to be in [0, num_replicas={num_replicas}), but got {rank}")
    return num_replicas, rank


class ClassAwareSampler(Sampler[int]):
    r"""Sample indices class by class: class :math:`j` with probability :math:`p_j \propto n_j^q`.

    Kang et al. :cite:`kang2020decoupling`, eq. (1): every draw picks a class :math:`j` with probability

    .. math::
        p_j = \frac{n_j^{q}}{\sum_{i=1}^{C} n_i^{q}},

    then one of its samples uniformly (with replacement). ``power`` :math:`q = 0` is class-balanced sampling
    (the sampler of cRT), :math:`q = 1/2` square-root sampling and :math:`q = 1` instance-balanced sampling (the
    class frequencies of plain shuffling, though with replacement). Classes without a sample are never drawn.

    **Progressively-balanced sampling** (Kang et al., eq. (2)): with ``progressive_epochs=T``, epoch :math:`t`
    mixes instance-balanced sampling into the distribution above,

    .. math::
        p_j(t) = \Bigl(1 - \frac{t}{T}\Bigr)\, p_j^{(q=1)} + \frac{t}{T}\, p_j^{(q)},

    moving from instance-balanced at :math:`t = 0` to :math:`p^{(q)}` (class-balanced for the default
    :math:`q = 0`) at :math:`t \ge T`; call :meth:`set_epoch` every epoch.

    **Seeds and epochs.** Epoch :math:`e` is a pure function of ``(seed, e)``: a
    :class:`torch.Generator` seeded with ``seed + e`` draws the whole epoch, so :meth:`set_epoch` reshuffles
    and a resumed run sees the draws of an uninterrupted one.

    **Distributed.** An epoch is :math:`R \lceil N_s / R \rceil` draws (:math:`N_s` = ``num_samples``,
    :math:`R` = ``num_replicas``); rank :math:`r` takes the draws :math:`r, r + R, r + 2R, \dots` Each rank thus
    gets a disjoint share of the epoch's draws, all ranks together cover it, and for :math:`N_s` divisible by
    :math:`R` the shares interleaved are exactly the draws of one process. ``num_replicas`` and ``rank`` default
    to those of :mod:`torch.distributed` when it is initialised (else 1 and 0). Use it in place of
    :class:`~torch.utils.data.distributed.DistributedSampler`, not together with it.

    Args:
        labels: Class indices of the data set (tensor, list or array), or a data set with ``.targets``.
        power: The exponent :math:`q`, a finite real number. ``0``: class-balanced; ``1``: instance-balanced.
        num_samples: Draws per epoch over all ranks. Default: ``len(labels)``.
        seed: Base seed of the draws; use the same on every rank.
        num_replicas: Number of ranks :math:`R`. Default: the world size, or 1.
        rank: This process's rank in ``[0, R)``. Default: the rank, or 0.
        progressive_epochs: :math:`T` of progressively-balanced sampling, or ``None`` (the default) for the
            fixed distribution :math:`p^{(q)}`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``labels`` is not 1-D (one class per sample), is empty or negative, ``power`` is not finite,
            or an int is out of range.

    Example:
        >>> labels = [0] * 90 + [1] * 10
        >>> sampler = ClassAwareSampler(labels, power=0.0, num_samples=8, seed=0)
        >>> sampler.class_probabilities()
        tensor([0.5000, 0.5000], dtype=torch.float64)
        >>> len(sampler), len(list(sampler))
        (8, 8)
        >>> ClassAwareSampler(labels, power=1.0).class_probabilities()
        tensor([0.9000, 0.1000], dtype=torch.float64)
        >>> ranks = [ClassAwareSampler(labels, num_samples=8, num_replicas=2, rank=r) for r in (0, 1)]
        >>> [len(s) for s in ranks]
        [4, 4]
    """

    def __init__(
        self, labels: Any, power: float = 0.0, num_samples: Optional[int] = None, *,
        seed: int = 0, num_replicas: Optional[int] = None, rank: Optional[int] = None,
        progressive_epochs: Optional[int] = None,
    ) -> None:  # fmt: skip
        values = check_labels("labels", _labels_of(labels, None)).to(device="cpu", dtype=torch.int64)
        if values.numel() == 0:
            raise ValueError("Expected `labels` to hold at least one label, but got none")
        if int(values.min()) < 0:
            raise ValueError(f"Expected every entry of `labels` to be >= 0, but got {int(values.min())}")
        self.power = check_finite("power", power)
        self.num_samples = values.numel() if num_samples is None else check_int("num_samples", num_samples, 0)
        self.seed = check_seed(seed)
        self.num_replicas, self.rank = _distributed_defaults(num_replicas, rank)
        self.progressive_epochs = (
            None if progressive_epochs is None else check_int("progressive_epochs", progressive_epochs, 1)
        )
        self.epoch = 0
        self.counts = torch.bincount(values)
        order = torch.argsort(values, stable=True)
        self._by_class = order  # sample indices grouped by class, class 0 first
        self._starts = torch.cumsum(self.counts, 0) - self.counts

    def set_epoch(self, epoch: int) -> None:
        """Select the draws (and the progressive mixture) of ``epoch``; call it at the start of every epoch."""
        self.epoch = check_int("epoch", epoch, 0)

    def class_probabilities(self, epoch: Optional[int] = None) -> Tensor:
        r"""The class probabilities :math:`p_j` of ``epoch`` (default: the current one), float64 :math:`(C)`."""
        epoch = self.epoch if epoch is None else check_int("epoch", epoch, 0)
        n = self.counts.to(torch.float64)
        present = n > 0

        def distribution(q: float) -> Tensor:
            # n^q over the present classes, as exp(q log n - max(q log n)): finite for any finite q of either sign.
            scaled = q * torch.where(present, n.log(), 0.0)
            weights = torch.where(present, torch.exp(scaled - scaled[present].max()), 0.0)
            return weights / weights.sum()

        target = distribution(self.power)
        if self.progressive_epochs is None:
            return target
        t = min(1.0, epoch / self.progressive_epochs)
        return (1.0 - t) * distribution(1.0) + t * target

    @property
    def total_size(self) -> int:
        """The number of draws of one epoch over all ranks (``num_samples`` rounded up to a multiple of R)."""
        return self.num_replicas * math.ceil(self.num_samples / self.num_replicas)

    def epoch_draws(self) -> Tensor:
        r"""All draws of the current epoch over all ranks, ``int64`` :math:`(R \lceil N_s / R \rceil)`."""
        size = self.total_size
        if size == 0:
            return torch.empty(0, dtype=torch.int64)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        classes = torch.multinomial(self.class_probabilities(), size, replacement=True, generator=generator)
        offsets = (torch.rand(size, generator=generator, dtype=torch.float64) * self.counts[classes]).long()
        offsets = torch.minimum(offsets, self.counts[classes] - 1)  # guards the (measure-zero) rounding to n
        return self._by_class[self._starts[classes] + offsets]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_draws()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.total_size // self.num_replicas

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.counts.numel()}, power={self.power}, "
            f"num_samples={self.num_samples}, seed={self.seed}, num_replicas={self.num_replicas}, rank={self.rank}"
            + ("" if self.progressive_epochs is None else f", progressive_epochs={self.progressive_epochs}")
            + ")"
        )


class MultiLabelClassAwareSampler(ClassAwareSampler):
    r"""Class-aware sampling for multi-hot labels: draw a class, then a sample that contains it.

    The standard multi-label resampling (Shen et al.'s class-aware sampling, as used by the distribution-balanced
    loss :cite:`wu2020distribution`): every draw picks a class :math:`j` with probability
    :math:`p_j \propto n_j^q` over the classes with a positive (:math:`q = 0`, the default: uniformly), then one
    of the :math:`n_j` samples that contain class :math:`j`, uniformly with replacement. A sample with several
    labels can be reached through each of them. Seeds, epochs, ``progressive_epochs`` and the sharding over ranks
    are those of :class:`ClassAwareSampler`: rank :math:`r` takes the draws :math:`r, r + R, \dots` of the epoch's
    :math:`R \lceil N_s / R \rceil` draws, disjoint and covering.

    Args:
        labels: Multi-hot labels :math:`(N, C)` (an element ``> 0.5`` is a positive), or a data set or DataLoader
            with them (read as :func:`~longtail_losses.data.multilabel_counts` reads them).
        power: The exponent :math:`q`; ``0``: uniform over the classes.
        num_samples: Draws per epoch over all ranks. Default: :math:`N`.
        seed: Base seed of the draws; use the same on every rank.
        num_replicas: Number of ranks :math:`R`. Default: the world size, or 1.
        rank: This process's rank in ``[0, R)``. Default: the rank, or 0.
        progressive_epochs: As for :class:`ClassAwareSampler`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``labels`` is not 2-D or has no positive, or an int is out of range.

    Example:
        >>> labels = torch.tensor([[1, 0, 0]] * 8 + [[1, 1, 0], [0, 0, 1]])
        >>> sampler = MultiLabelClassAwareSampler(labels, num_samples=6, seed=0)
        >>> sampler.class_probabilities()
        tensor([0.3333, 0.3333, 0.3333], dtype=torch.float64)
        >>> list(sampler)  # samples 8 and 9 hold the rare classes 1 and 2
        [9, 9, 8, 9, 8, 9]
    """

    def __init__(
        self, labels: Any, power: float = 0.0, num_samples: Optional[int] = None, *,
        seed: int = 0, num_replicas: Optional[int] = None, rank: Optional[int] = None,
        progressive_epochs: Optional[int] = None,
    ) -> None:  # fmt: skip
        values = _labels_of(labels, None, multihot=True)
        if values.dtype.is_complex or values.ndim != 2:
            raise ValueError(
                f"Expected multi-hot `labels` of real numbers with shape (N, C), but got {tuple(values.shape)} "
                f"{values.dtype}"
            )
        positive = values.to(device="cpu", dtype=torch.float64) > 0.5
        if not bool(positive.any()):
            raise ValueError("Expected `labels` to hold at least one positive, but got none")
        # One (class, sample) pair per positive, grouped by class: the parent draws a class, then one of its pairs.
        classes, samples = positive.t().nonzero(as_tuple=True)
        self.power = check_finite("power", power)
        self.num_samples = values.shape[0] if num_samples is None else check_int("num_samples", num_samples, 0)
        self.seed = check_seed(seed)
        self.num_replicas, self.rank = _distributed_defaults(num_replicas, rank)
        self.progressive_epochs = (
            None if progressive_epochs is None else check_int("progressive_epochs", progressive_epochs, 1)
        )
        self.epoch = 0
        self.counts = torch.bincount(classes, minlength=values.shape[1])
        self._by_class = samples  # nonzero lists class 0's samples first, in sample order
        self._starts = torch.cumsum(self.counts, 0) - self.counts


class SeededBatchSampler(Sampler[list[int]]):
    r"""Mini-batches of a fresh random permutation per epoch, a pure function of ``(seed, epoch)``.

    Epoch :math:`e` uses ``torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed + e))``,
    cut into consecutive batches. :func:`train_classifier` draws its batches the same way, so a
    ``DataLoader(dataset, batch_sampler=SeededBatchSampler(...))`` with :func:`train_one_epoch` (running the
    frozen backbone every step) sees exactly the batches of the cached-feature path; and a run resumed at
    epoch :math:`k` (``set_epoch(k)``) sees the batches of an uninterrupted one.

    Args:
        num_samples: Size of the data set.
        batch_size: Samples per batch.
        seed: Base seed.
        shuffle: Permute (``True``) or keep the data order (``False``).
        drop_last: Drop the last batch if it is smaller than ``batch_size``.

    Raises:
        TypeError: If an argument is not an int.
        ValueError: If ``num_samples < 0`` or ``batch_size < 1``.

    Example:
        >>> sampler = SeededBatchSampler(5, 2, seed=0)
        >>> sampler.set_epoch(3)
        >>> list(sampler)
        [[1, 0], [3, 4], [2]]
        >>> torch.randperm(5, generator=torch.Generator().manual_seed(3)).tolist()
        [1, 0, 3, 4, 2]
    """

    def __init__(
        self, num_samples: int, batch_size: int, *,
        seed: int = 0, shuffle: bool = True, drop_last: bool = False,
    ) -> None:  # fmt: skip
        num_samples, batch_size = check_int("num_samples", num_samples, 0), check_int("batch_size", batch_size, 1)
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = check_seed(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (as :class:`~torch.utils.data.distributed.DistributedSampler`)."""
        self.epoch = check_int("epoch", epoch, 0)

    def permutation(self) -> Tensor:
        """The sample order of the current epoch, ``int64`` :math:`(N)`."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        order = self.permutation()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)
