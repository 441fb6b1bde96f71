"""Tests of the method-choice study, ``benchmarks/choosing_a_method.py`` (package ``benchmarks/study``).

* the study's own machinery: the permuted class order and the splits (the validation images are unused training
  images, balanced, and the test set is relabelled with the same order), the selection of LogitAdjusted's tau on
  the validation split, and the one-stage criteria (the library's losses);
* the one command in its ``--quick`` form on fabricated Fashion-MNIST files: the pipeline and the report are
  checked, never the accuracy.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from study import common
from study.method_study import ROWS, Design, class_order, make_split, one_stage_criterion, select_logit_adjusted
from study.training import TinyCNN

import longtail_losses as ltl


def test_class_order_is_a_permutation_per_seed():
    orders = [class_order(s) for s in range(5)]
    assert all(sorted(o) == list(range(10)) for o in orders)
    assert len({tuple(o) for o in orders}) == 5  # each seed a different order, hence a different tail
    assert class_order(3) == class_order(3)


def test_split(fake_root):
    design = Design()
    data = make_split(fake_root, 100, 1, design)
    _, y_orig = common.load_full(fake_root, train=True)
    _, y_test_orig = common.load_full(fake_root, train=False)
    order = torch.tensor(class_order(1))
    assert ltl.class_counts(data["y"], num_classes=10).tolist() == ltl.data.longtail_counts(10, 500, 100)
    assert ltl.class_counts(data["y_val"], num_classes=10).tolist() == [design.val_per_class] * 10
    # Labels are frequency ranks: rank r is the original class order[r], in training, validation and test.
    torch.testing.assert_close(order[data["y"]], y_orig[data["train_index"]])
    torch.testing.assert_close(order[data["y_val"]], y_orig[data["val_index"]])
    torch.testing.assert_close(order[data["y_test"]], y_test_orig)
    # The validation images are training images the long-tailed subsample did not take.
    assert not set(data["train_index"].tolist()) & set(data["val_index"].tolist())
    # Images stay paired with their labels (the fabricated images hold their original label in pixel (0, 0)).
    pixel = data["x"][:, 0, 0, 0] * common.STD + common.MEAN
    torch.testing.assert_close(pixel * 255, order[data["y"]].float(), atol=1e-3, rtol=0)


def _run(tau, val, row="LogitAdjusted", seed=0):
    return {"row": row, "tau": tau, "val_balanced_accuracy": val, "imbalance_factor": 100, "seed": seed, "all": val}


def test_select_logit_adjusted_on_validation():
    design = Design(la_taus=(0.5, 1.0, 1.5, 2.0))
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
    chosen = {r["seed"]: r for r in select_logit_adjusted(runs, design) if r["row"] == "LogitAdjusted"}
    assert chosen[0]["tau"] == 1.5
    assert chosen[1]["tau"] == 1.0
    assert chosen[1]["all"] == 0.55  # the BalancedSoftmax model's test record
    assert chosen[0]["tau_candidates_val"] == {"0.5": 0.6, "1": 0.65, "1.5": 0.7, "2": 0.7}
    assert sum(r["row"] == "BalancedSoftmax" for r in select_logit_adjusted(runs, design)) == 2


def test_one_stage_criteria_are_the_library_losses():
    design = Design()
    torch.manual_seed(0)
    model = TinyCNN()
    counts = torch.tensor([500, 299, 179, 107, 64, 38, 23, 13, 8, 5])
    z, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    crit = lambda row, tau=1.0: one_stage_criterion(row, model, counts, design, tau)  # noqa: E731
    torch.testing.assert_close(crit("CE")(z, y), F.cross_entropy(z, y))
    torch.testing.assert_close(crit("BalancedSoftmax")(z, y), ltl.BalancedSoftmax(counts)(z, y))
    torch.testing.assert_close(crit("LogitAdjusted", 1.5)(z, y), F.cross_entropy(z + 1.5 * counts.log(), y))
    # tau = 1 is BalancedSoftmax (log prior and log counts differ by a constant): its candidate is reused.
    torch.testing.assert_close(crit("LogitAdjusted", 1.0)(z, y), ltl.BalancedSoftmax(counts)(z, y))
    bwlm = ltl.BWLM(counts, classifier=model.fc, alpha=0.1, beta=0.9999, gamma=1.0, weight_decay=5e-3)
    torch.testing.assert_close(crit("BWLM")(z, y), bwlm(z, y))
    ldam = ltl.LDAMLoss(counts, max_margin=0.5, scale=1.0)
    torch.testing.assert_close(crit("LDAM-DRW")(z, y), ldam(z, y))
    vs = ltl.VSLoss(counts, gamma=0.3, tau=1.0)
    torch.testing.assert_close(crit("VS")(z, y), vs(z, y))
    torch.testing.assert_close(crit("LADE")(z, y), ltl.LADELoss(counts)(z, y))
    torch.testing.assert_close(crit("Seesaw")(z, y), ltl.SeesawLoss(10)(z, y))
    torch.testing.assert_close(crit("EQLv2")(z, y), ltl.EQLv2Loss(10)(z, y))
    ib = crit("IB")
    model(torch.randn(16, 1, 28, 28))  # the hook keeps the features of the last forward
    ib.ib.set_epoch(design.ib_start_epoch)
    torch.testing.assert_close(ib(z, y), ltl.functional.influence_balanced_loss(z, y, ib.features, counts, alpha=10.0))
    with pytest.raises(ValueError, match="one-stage loss row"):
        crit("cRT")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The optimizer's param group:UserWarning")  # BWLM in a loop with weight decay
def test_quick_study_smoke(run_quick, tmp_path):
    """The one command, reduced: it runs end to end and writes a consistent report (accuracy is not checked)."""
    run_quick("choosing_a_method", tmp_path)
    results = json.loads((tmp_path / "choosing_a_method.json").read_text())
    design = results["design"]
    assert design["quick"] is True
    seeds, ifs = design["seeds"], design["imbalance_factors"]
    assert {(r["row"], r["seed"], r["imbalance_factor"]) for r in results["runs"]} == {
        (row, s, f) for row in ROWS for s in seeds for f in ifs
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
    assert sorted(results["summary"]["ranking"][f]) == sorted(ROWS)
    report = (tmp_path / "choosing_a_method.md").read_text()
    assert "QUICK SMOKE RUN" in report
    assert "## Ranking per IF" in report
    for png in ("choosing_a_method_accuracy_vs_if.png", "choosing_a_method_per_class.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # LAS retrains the CE model of the same (IF, seed): the same backbone, to the bit.
    for run in results["runs"]:
        if run["row"] == "LAS":
            assert math.isclose(run["backbone_test_accuracy"], acc["CE", run["seed"]] / 100, rel_tol=1e-6)
    # --rows reruns only those rows and merges them: every other run unchanged, the addition recorded.
    run_quick("choosing_a_method", tmp_path, "--rows", "VS")
    merged = json.loads((tmp_path / "choosing_a_method.json").read_text())
    assert [r for r in merged["runs"] if r["row"] != "VS"] == [r for r in results["runs"] if r["row"] != "VS"]
    assert [r["all"] for r in merged["runs"] if r["row"] == "VS"] == [
        r["all"] for r in results["runs"] if r["row"] == "VS"
    ]
    assert merged["meta"]["additions"][0]["rows"] == ["VS"]
    assert "Rows VS added by" in (tmp_path / "choosing_a_method.md").read_text()
