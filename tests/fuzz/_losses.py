"""Every public loss, described once for the fuzz tests: how to build it, call it, and draw its hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests.inputs import alphas, betas, gammas


def classifier_of(num_classes: int) -> Tensor:
    """A fixed classifier weight with one row per class, for BWLM."""
    return torch.linspace(-1.0, 1.0, num_classes * 3, dtype=torch.float64).reshape(num_classes, 3)


def _num_classes(counts: Any) -> int:
    """The classes of ``counts``, or 3 for the malformed counts the validation tests pass (they must be refused)."""
    try:
        return len(counts)
    except TypeError:
        return 3


@dataclass
class LossSpec:
    """One public loss: ``module(counts, hyper, options)``, ``functional(logits, target, counts, hyper, options)``.

    ``hyper`` draws the hyperparameters given the number of classes; ``probs`` says whether probability targets
    (and ``label_smoothing``) are accepted; ``shift_invariant`` whether adding a constant to every logit of a
    sample leaves the loss unchanged.
    """

    name: str
    module: Callable[[list[int], dict[str, Any], dict[str, Any]], nn.Module]
    functional: Callable[..., Tensor]
    hyper: Callable[[int], st.SearchStrategy[dict[str, Any]]]
    probs: bool = True
    shift_invariant: bool = False

    def penalty(self, counts: list[int], hyper: dict[str, Any]) -> float:
        """The penalty added once to the reduced loss (BWLM's), 0 for the others."""
        if self.name != "bwlm":
            return 0.0
        return 0.5 * hyper["weight_decay"] * float(classifier_of(len(counts)).pow(2).sum())

    def mean_divisor(self, target: Tensor, kept: Tensor, hyper: dict[str, Any]) -> float:
        """What 'mean' divides the sum by: kept samples, or their class weights (LDAM, class indices)."""
        weights = hyper.get("class_weights")
        if weights is None or target.is_floating_point():
            return float(kept.sum())
        w = torch.as_tensor(weights, dtype=torch.float64)
        return float(w[target[kept].long()].sum())


def _no_hyper(num_classes: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.just({})


def _finite(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _ldam_hyper(num_classes: int) -> st.SearchStrategy[dict[str, Any]]:
    weight = _finite(0.0, 10.0)
    weights = st.none() | st.lists(weight, min_size=num_classes, max_size=num_classes)
    return st.fixed_dictionaries(
        {"max_margin": _finite(0.0, 1.0), "scale": st.sampled_from([1.0, 30.0]) | _finite(0.1, 50.0)},
        optional={"class_weights": weights},
    )


def _eqlv2_hyper(num_classes: int) -> st.SearchStrategy[dict[str, Any]]:
    stats = st.lists(_finite(0.0, 1e3), min_size=num_classes, max_size=num_classes)
    return st.fixed_dictionaries(
        {"gamma": _finite(0.0, 20.0), "mu": _finite(0.0, 1.0), "alpha": _finite(0.0, 10.0)},
        optional={"stats": st.tuples(stats, stats)},
    )


def _eqlv2_functional(logits: Tensor, target: Tensor, counts: list[int], **kw: Any) -> Tensor:
    stats = kw.pop("stats", None)
    pos, neg = (None, None) if stats is None else (torch.tensor(stats[0]), torch.tensor(stats[1]))
    return LF.eqlv2_loss(logits, target, pos, neg, **kw)


def _eqlv2_module(counts: list[int], hyper: dict[str, Any], options: dict[str, Any]) -> nn.Module:
    hyper = dict(hyper)
    stats = hyper.pop("stats", None)
    module = ltl.EQLv2Loss(len(counts), **hyper, **options).eval()
    if stats is not None:
        module.pos_grad.copy_(torch.tensor(stats[0]))
        module.neg_grad.copy_(torch.tensor(stats[1]))
        module.num_updates.fill_(1)
    return module


SPECS = {
    spec.name: spec
    for spec in [
        LossSpec(
            "balanced_softmax",
            lambda n, h, o: ltl.BalancedSoftmax(n, **h, **o),
            LF.balanced_softmax_loss,
            _no_hyper,
            shift_invariant=True,
        ),
        LossSpec(
            "logit_adjusted",
            lambda n, h, o: ltl.LogitAdjustedLoss(n, **h, **o),
            LF.logit_adjusted_loss,
            lambda c: st.fixed_dictionaries({"tau": st.sampled_from([0.0, 1.0]) | _finite(-3.0, 3.0)}),
            shift_invariant=True,
        ),
        LossSpec(
            "class_balanced_focal",
            lambda n, h, o: ltl.ClassBalancedFocal(n, **h, **o),
            LF.class_balanced_focal_loss,
            lambda c: st.fixed_dictionaries({"beta": betas, "gamma": gammas}),
        ),
        LossSpec(
            "bfs",
            lambda n, h, o: ltl.BFS(n, **h, **o),
            LF.bfs_loss,
            lambda c: st.fixed_dictionaries({"alpha": alphas, "beta": betas, "gamma": gammas}),
        ),
        LossSpec(
            "bwlm",
            lambda n, h, o: ltl.BWLM(n, classifier=classifier_of(_num_classes(n)), **h, **o),
            lambda z, y, n, **kw: LF.bwlm_loss(z, y, n, classifier_of(_num_classes(n)), **kw),
            lambda c: st.fixed_dictionaries(
                {"alpha": alphas, "beta": betas, "gamma": gammas, "weight_decay": _finite(0.0, 1.0)}
            ),
        ),
        LossSpec(
            "ldam",
            lambda n, h, o: ltl.LDAMLoss(n, **h, **o),
            LF.ldam_loss,
            _ldam_hyper,
            shift_invariant=True,
        ),
        LossSpec(
            "seesaw",
            lambda n, h, o: ltl.SeesawLoss(len(n), initial_counts=n, **h, **o).eval(),
            LF.seesaw_loss,
            lambda c: st.fixed_dictionaries(
                {"p": _finite(0.0, 3.0), "q": _finite(0.0, 3.0), "eps": _finite(1e-4, 1.0)}
            ),
            probs=False,
            shift_invariant=True,
        ),
        LossSpec("eqlv2", _eqlv2_module, _eqlv2_functional, _eqlv2_hyper, probs=False),
    ]
}

NAMES = sorted(SPECS)
PROBS_NAMES = [name for name in NAMES if SPECS[name].probs]
