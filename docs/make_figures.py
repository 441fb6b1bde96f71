"""Figures of the documentation, computed with the library at build time.

Each public function draws one figure with matplotlib; the pages call them through
``.. plot:: make_figures.py <function>`` (``matplotlib.sphinxext.plot_directive``), so every plot in the docs is
regenerated from the code on every build. Run ``python docs/make_figures.py OUTDIR`` to write them all as PNG.

Everything here is fast (the whole set takes a few seconds on a laptop CPU): the only training is a small
two-stage run on scikit-learn's bundled digits, cached for the figures that share it.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn

import longtail_losses as ltl
from longtail_losses import data, metrics, training, twostage
from longtail_losses import functional as LF

PAPER_IFS = (200, 100, 50, 10)

# The models here are tiny: extra intra-op threads only add contention (and slow a shared CI machine down).
torch.set_num_threads(1)


def longtail_profiles() -> None:
    """Class counts of CIFAR-100-LT for the paper's four imbalance factors (paper Fig. 3 left, Table 1)."""
    _, ax = plt.subplots()
    for factor in PAPER_IFS:
        counts = data.longtail_counts(100, 500, factor)
        ax.plot(counts, label=f"IF = {factor}: {sum(counts):,} images, min {counts[-1]}")
    ax.set_yscale("log")
    ax.set_xlabel("class index (sorted by training count)")
    ax.set_ylabel("training images")
    ax.axhline(100, color="0.5", lw=0.8, ls="--")
    ax.axhline(20, color="0.5", lw=0.8, ls="--")
    ax.text(99, 105, "Many > 100", ha="right", va="bottom", fontsize=8, color="0.4")
    ax.text(99, 19, "Few < 20", ha="right", va="top", fontsize=8, color="0.4")
    ax.set_title("CIFAR-100-LT: longtail_counts(100, 500, IF)")
    ax.legend(fontsize=8)


def class_balanced_weight_curves() -> None:
    """Class-balanced weights (normalised to sum to C) on CIFAR-100-LT, IF = 100, for several beta."""
    counts = torch.tensor(data.longtail_counts(100, 500, 100))
    _, ax = plt.subplots()
    for beta in (0.9, 0.99, 0.999, 0.9999):
        ax.plot(LF.class_balanced_weights(counts, beta=beta), label=f"beta = {beta}")
    inverse = 1.0 / counts.double()
    ax.plot(inverse * len(counts) / inverse.sum(), "k--", lw=1, label="inverse frequency (beta -> 1)")
    ax.set_yscale("log")
    ax.set_xlabel("class index (500 down to 5 training images)")
    ax.set_ylabel("weight $w_j$ (mean 1)")
    ax.set_title("class_balanced_weights on CIFAR-100-LT, IF = 100")
    ax.legend(fontsize=8)


def focal_term() -> None:
    """The per-class sigmoid focal term against the probability of the correct binary answer."""
    p = torch.linspace(1e-3, 1.0, 400)
    _, ax = plt.subplots()
    for gamma in (0.0, 0.5, 1.0, 2.0):
        ax.plot(p, -((1 - p) ** gamma) * torch.log(p), label=f"gamma = {gamma}")
    ax.set_xlabel(r"$p^t_j$ (probability of the correct yes/no answer for class $j$)")
    ax.set_ylabel(r"$-(1-p^t_j)^\gamma \log p^t_j$")
    ax.set_ylim(0, 4)
    ax.set_title("Focal term of ClassBalancedFocal (gamma = 0: binary cross-entropy)")
    ax.legend()


def alpha_mixture() -> None:
    """BFS on random logits as alpha moves from balanced softmax (0) to class-balanced focal (1), CIFAR-100-LT."""
    counts = torch.tensor(data.longtail_counts(100, 500, 100))
    torch.manual_seed(0)
    logits = torch.randn(256, 100)
    alphas = torch.linspace(0, 1, 21)
    _, ax = plt.subplots()
    for label, cls in (("head class 0 (500 images)", 0), ("tail class 99 (5 images)", 99)):
        target = torch.full((256,), cls)
        values = [float(LF.bfs_loss(logits, target, counts, alpha=float(a))) for a in alphas]
        ax.plot(alphas, values, marker=".", label=label)
    ax.set_yscale("log")
    ax.axvline(0.1, color="0.5", ls="--", lw=0.8)
    ax.text(0.11, ax.get_ylim()[1] * 0.8, "default alpha = 0.1", fontsize=8, va="top", color="0.4")
    ax.set_xlabel("alpha")
    ax.set_ylabel("mean loss, random logits N(0, 1)")
    ax.set_title("bfs_loss = alpha * CB focal + (1 - alpha) * balanced softmax")
    ax.legend(fontsize=8)


class _DigitsNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU())
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@functools.lru_cache(maxsize=1)
def digits_two_stage(imbalance_factor: float = 20, stage1_epochs: int = 30, stage2_epochs: int = 100) -> dict[str, Any]:
    """Run naive training and the two-stage method with several stage-2 losses on Digits-LT; cached."""
    train, test = data.digits_lt(imbalance_factor), data.digits_lt(imbalance_factor, train=False)
    x, y = train.as_tensors()
    x_test, y_test = test.as_tensors()
    counts = ltl.class_counts(train)
    results: dict[str, Any] = {"counts": counts}

    def fit(model: nn.Module, idx: torch.Tensor, epochs: int, weight_decay: float) -> None:
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x[idx], y[idx]), batch_size=64, shuffle=True
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
        for _ in range(epochs):
            training.train_one_epoch(model, loader, nn.CrossEntropyLoss(), opt, scheduler=sched)

    def evaluate(name: str, model: nn.Module) -> None:
        logits, _ = training.predict(model, [(x_test, y_test)])
        results[name] = {
            "shots": metrics.shot_accuracy(logits, y_test, counts),
            "per_class": metrics.per_class_accuracy(logits, y_test, len(counts)),
            "norms": metrics.classifier_weight_norms(model.fc),
        }

    torch.manual_seed(0)
    naive = _DigitsNet(10)
    fit(naive, torch.arange(len(y)), stage1_epochs, 0.0)
    evaluate("naive (CE, one stage)", naive)

    stage1_idx, stage2_idx = twostage.data_balanced_review(y, seed=0)
    torch.manual_seed(0)
    stage1 = _DigitsNet(10)
    fit(stage1, stage1_idx, stage1_epochs, 5e-3)
    state = {k: v.clone() for k, v in stage1.state_dict().items()}
    stage2_counts = ltl.class_counts(y[stage2_idx], num_classes=10)  # the label distribution stage 2 trains on
    criteria = {
        "+CE": lambda fc: nn.CrossEntropyLoss(),
        "+BFS": lambda fc: ltl.BFS(stage2_counts),
        "+BWLM": lambda fc: ltl.BWLM(stage2_counts, classifier=fc, weight_decay=5e-3),
    }
    for name, make in criteria.items():
        model = _DigitsNet(10)
        model.load_state_dict(state)
        torch.manual_seed(0)
        fc = twostage.replace_classifier(model, 10)
        feats, labels = twostage.extract_features(model, (x[stage2_idx], y[stage2_idx]))
        twostage.train_classifier(fc, feats, labels, make(fc), epochs=stage2_epochs, lr=0.05)
        evaluate(name, model)
    return results


def weight_norms() -> None:
    """Per-class classifier weight norms on Digits-LT (IF = 20), naive vs the two-stage method (paper Fig. 5a)."""
    results = digits_two_stage()
    counts = results["counts"]
    _, ax = plt.subplots()
    for name in ("naive (CE, one stage)", "+CE", "+BFS", "+BWLM"):
        ax.plot(results[name]["norms"], marker="o", ms=3, label=name)
    ax.set_xlabel("class (sorted by training count: " + ", ".join(str(int(c)) for c in counts) + ")")
    ax.set_ylabel(r"$\|\theta_j\|_2$")
    ax.set_title("classifier_weight_norms on Digits-LT, IF = 20")
    ax.legend(fontsize=8)


def per_class_accuracy() -> None:
    """Per-class test accuracy on Digits-LT (IF = 20), naive vs the two-stage method (paper Fig. 7)."""
    results = digits_two_stage()
    _, ax = plt.subplots()
    for name in ("naive (CE, one stage)", "+CE", "+BFS", "+BWLM"):
        shots = results[name]["shots"]
        ax.plot(100 * results[name]["per_class"], marker="o", ms=3, label=f"{name}: All {100 * shots['all']:.1f}")
    ax.set_xlabel("class (sorted by training count)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("per_class_accuracy on Digits-LT, IF = 20 (50 test images per class)")
    ax.legend(fontsize=8)


ALL = (
    longtail_profiles,
    class_balanced_weight_curves,
    focal_term,
    alpha_mixture,
    weight_norms,
    per_class_accuracy,
)


def main(outdir: str) -> None:
    """Write every figure as ``OUTDIR/<name>.png``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for draw in ALL:
        draw()
        plt.savefig(out / f"{draw.__name__}.png", dpi=110, bbox_inches="tight")
        plt.close("all")
        print(out / f"{draw.__name__}.png")


# matplotlib's plot directive runs this file with __name__ == "__main__" (and sys.argv[0] set to it) too; only a
# command line outside Sphinx writes files.
if __name__ == "__main__" and "sphinx" not in sys.modules:
    main(sys.argv[1] if len(sys.argv) > 1 else "figures")
