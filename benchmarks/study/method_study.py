"""The method study (``benchmarks/choosing_a_method.py``): design, data split, one task (one model) and the report."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

import longtail_losses as ltl
from longtail_losses import paper
from longtail_losses.data import ClassAwareSampler, longtail_counts, longtail_indices
from longtail_losses.losses.logit_adjustment import posthoc_adjust, tune_tau
from longtail_losses.training import train_one_epoch
from longtail_losses.twostage import data_balanced_review, extract_features
from longtail_losses.twostage.decoupled import LearnableWeightScaling, nearest_class_mean, tau_normalize

from . import common
from .common import NUM_CLASSES, SHOTS, Settings, criterion, evaluate, fmt, load_full
from .stats import compare, mean_std, t_critical
from .training import TinyCNN, logits_of, run_stage2, train_sgd

STEM, KEY = "choosing_a_method", "design"
# VS, LADE, IB, Seesaw, EQLv2 and LAS were added later (issue: the methods recent papers compare against) and run
# with ``--rows`` on the same seeds, IFs, split and initialisations; their runs are merged into the committed JSON.
NEW_ONE_STAGE = ("VS", "LADE", "IB", "Seesaw", "EQLv2")
ONE_STAGE = (
    "CE", "BalancedSoftmax", "LogitAdjusted", "ClassBalancedFocal", "BFS", "BWLM", "LDAM-DRW", *NEW_ONE_STAGE,
    "CE + post-hoc",
)  # fmt: skip
DECOUPLED = ("cRT", "LWS", "tau-norm", "NCM", "LAS")
NEW_ROWS = (*NEW_ONE_STAGE, "LAS")
TWO_STAGE = paper.STAGE2_ROWS
ROWS = (*ONE_STAGE, *DECOUPLED, *TWO_STAGE)
GROUP = {**dict.fromkeys(ONE_STAGE, "one-stage"), **dict.fromkeys(DECOUPLED, "decoupled (CE backbone)")}
GROUP.update(dict.fromkeys(TWO_STAGE, "two-stage (paper)"))
# The paper's rows behind the one-stage loss rows (paper.criterion, same hyperparameters as the two-stage rows).
PAPER_LOSS = {"CE": "+CE", "BalancedSoftmax": "+BS", "ClassBalancedFocal": "+CB", "BFS": "+BFS", "BWLM": "+BWLM"}
EXTRA_PAIRS = (
    ("LogitAdjusted", "CE + post-hoc"),
    ("BalancedSoftmax", "CE + post-hoc"),
    ("cRT", "CE + post-hoc"),
    ("BWLM", "+BWLM"),
)
PLOT_ROWS = ("CE", "CE + post-hoc", "BalancedSoftmax", "LogitAdjusted", "BWLM", "LDAM-DRW", "cRT", "+BWLM")
TUNED = ("LogitAdjusted", "CE + post-hoc", "tau-norm")


@dataclass(frozen=True)
class Design(Settings):
    """The study's settings, fixed before looking at any result."""

    imbalance_factors: tuple[float, ...] = (10, 50, 100, 200)
    val_per_class: int = 30
    epochs: int = 20
    lr: float = 0.05
    la_taus: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    posthoc_taus: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(31))
    tau_norm_taus: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(21))
    ldam_max_margin: float = 0.5
    ldam_scale: float = 1.0
    drw_start_epoch: int = 16
    decoupled_steps: int = 500
    decoupled_lr: float = 0.05
    vs_gamma: float = 0.3
    vs_tau: float = 1.0
    lade_remine_lambda: float = 0.1
    lade_weight: float = 0.1
    ib_alpha: float = 10.0
    ib_start_epoch: int = 10
    las_smooth_head: float = 0.3
    las_smooth_tail: float = 0.0


QUICK = Design(
    imbalance_factors=(100,), seeds=(0, 1), epochs=1, la_taus=(1.0, 2.0), drw_start_epoch=0, decoupled_steps=30,
    stage2_steps=40, ib_start_epoch=0, quick=True,
)  # fmt: skip


def class_order(seed: int) -> list[int]:
    """Fashion-MNIST class of each frequency rank (rank 0 = head) for ``seed``."""
    return torch.randperm(NUM_CLASSES, generator=torch.Generator().manual_seed(10_000 + seed)).tolist()


def make_split(root: str, imbalance_factor: float, seed: int, design: Design) -> dict[str, Tensor]:
    """Training, validation and test tensors of one (IF, seed), labels relabelled by frequency rank.

    Also returns the indices into the 60,000 training images of the training and validation images.
    """
    x_all, y_all = load_full(root, train=True)
    x_test, y_test = load_full(root, train=False)
    rank = torch.empty(NUM_CLASSES, dtype=torch.int64)
    rank[torch.tensor(class_order(seed))] = torch.arange(NUM_CLASSES)
    y_ranked = rank[y_all]
    train_idx = longtail_indices(y_ranked, longtail_counts(NUM_CLASSES, design.max_count, imbalance_factor), seed=seed)
    unused = torch.ones(len(y_all), dtype=torch.bool)
    unused[train_idx] = False
    rest = unused.nonzero().squeeze(1)
    rest = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(20_000 + seed))]
    val_idx = torch.cat([rest[y_ranked[rest] == c][: design.val_per_class] for c in range(NUM_CLASSES)])
    return {
        "x": x_all[train_idx], "y": y_ranked[train_idx], "x_val": x_all[val_idx], "y_val": y_ranked[val_idx],
        "x_test": x_test, "y_test": rank[y_test], "train_index": train_idx, "val_index": val_idx,
    }  # fmt: skip


def train_one_stage(model: nn.Module, x: Tensor, y: Tensor, loss: Any, design: Design, seed: int, **kw: Any) -> float:
    """The one-stage recipe with any loss (``before_epoch=``: a hook at the start of each epoch, for DRW)."""
    d = design
    return train_sgd(
        model,
        x,
        y,
        loss,
        epochs=d.epochs,
        lr=d.lr,
        weight_decay=d.weight_decay,
        batch_size=d.batch_size,
        seed=seed,
        **kw,
    )


def train_balanced(
    params: list[nn.Parameter], module: nn.Module, feats: Tensor, labels: Tensor, design: Design, seed: int,
    loss: Any = torch.nn.functional.cross_entropy,
) -> None:  # fmt: skip
    """Train cRT / LWS / LAS: ``loss`` (CE) on class-balanced batches of cached features, SGD 0.9, cosine to 0."""
    steps, size = design.decoupled_steps, design.batch_size
    draws = list(ClassAwareSampler(labels, power=0.0, num_samples=steps * size, seed=seed))
    optimizer = torch.optim.SGD(params, lr=design.decoupled_lr, momentum=paper.RECIPE.momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    indices = (torch.tensor(draws[step * size : (step + 1) * size]) for step in range(steps))
    batches = ((feats[index], labels[index]) for index in indices)
    train_one_epoch(module, batches, loss, optimizer, scheduler=scheduler)


def balanced_accuracy(logits: Tensor, target: Tensor) -> float:
    """Mean per-class accuracy."""
    hit = (logits.argmax(1) == target).double()
    return float(torch.stack([hit[target == c].mean() for c in range(NUM_CLASSES)]).mean())


def one_stage_criterion(row: str, model: TinyCNN, counts: Tensor, design: Design, tau: float) -> Any:
    """The loss of a one-stage row: the paper's loss of :data:`PAPER_LOSS`, LogitAdjusted or LDAM."""
    if row in PAPER_LOSS:
        return criterion(PAPER_LOSS[row], counts, model.fc, design)
    if row == "LogitAdjusted":
        return ltl.LogitAdjustedLoss(counts, tau=tau, validate_args=False)
    if row == "LDAM-DRW":
        return ltl.LDAMLoss(counts, max_margin=design.ldam_max_margin, scale=design.ldam_scale, validate_args=False)
    if row == "VS":
        return ltl.VSLoss(counts, gamma=design.vs_gamma, tau=design.vs_tau, validate_args=False)
    if row == "LADE":
        hyper = {"remine_lambda": design.lade_remine_lambda, "estim_loss_weight": design.lade_weight}
        return ltl.LADELoss(counts, **hyper, validate_args=False)
    if row == "IB":
        return WithFeatures(ltl.IBLoss(counts, alpha=design.ib_alpha, start_epoch=design.ib_start_epoch), model)
    if row == "Seesaw":
        return ltl.SeesawLoss(NUM_CLASSES, validate_args=False)
    if row == "EQLv2":
        return ltl.EQLv2Loss(NUM_CLASSES, validate_args=False)
    raise ValueError(f"Expected a one-stage loss row, but got {row!r}")


class WithFeatures:
    """IB in a ``loss(logits, target)`` loop: a forward pre-hook on ``model.fc`` hands it the features."""

    def __init__(self, ib: ltl.IBLoss, model: TinyCNN) -> None:
        self.ib, self.features = ib, torch.empty(0)
        model.fc.register_forward_pre_hook(self._keep)

    def _keep(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self.features = args[0]

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        """The IB loss of the batch with the features of the last forward."""
        return self.ib(logits, target, self.features)


def run_task(root: str, imbalance_factor: float, seed: int, kind: str, tau: float, design: Design) -> dict[str, Any]:
    """One model of one (IF, seed) and the rows read from it.

    ``kind`` is a one-stage loss row (``'CE'`` adds the decoupled rows and the post-hoc adjustment) or
    ``'two-stage'``; ``tau`` is LogitAdjusted's.
    """
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    data = make_split(root, imbalance_factor, seed, design)
    x, y, x_test, y_test = data["x"], data["y"], data["x_test"], data["y_test"]
    counts = ltl.class_counts(y, num_classes=NUM_CLASSES)
    base_seed = 1000 * seed + int(imbalance_factor)
    torch.manual_seed(base_seed)
    model = TinyCNN()  # the same initial weights for every one-stage row of this (IF, seed)
    record = lambda row, z, w, **extra: {"row": row, **evaluate(z, y_test, counts, w, design), **extra}  # noqa: E731
    runs = []
    if kind == "two-stage":  # the paper's rows: stage 1 (CE, head half), then every stage-2 loss as one head
        head_idx, review_idx = data_balanced_review(y, seed=seed)
        train_one_stage(model, x[head_idx], y[head_idx], torch.nn.functional.cross_entropy, design, seed)
        specs: list[tuple[str, Optional[float]]] = [(row, None) for row in TWO_STAGE]
        review = (x[review_idx], y[review_idx])
        stage2 = run_stage2(
            model, review, (x_test, y_test), specs, design, lr=design.lr, seed=seed, init_seed=base_seed + 2
        )
        for row, h, z in zip(TWO_STAGE, stage2["heads"], stage2["logits"]):
            runs.append(record(row, z, h.weight, stage2_steps=stage2["steps"]))
    else:
        loss = one_stage_criterion("CE" if kind == "LAS" else kind, model, counts, design, tau)
        before_epoch = None
        if kind == "LDAM-DRW":

            def before_epoch(epoch: int) -> None:
                loss.class_weights = ltl.drw_weights(counts, epoch, design.drw_start_epoch, beta=design.beta)

        elif kind == "IB":

            def before_epoch(epoch: int) -> None:
                loss.ib.set_epoch(epoch)

        train_one_stage(model, x, y, loss, design, seed, before_epoch=before_epoch)
        logits, val_logits = logits_of(model, x_test, y_test), logits_of(model, data["x_val"], data["y_val"])
        val = balanced_accuracy(val_logits, data["y_val"])
        if kind == "LAS":  # MiSLAS's stage 2 on the CE backbone (the CE task's model, retrained identically)
            backbone = {"backbone_test_accuracy": float((logits.argmax(1) == y_test).double().mean())}
            runs.append(las_row(model, data, counts, design, seed, base_seed, record, backbone))
        else:
            runs.append(
                record(
                    kind,
                    logits,
                    model.fc.weight,
                    tau=tau if kind == "LogitAdjusted" else None,
                    val_balanced_accuracy=val,
                )
            )
        if kind == "CE":
            runs += decoupled_rows(model, logits, val_logits, data, counts, design, seed, base_seed, record)
    for r in runs:
        r.update(imbalance_factor=imbalance_factor, seed=seed, task=kind)
    seconds = {"task": time.perf_counter() - start, "task_cpu": time.process_time() - cpu}
    task = {"imbalance_factor": imbalance_factor, "seed": seed, "kind": kind, "tau": tau}
    task |= {"train_counts": counts.tolist(), "class_order": class_order(seed), "seconds": seconds}
    return {"task": task, "runs": runs}


def decoupled_rows(
    model: TinyCNN,
    logits: Tensor,
    val_logits: Tensor,
    data: dict[str, Tensor],
    counts: Tensor,
    design: Design,
    seed: int,
    base_seed: int,
    record: Any,
) -> list[dict[str, Any]]:
    """CE + post-hoc, cRT, LWS, tau-norm and NCM on the trained CE model."""
    tau = tune_tau(val_logits, data["y_val"], counts, taus=list(design.posthoc_taus))
    runs = [record("CE + post-hoc", posthoc_adjust(logits, counts, tau=tau), model.fc.weight, tau=tau)]
    feats, labels = extract_features(model, (data["x"], data["y"]), classifier_attr="fc", batch_size=1000)
    val_feats, _ = extract_features(model, (data["x_val"], data["y_val"]), classifier_attr="fc", batch_size=1000)
    test_feats, _ = extract_features(model, (data["x_test"], data["y_test"]), classifier_attr="fc", batch_size=2000)
    torch.manual_seed(base_seed + 3)
    crt = nn.Linear(feats.shape[1], NUM_CLASSES)
    train_balanced(list(crt.parameters()), crt, feats, labels, design, seed)
    lws = LearnableWeightScaling(copy.deepcopy(model.fc))
    train_balanced([lws.scales], lws, feats, labels, design, seed)
    with torch.no_grad():
        runs.append(record("cRT", crt(test_feats), crt.weight))
        runs.append(record("LWS", lws(test_feats), model.fc.weight * lws.scales[:, None]))
        scores = [balanced_accuracy(tau_normalize(model.fc, t)(val_feats), data["y_val"]) for t in design.tau_norm_taus]
        best = design.tau_norm_taus[max(range(len(scores)), key=lambda i: (scores[i], -i))]
        normed = tau_normalize(model.fc, best)
        runs.append(record("tau-norm", normed(test_feats), normed.weight, tau=best))
        ncm = nearest_class_mean(feats, labels, NUM_CLASSES)
        runs.append(record("NCM", ncm(test_feats), ncm.means))
    return runs


def las_row(
    model: TinyCNN, data: dict[str, Tensor], counts: Tensor, design: Design, seed: int, base_seed: int, record: Any,
    backbone: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    """LAS: a new classifier on the frozen CE features, trained as cRT but with label-aware smoothing (MiSLAS)."""
    feats, labels = extract_features(model, (data["x"], data["y"]), classifier_attr="fc", batch_size=1000)
    test_feats, _ = extract_features(model, (data["x_test"], data["y_test"]), classifier_attr="fc", batch_size=2000)
    torch.manual_seed(base_seed + 3)  # cRT's initialisation
    head = nn.Linear(feats.shape[1], NUM_CLASSES)
    smoothing = {"smooth_head": design.las_smooth_head, "smooth_tail": design.las_smooth_tail}
    criterion = ltl.LabelAwareSmoothing(counts, **smoothing, validate_args=False)
    train_balanced(list(head.parameters()), head, feats, labels, design, seed, loss=criterion)
    with torch.no_grad():
        return record("LAS", head(test_feats), head.weight, **backbone)


def task_list(design: Design, rows: Optional[tuple[str, ...]] = None) -> list[tuple[float, int, str, float]]:
    """Every task, the costly ones (low IF = more images; CE and two-stage do more) first; ``rows``: only those."""
    if rows is not None:
        return [(f, s, k, math.nan) for f in sorted(design.imbalance_factors) for k in rows for s in design.seeds]
    kinds = [
        (k, math.nan) for k in ("two-stage", "CE", "BalancedSoftmax", "ClassBalancedFocal", "BFS", "BWLM", "LDAM-DRW")
    ]
    kinds += [("LogitAdjusted", t) for t in design.la_taus if t != 1.0]
    kinds += [(k, math.nan) for k in NEW_ROWS]
    return [(f, s, k, t) for f in sorted(design.imbalance_factors) for k, t in kinds for s in design.seeds]


def select_logit_adjusted(runs: list[dict[str, Any]], design: Design) -> list[dict[str, Any]]:
    """Replace the LogitAdjusted candidates of each (IF, seed) by the one of best validation balanced accuracy.

    The tau = 1 candidate is the BalancedSoftmax model (the same loss).
    """
    out = [r for r in runs if r["row"] != "LogitAdjusted"]
    for key in sorted({(r["imbalance_factor"], r["seed"]) for r in runs}):
        mine = [r for r in runs if (r["imbalance_factor"], r["seed"]) == key]
        cands = {r["tau"]: r for r in mine if r["row"] == "LogitAdjusted"}
        bs = [r for r in mine if r["row"] == "BalancedSoftmax"]
        if bs and 1.0 in design.la_taus:
            cands[1.0] = {**bs[0], "row": "LogitAdjusted", "tau": 1.0}
        ordered = [cands[t] for t in design.la_taus if t in cands]
        if ordered:
            best = max(ordered, key=lambda r: r["val_balanced_accuracy"])  # max keeps the first of ties
            tau_candidates = {f"{r['tau']:g}": r["val_balanced_accuracy"] for r in ordered}
            out.append({**best, "row": "LogitAdjusted", "tau_candidates_val": tau_candidates})
    return out


def run_study(root: str, design: Design, jobs: int, rows: Optional[tuple[str, ...]] = None) -> dict[str, Any]:
    """Every task of ``design`` (``rows``: only theirs) on ``jobs`` workers: the tasks and the sorted runs."""

    def describe(call: tuple[Any, ...], done: dict[str, Any]) -> str:
        _, f, s, k, t, _ = call
        return f"IF={f:g} seed={s} {k}{'' if math.isnan(t) else f' tau={t:g}'}: {done['task']['seconds']['task']:.0f} s"

    tasks = task_list(design, rows)
    done = common.run_all(run_task, [(root, f, s, k, t, design) for f, s, k, t in tasks], jobs, describe)
    runs = select_logit_adjusted([r for d in done for r in d["runs"]], design)
    return {
        "tasks": sorted((d["task"] for d in done), key=lambda t: (t["imbalance_factor"], t["seed"], t["kind"])),
        "runs": sorted(runs, key=lambda r: (r["imbalance_factor"], r["seed"], ROWS.index(r["row"]))),
    }


def merge(old: dict[str, Any], new: dict[str, Any], rows: tuple[str, ...], addition: dict[str, Any]) -> dict[str, Any]:
    """The committed results with the runs and tasks of ``rows`` replaced by ``new``'s (same design otherwise)."""
    fs = {t["imbalance_factor"] for t in new["tasks"]}
    again = lambda r: r["row"] in rows and r["imbalance_factor"] in fs  # noqa: E731
    runs = [r for r in old["runs"] if not again(r)] + new["runs"]
    tasks = [t for t in old["tasks"] if not (t["kind"] in rows and t["imbalance_factor"] in fs)] + new["tasks"]
    meta = {**old["meta"], "additions": [*old["meta"].get("additions", []), addition]}
    return {
        **old, "meta": meta,
        "tasks": sorted(tasks, key=lambda t: (t["imbalance_factor"], t["seed"], t["kind"])),
        "runs": sorted(runs, key=lambda r: (r["imbalance_factor"], r["seed"], ROWS.index(r["row"]))),
    }  # fmt: skip


# The report.


def values(runs: list[dict[str, Any]], row: str, metric: str, f: float, seeds: Any) -> list[float]:
    """Per-seed values (percent for accuracies) of ``row`` at IF ``f``, ``nan`` where missing."""
    found = {r["seed"]: r[metric] for r in runs if r["row"] == row and r["imbalance_factor"] == f}
    scale = 100.0 if metric in SHOTS else 1.0
    return [scale * found[s] if found.get(s) is not None else math.nan for s in seeds]


def report(results: dict[str, Any], design: Design, out: Path) -> None:
    """Add the summary to ``results`` and write the JSON, the Markdown report and the plots to ``out``."""
    runs, seeds = results["runs"], design.seeds
    summary: dict[str, Any] = {"rows": {}, "vs_ce": {}, "pairs": {}, "ranking": {}, "tuned": {}}
    for f in design.imbalance_factors:
        key, v = f"{f:g}", partial(values, runs, f=f, seeds=seeds)
        present = [row for row in ROWS if any(r["row"] == row and r["imbalance_factor"] == f for r in runs)]
        summary["rows"][key] = {row: {m: mean_std(v(row, m)) for m in SHOTS} for row in present}
        summary["vs_ce"][key] = {
            row: {m: compare(f"{row} > CE, {m}, IF={key}", v(row, m), v("CE", m)) for m in ("all", "few")}
            for row in present
            if row != "CE"
        }
        pairs = [(a, b) for a, b in EXTRA_PAIRS if a in present and b in present]
        summary["pairs"][key] = [compare(f"{a} > {b}, all, IF={key}", v(a, "all"), v(b, "all")) for a, b in pairs]
        means = {row: summary["rows"][key][row]["all"][0] for row in present}
        summary["ranking"][key] = sorted(present, key=means.__getitem__, reverse=True)  # stable: ties in row order
        summary["tuned"][key] = {
            row: [r["tau"] for r in runs if r["row"] == row and r["imbalance_factor"] == f]
            for row in TUNED
            if row in present
        }
    results["summary"] = summary
    common.write_json(out / f"{STEM}.json", results)
    (out / f"{STEM}.md").write_text(markdown(results, design))
    plots(results, design, out)


def headline(results: dict[str, Any]) -> list[str]:
    """The ranking per IF, for the console."""
    return [f"IF={k}: " + " > ".join(ranking) for k, ranking in results["summary"]["ranking"].items()]


def mark(stats: dict[str, Any]) -> str:
    """Paired difference to CE with its t-test result: ``+3.1 ± 1.2 (5/5, better)``."""
    if stats["n"] == 0:
        return "–"  # no such group at this IF (e.g. no Few class at IF = 10)
    verdict = {"replicates": "better", "contradicted": "worse"}.get(stats["verdict"], "n.s.")
    return f"{stats['mean_diff']:+.1f} ± {stats['std_diff']:.1f} ({stats['wins']}/{stats['n']}, {verdict})"


def markdown(results: dict[str, Any], design: Design) -> str:
    meta, summary, d = results["meta"], results["summary"], design
    n, ifs = len(d.seeds), [f"{f:g}" for f in d.imbalance_factors]
    lines = [
        "# Choosing a method: Fashion-MNIST-LT" + (" (QUICK SMOKE RUN — not evidence)" if d.quick else ""),
        "",
        f"Generated by `{meta['command']}` in {meta['wall_seconds'] / 60:.1f} min on {meta['cpu_count']} CPU cores "
        f"({meta['jobs']} worker processes x 1 thread; load average {meta['loadavg_start'][0]:.1f} at start, "
        f"{meta['loadavg_end'][0]:.1f} at end), torch {meta['torch']}, commit `{meta['commit']}`. Every number "
        f"below comes from `{STEM}.json` in `benchmarks/results/`.",
        "",
        "## Setup",
        "",
        f"* Fashion-MNIST-LT with the class order permuted per seed (each seed a different tail), head class "
        f"{d.max_count} images, IF in {{{', '.join(ifs)}}}, seeds "
        f"{list(d.seeds)}. Many > {d.many_threshold:g}, Medium {d.few_threshold:g}–"
        f"{d.many_threshold:g}, Few < {d.few_threshold:g} training images. Validation: "
        f"{d.val_per_class} unused training images per class; it selects every tuned value. Test: the full "
        "balanced 10,000-image test set, which selects nothing.",
        f"* Tiny CNN, one recipe for every one-stage model: SGD 0.9, batch {d.batch_size}, lr {d.lr} "
        f"cosine to 0, {d.epochs} epochs, weight decay {d.weight_decay}; same initialisation and batches "
        "for every row of one (IF, seed).",
        f"* LogitAdjusted: tau in {list(d.la_taus)} (one model each). CE + post-hoc: tau in 0–3 by 0.1. "
        f"ClassBalancedFocal / BFS / BWLM: beta {d.beta}, gamma {d.gamma}, alpha {d.alpha}, BWLM "
        f"lambda {d.weight_decay}. LDAM-DRW: max margin {d.ldam_max_margin}, scale {d.ldam_scale}, "
        f"DRW from epoch {d.drw_start_epoch}.",
        f"* Decoupled rows on the CE model (frozen, cached features): cRT and LWS {d.decoupled_steps} steps of "
        f"class-balanced batches, lr {d.decoupled_lr}; tau-norm tau in 0–2 by 0.1 (validation); NCM cosine.",
        f"* Added rows (run later with `--rows` on the same seeds, IFs, split and initialisations): VS gamma "
        f"{d.vs_gamma}, tau {d.vs_tau}; LADE lambda {d.lade_remine_lambda}, weight {d.lade_weight}; IB alpha "
        f"{d.ib_alpha} (the code's 1000 with its learning rate / 100 from the IB epoch, as a loss scale: the shared "
        f"recipe keeps its lr), CE before epoch {d.ib_start_epoch}, inverse-frequency weights; Seesaw p 0.8, q 2; "
        f"EQLv2 gamma 12, mu 0.8, alpha 4; LAS: MiSLAS stage 2 on the CE backbone, a new classifier trained like "
        f"cRT with label-aware smoothing (concave, head {d.las_smooth_head}, tail {d.las_smooth_tail}).",
        f"* The paper's two-stage rows: stage 1 on the head half, then about {d.stage2_steps} stage-2 steps on "
        "the review set (as in `real_data_lt.py`; stage 1 with this study's one-stage recipe).",
        "",
        f'Cells: mean ± std over {n} seeds, in %. "Δ vs CE": paired difference to the CE row of the same '
        f"(IF, seed), mean ± std, seeds with a positive difference, and a two-sided paired t-test at 5% "
        f"(`scipy.stats.ttest_rel`; p < 0.05, i.e. |t| >= {t_critical(n - 1):.3f} for {n} seeds; better / worse / "
        "n.s. = not significant; no correction for the number of comparisons).",
        "",
        "## At a glance: the best row of each group by mean All accuracy (%), and its paired difference to CE",
        "",
    ]
    for add in reversed(meta.get("additions", [])):  # each inserted at the top: the first ends up first
        lines[2:2] = [
            f"Rows {', '.join(add['rows'])} added by `{add['command']}` in {add['wall_seconds'] / 60:.1f} min "
            f"({add['jobs']} workers; load average {add['loadavg_start'][0]:.1f} at start, "
            f"{add['loadavg_end'][0]:.1f} at end), commit `{add['commit']}`.",
            "",
        ]
    groups = (ONE_STAGE[1:-1], DECOUPLED, TWO_STAGE)
    glance = []
    for key in ifs:
        rows, vs = summary["rows"][key], summary["vs_ce"][key]
        cells = [key, fmt(rows["CE"]["all"]) if "CE" in rows else "–"]
        cells.append(
            f"{fmt(rows['CE + post-hoc']['all'])}, Δ {mark(vs['CE + post-hoc']['all'])}"
            if "CE + post-hoc" in vs
            else "–"
        )
        for group in groups:  # the ranking is sorted by mean All accuracy, ties in row order
            best = next((row for row in summary["ranking"][key] if row in group), None)
            cells.append(f"{best}: {fmt(rows[best]['all'])}, Δ {mark(vs[best]['all'])}" if best else "–")
        glance.append(cells)
    header = ("IF", "CE", "CE + post-hoc", "best one-stage loss", "best decoupled", "best two-stage (paper)")
    lines += [*common.md_table(header, glance), ""]
    for key in ifs:
        rows, vs = summary["rows"][key], summary["vs_ce"][key]
        cells = [
            [
                row,
                GROUP[row],
                *(fmt(m[k]) for k in SHOTS),
                *((mark(vs[row]["all"]), mark(vs[row]["few"])) if row in vs else ("–", "–")),
            ]
            for row, m in rows.items()
        ]
        header = ("Method", "Group", "Many", "Medium", "Few", "All", "Δ All vs CE", "Δ Few vs CE")
        lines += [f"## IF = {key}", "", *common.md_table(header, cells), ""]
    ranks = [
        [
            str(i + 1),
            *(
                f"{r[i]} ({summary['rows'][k][r[i]]['all'][0]:.1f})" if i < len(r) else ""
                for k, r in ((k, summary["ranking"][k]) for k in ifs)
            ),
        ]
        for i in range(max(len(summary["ranking"][k]) for k in ifs))
    ]
    lines += [
        "## Ranking per IF (mean All accuracy, best first)",
        "",
        *common.md_table(("Rank", *(f"IF = {k}" for k in ifs)), ranks),
    ]
    verdicts = {"replicates": "A better", "contradicted": "B better"}
    pairs = [
        [*common.comparison_cells(s), verdicts.get(s["verdict"], "n.s.")] for k in ifs for s in summary["pairs"][k]
    ]
    lines += ["", "## Further paired comparisons (All accuracy, fixed in advance)", ""]
    lines += common.md_table((*common.COMPARISON_HEADER, "result"), pairs)
    tuned = [[k, *(", ".join(f"{t:g}" for t in summary["tuned"][k].get(row, [])) or "–" for row in TUNED)] for k in ifs]
    lines += ["", "## Tuned values (chosen on the validation split, one per seed)", ""]
    lines += common.md_table(("IF", "LogitAdjusted tau", "CE + post-hoc tau", "tau-norm tau"), tuned)
    tasks = results["tasks"]
    by_kind: dict[str, list[float]] = {}
    for t in tasks:
        by_kind.setdefault(t["kind"], []).append(t["seconds"]["task"])
    lines += [
        "",
        "## Run time",
        "",
        f"Total wall time {meta['wall_seconds']:.0f} s ({meta['wall_seconds'] / 60:.1f} min) for {len(tasks)} tasks; "
        f"CPU time of all tasks {sum(t['seconds']['task_cpu'] for t in tasks):.0f} s. Mean seconds per task (one "
        "worker, one thread): "
        + ", ".join(f"{k} {sum(v) / len(v):.1f}" for k, v in by_kind.items())
        + ". The CE task includes the post-hoc adjustment and the four decoupled rows; the two-stage task "
        "includes stage 1 and all eight stage-2 heads.",
        "",
        "## Plots",
        "",
        f"![Accuracy vs IF]({STEM}_accuracy_vs_if.png)",
        f"![Per-class accuracy]({STEM}_per_class.png)",
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], design: Design, out: Path) -> None:
    """Accuracy against IF for every row, and per-class accuracy of a few rows."""
    plt, ifs = common.pyplot(), list(design.imbalance_factors)
    line = {"one-stage": "-", "decoupled (CE backbone)": "--", "two-stage (paper)": ":"}
    style = {
        row: {
            "capsize": 2,
            "ls": line[GROUP[row]],
            "marker": "o" if row in PLOT_ROWS else ".",
            "lw": 2 if row == "CE" else 1,
        }
        for row in ROWS
    }
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    common.plot_accuracy_vs_if(axes, results["summary"], ROWS, ifs, style)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"Fashion-MNIST-LT, permuted class order: accuracy vs IF (mean ± std, {len(design.seeds)} seeds); "
        "solid one-stage, dashed decoupled, dotted two-stage"
    )
    common.save(fig, out / f"{STEM}_accuracy_vs_if.png")

    f_plot = 100 if 100 in ifs else max(ifs)
    fig, ax = plt.subplots(figsize=(8, 4.4))
    common.plot_per_class(
        ax, results["runs"], PLOT_ROWS, f_plot, {row: {"capsize": 2, "marker": "o"} for row in PLOT_ROWS}
    )
    ax.set_xlabel("frequency rank (0 = head; a different Fashion-MNIST class per seed)")
    ax.set_title(f"Per-class accuracy by frequency rank, IF = {f_plot:g} (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=2)
    common.save(fig, out / f"{STEM}_per_class.png")
