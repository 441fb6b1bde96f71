"""The paper study's report: the summary over seeds, the verdict per claim and the Markdown page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import NUM_CLASSES, SHOTS
from .paper_claims import Table, build_claims
from .paper_study import ROWS, STEM, Recipe
from .plots import paper_plots
from .runner import write_json
from .stats import fmt, mean_std, t_critical


def report(results: dict[str, Any], recipe: Recipe, out: Path) -> None:
    """Add summary and verdicts to ``results`` and write the JSON, the Markdown report and the plots to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{STEM}.json", results)  # raw runs first
    results["summary"] = summarise(results, recipe)
    results["verdicts"] = [c.evaluate() for c in build_claims(Table(results, recipe))]
    write_json(out / f"{STEM}.json", results)
    (out / f"{STEM}.md").write_text(markdown(results, recipe))
    paper_plots(results, recipe, out)


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
            lines += [
                "| Comparison | A | B | A − B | seeds A > B | t (df) | p | verdict |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for s in v["comparisons"]:
                digits = 1 if s["unit"] == "pt" else 3
                lines.append(
                    f"| {s['label']} | {fmt(s['a_mean_std'], digits)} | {fmt(s['b_mean_std'], digits)} | "
                    f"{fmt((s['mean_diff'], s['std_diff']), digits)} | {s['wins']}/{s['n']} | "
                    f"{s['t']:.2f} ({s['df']}) | {s['p']:.3f} | {s['verdict']} |"
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
