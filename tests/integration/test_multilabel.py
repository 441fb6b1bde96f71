"""Tests of the multi-label study, ``benchmarks/multilabel.py`` (package ``benchmarks/study``).

The study's own machinery (the criteria are the library's losses, the tuned row is chosen on the validation
split, the splits) and the one command in its ``--quick`` form on fabricated Fashion-MNIST files: the pipeline
and the report are checked, never the mAP.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from study.multilabel_study import ROWS, Design, criterion, make_split, select_tuned

import longtail_losses as ltl


def test_criteria_are_the_library_losses():
    design = Design()
    counts, n = torch.tensor([500, 300, 100, 40, 10, 5, 5, 5, 5, 5]), 1000
    z, t = torch.randn(8, 10), (torch.rand(8, 10) < 0.3).long()
    crit = lambda row, tau=math.nan: criterion(row, counts, n, design, tau)  # noqa: E731
    torch.testing.assert_close(crit("BCE")(z, t), F.binary_cross_entropy_with_logits(z, t.float()))
    torch.testing.assert_close(crit("ASL")(z, t), ltl.AsymmetricLoss()(z, t))
    torch.testing.assert_close(crit("DB")(z, t), ltl.DistributionBalancedLoss(counts, n)(z, t))
    torch.testing.assert_close(crit("LA-BCE", 2.0)(z, t), ltl.LogitAdjustedBCE(counts, n, tau=2.0)(z, t))
    focal = ltl.MultiLabelClassBalancedFocal(counts, beta=0.0, gamma=2.0)(z, t)
    torch.testing.assert_close(crit("Focal")(z, t), focal)
    with pytest.raises(ValueError, match="unknown row"):
        crit("cRT")


def test_select_tuned_on_validation():
    runs = [
        {"row": "LA-BCE", "imbalance_factor": 10, "seed": 0, "tau": 0.5, "val_map": 0.6, "all": 0.1},
        {"row": "LA-BCE", "imbalance_factor": 10, "seed": 0, "tau": 1.0, "val_map": 0.7, "all": 0.2},
        {"row": "LA-BCE", "imbalance_factor": 10, "seed": 0, "tau": 2.0, "val_map": 0.7, "all": 0.3},
        {"row": "BCE", "imbalance_factor": 10, "seed": 0, "tau": None, "val_map": 0.9, "all": 0.4},
    ]
    kept = {r["row"]: r for r in select_tuned(runs)}
    assert kept["LA-BCE"]["tau"] == 1.0  # ties: the first of the grid
    assert kept["LA-BCE"]["tau_candidates_val"] == {"0.5": 0.6, "1": 0.7, "2": 0.7}
    assert kept["BCE"]["all"] == 0.4


def test_split(fake_root):
    design = Design(max_count=100, val_per_class=20, test_per_class=12)
    data = make_split(fake_root, 10, 1, design)
    assert ltl.data.multilabel_counts(data["y"])[0].tolist() == ltl.data.longtail_counts(10, 100, 10)
    assert data["y_val"].sum(0).tolist() == [20] * 10
    assert data["y_test"].sum(0).tolist() == [12] * 10


@pytest.mark.slow
def test_quick_study_smoke(run_quick, tmp_path):
    """The one command, reduced: it runs end to end and writes a consistent report (mAP is not checked)."""
    run_quick("multilabel", tmp_path)
    results = json.loads((tmp_path / "multilabel.json").read_text())
    design = results["design"]
    assert design["quick"] is True
    seeds, ifs = design["seeds"], design["imbalance_factors"]
    assert {(r["row"], r["seed"], r["imbalance_factor"]) for r in results["runs"]} == {
        (row, s, f) for row in ROWS for s in seeds for f in ifs
    }
    for run in results["runs"]:
        ap = torch.tensor(run["per_class_ap"])
        torch.testing.assert_close(run["all"], float(ap.nanmean()))
    f = f"{ifs[0]:g}"
    stats = results["summary"]["vs_bce"][f]["ASL"]["all"]
    mean = {(r["row"], r["seed"]): 100 * r["all"] for r in results["runs"]}
    diffs = [mean["ASL", s] - mean["BCE", s] for s in seeds]
    assert math.isclose(stats["mean_diff"], sum(diffs) / len(diffs), abs_tol=1e-9)
    report = (tmp_path / "multilabel.md").read_text()
    assert "QUICK SMOKE RUN" in report
    assert "| IF | Method | All | Many | Medium | Few |" in report
    assert (tmp_path / "multilabel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
