"""Decoupled classifiers (Kang et al. 2020): tau-normalisation, learnable weight scaling, nearest class mean."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from longtail_losses import twostage
from tests.inputs import C


def _classifier(seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    fc = nn.Linear(6, C, bias=bias).double()
    with torch.no_grad():
        fc.weight.mul_(torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64).unsqueeze(1))
    return fc


class TestTauNormalize:
    @pytest.mark.parametrize("tau", [0.0, 0.5, 0.7, 1.0, 2.0])
    def test_matches_reference(self, tau: float) -> None:
        fc = _classifier()
        before = fc.weight.detach().clone()
        out = twostage.tau_normalize(fc, tau)
        expected = torch.stack([w / torch.sqrt((w * w).sum()) ** tau for w in before])
        torch.testing.assert_close(out.weight.detach(), expected)
        assert out.bias is None
        assert torch.equal(fc.weight, before)  # the input is untouched
        if tau == 1.0:
            torch.testing.assert_close(out.weight.norm(dim=1), torch.ones(C, dtype=torch.float64))

    def test_bias_and_zero_rows(self) -> None:
        fc = _classifier()
        with torch.no_grad():
            fc.weight[2] = 0.0
        out = twostage.tau_normalize(fc, 1.0, keep_bias=True)
        assert out.bias is not None
        assert torch.equal(out.bias, fc.bias)
        assert torch.equal(out.weight[2], torch.zeros(6, dtype=torch.float64))
        assert out.weight.dtype == torch.float64
        assert twostage.tau_normalize(_classifier(bias=False), 1.0, keep_bias=True).bias is None

    def test_exceptions(self) -> None:
        with pytest.raises(TypeError, match=r"Expected `classifier` to be an nn\.Module"):
            twostage.tau_normalize(torch.ones(3, 2), 1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Expected `tau` to be a finite number, but got inf"):
            twostage.tau_normalize(_classifier(), math.inf)
        with pytest.raises(ValueError, match=r"Expected `classifier` weight to have shape \(num_classes, features\)"):
            twostage.tau_normalize(nn.Conv2d(3, 4, 1), 1.0)


class TestLearnableWeightScaling:
    def test_matches_reference_and_only_scales_train(self) -> None:
        fc = _classifier(1)
        lws = twostage.LearnableWeightScaling(fc)
        assert [n for n, p in lws.named_parameters() if p.requires_grad] == ["scales"]
        with torch.no_grad():
            lws.scales.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0], dtype=torch.float64))
        x = torch.randn(8, 6, dtype=torch.float64)
        y = torch.randint(0, C, (8,))
        f = lws.scales.detach().clone().requires_grad_(True)
        reference = F.cross_entropy((x @ fc.weight.detach().T + fc.bias.detach()) * f, y)
        (ref_grad,) = torch.autograd.grad(reference, f)
        loss = F.cross_entropy(lws(x), y)
        loss.backward()
        torch.testing.assert_close(loss, reference)
        assert lws.scales.grad is not None
        torch.testing.assert_close(lws.scales.grad, ref_grad)
        assert fc.weight.grad is None
        lws.unfreeze()
        assert fc.weight.requires_grad

    def test_without_bias_equals_scaled_rows(self) -> None:
        fc = _classifier(2, bias=False)
        lws = twostage.LearnableWeightScaling(fc)
        with torch.no_grad():
            lws.scales.copy_(torch.linspace(0.5, 2.0, C, dtype=torch.float64))
        x = torch.randn(3, 6, dtype=torch.float64)
        torch.testing.assert_close(lws(x), x @ (lws.scales.detach().unsqueeze(1) * fc.weight.detach()).T)

    def test_state_dict_pickle_and_gradcheck(self) -> None:
        lws = twostage.LearnableWeightScaling(_classifier(3))
        assert set(lws.state_dict()) == {"scales", "classifier.weight", "classifier.bias"}
        x = torch.randn(2, 6, dtype=torch.float64)
        torch.testing.assert_close(pickle.loads(pickle.dumps(lws))(x), lws(x))
        assert repr(lws).startswith("LearnableWeightScaling(\n  num_classes=5")
        assert torch.autograd.gradcheck(
            lambda s: (lws.classifier(x) * s).sum(), (lws.scales.detach().clone().requires_grad_(),)
        )

    def test_exceptions(self) -> None:
        with pytest.raises(TypeError, match=r"Expected `classifier` to have a `\.weight` tensor"):
            twostage.LearnableWeightScaling(nn.ReLU())


class TestNearestClassMean:
    def test_matches_reference(self) -> None:
        g = torch.Generator().manual_seed(0)
        features = torch.randn(40, 6, generator=g, dtype=torch.float64)
        labels = torch.arange(40) % 4
        ncm = twostage.nearest_class_mean(features, labels, num_classes=5)
        for c in range(4):
            torch.testing.assert_close(ncm.means[c], features[labels == c].mean(0))
        assert torch.equal(ncm.means[4], torch.zeros(6, dtype=torch.float64))  # no sample: zero mean
        x = torch.randn(3, 6, generator=g, dtype=torch.float64)
        expected = torch.tensor(
            [[float(xi @ m / (xi.norm() * m.norm())) if m.norm() > 0 else 0.0 for m in ncm.means] for xi in x],
            dtype=torch.float64,
        )
        torch.testing.assert_close(ncm(x), expected)

    def test_module_roundtrip(self) -> None:
        ncm = twostage.nearest_class_mean(torch.eye(3), torch.tensor([0, 1, 2]))
        assert set(ncm.state_dict()) == {"means"}
        assert ncm.to(torch.float64).means.dtype == torch.float64
        clone = copy.deepcopy(ncm)
        torch.testing.assert_close(clone(torch.eye(3, dtype=torch.float64)), torch.eye(3, dtype=torch.float64))
        assert repr(ncm) == "NearestClassMean(num_classes=3, features=3)"

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match=r"Expected `labels` to have shape \(3,\) to match features"):
            twostage.nearest_class_mean(torch.zeros(3, 2), torch.tensor([0, 1]))
        with pytest.raises(ValueError, match=r"Expected every label to be in \[0, 2\), but got labels in \[0, 2\]"):
            twostage.nearest_class_mean(torch.zeros(3, 2), torch.tensor([0, 1, 2]), num_classes=2)
        with pytest.raises(TypeError, match="Expected `labels` to hold integer class indices"):
            twostage.nearest_class_mean(torch.zeros(3, 2), torch.zeros(3))
        with pytest.raises(ValueError, match="Expected `features` to have shape"):
            twostage.nearest_class_mean(torch.zeros(3), torch.tensor([0, 1, 2]))
        with pytest.raises(ValueError, match="Expected `features` to hold at least one sample"):
            twostage.nearest_class_mean(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
        with pytest.raises(ValueError, match="Expected `means` to have shape"):
            twostage.NearestClassMean(torch.zeros(3))


def test_lws_scales_the_class_dimension_of_a_1x1_convolution() -> None:
    conv = nn.Conv2d(4, 3, kernel_size=1)
    lws = twostage.LearnableWeightScaling(conv)
    with torch.no_grad():
        lws.scales.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(2, 4, 1, 3)
    out = lws(x)
    assert out.shape == conv(x).shape == (2, 3, 1, 3)
    torch.testing.assert_close(out, conv(x) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1))
