"""The paper's study (``benchmarks/real_data_lt.py``): recipe, one job (naive model and every row), claims, report."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from longtail_losses import class_counts, paper
from longtail_losses.data import fashion_mnist_lt
from longtail_losses.twostage import data_balanced_review

from . import common
from .common import NUM_CLASSES, SHOTS, Settings, criterion, evaluate, fmt, load_full, normalise
from .stats import claim, compare, mean_std, t_critical
from .training import TinyCNN, logits_of, run_stage2, train_sgd

STEM, KEY = "real_data_lt", "recipe"
ROWS = tuple(paper.ROWS)  # naive, then the two-stage rows paper.STAGE2_ROWS, in the paper's order
W_PAIRS = (("+CE", "+CEW"), ("+CB", "+CBW"), ("+BS", "+BSW"), ("+BFS", "+BWLM"))  # each loss with and without "W"


@dataclass(frozen=True)
class Recipe(Settings):
    """The study's settings; one recipe for every row, fixed before looking at any result."""

    stage1_epochs: int = 30
    stage1_lr: float = 0.05
    stage1_weight_decay: float = paper.RECIPE.stage1_weight_decay
    stage2_lr: float = 0.05
    alpha_sweep: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    alpha_sweep_if: float = 100


QUICK = Recipe(
    imbalance_factors=(100,), seeds=(0, 1), stage1_epochs=2, stage2_steps=150, alpha_sweep=(0.1, 0.5, 0.9), quick=True
)


def train_cnn(model: TinyCNN, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int) -> float:
    """One-stage / stage-1 recipe: SGD(0.9), cosine lr per step to 0, weight decay, cross-entropy. Seconds."""
    loss = criterion("naive", class_counts(y, num_classes=NUM_CLASSES), model.fc, recipe)  # cross-entropy
    r = recipe
    kw = {
        "epochs": r.stage1_epochs,
        "lr": r.stage1_lr,
        "weight_decay": r.stage1_weight_decay,
        "batch_size": r.batch_size,
    }
    return train_sgd(model, x, y, loss, seed=seed, **kw)


def run_job(root: str, imbalance_factor: float, seed: int, recipe: Recipe) -> dict[str, Any]:
    """Naive model, stage 1 and every stage-2 row for one (IF, seed); deterministic given the seed."""
    torch.set_num_threads(1)
    job_start, cpu_start = time.perf_counter(), time.process_time()
    x, y = fashion_mnist_lt(root, imbalance_factor, train=True, max_count=recipe.max_count, seed=seed).as_tensors()
    x = normalise(x)
    x_test, y_test = load_full(root, train=False)
    seconds = {"data": time.perf_counter() - job_start}
    counts = class_counts(y, num_classes=NUM_CLASSES)
    base_seed = 1000 * seed + int(imbalance_factor)

    torch.manual_seed(base_seed)  # one-stage ("naive") cross-entropy on the whole long-tailed set
    naive = TinyCNN()
    seconds["naive"] = train_cnn(naive, x, y, recipe, seed)
    naive_logits = logits_of(naive, x_test, y_test)
    runs = [{"row": "naive", **evaluate(naive_logits, y_test, counts, naive.fc.weight, recipe)}]

    stage1_idx, stage2_idx = data_balanced_review(y, seed=seed)  # stage 1: the head classes (eq. 2)
    torch.manual_seed(base_seed + 1)
    model = TinyCNN()
    seconds["stage1"] = train_cnn(model, x[stage1_idx], y[stage1_idx], recipe, seed)

    specs: list[tuple[str, Optional[float]]] = [(row, None) for row in paper.STAGE2_ROWS]
    sweep = imbalance_factor == recipe.alpha_sweep_if
    specs += [("+BWLM", a) for a in recipe.alpha_sweep if a != recipe.alpha] if sweep else []
    review, test = (x[stage2_idx], y[stage2_idx]), (x_test, y_test)
    stage2 = run_stage2(model, review, test, specs, recipe, lr=recipe.stage2_lr, seed=seed, init_seed=base_seed + 2)
    alpha_runs = []
    for (row, a), head, z in zip(specs, stage2["heads"], stage2["logits"]):
        record = {"row": row, **evaluate(z, y_test, counts, head.weight, recipe)}
        if a is None:
            runs.append(record)
        if row == "+BWLM" and sweep:
            alpha_runs.append({**record, "alpha": recipe.alpha if a is None else a})
    alpha_runs.sort(key=lambda r: r["alpha"])
    for r in (*runs, *alpha_runs):
        r.update(imbalance_factor=imbalance_factor, seed=seed)
    seconds |= {"extract": stage2["extract_seconds"], "stage2_all_heads": stage2["train_seconds"]}
    seconds |= {"job": time.perf_counter() - job_start, "job_cpu": time.process_time() - cpu_start}
    job = {
        "imbalance_factor": imbalance_factor,
        "seed": seed,
        "train_counts": counts.tolist(),
        "stage1_samples": len(stage1_idx),
        "stage2_counts": stage2["counts"].tolist(),
        "stage2_epochs": stage2["epochs"],
        "stage2_steps": stage2["steps"],
        "stage2_heads": len(specs),
        "seconds": seconds,
    }
    return {"job": job, "runs": runs, "alpha_runs": alpha_runs}


def task_list(recipe: Recipe) -> list[tuple[float, int]]:
    """Every (IF, seed), the longest first (the sweep IF trains more heads; low IF = more images)."""
    pairs = [(f, s) for f in recipe.imbalance_factors for s in recipe.seeds]
    return sorted(pairs, key=lambda fs: (-(fs[0] == recipe.alpha_sweep_if), fs[0], fs[1]))


def run_study(root: str, recipe: Recipe, jobs: int) -> dict[str, Any]:
    """Every job of ``recipe`` on ``jobs`` workers: the jobs and the sorted runs."""
    describe = lambda call, d: f"IF={call[1]:g} seed={call[2]}: {d['job']['seconds']['job']:.0f} s"  # noqa: E731
    done = common.run_all(run_job, [(root, f, s, recipe) for f, s in task_list(recipe)], jobs, describe)
    return {
        "jobs": sorted((d["job"] for d in done), key=lambda j: (j["imbalance_factor"], j["seed"])),
        "runs": sorted(
            (r for d in done for r in d["runs"]), key=lambda r: (r["imbalance_factor"], r["seed"], ROWS.index(r["row"]))
        ),
        "alpha_runs": sorted((r for d in done for r in d["alpha_runs"]), key=lambda r: (r["seed"], r["alpha"])),
    }


# The claims.


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
        self.recipe, self.seeds = recipe, list(recipe.seeds)
        counts = {(j["imbalance_factor"], j["seed"]): j["train_counts"] for j in results["jobs"]}
        self.values: dict[tuple[str, str, float], dict[int, float]] = {}
        for r in results["runs"] + [{**a, "row": f"alpha={a['alpha']:g}"} for a in results["alpha_runs"]]:
            ratio, gap = norm_gap(r, counts[r["imbalance_factor"], r["seed"]], recipe)
            for metric, value in {**{k: 100.0 * r[k] for k in SHOTS}, "norm_ratio": ratio, "norm_gap": gap}.items():
                self.values.setdefault((r["row"], metric, r["imbalance_factor"]), {})[r["seed"]] = value

    def get(self, row: str, metric: str, imbalance_factor: float) -> list[float]:
        """Per-seed values of ``metric`` for ``row`` at ``imbalance_factor`` (``nan`` where missing)."""
        found = self.values.get((row, metric, imbalance_factor), {})
        return [found.get(s, math.nan) for s in self.seeds]

    def has(self, row: str, imbalance_factor: float) -> bool:
        """Whether ``row`` was run at ``imbalance_factor``."""
        return (row, "all", imbalance_factor) in self.values


def build_claims(tab: Table) -> list[dict[str, Any]]:
    """Every claim of the paper that the study tests, evaluated at the study's imbalance factors."""
    r, g = tab.recipe, tab.get
    ifs = list(r.imbalance_factors)
    high = [f for f in ifs if f >= 100]

    def each(fs: Sequence[float], *specs: tuple[str, ...]) -> list[dict[str, Any]]:
        """``a > b`` on ``metric`` (``kind``: optional) for every IF of ``fs`` and every ``(a, b, metric[, kind])``."""
        return [
            compare(f"{a} > {b}, {m}, IF={f:g}", g(a, m, f), g(b, m, f), *kind) for f in fs for a, b, m, *kind in specs
        ]

    def gap(a: str, b: str, f: float) -> dict[str, Any]:
        return compare(f"norm gap {a} > {b}, IF={f:g}", g(a, "norm_gap", f), g(b, "norm_gap", f), unit="log ratio")

    def drop(row: str, f: float) -> list[float]:
        return [lo - hi for lo, hi in zip(g(row, "all", 10), g(row, "all", f))]

    ones = [1.0] * len(tab.seeds)
    norms = []
    for f in high:
        norms.append(
            compare(f"naive Many/Few norm ratio > 1, IF={f:g}", g("naive", "norm_ratio", f), ones, unit="ratio")
        )
        norms += [gap("naive", w, f) for w in ("+CBW", "+BWLM")] + [gap(p, w, f) for p, w in W_PAIRS]
        upward = [1.0 / v for v in g("+BWLM", "norm_ratio", f)]
        norms.append(compare(f"+BWLM Few/Many norm ratio > 1 (upward trend), IF={f:g}", upward, ones, unit="ratio"))
    f_a, lo, hi = r.alpha_sweep_if, f"alpha={min(r.alpha_sweep):g}", f"alpha={max(r.alpha_sweep):g}"
    alpha = []
    if tab.has(lo, f_a) and tab.has(hi, f_a) and lo != hi:
        specs = [("many", hi, lo)] + [(m, lo, hi) for m in ("medium", "few", "all")]
        alpha = [compare(f"{m.capitalize()}: {a} > {b}, IF={f_a:g}", g(a, m, f_a), g(b, m, f_a)) for m, a, b in specs]
    return [
        claim(
            "weight_transfer",
            "Table 2/3 (+CE 44.6 vs naive 39.6 All on ImageNet-LT)",
            "Two-stage weight transfer with plain CE beats the one-stage naive model on All accuracy.",
            each(ifs, ("+CE", "naive", "all")),
        ),
        claim(
            "transfer_tradeoff",
            "Sec. 3.2, Table 2 (Many 57.6 -> 55.5, Medium 32.5 -> 48.5, Few 13.4 -> 19.4)",
            "Weight transfer raises Medium and Few accuracy and lowers Many accuracy.",
            each(ifs, ("+CE", "naive", "medium"))
            + each(high, ("+CE", "naive", "few"))
            + each(ifs, ("naive", "+CE", "many")),
        ),
        claim(
            "weight_decay_helps",
            "Table 2 (CEW 46.4 > CE 44.6, CBW 47.0 > CB 41.5, BSW 47.3 > BS 44.6, BWLM 47.5 > BFS 44.5)",
            "Adding the classifier weight decay improves every loss on All accuracy.",
            each(ifs, *[(w, p, "all") for p, w in W_PAIRS]),
        ),
        claim(
            "bfs_balances",
            "Sec. 4.3 text on Table 2",
            "CB favours Many and BS favours Few; BFS combines them: better Few than CB and better Many than BS.",
            each(high, ("+CB", "+BS", "many"), ("+BS", "+CB", "few"), ("+BFS", "+CB", "few"), ("+BFS", "+BS", "many")),
        ),
        claim(
            "bwlm_best",
            "Table 2 (ImageNet-LT) and Table 4 (CIFAR-100-LT, best at IF = 100 and 200)",
            "BWLM has the highest All accuracy of all rows.",
            each(ifs, *[("+BWLM", other, "all") for other in ROWS if other != "+BWLM"]),
        ),
        claim(
            "bsw_few_cbw_many",
            "Sec. 4.4 on Table 3 (CBW Many 61.7 > BSW 58.2; BSW Few 29.7 > CBW 26.3)",
            "CBW is better than BSW on Many classes, BSW better than CBW on Few classes.",
            each(high, ("+CBW", "+BSW", "many"), ("+BSW", "+CBW", "few")),
        ),
        claim(
            "slower_decline",
            "Table 4 / Fig. 5b (IF 10 -> 100: others lose 17-25 pt, BWLM about 10 pt)",
            "BWLM's All accuracy falls less than the one-stage CE model's as the imbalance factor grows.",
            [
                compare(f"drop(naive) > drop(+BWLM), All, IF=10 -> {f:g}", drop("naive", f), drop("+BWLM", f))
                for f in (high if 10 in ifs else [])
            ],
        ),
        claim(
            "weight_norms",
            "Fig. 5a",
            "Naive classifier norms fall from head to tail; weight decay narrows the Many-Few norm gap; BWLM's norms "
            "trend slightly upward towards the tail. (Here: ratio = mean norm of the Many classes / mean norm of the "
            "Few classes; norm gap = abs(log ratio), so a smaller gap is a flatter profile in either direction.)",
            norms,
        ),
        claim(
            "alpha",
            "Fig. 4",
            "Large alpha (more CB) favours Many classes, small alpha (more BS) favours Medium and Few; All accuracy "
            "declines slowly as alpha grows, so alpha = 0.1 is a good default.",
            alpha,
        ),
        claim(
            "per_class",
            "Fig. 7 (CIFAR-100-LT, IF = 200)",
            "Against the naive model, BWLM improves Medium and Few classes without compromising Many classes.",
            each(
                [max(ifs)],
                ("+BWLM", "naive", "medium"),
                ("+BWLM", "naive", "few"),
                ("+BWLM", "naive", "many", "not_worse"),
            ),
        ),
    ]


# The report.


def report(results: dict[str, Any], recipe: Recipe, out: Path) -> None:
    """Add summary and verdicts to ``results`` and write the JSON, the Markdown report and the plots to ``out``."""
    tab = Table(results, recipe)
    summary: dict[str, Any] = {"rows": {}, "alpha": {}, "weight_norms": {}}
    for f in recipe.imbalance_factors:
        metrics = (*SHOTS, "norm_ratio")
        summary["rows"][f"{f:g}"] = {
            row: {m: mean_std(tab.get(row, m, f)) for m in metrics} for row in ROWS if tab.has(row, f)
        }
        norms: dict[str, Any] = {}
        for row in ROWS:
            per = [r["weight_norms"] for r in results["runs"] if r["row"] == row and r["imbalance_factor"] == f]
            if per:
                norms[row] = [mean_std([p[c] for p in per]) for c in range(NUM_CLASSES)]
        summary["weight_norms"][f"{f:g}"] = norms
    for a in recipe.alpha_sweep:
        if tab.has(f"alpha={a:g}", recipe.alpha_sweep_if):
            summary["alpha"][f"{a:g}"] = {m: mean_std(tab.get(f"alpha={a:g}", m, recipe.alpha_sweep_if)) for m in SHOTS}
    results["summary"] = summary
    results["verdicts"] = build_claims(tab)
    common.write_json(out / f"{STEM}.json", results)
    (out / f"{STEM}.md").write_text(markdown(results, recipe))
    plots(results, recipe, out)


def headline(results: dict[str, Any]) -> list[str]:
    """The verdict per claim, for the console."""
    return [f"{v['key']}: {v['verdict']}" for v in results["verdicts"]]


def markdown(results: dict[str, Any], recipe: Recipe) -> str:
    meta, summary, jobs = results["meta"], results["summary"], results["jobs"]
    r = recipe
    lines = [
        "# Evidence on real data: Fashion-MNIST-LT" + (" (QUICK SMOKE RUN — not evidence)" if r.quick else ""),
        "",
        f"Generated by `{meta['command']}` in {meta['wall_seconds'] / 60:.1f} min on {meta['cpu_count']} CPU cores "
        f"({meta['jobs']} worker processes x 1 thread; load average {meta['loadavg_start'][0]:.1f} at start, "
        f"{meta['loadavg_end'][0]:.1f} at end — other processes shared the machine), torch {meta['torch']}, "
        f"commit `{meta['commit']}`. Every number below comes from `{STEM}.json` in this folder.",
        "",
        "## Setup",
        "",
        f"* Fashion-MNIST-LT, 10 classes, head class {r.max_count} images, exponential profile, IF in "
        f"{{{', '.join(f'{f:g}' for f in r.imbalance_factors)}}}; seeds {list(r.seeds)} (the seed picks "
        "the subsample, the initialisations and the batches). Test: the full balanced 10,000-image test set.",
        f"* Many > {r.many_threshold:g}, Medium {r.few_threshold:g}–{r.many_threshold:g}, Few < "
        f"{r.few_threshold:g} training images: the paper's thresholds unchanged, since the head class has "
        f"{r.max_count} images as in CIFAR-100-LT (scale factor {r.max_count}/500).",
        "* Class counts per IF (class 0 first): "
        + "; ".join(
            f"IF={f:g}: {next(j['train_counts'] for j in jobs if j['imbalance_factor'] == f)}"
            for f in r.imbalance_factors
        )
        + ".",
        f"* Tiny CNN (2 conv blocks 8/16 ch., 64-d feature layer, linear `fc`). Naive and stage 1: SGD 0.9, batch "
        f"{r.batch_size}, lr {r.stage1_lr} cosine to 0, {r.stage1_epochs} epochs, weight decay "
        f"{r.stage1_weight_decay}. Stage 2: frozen backbone in eval mode, cached features, new linear "
        f"classifier, SGD 0.9, batch {r.batch_size}, lr {r.stage2_lr} cosine to 0, about "
        f"{r.stage2_steps} steps (lr x steps = the paper's CIFAR-100-LT stage 2, 0.01 x 16,960). W rows: "
        f"in-loss penalty lambda/2 ||W||^2 with lambda = {r.weight_decay} (BWLM's convention) for CEW, CBW, "
        f"BSW and BWLM; CB/BFS/BWLM beta = {r.beta}, gamma = {r.gamma}; BFS/BWLM alpha = {r.alpha}. "
        "Stage-2 losses "
        "use the class counts of the review set they train on. Same recipe for every row, fixed before any result.",
        "",
        "## Accuracy (%), mean ± std over seeds",
        "",
    ]
    for f, rows in summary["rows"].items():
        table = common.md_table(
            ("Method", "Many", "Medium", "Few", "All"),
            [[row, *(fmt(m[k]) for k in SHOTS)] for row, m in rows.items()],
        )
        lines += [f"**IF = {f}**", "", *table, ""]
    f_norm = f"{r.alpha_sweep_if:g}"
    if f_norm in summary["weight_norms"]:
        header = ("Method", *(str(c) for c in range(NUM_CLASSES)), "Many/Few ratio")
        cells = [
            [row, *(fmt(p, 2) for p in per), fmt(summary["rows"][f_norm][row]["norm_ratio"], 2)]
            for row, per in summary["weight_norms"][f_norm].items()
        ]
        lines += [f"## Classifier weight norms per class (IF = {f_norm}, classes by descending count), mean ± std", ""]
        lines += [*common.md_table(header, cells), ""]
    if summary["alpha"]:
        lines += [f"## BWLM alpha sweep (IF = {r.alpha_sweep_if:g}), accuracy (%) mean ± std", ""]
        lines += common.md_table(
            ("alpha", "Many", "Medium", "Few", "All"),
            [[a, *(fmt(m[k]) for k in SHOTS)] for a, m in summary["alpha"].items()],
        )
        best = max(summary["alpha"].items(), key=lambda kv: kv[1]["all"][0])
        lines += ["", f"Best mean All accuracy at alpha = {best[0]} ({fmt(best[1]['all'])}).", ""]
    parts = [
        k
        for k in ("data", "naive", "stage1", "extract", "stage2_all_heads", "job")
        if all(k in j["seconds"] for j in jobs)
    ]
    cpu = sum(j["seconds"].get("job_cpu", math.nan) for j in jobs)  # not recorded by older runs
    lines += [
        "## Wall time",
        "",
        f"Total {meta['wall_seconds']:.0f} s. Mean per job (one IF and seed; seconds of one worker): "
        + ", ".join(f"{k} {sum(j['seconds'][k] for j in jobs) / len(jobs):.1f}" for k in parts)
        + ". Stage 2 trains all rows of a job (and, at the sweep IF, the alpha sweep) together as independent heads."
        + (
            ""
            if math.isnan(cpu)
            else f" CPU time of all jobs: {cpu:.0f} s, i.e. about {cpu / meta['jobs'] / 60:.1f} min of wall time on "
            f"{meta['jobs']} otherwise idle cores."
        ),
        "",
    ]
    return "\n".join(lines + verdict_markdown(results["verdicts"], r))


def verdict_markdown(verdicts: list[dict[str, Any]], recipe: Recipe) -> list[str]:
    n = len(recipe.seeds)
    lines = [
        "## Verdict per claim",
        "",
        f"Each claim is tested by paired differences over the {n} seeds (same data subsample, stage-1 model, initial "
        "classifier and batches within a seed): mean ± std of the difference, the number of seeds in which it has "
        f"the claimed sign, and a two-sided paired t-test at 5% (`scipy.stats.ttest_rel`; p < 0.05, i.e. "
        f"|t| >= {t_critical(n - 1):.3f} for {n} seeds; no "
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
            cells = [
                [*common.comparison_cells(s, 1 if s["unit"] == "pt" else 3), s["verdict"]] for s in v["comparisons"]
            ]
            lines += [*common.md_table((*common.COMPARISON_HEADER, "verdict"), cells), ""]
    plots_md = ("accuracy_vs_if", "All and Few accuracy vs IF"), ("weight_norms", "Classifier weight norms")
    plots_md += ("alpha_sweep", "BWLM alpha sweep"), ("per_class", "Per-class accuracy")
    return [*lines, "## Plots", "", *(f"![{alt}]({STEM}_{name}.png)" for name, alt in plots_md), ""]


def plots(results: dict[str, Any], recipe: Recipe, out: Path) -> None:
    """Figures 4, 5a, 5b and 7 of the paper, redrawn from the study's ``results``."""
    plt, summary, ifs = common.pyplot(), results["summary"], list(recipe.imbalance_factors)
    styles = {
        row: {"marker": "o" if row in ("naive", "+BWLM") else ".", "lw": 2.5 if row == "+BWLM" else 1.2} for row in ROWS
    }
    with_caps = {row: {**s, "capsize": 3} for row, s in styles.items()}

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    common.plot_accuracy_vs_if(axes, summary, ROWS, ifs, with_caps)
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(f"Fashion-MNIST-LT: accuracy vs IF (mean ± std, {len(recipe.seeds)} seeds) — cf. paper Fig. 5b")
    common.save(fig, out / f"{STEM}_accuracy_vs_if.png")

    f = f"{recipe.alpha_sweep_if:g}"
    norms = summary["weight_norms"].get(f, {})
    if norms:
        counts = next(j["train_counts"] for j in results["jobs"] if f"{j['imbalance_factor']:g}" == f)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        x = list(range(NUM_CLASSES))
        for row in ("naive", "+CE", "+CEW", "+CBW", "+BSW", "+BWLM"):
            if row in norms:
                m, s = [p[0] for p in norms[row]], [p[1] for p in norms[row]]
                axes[0].errorbar(x, m, yerr=s, label=row, capsize=2, **styles[row])
                axes[1].plot(x, [v / (sum(m) / len(m)) for v in m], label=row, **styles[row])
        for ax, title in zip(axes, ("per-class weight norm", "norm / mean norm of the row")):
            ax.set_xlabel("class (descending training count)")
            ax.set_ylabel(title)
            ax.grid(alpha=0.3)
            twin = ax.twinx()
            twin.plot(x, counts, "k--", lw=1)
            twin.set_ylabel("training images (dashed)")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Classifier weight norms, IF = {f} (mean over seeds) — cf. paper Fig. 5a")
        common.save(fig, out / f"{STEM}_weight_norms.png")

    if summary["alpha"]:
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
        alphas = [float(a) for a in summary["alpha"]]
        for ax, metric in zip(axes, ("all", "many", "medium", "few")):
            ms = [summary["alpha"][f"{a:g}"][metric] for a in alphas]
            ax.errorbar(alphas, [v[0] for v in ms], yerr=[v[1] for v in ms], marker="o", capsize=3)
            ax.set_title(metric.capitalize())
            ax.set_xlabel("alpha")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("accuracy (%)")
        fig.suptitle(f"BWLM alpha sweep, IF = {recipe.alpha_sweep_if:g} (mean ± std) — cf. paper Fig. 4")
        common.save(fig, out / f"{STEM}_alpha_sweep.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    common.plot_per_class(ax, results["runs"], ("naive", "+CE", "+BWLM"), max(ifs), with_caps)
    ax.set_xlabel("class (descending training count)")
    ax.set_title(f"Per-class accuracy, IF = {max(ifs):g} (mean ± std) — cf. paper Fig. 7")
    ax.legend()
    common.save(fig, out / f"{STEM}_per_class.png")
