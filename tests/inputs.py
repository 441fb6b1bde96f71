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
