"""The two figures of a run: per-class accuracy (paper Fig. 7) and classifier weight norms (Fig. 5a)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def plot_outputs(results: dict[str, Any], out_dir: Path) -> list[str]:
    """Write ``per_class_accuracy.png`` (paper Fig. 7) and ``weight_norms.png`` (Fig. 5a); return their names.

    Classes are ordered by training count, descending (for CIFAR-LT this is the class index).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(results["data"]["train_counts"])
    order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
    x = list(range(len(order)))
    stages = [(name, s) for name, s in results["stages"].items() if s.get("test")]
    names = []

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, s in stages:
        acc = [s["test"]["per_class_accuracy"][c] for c in order]
        ax.plot(x, [float("nan") if a is None else 100 * a for a in acc], label=s.get("label", name), lw=1.2)
    ax.set_xlabel("class index (sorted by training samples, descending)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Per-class accuracy, {results['data']['name']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "per_class_accuracy.png", dpi=120)
    plt.close(fig)
    names.append("per_class_accuracy.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, s in results["stages"].items():
        if s.get("weight_norms"):
            ax.plot(x, [s["weight_norms"][c] for c in order], label=s.get("label", name), lw=1.2)
    ax.set_xlabel("class index (sorted by training samples, descending)")
    ax.set_ylabel("classifier weight norm")
    ax2 = ax.twinx()
    ax2.plot(x, [int(counts[c]) for c in order], "k--", lw=1, label="training samples")
    ax2.set_ylabel("training samples")
    ax.set_title(f"Classifier weight norms, {results['data']['name']}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out_dir / "weight_norms.png", dpi=120)
    plt.close(fig)
    names.append("weight_norms.png")
    return names
