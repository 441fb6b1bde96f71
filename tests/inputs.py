"""The inputs of the loss tests, defined once: the class counts, every input form, and the hypothesis strategies.

``make_inputs`` builds logits and a target of one input form of ``F.cross_entropy`` from a seed; the ``forms``
strategy draws from it, so the parametrised tests and the property tests share one definition of each form.
``problems`` draws the values themselves, for the invariants that hypothesis should search the values of.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import Tensor

COUNTS = [500, 120, 40, 9, 2]
"""Training samples per class of the long-tailed problem every loss test uses (imbalance factor 250)."""

C = len(COUNTS)

IGNORE_INDEX = -100

FORMS = ["unbatched", "batched", "spatial"]
"""Logits of shape (C,), (N, C) and (N, C, d1, d2)."""

KINDS = ["index", "index_ignore", "probs"]
"""Class indices, class indices of which every third is ``IGNORE_INDEX``, class probabilities."""

# An unbatched target is one sample, either kept or ignored: its ignore_index case is tested on its own.
FORM_KINDS = [(f, k) for f in FORMS for k in KINDS if (f, k) != ("unbatched", "index_ignore")]

REDUCTIONS = ["none", "mean", "sum"]


def make_inputs(
    form: str = "batched",
    kind: str = "index",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    batch: int = 6,
    num_classes: int = C,
    scale: float = 3.0,
) -> tuple[Tensor, Tensor]:
    """Logits of ``form`` (``scale`` times standard normal) and a target of ``kind``, both from ``seed``.

    Shapes: ``unbatched`` (C,); ``batched`` (batch, C); ``spatial`` (2, C, 3, 2). Probability targets are
    sharp distributions (uniform draws to the fourth power, normalised), in ``dtype``.
    """
    g = torch.Generator().manual_seed(seed)
    shape = {"unbatched": (num_classes,), "batched": (batch, num_classes), "spatial": (2, num_classes, 3, 2)}[form]
    logits = (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    class_dim = 0 if form == "unbatched" else 1
    if kind == "probs":
        raw = torch.rand(shape, generator=g, dtype=torch.float64) ** 4
        return logits, (raw / raw.sum(dim=class_dim, keepdim=True)).to(dtype)
    index_shape = shape[:class_dim] + shape[class_dim + 1 :]
    target = torch.randint(0, num_classes, index_shape, generator=g)
    if kind == "index_ignore":
        target.view(-1)[::3] = IGNORE_INDEX
    elif kind != "index":
        raise ValueError(f"unknown kind {kind!r}")
    return logits, target


def make_counts(num_classes: int, *, seed: int = 0, high: int = 500) -> Tensor:
    """Random int64 class counts in [1, high), for problems of any number of classes."""
    return torch.randint(1, high, (num_classes,), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------
# Hypothesis strategies

betas = st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]) | st.floats(0.0, 0.9999)
gammas = st.sampled_from([0.0, 0.5, 1.0, 2.0]) | st.floats(0.0, 5.0)
alphas = st.sampled_from([0.0, 0.1, 0.5, 1.0]) | st.floats(0.0, 1.0)
reductions = st.sampled_from(REDUCTIONS)


@st.composite
def forms(draw: st.DrawFn, kinds: tuple[str, ...] = ("index_ignore", "probs")) -> tuple[Tensor, Tensor]:
    """Logits and target of any form, from ``make_inputs``: class indices (some ignored) or probabilities."""
    form = draw(st.sampled_from(FORMS))
    kind = draw(st.sampled_from(kinds))
    if (form, kind) == ("unbatched", "index_ignore"):
        kind = "index"
    return make_inputs(form, kind, seed=draw(st.integers(0, 2**16)))


@st.composite
def problems(draw, max_batch: int = 6, max_classes: int = 7, logit_bound: float = 20.0, ignore: bool = True):
    """A long-tailed problem: float64 logits (N, C), int64 targets (some ignored), int64 counts (C,)."""
    num_samples = draw(st.integers(1, max_batch))
    num_classes = draw(st.integers(1, max_classes))
    counts = draw(st.lists(st.integers(1, 5000), min_size=num_classes, max_size=num_classes))
    logits = draw(
        st.lists(
            st.floats(-logit_bound, logit_bound, allow_nan=False, width=64),
            min_size=num_samples * num_classes,
            max_size=num_samples * num_classes,
        )
    )
    labels = draw(st.lists(st.integers(0, num_classes - 1), min_size=num_samples, max_size=num_samples))
    if ignore:
        mask = draw(st.lists(st.booleans(), min_size=num_samples, max_size=num_samples))
        # keep at least one sample so that 'mean' is defined
        mask[draw(st.integers(0, num_samples - 1))] = False
        labels = [IGNORE_INDEX if m else y for m, y in zip(mask, labels)]
    return (
        torch.tensor(logits, dtype=torch.float64).reshape(num_samples, num_classes),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(counts, dtype=torch.int64),
    )


# ----------------------------------------------------------------------------------------------------------------
# Fuzz strategies (tests/fuzz): every input form, dtype, layout, count edge case and hyperparameter range

FLOAT_DTYPES = [torch.float32, torch.float64]
LOW_DTYPES = [torch.float16, torch.bfloat16]
"""Computed (and returned) in float32 by every loss."""

LAYOUTS = ["contiguous", "strided", "channels_last"]
"""Logits as made, a non-contiguous view of the same values (every other column of a wider tensor), and the
channels-last memory format (spatial logits only; the others fall back to contiguous)."""

TARGET_DTYPES = [torch.int64, torch.int32, torch.int16]
"""Integer dtypes of class-index targets that can hold ``IGNORE_INDEX``."""

LOGIT_SCALES = [0.0, 1e-3, 1.0, 30.0, 1e3, 1e4]
"""Standard deviations of the logits: all equal, tiny, ordinary, large and as large as the invariants allow."""


def counts_lists(num_classes: int, high: int = 10**6) -> st.SearchStrategy[list[int]]:
    """Class counts >= 1 for ``num_classes`` classes: random, all ones, all equal, or one huge head class."""
    n = num_classes
    return st.one_of(
        st.lists(st.integers(1, high), min_size=n, max_size=n),
        st.just([1] * n),
        st.integers(1, high).map(lambda k: [k] * n),
        st.integers(0, n - 1).map(lambda i: [high if j == i else 1 for j in range(n)]),
    )


def apply_layout(logits: Tensor, layout: str) -> Tensor:
    """The same values as ``logits`` in the memory ``layout`` (see ``LAYOUTS``)."""
    if layout == "strided":
        wide = torch.zeros((*logits.shape[:-1], 2 * logits.shape[-1]), dtype=logits.dtype)
        wide[..., ::2] = logits
        return wide[..., ::2]
    if layout == "channels_last" and logits.dim() == 4:
        return logits.contiguous(memory_format=torch.channels_last)
    return logits


class Case:
    """One drawn problem: ``logits``, ``target``, ``counts`` (a list of ints) and how they were drawn."""

    def __init__(
        self,
        logits: Tensor,
        target: Tensor,
        counts: list[int],
        form: str,
        kind: str,
        layout: str,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.logits, self.target, self.counts = logits, target, counts
        self.form, self.kind, self.layout, self.ignore_index = form, kind, layout, ignore_index

    def with_ignore_index(self, ignore_index: int) -> Case:
        """The same case with its ignored samples labelled ``ignore_index`` instead."""
        target = self.target
        if not target.is_floating_point():
            target = torch.where(target == self.ignore_index, torch.full_like(target, ignore_index), target)
        return Case(self.logits, target, self.counts, self.form, self.kind, self.layout, ignore_index)

    @property
    def class_dim(self) -> int:
        return 0 if self.form == "unbatched" else 1

    @property
    def num_classes(self) -> int:
        return self.logits.shape[self.class_dim]

    def kept(self) -> Tensor:
        """Per-position mask of the samples that count in 'mean' (all of them for probability targets)."""
        if self.target.is_floating_point():
            return torch.ones(self.logits.sum(self.class_dim).shape, dtype=torch.bool)
        return self.target != self.ignore_index

    def __repr__(self) -> str:
        return (
            f"Case(form={self.form!r}, kind={self.kind!r}, layout={self.layout!r}, logits={self.logits!r}, "
            f"target={self.target!r}, counts={self.counts}, ignore_index={self.ignore_index})"
        )


@st.composite
def cases(
    draw: st.DrawFn,
    *,
    kinds: tuple[str, ...] = ("index", "index_ignore", "probs"),
    forms: tuple[str, ...] = tuple(FORMS),
    dtypes: tuple[torch.dtype, ...] = (torch.float64,),
    max_batch: int = 5,
    min_batch: int = 0,
    min_classes: int = 1,
    max_classes: int = 6,
    scales: tuple[float, ...] = tuple(LOGIT_SCALES),
    min_kept: int = 0,
) -> Case:
    """A problem of any input form, kind, dtype, layout and size, including the count edge cases.

    Batches may be empty (``min_batch=0``), have one class, or ignore every sample (``index_ignore``; at least
    ``min_kept`` samples are kept where the batch has that many). Logits are ``scale`` times standard normal from a
    drawn seed; probability targets are drawn from a seed too (sharp or uniform), or are one-hot.
    """
    form = draw(st.sampled_from(forms))
    kind = draw(st.sampled_from(kinds))
    num_classes = draw(st.integers(min_classes, max_classes))
    if form == "unbatched":
        shape: tuple[int, ...] = (num_classes,)
    elif form == "batched":
        shape = (draw(st.integers(min_batch, max_batch)), num_classes)
    else:
        shape = (draw(st.integers(min_batch, 2)), num_classes, draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    dtype = draw(st.sampled_from(dtypes))
    scale = draw(st.sampled_from(scales))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    class_dim = 0 if form == "unbatched" else 1
    index_shape = shape[:class_dim] + shape[class_dim + 1 :]
    if kind == "probs":
        sharp = draw(st.sampled_from([0.0, 1.0, 4.0, "onehot"]))
        if sharp == "onehot":
            labels = torch.randint(0, num_classes, index_shape, generator=g)
            target = torch.nn.functional.one_hot(labels, num_classes).movedim(-1, class_dim).to(dtype)
        else:
            raw = torch.rand(shape, generator=g, dtype=torch.float64) ** sharp + 1e-3
            target = (raw / raw.sum(dim=class_dim, keepdim=True)).to(dtype)
    else:
        target = torch.randint(0, num_classes, index_shape, generator=g)
        if kind == "index_ignore":
            ignored = torch.rand(index_shape, generator=g) < draw(st.sampled_from([0.3, 1.0]))
            flat = ignored.reshape(-1)
            flat[: min(min_kept, flat.numel())] = False
            target = torch.where(ignored.reshape(index_shape), torch.full_like(target, IGNORE_INDEX), target)
        elif min_kept == 0 and form == "unbatched" and draw(st.booleans()):
            target = torch.full_like(target, IGNORE_INDEX)
        target = target.to(draw(st.sampled_from(TARGET_DTYPES)))
    layout = draw(st.sampled_from(LAYOUTS))
    counts = draw(counts_lists(num_classes))
    return Case(apply_layout(logits, layout), target, counts, form, kind, layout)


# Multi-hot targets

MULTIHOT_KINDS = ["hard", "hard_unknown", "soft"]
"""Integer 0/1 labels; the same with every fifth element ``IGNORE_INDEX`` (unknown); soft labels in [0, 1]."""

MULTIHOT_COUNTS = [90, 40, 12, 5, 2]
"""Positive training samples per class of the multi-label problem (of ``MULTIHOT_SAMPLES`` samples)."""

MULTIHOT_SAMPLES = 100


def make_multihot(
    form: str = "batched", kind: str = "hard", *, seed: int = 0, dtype: torch.dtype = torch.float64, scale: float = 3.0
) -> tuple[Tensor, Tensor]:
    """Logits of ``form`` (as ``make_inputs``) and a multi-hot target of ``kind`` of the same shape, from ``seed``.

    ``hard``: int64 0/1 (about a third positive); ``hard_unknown``: the same with every fifth element
    ``IGNORE_INDEX``; ``soft``: uniform in [0, 1] in ``dtype`` with a few exact 0 and 1.
    """
    g = torch.Generator().manual_seed(seed)
    shape = {"unbatched": (C,), "batched": (6, C), "spatial": (2, C, 3, 2)}[form]
    logits = (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    if kind == "soft":
        target = torch.rand(shape, generator=g, dtype=torch.float64)
        target.view(-1)[::4] = 1.0
        target.view(-1)[1::7] = 0.0
        return logits, target.to(dtype)
    target = (torch.rand(shape, generator=g) < 0.35).to(torch.int64)
    if kind == "hard_unknown":
        target.view(-1)[2::5] = IGNORE_INDEX
    elif kind != "hard":
        raise ValueError(f"unknown kind {kind!r}")
    return logits, target
