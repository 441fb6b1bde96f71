"""What both studies share: their common settings, the Fashion-MNIST data and the metrics of one run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from torch import Tensor, nn

from longtail_losses import paper
from longtail_losses.data import fashion_mnist_lt
from longtail_losses.metrics import classifier_weight_norms, per_class_accuracy, shot_accuracy

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
RESULTS = Path(__file__).resolve().parents[1] / "results"
NUM_CLASSES = 10
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics
SHOTS = ("many", "medium", "few", "all")


@dataclass(frozen=True)
class Settings:
    """The settings of both studies; the loss hyperparameters are the paper's (:data:`longtail_losses.paper.RECIPE`).

    ``max_count`` is the head class size of CIFAR-100-LT, so the paper's Many (> 100) / Medium / Few (< 20)
    thresholds apply unchanged; ``stage2_steps`` gives stage 2 the paper's lr x steps on CIFAR-100-LT.
    """

    imbalance_factors: tuple[float, ...] = (10, 100, 200)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_count: int = 500
    many_threshold: float = 100
    few_threshold: float = 20
    batch_size: int = paper.RECIPE.batch_size
    weight_decay: float = paper.RECIPE.weight_decay
    alpha: float = paper.RECIPE.alpha
    beta: float = paper.RECIPE.beta
    gamma: float = paper.RECIPE.gamma
    stage2_steps: int = 3_392
    quick: bool = False

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Any:
        """The settings written to a study's JSON (lists back to tuples)."""
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
        return cls(**values)


def criterion(
    row: str, counts: Tensor, classifier: nn.Module, settings: Settings, alpha: Optional[float] = None
) -> Any:
    """The loss of the paper's ``row`` with the study's hyperparameters (``alpha``: a sweep's, else the study's)."""
    return paper.criterion(
        row,
        counts,
        classifier,
        alpha=settings.alpha if alpha is None else alpha,
        beta=settings.beta,
        gamma=settings.gamma,
        weight_decay=settings.weight_decay,
        validate_args=False,
    )


def normalise(x: Tensor) -> Tensor:
    """Standardise pixels with the Fashion-MNIST training-set mean and std."""
    return (x - MEAN) / STD


_FULL: dict[tuple[str, bool], tuple[Tensor, Tensor]] = {}


def load_full(root: str, *, train: bool) -> tuple[Tensor, Tensor]:
    """All training (60,000) or test (10,000) images, normalised, with their labels; cached per process."""
    if (root, train) not in _FULL:
        x, y = fashion_mnist_lt(root, 1, train=train).as_tensors()
        _FULL[root, train] = (normalise(x), y)
    return _FULL[root, train]


def evaluate(
    logits: Tensor, targets: Tensor, train_counts: Tensor, weight: Tensor, settings: Settings
) -> dict[str, Any]:
    """Shot accuracies (thresholds of ``settings``), per-class accuracy and the classifier's per-class norms."""
    shots = shot_accuracy(
        logits, targets, train_counts, many_threshold=settings.many_threshold, few_threshold=settings.few_threshold
    )
    return {
        **shots,
        "per_class_accuracy": per_class_accuracy(logits, targets, NUM_CLASSES).tolist(),
        "weight_norms": classifier_weight_norms(weight).tolist(),
    }
