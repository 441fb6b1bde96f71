"""Tests of the real-data evidence study, ``benchmarks/real_data_lt.py`` (issue 7).

Three kinds of test:

* the study's own machinery, against values worked by hand (paired statistics, verdict rules, the head-to-tail
  norm gap) and against the library (jointly trained heads equal heads trained one by one);
* a smoke test of the one command in its ``--quick`` form (2 seeds, IF = 100, a few epochs): it checks the
  pipeline and the report, never the accuracy. It needs the Fashion-MNIST IDX files and skips without them;
* what is robust across seeds, read from the committed results of the full study
  (``benchmarks/results/real_data_lt.json``). Re-running the full study takes 15-30 minutes on 2 cores, far too
  long for CI, and a reduced multi-seed study (fewer epochs) would test a different recipe than the one the docs
  report. So the test recomputes the claims from the per-seed records in the JSON, independently of the
  script's own summary code, and asserts only what holds in every seed with a margin; it also checks that the
  summary committed next to the records was computed from them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import longtail_losses as ltl
from longtail_losses.twostage import train_classifier

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "real_data_lt.py"
RESULTS = REPO / "benchmarks" / "results" / "real_data_lt.json"
DATA_ROOT = Path(os.environ.get("FASHION_MNIST_ROOT", "/usr/share/datasets/fashion-mnist"))
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
HAVE_DATA = all((DATA_ROOT / f).exists() or (DATA_ROOT / f"{f}.gz").exists() for f in FILES)
needs_data = pytest.mark.skipif(
    not HAVE_DATA,
    reason=f"Fashion-MNIST IDX files not found in {DATA_ROOT} (install the Debian package dataset-fashion-mnist "
    "or set FASHION_MNIST_ROOT)",
)


def _load_script():
    spec = importlib.util.spec_from_file_location("real_data_lt", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("real_data_lt", module)
    spec.loader.exec_module(module)
    return module


R = _load_script()


class TestStatistics:
    def test_paired_t_known_values(self):
        # d = [1, 2, 3]: mean 2, sample std 1, t = 2 / (1 / sqrt(3)) = 3.464 < t_crit(2) = 4.303.
        stats = R.Comparison("x", [2.0, 4.0, 6.0], [1.0, 2.0, 3.0]).evaluate()
        torch.testing.assert_close(stats["mean_diff"], 2.0)
        torch.testing.assert_close(stats["std_diff"], 1.0)
        torch.testing.assert_close(stats["t"], 2.0 * math.sqrt(3.0))
        assert stats["wins"] == 3
        assert stats["verdict"] == "not resolved"

    def test_verdicts(self):
        a = [10.0, 11.0, 12.0, 13.0, 14.0]
        b = [x - d for x, d in zip(a, [1.0, 1.2, 0.9, 1.1, 1.0])]  # differences ~1 +- 0.1: t ~ 22
        assert R.Comparison("x", a, b).evaluate()["verdict"] == "replicates"
        assert R.Comparison("x", b, a).evaluate()["verdict"] == "contradicted"
        assert R.Comparison("x", b, a, kind="not_worse").evaluate()["verdict"] == "contradicted"
        noisy = [x + d for x, d in zip(a, [1.0, -1.0, 0.5, -0.5, 0.1])]
        assert R.Comparison("x", noisy, a).evaluate()["verdict"] == "not resolved"
        assert R.Comparison("x", noisy, a, kind="not_worse").evaluate()["verdict"].startswith("consistent")
        assert R.Comparison("x", [1.0], [0.0]).evaluate()["verdict"] == "n/a"

    def test_claim_combines_verdicts(self):
        up = R.Comparison("up", [2.0, 2.1, 2.2], [1.0, 1.0, 1.0])
        down = R.Comparison("down", [1.0, 1.0, 1.0], [2.0, 2.1, 2.2])
        flat = R.Comparison("flat", [1.0, 2.0, 1.5], [1.5, 1.5, 1.5])
        assert R.Claim("k", "s", "t", [up]).evaluate()["verdict"] == "replicates"
        assert R.Claim("k", "s", "t", [up, down]).evaluate()["verdict"].startswith("mixed")
        assert R.Claim("k", "s", "t", [down, flat]).evaluate()["verdict"] == "does not replicate"
        assert R.Claim("k", "s", "t", [up, flat]).evaluate()["verdict"].startswith("partly")
        assert R.Claim("k", "s", "t", [flat]).evaluate()["verdict"] == "not resolved at this scale"

    def test_norm_gap(self):
        recipe = R.Recipe()
        record = {"weight_norms": [4.0, 2.0, 1.0, 1.0]}
        ratio, gap = R.norm_gap(record, [500, 150, 50, 10], recipe)  # Many: 4, 2 -> 3; Few: 1 -> ratio 3
        torch.testing.assert_close(ratio, 3.0)
        torch.testing.assert_close(gap, math.log(3.0))
        assert math.isnan(R.norm_gap(record, [500, 150, 50, 30], recipe)[0])  # no Few class


def test_heads_trained_together_equal_heads_trained_alone():
    """Stage 2 trains all rows as one module of heads with a summed loss; that must equal separate training."""
    torch.manual_seed(0)
    feats, labels = torch.randn(90, 6).relu(), torch.arange(90) % 3
    counts = ltl.class_counts(labels[:70], num_classes=3)  # any positive counts
    recipe = R.Recipe()
    init = nn.Linear(6, 3).state_dict()
    rows = ("+CE", "+BSW", "+BWLM")

    def fresh():
        head = nn.Linear(6, 3)
        head.load_state_dict(init)
        return head

    heads = [fresh() for _ in rows]
    criteria = [R.stage2_criterion(r, h, counts, recipe) for r, h in zip(rows, heads)]
    kwargs = {"epochs": 4, "batch_size": 16, "lr": 0.05, "seed": 3}
    train_classifier(R.Heads(heads), feats, labels, R.SumOfLosses(criteria, 3), **kwargs)
    for row, joint in zip(rows, heads):
        alone = fresh()
        train_classifier(alone, feats, labels, R.stage2_criterion(row, alone, counts, recipe), **kwargs)
        torch.testing.assert_close(joint.weight, alone.weight)
        torch.testing.assert_close(joint.bias, alone.bias)


def test_stage2_criteria_are_the_library_losses():
    head = nn.Linear(4, 3)
    counts = torch.tensor([50, 10, 2])
    recipe = R.Recipe()
    logits, target = torch.randn(8, 3), torch.arange(8) % 3
    penalty = ltl.functional.classifier_norm_penalty(head.weight, weight_decay=recipe.weight_decay)
    bs = ltl.functional.balanced_softmax_loss(logits, target, counts)
    torch.testing.assert_close(R.stage2_criterion("+BS", head, counts, recipe)(logits, target), bs)
    torch.testing.assert_close(R.stage2_criterion("+BSW", head, counts, recipe)(logits, target), bs + penalty)
    ce = nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(R.stage2_criterion("+CEW", head, counts, recipe)(logits, target), ce + penalty)
    bwlm = ltl.functional.bwlm_loss(logits, target, counts, head, alpha=0.3, weight_decay=recipe.weight_decay)
    torch.testing.assert_close(R.stage2_criterion("+BWLM", head, counts, recipe, alpha=0.3)(logits, target), bwlm)


@needs_data
@pytest.mark.slow
def test_quick_study_smoke(tmp_path):
    """The one command, reduced: it runs end to end and writes a consistent report (accuracy is not checked)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(SCRIPT), "--quick", "--root", str(DATA_ROOT), "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, env=env, cwd=REPO, timeout=900)
    results = json.loads((tmp_path / "real_data_lt.json").read_text())
    recipe = results["recipe"]
    assert recipe["quick"] is True
    assert results["meta"]["wall_seconds"] > 0
    assert len(results["jobs"]) == len(recipe["seeds"]) * len(recipe["imbalance_factors"])
    rows = {(r["row"], r["seed"]) for r in results["runs"]}
    assert rows == {(row, s) for row in R.ROWS for s in recipe["seeds"]}
    assert sorted({a["alpha"] for a in results["alpha_runs"]}) == sorted(recipe["alpha_sweep"])
    for job in results["jobs"]:
        counts = job["train_counts"]
        assert counts == ltl.data.longtail_counts(10, recipe["max_count"], job["imbalance_factor"])
        # Data balanced review: each head class cut to the count of the first tail class, tails kept.
        n_review = counts[5]
        assert job["stage2_counts"] == [n_review] * 5 + counts[5:]
        assert job["stage1_samples"] == sum(counts[:5])
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
    # alpha = 0.1 of the sweep is the main BWLM row itself.
    for seed in recipe["seeds"]:
        main = next(r for r in results["runs"] if r["row"] == "+BWLM" and r["seed"] == seed)
        sweep = next(a for a in results["alpha_runs"] if a["alpha"] == recipe["alpha"] and a["seed"] == seed)
        assert main["per_class_accuracy"] == sweep["per_class_accuracy"]
    report = (tmp_path / "real_data_lt.md").read_text()
    assert "QUICK SMOKE RUN" in report
    assert "## Verdict per claim" in report
    assert {v["key"] for v in results["verdicts"]} >= {"weight_transfer", "weight_decay_helps", "bwlm_best", "alpha"}
    for name in ("accuracy_vs_if", "weight_norms", "alpha_sweep", "per_class"):
        png = tmp_path / f"real_data_lt_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


class TestCommittedResults:
    """What the full study shows robustly, recomputed from its committed per-seed records."""

    @pytest.fixture(scope="class")
    def results(self):
        if not RESULTS.exists():
            pytest.fail(f"{RESULTS} is missing: run `python benchmarks/real_data_lt.py` and commit its output")
        return json.loads(RESULTS.read_text())

    @staticmethod
    def per_seed(results, row, metric, imbalance_factor):
        values = {
            r["seed"]: r[metric]
            for r in results["runs"]
            if r["row"] == row and r["imbalance_factor"] == imbalance_factor
        }
        return [values[s] for s in results["recipe"]["seeds"]]

    def test_is_the_full_study(self, results):
        recipe = results["recipe"]
        assert recipe["quick"] is False
        assert len(recipe["seeds"]) >= 5
        assert sorted(recipe["imbalance_factors"]) == [10, 100, 200]
        assert recipe["max_count"] >= 500
        assert len(results["runs"]) == len(R.ROWS) * len(recipe["seeds"]) * 3

    def test_summary_matches_records(self, results):
        for f, rows in results["summary"]["rows"].items():
            for row, metrics in rows.items():
                for metric in ("many", "medium", "few", "all"):
                    values = [100 * v for v in self.per_seed(results, row, metric, float(f))]
                    if any(math.isnan(v) for v in values):
                        continue
                    mean = sum(values) / len(values)
                    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                    torch.testing.assert_close(metrics[metric][0], mean)
                    torch.testing.assert_close(metrics[metric][1], std)

    def paired(self, results, a, b, metric, imbalance_factor=100):
        """Per-seed differences a - b in percentage points."""
        return [
            100 * (x - y)
            for x, y in zip(
                self.per_seed(results, a, metric, imbalance_factor), self.per_seed(results, b, metric, imbalance_factor)
            )
        ]

    # What follows holds in every one of the seeds at IF = 100, with a margin of at least 2 points in the worst
    # seed (see benchmarks/results/real_data_lt.md). Differences that are significant on average but flip sign in
    # some seed, or are smaller than about a point (e.g. BWLM vs BFS, the alpha trend of All accuracy), are not
    # asserted: the data do not support them seed by seed.

    @pytest.mark.parametrize("row", ["+BSW", "+BWLM"])
    def test_few_accuracy_above_naive(self, results, row):
        """BSW and BWLM beat the one-stage CE model on the Few classes in every seed."""
        diffs = self.paired(results, row, "naive", "few")
        assert min(diffs) > 0, diffs

    def test_cbw_many_above_bsw_many(self, results):
        """CBW keeps the Many classes better than BSW in every seed (the paper's CBW/BSW trade-off)."""
        diffs = self.paired(results, "+CBW", "+BSW", "many")
        assert min(diffs) > 0, diffs

    def test_bwlm_above_two_stage_ce(self, results):
        """Among the two-stage rows, BWLM beats plain CE on All accuracy in every seed."""
        diffs = self.paired(results, "+BWLM", "+CE", "all")
        assert min(diffs) > 0, diffs

    def test_weight_transfer_does_not_beat_naive(self, results):
        """The negative result: two-stage CE is below the one-stage model on All accuracy in every seed."""
        diffs = self.paired(results, "naive", "+CE", "all")
        assert min(diffs) > 0, diffs
