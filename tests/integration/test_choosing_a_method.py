"""Tests of the method-choice study, ``benchmarks/choosing_a_method.py`` (issue 13).

* the study's own machinery: the permuted class order and the splits (the validation images are unused training
  images, balanced, and the test set is relabelled with the same order), the selection of LogitAdjusted's tau on
  the validation split, and the one-stage criteria (the library's losses);
* a smoke test of the one command in its ``--quick`` form (IF = 100, 2 seeds, 1 epoch): it checks the pipeline
  and the report, never the accuracy. The data tests need the Fashion-MNIST IDX files and skip without them.
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
import torch.nn.functional as F

import longtail_losses as ltl

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "choosing_a_method.py"
DATA_ROOT = Path(os.environ.get("FASHION_MNIST_ROOT", "/usr/share/datasets/fashion-mnist"))
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
HAVE_DATA = all((DATA_ROOT / f).exists() or (DATA_ROOT / f"{f}.gz").exists() for f in FILES)
needs_data = pytest.mark.skipif(
    not HAVE_DATA,
    reason=f"Fashion-MNIST IDX files not found in {DATA_ROOT} (install the Debian package dataset-fashion-mnist "
    "or set FASHION_MNIST_ROOT)",
)


def _load_script():
    spec = importlib.util.spec_from_file_location("choosing_a_method", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("choosing_a_method", module)
    spec.loader.exec_module(module)
    return module


C = _load_script()


def test_class_order_is_a_permutation_per_seed():
    orders = [C.class_order(s) for s in range(5)]
    assert all(sorted(o) == list(range(10)) for o in orders)
    assert len({tuple(o) for o in orders}) == 5  # each seed a different order, hence a different tail
    assert C.class_order(3) == C.class_order(3)


@needs_data
def test_split():
    design = C.Design()
    data = C.make_split(str(DATA_ROOT), 100, 1, design)
    _, y_orig, _, y_test_orig = C.load_full(str(DATA_ROOT))
    order = torch.tensor(C.class_order(1))
    assert ltl.class_counts(data["y"], num_classes=10).tolist() == ltl.data.longtail_counts(10, 500, 100)
    assert ltl.class_counts(data["y_val"], num_classes=10).tolist() == [design.val_per_class] * 10
    # Labels are frequency ranks: rank r is the original class order[r], in training, validation and test.
    torch.testing.assert_close(order[data["y"]], y_orig[data["train_index"]])
    torch.testing.assert_close(order[data["y_val"]], y_orig[data["val_index"]])
    torch.testing.assert_close(order[data["y_test"]], y_test_orig)
    # The validation images are training images the long-tailed subsample did not take.
    assert not set(data["train_index"].tolist()) & set(data["val_index"].tolist())
    assert len(data["y_test"]) == 10_000


def _run(tau, val, row="LogitAdjusted", seed=0):
    return {"row": row, "tau": tau, "val_balanced_accuracy": val, "imbalance_factor": 100, "seed": seed, "all": val}


def test_select_logit_adjusted_on_validation():
    design = C.Design(la_taus=(0.5, 1.0, 1.5, 2.0))
    runs = [
        _run(0.5, 0.6),
        _run(1.5, 0.7),
        _run(2.0, 0.7),  # tie with 1.5: the first in the grid wins
        _run(None, 0.65, row="BalancedSoftmax"),  # the tau = 1 candidate
        _run(0.5, 0.5, seed=1),
        _run(1.5, 0.4, seed=1),
        _run(2.0, 0.3, seed=1),
        _run(None, 0.55, row="BalancedSoftmax", seed=1),
    ]
    chosen = {r["seed"]: r for r in C.select_logit_adjusted(runs, design) if r["row"] == "LogitAdjusted"}
    assert chosen[0]["tau"] == 1.5
    assert chosen[1]["tau"] == 1.0
    assert chosen[1]["all"] == 0.55  # the BalancedSoftmax model's test record
    assert chosen[0]["tau_candidates_val"] == {"0.5": 0.6, "1": 0.65, "1.5": 0.7, "2": 0.7}
    assert sum(r["row"] == "BalancedSoftmax" for r in C.select_logit_adjusted(runs, design)) == 2


def test_one_stage_criteria_are_the_library_losses():
    design = C.Design()
    torch.manual_seed(0)
    model = C.TinyCNN()
    counts = torch.tensor([500, 299, 179, 107, 64, 38, 23, 13, 8, 5])
    z, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    crit = lambda row, tau=1.0: C.one_stage_criterion(row, model, counts, design, tau)  # noqa: E731
    torch.testing.assert_close(crit("CE")(z, y), F.cross_entropy(z, y))
    torch.testing.assert_close(crit("BalancedSoftmax")(z, y), ltl.BalancedSoftmax(counts)(z, y))
    torch.testing.assert_close(crit("LogitAdjusted", 1.5)(z, y), F.cross_entropy(z + 1.5 * counts.log(), y))
    # tau = 1 is BalancedSoftmax (log prior and log counts differ by a constant): its candidate is reused.
    torch.testing.assert_close(crit("LogitAdjusted", 1.0)(z, y), ltl.BalancedSoftmax(counts)(z, y))
    bwlm = ltl.BWLM(counts, classifier=model.fc, alpha=0.1, beta=0.9999, gamma=1.0, weight_decay=5e-3)
    torch.testing.assert_close(crit("BWLM")(z, y), bwlm(z, y))
    ldam = ltl.LDAMLoss(counts, max_margin=0.5, scale=1.0)
    torch.testing.assert_close(crit("LDAM-DRW")(z, y), ldam(z, y))
    with pytest.raises(ValueError, match="one-stage loss row"):
        crit("cRT")


@needs_data
@pytest.mark.slow
def test_quick_study_smoke(tmp_path):
    """The one command, reduced: it runs end to end and writes a consistent report (accuracy is not checked)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(SCRIPT), "--quick", "--root", str(DATA_ROOT), "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, env=env, cwd=REPO, timeout=600)
    results = json.loads((tmp_path / "choosing_a_method.json").read_text())
    design = results["design"]
    assert design["quick"] is True
    seeds, ifs = design["seeds"], design["imbalance_factors"]
    assert {(r["row"], r["seed"], r["imbalance_factor"]) for r in results["runs"]} == {
        (row, s, f) for row in C.ROWS for s in seeds for f in ifs
    }
    for run in results["runs"]:
        assert len(run["per_class_accuracy"]) == 10
        torch.testing.assert_close(run["all"], sum(run["per_class_accuracy"]) / 10)
        if run["row"] == "LogitAdjusted":
            assert run["tau"] in design["la_taus"]
        if run["row"] == "CE + post-hoc":
            assert run["tau"] in design["posthoc_taus"]
        if run["row"] == "tau-norm":
            assert run["tau"] in design["tau_norm_taus"]
    # Paired differences against CE are computed from the per-seed records.
    f = f"{ifs[0]:g}"
    stats = results["summary"]["vs_ce"][f]["BalancedSoftmax"]["all"]
    acc = {(r["row"], r["seed"]): 100 * r["all"] for r in results["runs"]}
    diffs = [acc["BalancedSoftmax", s] - acc["CE", s] for s in seeds]
    assert math.isclose(stats["mean_diff"], sum(diffs) / len(diffs), abs_tol=1e-9)
    assert sorted(results["summary"]["ranking"][f]) == sorted(C.ROWS)
    report = (tmp_path / "choosing_a_method.md").read_text()
    assert "QUICK SMOKE RUN" in report
    assert "## Ranking per IF" in report
    for png in ("choosing_a_method_accuracy_vs_if.png", "choosing_a_method_per_class.png"):
        assert (tmp_path / png).stat().st_size > 0
