"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

betas = st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]) | st.floats(0.0, 0.9999)
gammas = st.sampled_from([0.0, 0.5, 1.0, 2.0]) | st.floats(0.0, 5.0)
alphas = st.sampled_from([0.0, 0.1, 0.5, 1.0]) | st.floats(0.0, 1.0)
reductions = st.sampled_from(["none", "mean", "sum"])


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
        labels = [-100 if m else y for m, y in zip(mask, labels)]
    return (
        torch.tensor(logits, dtype=torch.float64).reshape(num_samples, num_classes),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(counts, dtype=torch.int64),
    )
