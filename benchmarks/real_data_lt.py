"""Evidence on real data: do the BWLM paper's claims hold on Fashion-MNIST-LT? A seeded, multi-seed study.

One command regenerates everything (JSON of every run, a Markdown report with the verdict per claim, PNG plots)::

    python benchmarks/real_data_lt.py                  # full study: IF 10/100/200, 5 seeds (CPU, ~15-30 min)
    python benchmarks/real_data_lt.py --quick          # smoke test: IF 100, 2 seeds, few epochs (CI)

Design (chosen once, before any result was seen; the same recipe for every row):

* Data: Fashion-MNIST from ``--root`` (default: Debian's ``dataset-fashion-mnist`` in
  ``/usr/share/datasets/fashion-mnist``), long-tailed by :func:`longtail_losses.data.fashion_mnist_lt` with
  ``max_count=500`` per class, the class size of CIFAR-100-LT, so the paper's Many (> 100) / Medium (20-100) /
  Few (< 20) thresholds apply unchanged (scale factor 500/500 = 1). The subsample depends on the seed.
  Evaluation on the full balanced 10,000-image test set.
* Network: a tiny CNN for 28x28 images (two conv-BN-ReLU-maxpool blocks with 8 and 16 channels, a 64-unit
  linear-BN-ReLU feature layer, and a linear classifier ``fc``).
* One-stage ("naive") and stage-1 training: SGD, momentum 0.9, batch 64, lr 0.05 with per-step cosine decay to
  0 over 30 epochs, weight decay 5e-3 (the paper also uses weight decay in its first stage; value of
  Alshammari et al.), cross-entropy, no augmentation. The naive model sees the whole long-tailed set; stage 1
  sees the head half (data balanced review, eq. 2), with a 10-way classifier.
* Stage 2 (two-stage rows): the stage-1 backbone is frozen in eval mode
  (:func:`~longtail_losses.twostage.replace_classifier`), its features on the review set and on the test set
  are cached once (:func:`~longtail_losses.twostage.extract_features`), and a new 10-way linear classifier is
  trained on the cached features with :func:`~longtail_losses.twostage.train_classifier`: SGD, momentum 0.9,
  batch 64, cosine decay to 0, with the paper's optimisation length on CIFAR-100-LT IF=100 in lr x steps:
  the paper runs 320 epochs x 53 batches (3,346 images) = 16,960 steps at lr 0.01, i.e. lr x T = 169.6; here
  lr 0.05 (the stage-1 lr) for 3,392 steps, five times cheaper on a 2-core CPU, so that the classifier weight
  decay acts as strongly as in the paper (lr x lambda x T / 2 = 0.42 e-folds). (The paper's 320 *epochs* of our
  much smaller review sets would be 1,920-5,760 steps at lr 0.01, a 3-9x weaker decay.) Every row of one
  (IF, seed) starts from the same initial classifier and sees the same batches (paired design). The losses get
  the class counts of the review set they are trained on. CB: ``ClassBalancedFocal(beta=0.9999, gamma=1)``;
  BS: ``BalancedSoftmax``; BFS/BWLM: ``alpha=0.1`` (the paper's default), same beta/gamma. The "W" rows add
  the classifier-norm penalty ``LF.classifier_norm_penalty(fc.weight, weight_decay=5e-3)`` (BWLM's in-loss
  convention, gradient ``lambda * theta``) with the same lambda = 5e-3 for CEW, CBW, BSW and BWLM; the plain
  rows have no decay at all.
* Alpha sweep (paper Fig. 4): BWLM with alpha = 0.1 ... 0.9 at IF = 100, same seeds and stage-1 models.
* Statistics: mean +- sample std over seeds; each claim is checked as paired differences over seeds (same
  data, stage-1 model and initial classifier), with a two-sided paired t-test at 5% (no correction for the
  number of comparisons). "Replicates": significant in the claimed direction; "contradicted": significant in
  the other; otherwise "not resolved at this scale".

Rows of several stage-2 losses are trained together as one module of independent heads whose loss is the sum of
the heads' losses: each head's gradient, momentum buffer, schedule and batches are exactly those of training it
alone, and the per-step overhead is paid once (``tests/test_real_data_lt.py`` checks the equivalence).

Parallelism: ``--jobs`` worker processes (default 2) with one intra-op thread each; one job is one
(imbalance factor, seed) pair. Every job is deterministic given its seed, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses import functional as LF
from longtail_losses.data import fashion_mnist_lt
from longtail_losses.metrics import classifier_weight_norms, per_class_accuracy, shot_accuracy
from longtail_losses.twostage import data_balanced_review, extract_features, replace_classifier, train_classifier
from longtail_losses.training import predict, train_one_epoch
from longtail_losses.data import SeededBatchSampler

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
RESULTS = Path(__file__).resolve().parent / "results"
STEM = "real_data_lt"
NUM_CLASSES = 10
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics
SHOTS = ("many", "medium", "few", "all")
STAGE2_ROWS = ("+CE", "+CB", "+BS", "+BFS", "+CEW", "+CBW", "+BSW", "+BWLM")
ROWS = ("naive", *STAGE2_ROWS)
T_CRIT_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class Recipe:
    """The study's settings; one recipe for every row, fixed before looking at any result."""

    imbalance_factors: tuple[float, ...] = (10, 100, 200)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_count: int = 500
    many_threshold: float = 100
    few_threshold: float = 20
    batch_size: int = 64
    stage1_epochs: int = 30
    stage1_lr: float = 0.05
    stage1_weight_decay: float = 5e-3
    stage2_steps: int = 3_392
    stage2_lr: float = 0.05
    weight_decay: float = 5e-3
    alpha: float = 0.1
    beta: float = 0.9999
    gamma: float = 1.0
    alpha_sweep: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    alpha_sweep_if: float = 100
    quick: bool = False


QUICK = Recipe(
    imbalance_factors=(100,), seeds=(0, 1), stage1_epochs=2, stage2_steps=150, alpha_sweep=(0.1, 0.5, 0.9), quick=True
)


# --------------------------------------------------------------------------------------------------------------------
# Model and training
# --------------------------------------------------------------------------------------------------------------------


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

    def __init__(self, criteria: Sequence[Callable[[Tensor, Tensor], Tensor]], num_classes: int) -> None:
        self.criteria = list(criteria)
        self.num_classes = num_classes

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        """The summed loss."""
        chunks = logits.split(self.num_classes, dim=1)
        return torch.stack([crit(z, target) for crit, z in zip(self.criteria, chunks)]).sum()


def with_penalty(criterion: Callable[[Tensor, Tensor], Tensor], head: nn.Linear, weight_decay: float) -> Any:
    """``criterion`` plus BWLM's classifier-norm penalty on ``head`` (the "W" of CEW, CBW, BSW)."""

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        return criterion(logits, target) + LF.classifier_norm_penalty(head.weight, weight_decay=weight_decay)

    return loss


def stage2_criterion(row: str, head: nn.Linear, counts: Tensor, recipe: Recipe, alpha: Optional[float] = None) -> Any:
    """The loss of a two-stage row (``counts``: class counts of the set the classifier is trained on)."""
    a = recipe.alpha if alpha is None else alpha
    base = {
        "CE": F.cross_entropy,
        "CB": ltl.ClassBalancedFocal(counts, beta=recipe.beta, gamma=recipe.gamma, validate_args=False),
        "BS": ltl.BalancedSoftmax(counts, validate_args=False),
        "BFS": ltl.BFS(counts, alpha=a, beta=recipe.beta, gamma=recipe.gamma, validate_args=False),
    }
    name = row.lstrip("+")
    if name == "BWLM":
        return ltl.BWLM(
            counts,
            classifier=head,
            alpha=a,
            beta=recipe.beta,
            gamma=recipe.gamma,
            weight_decay=recipe.weight_decay,
            validate_args=False,
        )
    if name.endswith("W"):
        return with_penalty(base[name[:-1]], head, recipe.weight_decay)
    return base[name]


def batches(x: Tensor, y: Tensor, sampler: SeededBatchSampler) -> Any:
    for index in sampler:
        i = torch.tensor(index)
        yield x[i], y[i]


def train_cnn(model: nn.Module, x: Tensor, y: Tensor, recipe: Recipe, seed: int) -> float:
    """One-stage / stage-1 recipe: SGD(0.9), cosine lr per step to 0, weight decay, cross-entropy."""
    sampler = SeededBatchSampler(len(y), recipe.batch_size, seed=seed)
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.stage1_lr, momentum=0.9, weight_decay=recipe.stage1_weight_decay
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.stage1_epochs * len(sampler))
    start = time.perf_counter()
    for epoch in range(recipe.stage1_epochs):
        sampler.set_epoch(epoch)
        train_one_epoch(model, batches(x, y, sampler), F.cross_entropy, opt, scheduler=sched)
    return time.perf_counter() - start


def evaluate(logits: Tensor, targets: Tensor, train_counts: Tensor, weight: Tensor, recipe: Recipe) -> dict[str, Any]:
    shots = shot_accuracy(
        logits, targets, train_counts, many_threshold=recipe.many_threshold, few_threshold=recipe.few_threshold
    )
    return {
        **shots,
        "per_class_accuracy": per_class_accuracy(logits, targets, NUM_CLASSES).tolist(),
        "weight_norms": classifier_weight_norms(weight).tolist(),
    }


_TEST: dict[str, tuple[Tensor, Tensor]] = {}


def normalise(x: Tensor) -> Tensor:
    return (x - MEAN) / STD


def load_test(root: str) -> tuple[Tensor, Tensor]:
    if root not in _TEST:
        x, y = fashion_mnist_lt(root, 1, train=False).as_tensors()
        _TEST[root] = (normalise(x), y)
    return _TEST[root]


def run_job(root: str, imbalance_factor: float, seed: int, recipe: Recipe) -> dict[str, Any]:
    """Naive model, stage 1 and every stage-2 row for one (IF, seed); deterministic given the seed."""
    torch.set_num_threads(1)
    job_start, cpu_start = time.perf_counter(), time.process_time()
    train = fashion_mnist_lt(root, imbalance_factor, train=True, max_count=recipe.max_count, seed=seed)
    x, y = train.as_tensors()
    x = normalise(x)
    x_test, y_test = load_test(root)
    data_seconds = time.perf_counter() - job_start
    counts = ltl.class_counts(y, num_classes=NUM_CLASSES)
    base_seed = 1000 * seed + int(imbalance_factor)
    runs: list[dict[str, Any]] = []

    # One-stage ("naive") cross-entropy on the whole long-tailed set.
    torch.manual_seed(base_seed)
    naive = TinyCNN()
    naive_seconds = train_cnn(naive, x, y, recipe, seed)
    logits, targets = predict(
        naive, [(x_test[i : i + 2000], y_test[i : i + 2000]) for i in range(0, len(y_test), 2000)]
    )
    runs.append({"row": "naive", **evaluate(logits, targets, counts, naive.fc.weight, recipe)})

    # Stage 1: cross-entropy on the head classes (data balanced review, eq. 2).
    stage1_idx, stage2_idx = data_balanced_review(y, seed=seed)
    torch.manual_seed(base_seed + 1)
    model = TinyCNN()
    stage1_seconds = train_cnn(model, x[stage1_idx], y[stage1_idx], recipe, seed)

    # Stage 2: frozen backbone (eval mode), new classifier, features cached once.
    start = time.perf_counter()
    torch.manual_seed(base_seed + 2)
    new_fc = replace_classifier(model, NUM_CLASSES, attr="fc")
    init = {k: v.clone() for k, v in new_fc.state_dict().items()}
    feats, labels = extract_features(model, (x[stage2_idx], y[stage2_idx]), classifier_attr="fc", batch_size=1000)
    test_feats, test_labels = extract_features(model, (x_test, y_test), classifier_attr="fc", batch_size=2000)
    extract_seconds = time.perf_counter() - start
    counts2 = ltl.class_counts(labels, num_classes=NUM_CLASSES)

    specs: list[tuple[str, Optional[float]]] = [(row, None) for row in STAGE2_ROWS]
    if imbalance_factor == recipe.alpha_sweep_if:
        specs += [("+BWLM", a) for a in recipe.alpha_sweep if a != recipe.alpha]
    heads = []
    for _ in specs:
        head = nn.Linear(new_fc.in_features, NUM_CLASSES)
        head.load_state_dict(init)
        heads.append(head)
    criteria = [stage2_criterion(row, h, counts2, recipe, a) for (row, a), h in zip(specs, heads)]
    steps_per_epoch = len(SeededBatchSampler(len(labels), recipe.batch_size, seed=seed))
    epochs2 = max(1, round(recipe.stage2_steps / steps_per_epoch))
    start = time.perf_counter()
    train_classifier(
        Heads(heads),
        feats,
        labels,
        SumOfLosses(criteria, NUM_CLASSES),
        epochs=epochs2,
        batch_size=recipe.batch_size,
        lr=recipe.stage2_lr,
        momentum=0.9,
        scheduler="cosine",
        seed=seed,
    )
    stage2_seconds = time.perf_counter() - start
    alpha_runs = []
    with torch.no_grad():
        for (row, a), head in zip(specs, heads):
            record = {"row": row, **evaluate(head(test_feats), test_labels, counts, head.weight, recipe)}
            if a is None:
                runs.append(record)
            if row == "+BWLM" and imbalance_factor == recipe.alpha_sweep_if:
                alpha_runs.append({**record, "alpha": recipe.alpha if a is None else a})
    alpha_runs.sort(key=lambda r: r["alpha"])
    for r in (*runs, *alpha_runs):
        r.update(imbalance_factor=imbalance_factor, seed=seed)
    return {
        "job": {
            "imbalance_factor": imbalance_factor,
            "seed": seed,
            "train_counts": counts.tolist(),
            "stage1_samples": len(stage1_idx),
            "stage2_counts": counts2.tolist(),
            "stage2_epochs": epochs2,
            "stage2_steps": epochs2 * steps_per_epoch,
            "stage2_heads": len(heads),
            "seconds": {
                "data": data_seconds,
                "naive": naive_seconds,
                "stage1": stage1_seconds,
                "extract": extract_seconds,
                "stage2_all_heads": stage2_seconds,
                "job": time.perf_counter() - job_start,
                "job_cpu": time.process_time() - cpu_start,
            },
        },
        "runs": runs,
        "alpha_runs": alpha_runs,
    }


# --------------------------------------------------------------------------------------------------------------------
# Statistics and claims
# --------------------------------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = [float(x) for x in values if not math.isnan(float(x))]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


def t_critical(df: int) -> float:
    return T_CRIT_975.get(df, 2.228 if df <= 10 else 1.96)


def norm_gap(record: dict[str, Any], counts: Sequence[int], recipe: Recipe) -> tuple[float, float]:
    """(Many/Few ratio of mean class-weight norms, its |log|): Fig. 5a's head-to-tail gap."""
    norms = record["weight_norms"]
    many = [n for n, c in zip(norms, counts) if c > recipe.many_threshold]
    few = [n for n, c in zip(norms, counts) if c < recipe.few_threshold]
    if not many or not few:
        return math.nan, math.nan
    ratio = (sum(many) / len(many)) / (sum(few) / len(few))
    return ratio, abs(math.log(ratio))


class Table:
    """Per-seed values by (row, metric, IF), in seed order; metrics are in percent (accuracies) or ratios."""

    def __init__(self, results: dict[str, Any], recipe: Recipe) -> None:
        self.recipe = recipe
        self.seeds = list(recipe.seeds)
        counts = {(j["imbalance_factor"], j["seed"]): j["train_counts"] for j in results["jobs"]}
        self.values: dict[tuple[str, str, float], dict[int, float]] = {}
        for r in results["runs"] + [{**a, "row": f"alpha={a['alpha']:g}"} for a in results["alpha_runs"]]:
            key = (r["imbalance_factor"], r["seed"])
            ratio, gap = norm_gap(r, counts[key], recipe)
            metrics = {k: 100.0 * r[k] for k in SHOTS}
            metrics.update(norm_ratio=ratio, norm_gap=gap)
            for metric, value in metrics.items():
                self.values.setdefault((r["row"], metric, r["imbalance_factor"]), {})[r["seed"]] = value

    def get(self, row: str, metric: str, imbalance_factor: float) -> list[float]:
        """Per-seed values of ``metric`` for ``row`` at ``imbalance_factor`` (``nan`` where missing)."""
        found = self.values.get((row, metric, imbalance_factor), {})
        return [found.get(s, math.nan) for s in self.seeds]

    def has(self, row: str, imbalance_factor: float) -> bool:
        """Whether ``row`` was run at ``imbalance_factor``."""
        return (row, "all", imbalance_factor) in self.values


@dataclass
class Comparison:
    """A claimed inequality ``a > b`` (or ``a`` not worse than ``b``), tested on paired per-seed values."""

    label: str
    a: list[float]
    b: list[float]
    kind: str = "greater"  # or "not_worse"
    unit: str = "pt"
    stats: dict[str, Any] = field(default_factory=dict)

    def evaluate(self) -> dict[str, Any]:
        """Paired statistics and the verdict."""
        d = [x - y for x, y in zip(self.a, self.b) if not (math.isnan(x) or math.isnan(y))]
        n = len(d)
        m, s = mean_std(d)
        if n < 2:
            t = math.nan
        elif s == 0.0:
            t = math.copysign(math.inf, m) if m != 0 else 0.0
        else:
            t = m / (s / math.sqrt(n))
        crit = t_critical(n - 1) if n >= 2 else math.nan
        if n < 2:
            verdict = "n/a"
        elif t >= crit:
            verdict = "replicates"
        elif t <= -crit:
            verdict = "contradicted"
        elif self.kind == "not_worse":
            verdict = "consistent (no significant drop)"
        else:
            verdict = "not resolved"
        wins = sum(x > 0 for x in d)
        self.stats = {
            "label": self.label,
            "kind": self.kind,
            "unit": self.unit,
            "n": n,
            "mean_diff": m,
            "std_diff": s,
            "t": t,
            "t_crit": crit,
            "wins": wins,
            "a_mean_std": mean_std(self.a),
            "b_mean_std": mean_std(self.b),
            "verdict": verdict,
        }
        return self.stats


@dataclass
class Claim:
    """One of the paper's claims and the paired comparisons that test it here."""

    key: str
    source: str
    text: str
    comparisons: list[Comparison]

    def evaluate(self) -> dict[str, Any]:
        """Evaluate every comparison and combine their verdicts."""
        stats = [c.evaluate() for c in self.comparisons]
        verdicts = [s["verdict"] for s in stats if s["verdict"] != "n/a"]
        ok = [v for v in verdicts if v == "replicates" or v.startswith("consistent")]
        bad = [v for v in verdicts if v == "contradicted"]
        if not verdicts:
            overall = "not tested at this configuration"
        elif len(ok) == len(verdicts):
            overall = "replicates"
        elif bad and ok:
            overall = "mixed: partly replicates, partly contradicted"
        elif bad:
            overall = "does not replicate"
        elif ok:
            overall = "partly replicates (rest not resolved)"
        else:
            overall = "not resolved at this scale"
        return {
            "key": self.key,
            "source": self.source,
            "text": self.text,
            "verdict": overall,
            "counts": {"replicates": len(ok), "contradicted": len(bad), "total": len(verdicts)},
            "comparisons": stats,
        }


def build_claims(tab: Table) -> list[Claim]:
    r = tab.recipe
    ifs = [f for f in r.imbalance_factors]
    high = [f for f in ifs if f >= 100]
    g = tab.get

    def cmp(a: str, b: str, metric: str, f: float, kind: str = "greater") -> Comparison:
        return Comparison(f"{a} > {b}, {metric}, IF={f:g}", g(a, metric, f), g(b, metric, f), kind)

    def present(*rows: str) -> Callable[[float], bool]:
        return lambda f: all(tab.has(row, f) for row in rows)

    claims = [
        Claim(
            "weight_transfer",
            "Table 2/3 (+CE 44.6 vs naive 39.6 All on ImageNet-LT)",
            "Two-stage weight transfer with plain CE beats the one-stage naive model on All accuracy.",
            [cmp("+CE", "naive", "all", f) for f in ifs],
        ),
        Claim(
            "transfer_tradeoff",
            "Sec. 3.2, Table 2 (Many 57.6 -> 55.5, Medium 32.5 -> 48.5, Few 13.4 -> 19.4)",
            "Weight transfer raises Medium and Few accuracy and lowers Many accuracy.",
            [cmp("+CE", "naive", "medium", f) for f in ifs]
            + [cmp("+CE", "naive", "few", f) for f in high]
            + [cmp("naive", "+CE", "many", f) for f in ifs],
        ),
        Claim(
            "weight_decay_helps",
            "Table 2 (CEW 46.4 > CE 44.6, CBW 47.0 > CB 41.5, BSW 47.3 > BS 44.6, BWLM 47.5 > BFS 44.5)",
            "Adding the classifier weight decay improves every loss on All accuracy.",
            [
                cmp(w, p, "all", f)
                for f in ifs
                for p, w in (("+CE", "+CEW"), ("+CB", "+CBW"), ("+BS", "+BSW"), ("+BFS", "+BWLM"))
            ],
        ),
        Claim(
            "bfs_balances",
            "Sec. 4.3 text on Table 2",
            "CB favours Many and BS favours Few; BFS combines them: better Few than CB and better Many than BS.",
            [
                c
                for f in high
                for c in (
                    cmp("+CB", "+BS", "many", f),
                    cmp("+BS", "+CB", "few", f),
                    cmp("+BFS", "+CB", "few", f),
                    cmp("+BFS", "+BS", "many", f),
                )
            ],
        ),
        Claim(
            "bwlm_best",
            "Table 2 (ImageNet-LT) and Table 4 (CIFAR-100-LT, best at IF = 100 and 200)",
            "BWLM has the highest All accuracy of all rows.",
            [cmp("+BWLM", other, "all", f) for f in ifs for other in ROWS if other != "+BWLM"],
        ),
        Claim(
            "bsw_few_cbw_many",
            "Sec. 4.4 on Table 3 (CBW Many 61.7 > BSW 58.2; BSW Few 29.7 > CBW 26.3)",
            "CBW is better than BSW on Many classes, BSW better than CBW on Few classes.",
            [c for f in high for c in (cmp("+CBW", "+BSW", "many", f), cmp("+BSW", "+CBW", "few", f))],
        ),
    ]
    drops = []
    if 10 in ifs:
        for f in high:

            def drop(row: str, f: float = f) -> list[float]:
                return [lo - hi for lo, hi in zip(g(row, "all", 10), g(row, "all", f))]

            drops.append(Comparison(f"drop(naive) > drop(+BWLM), All, IF=10 -> {f:g}", drop("naive"), drop("+BWLM")))
    claims.append(
        Claim(
            "slower_decline",
            "Table 4 / Fig. 5b (IF 10 -> 100: others lose 17-25 pt, BWLM about 10 pt)",
            "BWLM's All accuracy falls less than the one-stage CE model's as the imbalance factor grows.",
            drops,
        )
    )
    norms = []
    for f in high:
        norms.append(
            Comparison(
                f"naive Many/Few norm ratio > 1, IF={f:g}",
                g("naive", "norm_ratio", f),
                [1.0] * len(tab.seeds),
                unit="ratio",
            )
        )
        for w in ("+CBW", "+BWLM"):
            norms.append(
                Comparison(
                    f"norm gap naive > {w}, IF={f:g}",
                    g("naive", "norm_gap", f),
                    g(w, "norm_gap", f),
                    unit="log ratio",
                )
            )
        for p, w in (("+CE", "+CEW"), ("+CB", "+CBW"), ("+BS", "+BSW"), ("+BFS", "+BWLM")):
            norms.append(
                Comparison(f"norm gap {p} > {w}, IF={f:g}", g(p, "norm_gap", f), g(w, "norm_gap", f), unit="log ratio")
            )
        norms.append(
            Comparison(
                f"+BWLM Few/Many norm ratio > 1 (upward trend), IF={f:g}",
                [1.0 / v for v in g("+BWLM", "norm_ratio", f)],
                [1.0] * len(tab.seeds),
                unit="ratio",
            )
        )
    claims.append(
        Claim(
            "weight_norms",
            "Fig. 5a",
            "Naive classifier norms fall from head to tail; weight decay narrows the Many-Few norm gap; BWLM's norms "
            "trend slightly upward towards the tail. (Here: ratio = mean norm of the Many classes / mean norm of the "
            "Few classes; norm gap = abs(log ratio), so a smaller gap is a flatter profile in either direction.)",
            norms,
        )
    )
    f = r.alpha_sweep_if
    lo, hi = min(r.alpha_sweep), max(r.alpha_sweep)
    A, B = f"alpha={lo:g}", f"alpha={hi:g}"
    alpha_cmp = []
    if tab.has(A, f) and tab.has(B, f) and lo != hi:
        alpha_cmp = [
            Comparison(f"Many: alpha={hi:g} > alpha={lo:g}, IF={f:g}", g(B, "many", f), g(A, "many", f)),
            Comparison(f"Medium: alpha={lo:g} > alpha={hi:g}, IF={f:g}", g(A, "medium", f), g(B, "medium", f)),
            Comparison(f"Few: alpha={lo:g} > alpha={hi:g}, IF={f:g}", g(A, "few", f), g(B, "few", f)),
            Comparison(f"All: alpha={lo:g} > alpha={hi:g}, IF={f:g}", g(A, "all", f), g(B, "all", f)),
        ]
    claims.append(
        Claim(
            "alpha",
            "Fig. 4",
            "Large alpha (more CB) favours Many classes, small alpha (more BS) favours Medium and Few; All accuracy "
            "declines slowly as alpha grows, so alpha = 0.1 is a good default.",
            alpha_cmp,
        )
    )
    fig7 = [f for f in ifs if f == max(ifs)]
    claims.append(
        Claim(
            "per_class",
            "Fig. 7 (CIFAR-100-LT, IF = 200)",
            "Against the naive model, BWLM improves Medium and Few classes without compromising Many classes.",
            [
                c
                for f in fig7
                for c in (
                    cmp("+BWLM", "naive", "medium", f),
                    cmp("+BWLM", "naive", "few", f),
                    cmp("+BWLM", "naive", "many", f, kind="not_worse"),
                )
            ],
        )
    )
    return claims


# --------------------------------------------------------------------------------------------------------------------
# Report: summary, Markdown, plots
# --------------------------------------------------------------------------------------------------------------------


def summarise(results: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    tab = Table(results, recipe)
    summary: dict[str, Any] = {"rows": {}, "alpha": {}, "weight_norms": {}}
    for f in recipe.imbalance_factors:
        summary["rows"][f"{f:g}"] = {
            row: {m: mean_std(tab.get(row, m, f)) for m in (*SHOTS, "norm_ratio")} for row in ROWS if tab.has(row, f)
        }
        norms: dict[str, Any] = {}
        for row in ROWS:
            per = [r["weight_norms"] for r in results["runs"] if r["row"] == row and r["imbalance_factor"] == f]
            if per:
                norms[row] = [mean_std([p[c] for p in per]) for c in range(NUM_CLASSES)]
        summary["weight_norms"][f"{f:g}"] = norms
    f = recipe.alpha_sweep_if
    for a in recipe.alpha_sweep:
        if tab.has(f"alpha={a:g}", f):
            summary["alpha"][f"{a:g}"] = {m: mean_std(tab.get(f"alpha={a:g}", m, f)) for m in SHOTS}
    return summary


def fmt(ms: Sequence[float], digits: int = 1) -> str:
    m, s = ms
    return "–" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def verdict_markdown(verdicts: list[dict[str, Any]], recipe: Recipe) -> list[str]:
    n = len(recipe.seeds)
    lines = [
        "## Verdict per claim",
        "",
        f"Each claim is tested by paired differences over the {n} seeds (same data subsample, stage-1 model, initial "
        "classifier and batches within a seed): mean ± std of the difference, the number of seeds in which it has "
        f"the claimed sign, and a two-sided paired t-test at 5% (|t| >= {t_critical(n - 1):.3f} for {n} seeds; no "
        "correction for the number of comparisons, so expect an occasional false call among the many below). "
        "**replicates**: significant in the claimed direction; **contradicted**: significant in the other; "
        "**not resolved**: neither, at this scale and seed count.",
        "",
        "Summary:",
        "",
    ]
    for v in verdicts:
        c = v["counts"]
        lines.append(
            f"* **{v['key']}** ({v['source']}): **{v['verdict']}** — {c['replicates']}/{c['total']} comparisons "
            f"replicate, {c['contradicted']} contradicted."
        )
    lines += [
        "",
        "Scope of these verdicts: 10 classes and a tiny CNN trained for minutes on a CPU, not ResNet-32 on "
        "CIFAR-100-LT or ResNeXt-50 on ImageNet-LT; a claim that does not replicate here may still hold at the "
        "paper's scale, and one that does is not thereby confirmed there. The recipe was fixed once for all rows; "
        f"BFS and BWLM use alpha = {recipe.alpha} (the paper's default) instead of the alpha that is best on the "
        "test set (the paper's choice for its comparison tables), and no number here selects anything on the "
        "test set. Every model is the one of its last epoch.",
        "",
        "Two properties of Fashion-MNIST-LT shape the results. The long tail follows the class index, so the head "
        "half that stage 1 learns from (T-shirt, Trouser, Pullover, Dress, Coat) holds only clothes, and the tail "
        "half (Sandal, Shirt, Sneaker, Bag, Ankle boot) holds all the footwear and bags, which the frozen backbone "
        "never saw: a harder transfer than on CIFAR-100-LT. And the groups differ in difficulty, not only in "
        "count: at IF = 100 Medium contains Shirt, the hardest Fashion-MNIST class, while the Few classes (Sneaker, "
        "Bag, Ankle boot) are easy to tell apart, so compare rows within a group, not groups with each other.",
        "",
    ]
    for v in verdicts:
        c = v["counts"]
        lines += [
            f"### {v['key']}: {v['verdict']}",
            "",
            f"*Paper ({v['source']}):* {v['text']}",
            "",
            f"*Here:* {c['replicates']} of {c['total']} comparisons replicate, {c['contradicted']} are contradicted.",
            "",
        ]
        if v["comparisons"]:
            lines += ["| Comparison | A | B | A − B | seeds A > B | t | verdict |", "|---|---|---|---|---|---|---|"]
            for s in v["comparisons"]:
                digits = 1 if s["unit"] == "pt" else 3
                lines.append(
                    f"| {s['label']} | {fmt(s['a_mean_std'], digits)} | {fmt(s['b_mean_std'], digits)} | "
                    f"{fmt((s['mean_diff'], s['std_diff']), digits)} | {s['wins']}/{s['n']} | "
                    f"{s['t']:.2f} | {s['verdict']} |"
                )
            lines.append("")
    return lines


def markdown(results: dict[str, Any], recipe: Recipe) -> str:
    meta, summary = results["meta"], results["summary"]
    jobs = results["jobs"]
    lines = [
        "# Evidence on real data: Fashion-MNIST-LT" + (" (QUICK SMOKE RUN — not evidence)" if recipe.quick else ""),
        "",
        f"Generated by `{meta['command']}` in {meta['wall_seconds'] / 60:.1f} min on {meta['cpu_count']} CPU cores "
        f"({meta['jobs']} worker processes x 1 thread; load average {meta['loadavg_start'][0]:.1f} at start, "
        f"{meta['loadavg_end'][0]:.1f} at end — other processes shared the machine), torch {meta['torch']}, "
        f"commit `{meta['commit']}`. Every number below comes from `{STEM}.json` in this folder.",
        "",
        "## Setup",
        "",
        f"* Fashion-MNIST-LT, 10 classes, head class {recipe.max_count} images, exponential profile, IF in "
        f"{{{', '.join(f'{f:g}' for f in recipe.imbalance_factors)}}}; seeds {list(recipe.seeds)} (the seed picks "
        "the subsample, the initialisations and the batches). Test: the full balanced 10,000-image test set.",
        f"* Many > {recipe.many_threshold:g}, Medium {recipe.few_threshold:g}–{recipe.many_threshold:g}, Few < "
        f"{recipe.few_threshold:g} training images: the paper's thresholds unchanged, since the head class has "
        f"{recipe.max_count} images as in CIFAR-100-LT (scale factor {recipe.max_count}/500).",
        "* Class counts per IF (class 0 first): "
        + "; ".join(
            f"IF={f:g}: {next(j['train_counts'] for j in jobs if j['imbalance_factor'] == f)}"
            for f in recipe.imbalance_factors
        )
        + ".",
        f"* Tiny CNN (2 conv blocks 8/16 ch., 64-d feature layer, linear `fc`). Naive and stage 1: SGD 0.9, batch "
        f"{recipe.batch_size}, lr {recipe.stage1_lr} cosine to 0, {recipe.stage1_epochs} epochs, weight decay "
        f"{recipe.stage1_weight_decay}. Stage 2: frozen backbone in eval mode, cached features, new linear "
        f"classifier, SGD 0.9, batch {recipe.batch_size}, lr {recipe.stage2_lr} cosine to 0, about "
        f"{recipe.stage2_steps} steps (lr x steps = the paper's CIFAR-100-LT stage 2, 0.01 x 16,960). W rows: "
        f"in-loss penalty lambda/2 ||W||^2 with lambda = {recipe.weight_decay} (BWLM's convention) for CEW, CBW, "
        f"BSW and BWLM; CB/BFS/BWLM beta = {recipe.beta}, gamma = {recipe.gamma}; BFS/BWLM alpha = {recipe.alpha}. "
        "Stage-2 losses "
        "use the class counts of the review set they train on. Same recipe for every row, fixed before any result.",
        "",
        "## Accuracy (%), mean ± std over seeds",
        "",
    ]
    for f, rows in summary["rows"].items():
        lines += [f"**IF = {f}**", "", "| Method | Many | Medium | Few | All |", "|---|---|---|---|---|"]
        for row, m in rows.items():
            lines.append(f"| {row} | " + " | ".join(fmt(m[k]) for k in SHOTS) + " |")
        lines.append("")
    f_norm = f"{recipe.alpha_sweep_if:g}"
    if f_norm in summary["weight_norms"]:
        lines += [
            f"## Classifier weight norms per class (IF = {f_norm}, classes by descending count), mean ± std",
            "",
            "| Method | " + " | ".join(str(c) for c in range(NUM_CLASSES)) + " | Many/Few ratio |",
            "|---|" + "---|" * (NUM_CLASSES + 1),
        ]
        for row, per in summary["weight_norms"][f_norm].items():
            ratio = summary["rows"][f_norm][row]["norm_ratio"]
            lines.append(f"| {row} | " + " | ".join(fmt(p, 2) for p in per) + f" | {fmt(ratio, 2)} |")
        lines.append("")
    if summary["alpha"]:
        lines += [
            f"## BWLM alpha sweep (IF = {recipe.alpha_sweep_if:g}), accuracy (%) mean ± std",
            "",
            "| alpha | Many | Medium | Few | All |",
            "|---|---|---|---|---|",
        ]
        for a, m in summary["alpha"].items():
            lines.append(f"| {a} | " + " | ".join(fmt(m[k]) for k in SHOTS) + " |")
        best = max(summary["alpha"].items(), key=lambda kv: kv[1]["all"][0])
        lines += ["", f"Best mean All accuracy at alpha = {best[0]} ({fmt(best[1]['all'])}).", ""]
    lines += [
        "## Wall time",
        "",
        f"Total {meta['wall_seconds']:.0f} s. Mean per job (one IF and seed; seconds of one worker): "
        + ", ".join(
            f"{k} {sum(j['seconds'][k] for j in jobs) / len(jobs):.1f}"
            for k in ("data", "naive", "stage1", "extract", "stage2_all_heads", "job")
            if all(k in j["seconds"] for j in jobs)
        )
        + ". Stage 2 trains all rows of a job (and, at the sweep IF, the alpha sweep) together as independent heads."
        + (
            f" CPU time of all jobs: {sum(j['seconds']['job_cpu'] for j in jobs):.0f} s, i.e. about "
            f"{sum(j['seconds']['job_cpu'] for j in jobs) / meta['jobs'] / 60:.1f} min of wall time on "
            f"{meta['jobs']} otherwise idle cores."
            if all("job_cpu" in j["seconds"] for j in jobs)
            else ""
        ),
        "",
    ]
    lines += verdict_markdown(results["verdicts"], recipe)
    lines += [
        "## Plots",
        "",
        f"![All and Few accuracy vs IF]({STEM}_accuracy_vs_if.png)",
        f"![Classifier weight norms]({STEM}_weight_norms.png)",
        f"![BWLM alpha sweep]({STEM}_alpha_sweep.png)",
        f"![Per-class accuracy]({STEM}_per_class.png)",
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], recipe: Recipe, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    written = []
    ifs = list(recipe.imbalance_factors)
    styles = {
        row: dict(marker="o" if row in ("naive", "+BWLM") else ".", lw=2.5 if row == "+BWLM" else 1.2) for row in ROWS
    }

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("all", "few")):
        for row in ROWS:
            pts = [(f, summary["rows"][f"{f:g}"][row][metric]) for f in ifs if row in summary["rows"][f"{f:g}"]]
            pts = [(f, ms) for f, ms in pts if not math.isnan(ms[0])]
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1][0] for p in pts],
                    yerr=[p[1][1] for p in pts],
                    label=row,
                    capsize=3,
                    **styles[row],
                )
        ax.set_xscale("log")
        ax.set_xticks(ifs, [f"{f:g}" for f in ifs])
        ax.set_xlabel("imbalance factor")
        ax.set_ylabel(f"{metric.capitalize()} accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(f"Fashion-MNIST-LT: accuracy vs IF (mean ± std, {len(recipe.seeds)} seeds) — cf. paper Fig. 5b")
    fig.tight_layout()
    written.append(_save(fig, out / f"{STEM}_accuracy_vs_if.png"))

    f = f"{recipe.alpha_sweep_if:g}"
    norms = summary["weight_norms"].get(f, {})
    if norms:
        counts = next(j["train_counts"] for j in results["jobs"] if f"{j['imbalance_factor']:g}" == f)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        x = list(range(NUM_CLASSES))
        for row in ("naive", "+CE", "+CEW", "+CBW", "+BSW", "+BWLM"):
            if row not in norms:
                continue
            m = [p[0] for p in norms[row]]
            s = [p[1] for p in norms[row]]
            axes[0].errorbar(x, m, yerr=s, label=row, capsize=2, **styles[row])
            mean = sum(m) / len(m)
            axes[1].plot(x, [v / mean for v in m], label=row, **styles[row])
        for ax, title in zip(axes, ("per-class weight norm", "norm / mean norm of the row")):
            ax.set_xlabel("class (descending training count)")
            ax.set_ylabel(title)
            ax.grid(alpha=0.3)
            twin = ax.twinx()
            twin.plot(x, counts, "k--", lw=1)
            twin.set_ylabel("training images (dashed)")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Classifier weight norms, IF = {f} (mean over seeds) — cf. paper Fig. 5a")
        fig.tight_layout()
        written.append(_save(fig, out / f"{STEM}_weight_norms.png"))

    if summary["alpha"]:
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
        alphas = [float(a) for a in summary["alpha"]]
        for ax, metric in zip(axes, ("all", "many", "medium", "few")):
            m = [summary["alpha"][f"{a:g}"][metric][0] for a in alphas]
            s = [summary["alpha"][f"{a:g}"][metric][1] for a in alphas]
            ax.errorbar(alphas, m, yerr=s, marker="o", capsize=3)
            ax.set_title(metric.capitalize())
            ax.set_xlabel("alpha")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("accuracy (%)")
        fig.suptitle(f"BWLM alpha sweep, IF = {recipe.alpha_sweep_if:g} (mean ± std) — cf. paper Fig. 4")
        fig.tight_layout()
        written.append(_save(fig, out / f"{STEM}_alpha_sweep.png"))

    f_max = max(ifs)
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in ("naive", "+CE", "+BWLM"):
        per = [r["per_class_accuracy"] for r in results["runs"] if r["row"] == row and r["imbalance_factor"] == f_max]
        if per:
            ms = [mean_std([100 * p[c] for p in per]) for c in range(NUM_CLASSES)]
            ax.errorbar(
                range(NUM_CLASSES), [v[0] for v in ms], yerr=[v[1] for v in ms], label=row, capsize=3, **styles[row]
            )
    ax.set_xlabel("class (descending training count)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Per-class accuracy, IF = {f_max:g} (mean ± std) — cf. paper Fig. 7")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out / f"{STEM}_per_class.png"))
    return written


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------------


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(results: dict[str, Any], recipe: Recipe, out: Path) -> None:
    """Add summary and verdicts to ``results`` and write the JSON, the Markdown report and the plots to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{STEM}.json").write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")  # raw runs first
    results["summary"] = summarise(results, recipe)
    results["verdicts"] = [c.evaluate() for c in build_claims(Table(results, recipe))]
    (out / f"{STEM}.json").write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")
    (out / f"{STEM}.md").write_text(markdown(results, recipe))
    plots(results, recipe, out)


def run_meta(*, command: str, jobs: int, root: str, load_start: Sequence[float], start: float) -> dict[str, Any]:
    """The record of a study's run: command, versions, machine, commit, load and wall time."""
    return {
        "command": command,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jobs": jobs,
        "threads_per_job": 1,
        "commit": _commit(),
        "root": root,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "wall_seconds": time.perf_counter() - start,
    }


def run_study(root: str, recipe: Recipe, jobs: int, out: Path, command: str) -> dict[str, Any]:
    start = time.perf_counter()
    load_start = os.getloadavg()
    fashion_mnist_lt(root, 1, train=False)  # fail early, with the reader's message, if the data are missing
    # Longest jobs first (low IF = more images; the sweep IF trains more heads).
    order = sorted(
        ((f, s) for f in recipe.imbalance_factors for s in recipe.seeds),
        key=lambda fs: (-(fs[0] == recipe.alpha_sweep_if), fs[0], fs[1]),
    )
    done = []
    if jobs <= 1:
        for f, s in order:
            done.append(run_job(root, f, s, recipe))
            print(f"  IF={f:g} seed={s}: {done[-1]['job']['seconds']['job']:.0f} s", flush=True)
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_job, root, f, s, recipe): (f, s) for f, s in order}
            for fut, (f, s) in futures.items():
                done.append(fut.result())
                print(f"  IF={f:g} seed={s}: {done[-1]['job']['seconds']['job']:.0f} s", flush=True)
    key = lambda r: (r["imbalance_factor"], r["seed"], ROWS.index(r["row"]))  # noqa: E731
    results: dict[str, Any] = {
        "meta": run_meta(command=command, jobs=jobs, root=root, load_start=load_start, start=start),
        "recipe": asdict(recipe),
        "jobs": sorted((d["job"] for d in done), key=lambda j: (j["imbalance_factor"], j["seed"])),
        "runs": sorted((r for d in done for r in d["runs"]), key=key),
        "alpha_runs": sorted((r for d in done for r in d["alpha_runs"]), key=lambda r: (r["seed"], r["alpha"])),
    }
    report(results, recipe, out)
    results["meta"]["wall_seconds_with_report"] = time.perf_counter() - start
    (out / f"{STEM}.json").write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--quick", action="store_true", help="smoke test: IF 100, 2 seeds, few epochs (not evidence)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default benchmarks/results; --quick: a new temporary folder)",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; --quick 2)")
    parser.add_argument("--report-only", action="store_true", help="rebuild Markdown and plots from the JSON in --out")
    args = parser.parse_args(argv)
    recipe = QUICK if args.quick else Recipe()
    if args.seeds is not None:
        recipe = replace(recipe, seeds=tuple(range(args.seeds)))
    out = args.out or (Path(tempfile.mkdtemp(prefix=f"{STEM}_quick_")) if args.quick else RESULTS)
    if args.report_only:
        results = json.loads((out / f"{STEM}.json").read_text())
        recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["recipe"].items()})
        report(results, recipe, out)
        print(f"rebuilt the report in {out}")
        return 0
    command = "python benchmarks/real_data_lt.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"real_data_lt: {len(recipe.imbalance_factors) * len(recipe.seeds)} jobs on {args.jobs} workers -> {out}")
    results = run_study(args.root, recipe, args.jobs, out, command.strip())
    print(f"wrote {out / (STEM + '.json')}, {STEM}.md and plots in {results['meta']['wall_seconds']:.0f} s")
    for v in results["verdicts"]:
        print(f"  {v['key']}: {v['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
