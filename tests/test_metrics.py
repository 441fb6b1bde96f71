from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from longtail_losses import metrics as M


def _loop_per_class_accuracy(preds, targets, num_classes):
    """Reference: count by hand, class by class."""
    out = []
    for c in range(num_classes):
        idx = [i for i, t in enumerate(targets.tolist()) if t == c]
        out.append(sum(int(preds[i]) == c for i in idx) / len(idx) if idx else math.nan)
    return out


class TestPerClassAccuracy:
    def test_known_values(self):
        preds = torch.tensor([0, 1, 1, 2, 2, 2])
        targets = torch.tensor([0, 0, 1, 1, 2, 2])
        assert_close(M.per_class_accuracy(preds, targets, 4), torch.tensor([0.5, 0.5, 1.0, math.nan]), equal_nan=True)

    def test_logits_equal_argmax(self):
        gen = torch.Generator().manual_seed(0)
        logits = torch.randn(200, 7, generator=gen)
        targets = torch.randint(0, 7, (200,), generator=gen)
        out = M.per_class_accuracy(logits, targets, 7)
        assert out.shape == (7,)
        assert out.dtype == torch.float32
        assert_close(out, M.per_class_accuracy(logits.argmax(1), targets, 7))
        expected = torch.tensor(_loop_per_class_accuracy(logits.argmax(1), targets, 7))
        assert_close(out, expected)

    def test_out_of_range_prediction_is_wrong(self):
        assert_close(M.per_class_accuracy(torch.tensor([5, 1]), torch.tensor([0, 1]), 2), torch.tensor([0.0, 1.0]))

    def test_exceptions(self):
        with pytest.raises(TypeError, match=r"`logits_or_preds` to be a torch.Tensor"):
            M.per_class_accuracy([0, 1], torch.tensor([0, 1]), 2)
        with pytest.raises(TypeError, match=r"`target` to be a torch.Tensor"):
            M.per_class_accuracy(torch.tensor([0, 1]), [0, 1], 2)
        with pytest.raises(TypeError, match="`target` to hold integer class indices"):
            M.per_class_accuracy(torch.tensor([0, 1]), torch.tensor([0.0, 1.0]), 2)
        with pytest.raises(ValueError, match=r"logits of shape \(N, C\) = \(N, 3\), but got shape \(2, 2\)"):
            M.per_class_accuracy(torch.zeros(2, 2), torch.tensor([0, 1]), 3)
        with pytest.raises(ValueError, match=r"predictions of shape \(N,\), but got shape \(2, 1\)"):
            M.per_class_accuracy(torch.zeros(2, 1, dtype=torch.long), torch.tensor([0, 1]), 3)
        with pytest.raises(TypeError, match=r"but got dtype torch.bool"):
            M.per_class_accuracy(torch.tensor([True]), torch.tensor([0]), 2)
        with pytest.raises(ValueError, match=r"one label per prediction \(3\), but got 2"):
            M.per_class_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1]), 2)
        with pytest.raises(ValueError, match=r"`target` to be 1-D"):
            M.per_class_accuracy(torch.tensor([0, 1]), torch.tensor([[0, 1]]), 2)
        with pytest.raises(ValueError, match=r"label to be in \[0, 2\), but got 2 at position 1"):
            M.per_class_accuracy(torch.tensor([0, 1]), torch.tensor([0, 2]), 2)
        with pytest.raises(ValueError, match="`num_classes` to be >= 1, but got 0"):
            M.per_class_accuracy(torch.tensor([0]), torch.tensor([0]), 0)
        with pytest.raises(TypeError, match="`num_classes` to be an int"):
            M.per_class_accuracy(torch.tensor([0]), torch.tensor([0]), 2.0)


class TestShotGroups:
    def test_threshold_boundaries(self):
        # exactly 100 is Medium (not Many), exactly 20 is Medium (not Few)
        groups = M.shot_groups([101, 100, 21, 20, 19, 0])
        assert groups["many"].tolist() == [0]
        assert groups["medium"].tolist() == [1, 2, 3]
        assert groups["few"].tolist() == [4, 5]

    def test_custom_thresholds(self):
        groups = M.shot_groups(torch.tensor([50, 10, 5, 4]), many_threshold=10, few_threshold=5)
        assert groups["many"].tolist() == [0]
        assert groups["medium"].tolist() == [1, 2]
        assert groups["few"].tolist() == [3]

    def test_exceptions(self):
        with pytest.raises(ValueError, match="`few_threshold` <= `many_threshold`"):
            M.shot_groups([1, 2], many_threshold=10, few_threshold=20)
        with pytest.raises(TypeError, match="`many_threshold` to be a real number"):
            M.shot_groups([1, 2], many_threshold="100")
        with pytest.raises(ValueError, match="`few_threshold` to be a real number, but got nan"):
            M.shot_groups([1, 2], few_threshold=float("nan"))
        with pytest.raises(ValueError, match="`class_counts` to be >= 0, but got -1 for class 1"):
            M.shot_groups([1, -1])
        with pytest.raises(ValueError, match=r"`class_counts` to hold at least one class"):
            M.shot_groups([])
        with pytest.raises(ValueError, match=r"`class_counts` to hold finite whole numbers, but got 1\.5"):
            M.shot_groups([1.5, 2.0])
        assert M.shot_groups([100.0, 2.0]).keys() == M.shot_groups([100, 2]).keys()  # whole floats, as every loss
        with pytest.raises(TypeError, match="`class_counts` to be a sequence"):
            M.shot_groups("100")


class TestShotAccuracy:
    def test_known_values_at_boundaries(self):
        # classes: 0 Many (101), 1 Medium (exactly 100), 2 Medium (exactly 20), 3 Few (19)
        train_counts = [101, 100, 20, 19]
        targets = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 3, 3])
        preds = torch.tensor([0, 1, 1, 1, 1, 0, 2, 0, 3, 0])
        # per class: 1/2, 3/4, 1/2, 1/2
        out = M.shot_accuracy(preds, targets, train_counts)
        assert out == pytest.approx({"many": 0.5, "medium": (0.75 + 0.5) / 2, "few": 0.5, "all": 2.25 / 4})
        assert list(out) == ["many", "medium", "few", "all"]
        assert all(isinstance(v, float) for v in out.values())

    def test_all_is_accuracy_on_balanced_set(self):
        gen = torch.Generator().manual_seed(1)
        targets = torch.arange(10).repeat(30)
        logits = torch.randn(300, 10, generator=gen) + 2.0 * nn.functional.one_hot(targets, 10)
        out = M.shot_accuracy(logits, targets, class_counts=[500, 300, 150, 90, 60, 40, 25, 15, 8, 5])
        plain = (logits.argmax(1) == targets).float().mean().item()
        assert out["all"] == pytest.approx(plain)
        acc = _loop_per_class_accuracy(logits.argmax(1), targets, 10)
        assert out["many"] == pytest.approx(sum(acc[:3]) / 3)
        assert out["medium"] == pytest.approx(sum(acc[3:7]) / 4)
        assert out["few"] == pytest.approx(sum(acc[7:]) / 3)

    def test_empty_group_is_nan(self):
        with pytest.warns(UserWarning, match=r"no class in the medium/few group \(many=2, medium=0, few=0 classes"):
            out = M.shot_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]), [500, 200])
        assert out["many"] == 1.0
        assert out["all"] == 1.0
        assert math.isnan(out["medium"])
        assert math.isnan(out["few"])

    def test_class_without_test_samples_is_left_out(self):
        with pytest.warns(UserWarning, match="no class in the medium group"):
            out = M.shot_accuracy(torch.tensor([0, 0]), torch.tensor([0, 1]), [500, 200, 5])
        assert out["many"] == pytest.approx(0.5)
        assert math.isnan(out["few"])  # its only class has no test sample
        assert out["all"] == pytest.approx(0.5)

    def test_thresholds_as_arguments(self):
        with pytest.warns(UserWarning, match="no class in the few group"):
            out = M.shot_accuracy(
                torch.tensor([0, 0]), torch.tensor([0, 1]), [30, 10], many_threshold=20, few_threshold=10
            )
        assert out["many"] == 1.0
        assert out["medium"] == 0.0
        assert math.isnan(out["few"])

    def test_small_data_set_all_few_warns(self):
        # The fixed 100/20 thresholds on a digits-sized set: every class is Few, and the user is told.
        counts = [19, 12, 8, 3, 1]
        preds = targets = torch.arange(5)
        with pytest.warns(UserWarning, match=r"many=0, medium=0, few=5 classes.*largest count 19.*relative=True"):
            out = M.shot_accuracy(preds, targets, counts)
        assert math.isnan(out["many"])
        assert out["few"] == 1.0

    def test_relative_thresholds(self):
        # CIFAR-100-LT's head class has 500 images: fractions 0.2 and 0.04 are the paper's 100 and 20.
        counts = torch.tensor([500, 101, 100, 20, 19])
        absolute = M.shot_groups(counts)
        relative = M.shot_groups(counts, many_threshold=0.2, few_threshold=0.04, relative=True)
        for key in ("many", "medium", "few"):
            assert relative[key].tolist() == absolute[key].tolist()
        small = [50, 11, 10, 2, 1]  # head 50: Many > 10, Few < 2
        preds, targets = torch.tensor([0, 1, 2, 0, 4]), torch.arange(5)
        out = M.shot_accuracy(preds, targets, small, many_threshold=0.2, few_threshold=0.04, relative=True)
        assert out == pytest.approx({"many": 1.0, "medium": 0.5, "few": 1.0, "all": 0.8})

    def test_exceptions(self):
        with pytest.raises(ValueError, match=r"`many_threshold` to be a fraction .* in \[0, 1\] with relative=True"):
            M.shot_accuracy(torch.tensor([0]), torch.tensor([0]), [5], relative=True)
        with pytest.raises(ValueError, match=r"logits of shape \(N, C\) = \(N, 3\)"):
            M.shot_accuracy(torch.zeros(2, 2), torch.tensor([0, 1]), [5, 5, 5])
        with pytest.raises(ValueError, match="`few_threshold` <= `many_threshold`"):
            M.shot_accuracy(torch.tensor([0]), torch.tensor([0]), [5], few_threshold=200)


class TestClassifierWeightNorms:
    def test_known_values(self):
        layer = nn.Linear(2, 3, bias=True)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]]))
        out = M.classifier_weight_norms(layer)
        assert_close(out, torch.tensor([5.0, 0.0, 1.0]))
        assert not out.requires_grad

    def test_matches_reference(self):
        w = torch.randn(10, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        assert_close(M.classifier_weight_norms(w), w.pow(2).sum(1).sqrt())

    def test_exceptions(self):
        with pytest.raises(ValueError, match="2-D"):
            M.classifier_weight_norms(torch.zeros(3))
        with pytest.raises(TypeError, match="floating point"):
            M.classifier_weight_norms(torch.zeros(3, 2, dtype=torch.long))
        with pytest.raises(TypeError, match="has none"):
            M.classifier_weight_norms(nn.ReLU())


class TestFormatShotTable:
    def test_known_values(self):
        rows = {
            "CE": {"many": 0.7123, "medium": 0.4, "few": float("nan"), "all": 0.45},
            "BWLM": {"many": (0.7, 0.0123), "medium": (0.5, 0.01), "few": (0.3, 0.02), "all": (0.5, 0.0)},
        }
        assert M.format_shot_table(rows).splitlines() == [
            "| Method | Many | Medium | Few | All |",
            "|---|---|---|---|---|",
            "| CE | 71.2 | 40.0 | – | 45.0 |",
            "| BWLM | 70.0 ± 1.2 | 50.0 ± 1.0 | 30.0 ± 2.0 | 50.0 ± 0.0 |",
        ]

    def test_options(self):
        table = M.format_shot_table({"a": {"few": 0.25}}, header="Row", columns=("few",), digits=3, percent=False)
        assert table == "| Row | Few |\n|---|---|\n| a | 0.250 |"

    def test_roundtrip_with_shot_accuracy(self):
        with pytest.warns(UserWarning, match="no class in the medium group"):  # printed as –
            out = M.shot_accuracy(torch.tensor([0, 1]), torch.tensor([0, 0]), [500, 5])
        assert M.format_shot_table({"x": out}).splitlines()[2] == "| x | 50.0 | – | – | 50.0 |"

    def test_exceptions(self):
        with pytest.raises(KeyError, match="lacks \\['all'\\]"):
            M.format_shot_table({"x": {"many": 1.0, "medium": 1.0, "few": 1.0}})
        with pytest.raises(TypeError, match="number or a \\(mean, std\\) pair"):
            M.format_shot_table({"x": {"many": "1"}}, columns=("many",))
        with pytest.raises(ValueError, match="number or a \\(mean, std\\) pair"):
            M.format_shot_table({"x": {"many": (1, 2, 3)}}, columns=("many",))


# ----------------------------------------------------------------------------------------------------------------
# Multi-label: average precision and mAP by shot, against scikit-learn


def _sklearn_ap(scores, target):
    from sklearn.metrics import average_precision_score

    return [
        average_precision_score(target[:, j].numpy(), scores[:, j].numpy()) if target[:, j].any() else float("nan")
        for j in range(scores.shape[1])
    ]


class TestPerClassAveragePrecision:
    @pytest.mark.parametrize("ties", [False, True])
    def test_matches_sklearn(self, ties):
        g = torch.Generator().manual_seed(int(ties))
        for _ in range(20):
            scores = torch.randn(40, 6, generator=g, dtype=torch.float64)
            if ties:
                scores = scores.round()  # many equal scores: they enter together, as in scikit-learn
            target = (torch.rand(40, 6, generator=g) < 0.25).long()
            target[0] = 1
            torch.testing.assert_close(
                M.per_class_average_precision(scores, target),
                torch.tensor(_sklearn_ap(scores, target), dtype=torch.float64),
            )

    def test_no_positive_is_nan(self):
        ap = M.per_class_average_precision(torch.randn(5, 2), torch.tensor([[1, 0]] * 5))
        assert ap[0] == 1.0
        assert math.isnan(ap[1])

    def test_exceptions(self):
        with pytest.raises(ValueError, match=r"Expected `scores` of shape \(N, C\) and `target` of the same shape"):
            M.per_class_average_precision(torch.randn(5, 2), torch.ones(5, 3))
        with pytest.raises(TypeError, match="Expected `scores` to be a floating-point tensor"):
            M.per_class_average_precision(torch.ones(5, 2, dtype=torch.long), torch.ones(5, 2))


class TestShotMap:
    def test_equals_sklearn_grouped(self):
        g = torch.Generator().manual_seed(3)
        counts = [500, 300, 150, 80, 40, 20, 19, 5]
        scores = torch.randn(60, 8, generator=g)
        target = (torch.rand(60, 8, generator=g) < 0.3).long()
        target[0] = 1
        ap = torch.tensor(_sklearn_ap(scores.double(), target), dtype=torch.float64)
        got = M.shot_map(scores, target, counts)
        for key, classes in (("many", [0, 1, 2]), ("medium", [3, 4, 5]), ("few", [6, 7]), ("all", range(8))):
            assert math.isclose(got[key], float(ap[list(classes)].mean()), rel_tol=1e-12)

    def test_empty_group_warns(self):
        with pytest.warns(UserWarning, match="no class in the medium/few group"):
            out = M.shot_map(torch.randn(4, 2), torch.tensor([[1, 1]] * 4), [500, 200])
        assert math.isnan(out["few"])
