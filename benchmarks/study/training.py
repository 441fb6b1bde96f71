"""The network and the training recipe of both studies: one-stage SGD, and stage 2 as independent heads."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from longtail_losses import class_counts, paper
from longtail_losses.data import SeededBatchSampler
from longtail_losses.training import predict, train_one_epoch
from longtail_losses.twostage import extract_features, replace_classifier, train_classifier

from .common import NUM_CLASSES, Settings, criterion


class TinyCNN(nn.Module):
    """Two conv blocks and a 64-unit feature layer for 28x28 grey images; the classifier is ``fc``."""

    def __init__(self, num_classes: int = NUM_CLASSES, feature_dim: int = 64) -> None:
        super().__init__()
        block = lambda cin, cout: [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]  # noqa: E731
        self.features = nn.Sequential(
            *block(1, 8), nn.MaxPool2d(2), *block(8, 16), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 7 * 7, feature_dim, bias=False), nn.BatchNorm1d(feature_dim), nn.ReLU(),
        )  # fmt: skip
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

    def __init__(self, criteria: Sequence[Callable[[Tensor, Tensor], Tensor]], num_classes: int) -> None:
        self.criteria = list(criteria)
        self.num_classes = num_classes

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        """The summed loss."""
        chunks = logits.split(self.num_classes, dim=1)
        return torch.stack([crit(z, target) for crit, z in zip(self.criteria, chunks)]).sum()


def logits_of(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 2000) -> Tensor:
    """Eval-mode logits of ``model`` on ``x``, in chunks (:func:`~longtail_losses.training.predict`)."""
    return predict(model, [(x[i : i + chunk], y[i : i + chunk]) for i in range(0, len(y), chunk)])[0]


def train_sgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss: Any,
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
        batches = ((x[i], y[i]) for i in map(torch.tensor, sampler))
        train_one_epoch(model, batches, loss, optimizer, scheduler=scheduler)
    return time.perf_counter() - start


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
    """Stage 2: freeze the stage-1 ``model`` (eval mode), cache its features, train one head per ``(row, alpha)``.

    The heads start from one new 10-way ``fc`` drawn after ``torch.manual_seed(init_seed)`` and are trained
    together on the cached features of ``review``, each with the paper's loss of its row (class counts of
    ``review``), for about ``settings.stage2_steps`` steps: SGD with momentum, cosine to 0, seeded batches.
    Returns the heads, their test logits, the counts of ``review``, the epochs and steps, and the seconds.
    """
    start = time.perf_counter()
    torch.manual_seed(init_seed)
    init = {k: v.clone() for k, v in replace_classifier(model, NUM_CLASSES, classifier_attr="fc").state_dict().items()}
    feats, labels = extract_features(model, review, classifier_attr="fc", batch_size=1000)
    test_feats, _ = extract_features(model, test, classifier_attr="fc", batch_size=2000)
    extract_seconds, start = time.perf_counter() - start, time.perf_counter()
    counts = class_counts(labels, num_classes=NUM_CLASSES)
    heads = [nn.Linear(feats.shape[1], NUM_CLASSES) for _ in specs]
    for head in heads:
        head.load_state_dict(init)
    criteria = [criterion(row, counts, h, settings, a) for (row, a), h in zip(specs, heads)]
    steps_per_epoch = len(SeededBatchSampler(len(labels), settings.batch_size, seed=seed))
    epochs = max(1, round(settings.stage2_steps / steps_per_epoch))
    train_classifier(
        Heads(heads), feats, labels, SumOfLosses(criteria, NUM_CLASSES), epochs=epochs,
        batch_size=settings.batch_size, lr=lr, momentum=paper.RECIPE.momentum, scheduler="cosine", seed=seed,
    )  # fmt: skip
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = [h(test_feats) for h in heads]
    return {
        "heads": heads,
        "logits": logits,
        "counts": counts,
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "extract_seconds": extract_seconds,
        "train_seconds": train_seconds,
    }
