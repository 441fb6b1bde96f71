"""The network and the training recipe of both studies: one-stage SGD, and stage 2 as independent heads."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from longtail_losses import class_counts, paper
from longtail_losses.data import SeededBatchSampler
from longtail_losses.training import predict, train_one_epoch
from longtail_losses.twostage import extract_features, replace_classifier, train_classifier

from .common import NUM_CLASSES, Settings, criterion

Criterion = Callable[[Tensor, Tensor], Tensor]


class TinyCNN(nn.Module):
    """Two conv blocks and a 64-unit feature layer for 28x28 grey images; the classifier is ``fc``."""

    def __init__(self, num_classes: int = NUM_CLASSES, feature_dim: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(),
        )
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the classifier on the features."""
        return self.fc(self.features(x))


class Heads(nn.Module):
    """Independent linear classifiers on the same features; their logits side by side, shape (B, K * C)."""

    def __init__(self, heads: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of every head, concatenated along dim 1."""
        return torch.cat([h(x) for h in self.heads], dim=1)


class SumOfLosses:
    """Sum over heads of ``criteria[k](logits of head k, target)``: each head gets exactly its own gradient."""

    def __init__(self, criteria: Sequence[Criterion], num_classes: int) -> None:
        self.criteria = list(criteria)
        self.num_classes = num_classes

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        """The summed loss."""
        chunks = logits.split(self.num_classes, dim=1)
        return torch.stack([crit(z, target) for crit, z in zip(self.criteria, chunks)]).sum()


def batches(x: Tensor, y: Tensor, sampler: SeededBatchSampler) -> Iterator[tuple[Tensor, Tensor]]:
    """The ``(x, y)`` batches of ``sampler``'s indices."""
    for index in sampler:
        i = torch.tensor(index)
        yield x[i], y[i]


def logits_of(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 2000) -> Tensor:
    """Eval-mode logits of ``model`` on ``x``, in chunks (:func:`~longtail_losses.training.predict`)."""
    return predict(model, [(x[i : i + chunk], y[i : i + chunk]) for i in range(0, len(y), chunk)])[0]


def train_sgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss: Criterion,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    before_epoch: Optional[Callable[[int], None]] = None,
) -> float:
    """SGD with momentum, cosine lr per step to 0, seeded batches; ``before_epoch(e)`` runs first (DRW). Seconds."""
    sampler = SeededBatchSampler(len(y), batch_size, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=paper.RECIPE.momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(sampler))
    start = time.perf_counter()
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        sampler.set_epoch(epoch)
        train_one_epoch(model, batches(x, y, sampler), loss, optimizer, scheduler=scheduler)
    return time.perf_counter() - start


def frozen_features(
    model: nn.Module, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], seed: int
) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
    """Freeze the stage-1 ``model`` (eval mode) with a new 10-way ``fc`` drawn after ``torch.manual_seed(seed)``.

    Returns the new classifier's initial state and the cached features and labels of ``train`` and the
    features of ``test``.
    """
    torch.manual_seed(seed)
    new_fc = replace_classifier(model, NUM_CLASSES, classifier_attr="fc")
    init = {k: v.clone() for k, v in new_fc.state_dict().items()}
    feats, labels = extract_features(model, train, classifier_attr="fc", batch_size=1000)
    test_feats, _ = extract_features(model, test, classifier_attr="fc", batch_size=2000)
    return init, feats, labels, test_feats


def train_heads(
    feats: Tensor,
    labels: Tensor,
    init: dict[str, Tensor],
    specs: Sequence[tuple[str, Optional[float]]],
    settings: Settings,
    *,
    lr: float,
    seed: int,
) -> tuple[list[nn.Linear], int, int]:
    """Stage 2: one head per ``(row, alpha)`` of ``specs``, all from ``init``, trained together on cached features.

    Each head gets the paper's loss of its row (:func:`.common.criterion`, with the class counts of ``labels``)
    for about ``settings.stage2_steps`` steps: SGD with momentum, cosine to 0, seeded batches. Returns the heads
    and the number of epochs and of steps per epoch.
    """
    counts = class_counts(labels, num_classes=NUM_CLASSES)
    heads = []
    for _ in specs:
        head = nn.Linear(feats.shape[1], NUM_CLASSES)
        head.load_state_dict(init)
        heads.append(head)
    criteria = [criterion(row, counts, h, settings, a) for (row, a), h in zip(specs, heads)]
    steps_per_epoch = len(SeededBatchSampler(len(labels), settings.batch_size, seed=seed))
    epochs = max(1, round(settings.stage2_steps / steps_per_epoch))
    train_classifier(
        Heads(heads),
        feats,
        labels,
        SumOfLosses(criteria, NUM_CLASSES),
        epochs=epochs,
        batch_size=settings.batch_size,
        lr=lr,
        momentum=paper.RECIPE.momentum,
        scheduler="cosine",
        seed=seed,
    )
    return heads, epochs, steps_per_epoch


def run_stage2(
    model: nn.Module,
    review: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    specs: Sequence[tuple[str, Optional[float]]],
    settings: Settings,
    *,
    lr: float,
    seed: int,
    init_seed: int,
) -> dict[str, Any]:
    """:func:`frozen_features` then :func:`train_heads`.

    Returns the heads, their test logits, the class counts of ``review``, the epochs and steps of stage 2 and
    the seconds of the feature extraction and of the training.
    """
    start = time.perf_counter()
    init, feats, labels, test_feats = frozen_features(model, review, test, init_seed)
    extract_seconds = time.perf_counter() - start
    start = time.perf_counter()
    heads, epochs, steps_per_epoch = train_heads(feats, labels, init, specs, settings, lr=lr, seed=seed)
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = [h(test_feats) for h in heads]
    return {
        "heads": heads,
        "logits": logits,
        "counts": class_counts(labels, num_classes=NUM_CLASSES),
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "extract_seconds": extract_seconds,
        "train_seconds": train_seconds,
    }
