"""Tests of the real-data evidence study, ``benchmarks/real_data_lt.py`` (package ``benchmarks/study``).

* the study's own machinery against values worked by hand (mean and std, paired statistics, verdict rules, the
  head-to-tail norm gap, claims built from fabricated per-seed records) and against the library (jointly
  trained heads equal heads trained one by one; the rows' losses are the paper's);
* the one command in its ``--quick`` form on fabricated Fashion-MNIST files: the pipeline and the report are
  checked, never the accuracy.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from study import common, paper_study, stats, training
from study.paper_study import QUICK, ROWS, Recipe
from torch import nn

import longtail_losses as ltl
from longtail_losses import paper
from longtail_losses.twostage import train_classifier


class TestStatistics:
    def test_mean_std_known_values(self):
        # [2, 4, 4, 4, 5, 5, 7, 9]: mean 5, squared deviations sum to 32, sample std sqrt(32 / 7).
        m, s = stats.mean_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
        torch.testing.assert_close(m, 5.0)
        torch.testing.assert_close(s, math.sqrt(32.0 / 7.0))
        assert stats.mean_std([3.0, math.nan]) == (3.0, 0.0)  # nan is left out; one value has std 0
        assert all(math.isnan(v) for v in stats.mean_std([math.nan]))

    def test_paired_t_known_values(self):
        # d = [1, 2, 3]: mean 2, sample std 1, t = 2 / (1 / sqrt(3)) = 3.464 < t_crit(2) = 4.303 (p = 0.074).
        result = stats.compare("x", [2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
        torch.testing.assert_close(result["mean_diff"], 2.0)
        torch.testing.assert_close(result["std_diff"], 1.0)
        torch.testing.assert_close(result["t"], 2.0 * math.sqrt(3.0))
        assert result["wins"] == 3
        assert result["verdict"] == "not resolved"

    def test_t_critical_known_values(self):
        # Two-sided 5% critical values of Student's t (any textbook table): df 4, 10, 15, 30.
        for df, crit in ((4, 2.776), (10, 2.228), (15, 2.131), (30, 2.042)):
            assert abs(stats.t_critical(df) - crit) < 5e-4, df

    def test_paired_t_textbook_example(self):
        # Student's sleep data (Cushny and Peebles; R's `t.test(extra ~ group, data = sleep, paired = TRUE)`):
        # t = -4.0621, df = 9, p-value = 0.002833.
        drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
        drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
        result = stats.compare("x", drug1, drug2)
        assert abs(result["t"] - (-4.0621)) < 1e-4
        assert result["df"] == 9
        assert abs(result["p"] - 0.002833) < 1e-6
        assert result["verdict"] == "contradicted"

    def test_sixteen_seeds_use_the_t_distribution_not_the_normal(self):
        # d = 0.53 + [1, -1, ...] over 16 pairs: t = 0.53 * 4 / sqrt(16 / 15) = 2.053, between the normal 1.96 and
        # t_crit(15) = 2.131, so p = 0.058 and the difference is not significant at 5%.
        b = [0.0] * 16
        a = [0.53 + (1.0 if i % 2 == 0 else -1.0) for i in range(16)]
        result = stats.compare("x", a, b)
        assert abs(result["t"] - 2.053) < 1e-3
        assert 0.05 < result["p"] < 0.06
        assert result["verdict"] == "not resolved"

    def test_verdicts(self):
        a = [10.0, 11.0, 12.0, 13.0, 14.0]
        b = [x - d for x, d in zip(a, [1.0, 1.2, 0.9, 1.1, 1.0])]  # differences ~1 +- 0.1: t ~ 22
        assert stats.compare("x", a, b)["verdict"] == "replicates"
        assert stats.compare("x", b, a)["verdict"] == "contradicted"
        assert stats.compare("x", b, a, kind="not_worse")["verdict"] == "contradicted"
        noisy = [x + d for x, d in zip(a, [1.0, -1.0, 0.5, -0.5, 0.1])]
        assert stats.compare("x", noisy, a)["verdict"] == "not resolved"
        assert stats.compare("x", noisy, a, kind="not_worse")["verdict"].startswith("consistent")
        assert stats.compare("x", [1.0], [0.0])["verdict"] == "n/a"

    def test_claim_combines_verdicts(self):
        up = stats.compare("up", [2.0, 2.1, 2.2], [1.0, 1.0, 1.0])
        down = stats.compare("down", [1.0, 1.0, 1.0], [2.0, 2.1, 2.2])
        flat = stats.compare("flat", [1.0, 2.0, 1.5], [1.5, 1.5, 1.5])
        assert stats.claim("k", "s", "t", [up])["verdict"] == "replicates"
        assert stats.claim("k", "s", "t", [up, down])["verdict"].startswith("mixed")
        assert stats.claim("k", "s", "t", [down, flat])["verdict"] == "does not replicate"
        assert stats.claim("k", "s", "t", [up, flat])["verdict"].startswith("partly")
        assert stats.claim("k", "s", "t", [flat])["verdict"] == "not resolved at this scale"
        assert stats.claim("k", "s", "t", [])["verdict"] == "not tested at this configuration"

    def test_norm_gap(self):
        recipe = Recipe()
        record = {"weight_norms": [4.0, 2.0, 1.0, 1.0]}
        ratio, gap = paper_study.norm_gap(record, [500, 150, 50, 10], recipe)  # Many: 4, 2 -> 3; Few: 1 -> 3
        torch.testing.assert_close(ratio, 3.0)
        torch.testing.assert_close(gap, math.log(3.0))
        assert math.isnan(paper_study.norm_gap(record, [500, 150, 50, 30], recipe)[0])  # no Few class


def test_claims_from_fabricated_records():
    """Per-seed records in which +BWLM is 5 points above every row and +CE 2 below naive, in every seed."""
    recipe = Recipe(imbalance_factors=(100,), seeds=(0, 1, 2), alpha_sweep=(0.1, 0.9))
    counts = [500, 315, 199, 125, 79, 50, 31, 20, 12, 8]
    jitter = [0.1, -0.2, 0.05]  # the same in every row: paired differences are exact
    level = {row: 50.0 for row in ROWS} | {"+BWLM": 55.0, "+CE": 48.0}
    runs = [
        {
            "row": row,
            "imbalance_factor": 100,
            "seed": s,
            **{k: (level[row] + jitter[s]) / 100 for k in common.SHOTS},
            "weight_norms": [1.0] * 10,
        }
        for row in ROWS
        for s in recipe.seeds
    ]
    results = {"jobs": [{"imbalance_factor": 100, "seed": s, "train_counts": counts} for s in recipe.seeds]}
    results |= {"runs": runs, "alpha_runs": []}
    verdicts = {c["key"]: c for c in paper_study.build_claims(paper_study.Table(results, recipe))}
    best = verdicts["bwlm_best"]
    assert best["verdict"] == "replicates"
    assert [c["label"] for c in best["comparisons"]] == [f"+BWLM > {r}, all, IF=100" for r in ROWS[:-1]]
    torch.testing.assert_close([c["mean_diff"] for c in best["comparisons"]], [5.0, 7.0] + [5.0] * 6)
    assert verdicts["weight_transfer"]["verdict"] == "does not replicate"
    assert verdicts["slower_decline"]["verdict"] == "not tested at this configuration"  # no IF = 10
    assert verdicts["alpha"]["comparisons"] == []  # no alpha runs


def test_heads_trained_together_equal_heads_trained_alone():
    """Stage 2 trains all rows as one module of heads with a summed loss; that must equal separate training."""
    torch.manual_seed(0)
    feats, labels = torch.randn(90, 6).relu(), torch.arange(90) % 3
    counts = ltl.class_counts(labels[:70], num_classes=3)  # any positive counts
    init = nn.Linear(6, 3).state_dict()
    rows = ("+CE", "+BSW", "+BWLM")

    def fresh():
        head = nn.Linear(6, 3)
        head.load_state_dict(init)
        return head

    heads = [fresh() for _ in rows]
    criteria = [common.criterion(r, counts, h, QUICK) for r, h in zip(rows, heads)]
    kwargs = {"epochs": 4, "batch_size": 16, "lr": 0.05, "seed": 3}
    train_classifier(training.Heads(heads), feats, labels, training.SumOfLosses(criteria, 3), **kwargs)
    for row, joint in zip(rows, heads):
        alone = fresh()
        train_classifier(alone, feats, labels, common.criterion(row, counts, alone, QUICK), **kwargs)
        torch.testing.assert_close(joint.weight, alone.weight)
        torch.testing.assert_close(joint.bias, alone.bias)


def test_criteria_are_the_papers_rows_with_the_study_hyperparameters():
    head = nn.Linear(4, 3)
    counts = torch.tensor([50, 10, 2])
    settings = Recipe(weight_decay=0.02, alpha=0.4)
    logits, target = torch.randn(8, 3), torch.arange(8) % 3
    penalty = ltl.functional.classifier_norm_penalty(head.weight, weight_decay=0.02)
    bs = ltl.functional.balanced_softmax_loss(logits, target, counts)
    torch.testing.assert_close(common.criterion("+BS", counts, head, settings)(logits, target), bs)
    torch.testing.assert_close(common.criterion("+BSW", counts, head, settings)(logits, target), bs + penalty)
    ce = nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(common.criterion("naive", counts, head, settings)(logits, target), ce)
    torch.testing.assert_close(common.criterion("+CEW", counts, head, settings)(logits, target), ce + penalty)
    for alpha in (None, 0.3):  # the study's alpha, or a sweep's
        bwlm = ltl.functional.bwlm_loss(logits, target, counts, head, alpha=alpha or 0.4, weight_decay=0.02)
        torch.testing.assert_close(common.criterion("+BWLM", counts, head, settings, alpha)(logits, target), bwlm)
    assert ("naive", *paper.STAGE2_ROWS) == ROWS


@pytest.fixture(scope="module")
def quick(run_quick, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_data_lt")
    run_quick("real_data_lt", out)
    return out, json.loads((out / "real_data_lt.json").read_text())


@pytest.mark.slow
def test_quick_study_runs_every_row_and_job(quick):
    _, results = quick
    recipe = results["recipe"]
    assert recipe["quick"] is True
    assert results["meta"]["wall_seconds"] > 0
    assert len(results["jobs"]) == len(recipe["seeds"]) * len(recipe["imbalance_factors"])
    assert {(r["row"], r["seed"]) for r in results["runs"]} == {(row, s) for row in ROWS for s in recipe["seeds"]}
    assert sorted({a["alpha"] for a in results["alpha_runs"]}) == sorted(recipe["alpha_sweep"])
    for job in results["jobs"]:
        counts = job["train_counts"]
        assert counts == ltl.data.longtail_counts(10, recipe["max_count"], job["imbalance_factor"])
        # Data balanced review: each head class cut to the count of the first tail class, tails kept.
        assert job["stage2_counts"] == [counts[5]] * 5 + counts[5:]
        assert job["stage1_samples"] == sum(counts[:5])
        assert job["stage2_heads"] == len(paper.STAGE2_ROWS) + len(recipe["alpha_sweep"]) - 1
    # alpha = 0.1 of the sweep is the main BWLM row itself.
    for seed in recipe["seeds"]:
        main = next(r for r in results["runs"] if r["row"] == "+BWLM" and r["seed"] == seed)
        sweep = next(a for a in results["alpha_runs"] if a["alpha"] == recipe["alpha"] and a["seed"] == seed)
        assert main["per_class_accuracy"] == sweep["per_class_accuracy"]


@pytest.mark.slow
def test_quick_study_records_are_consistent(quick):
    _, results = quick
    recipe = results["recipe"]
    for run in results["runs"] + results["alpha_runs"]:
        counts = next(
            j["train_counts"]
            for j in results["jobs"]
            if j["seed"] == run["seed"] and j["imbalance_factor"] == run["imbalance_factor"]
        )
        per_class = run["per_class_accuracy"]
        assert len(per_class) == 10
        assert all(0.0 <= a <= 1.0 for a in per_class)
        assert all(n > 0 for n in run["weight_norms"])
        # The shot groups recomputed from the per-class accuracies (balanced test set: mean over classes).
        few = [a for a, c in zip(per_class, counts) if c < recipe["few_threshold"]]
        many = [a for a, c in zip(per_class, counts) if c > recipe["many_threshold"]]
        torch.testing.assert_close(run["few"], sum(few) / len(few))
        torch.testing.assert_close(run["many"], sum(many) / len(many))
        torch.testing.assert_close(run["all"], sum(per_class) / 10)
    # The summary is the mean and sample std over seeds of the records, computed here by hand.
    for row in ROWS:
        values = [100 * r["all"] for r in results["runs"] if r["row"] == row]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        torch.testing.assert_close(results["summary"]["rows"]["100"][row]["all"], [mean, std])


@pytest.mark.slow
def test_quick_study_report_and_rebuild(quick, run_quick):
    out, results = quick
    report = (out / "real_data_lt.md").read_text()
    assert "QUICK SMOKE RUN" in report
    assert "## Verdict per claim" in report
    assert {v["key"] for v in results["verdicts"]} >= {"weight_transfer", "weight_decay_helps", "bwlm_best", "alpha"}
    for name in ("accuracy_vs_if", "weight_norms", "alpha_sweep", "per_class"):
        png = out / f"real_data_lt_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        png.unlink()
    (out / "real_data_lt.md").unlink()
    run_quick("real_data_lt", out, "--report-only")
    assert (out / "real_data_lt.md").read_text() == report  # the report is a function of the JSON
    assert (out / "real_data_lt_per_class.png").exists()


@pytest.mark.slow
def test_quick_study_same_numbers_on_two_workers(quick, run_quick, tmp_path):
    """Every job is deterministic given its seed: two worker processes give the records of one."""
    _, one = quick
    run_quick("real_data_lt", tmp_path, "--jobs", "2")
    two = json.loads((tmp_path / "real_data_lt.json").read_text())
    assert two["meta"]["jobs"] == 2
    for key in ("runs", "alpha_runs", "summary", "verdicts"):
        assert two[key] == one[key], key
