"""Model surgery for stage 2: the new classifier, the frozen backbone and its BatchNorm statistics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from longtail_losses.training import train_one_epoch
from longtail_losses.twostage import (
    BackboneFreeze,
    freeze_backbone,
    get_classifier,
    replace_classifier,
)
from tests._nets import snapshot, stage1_model


class TestReplaceClassifier:
    def test_torchvision_resnet18(self):
        torchvision = pytest.importorskip("torchvision")
        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None, num_classes=10)
        backbone = {k: v for k, v in snapshot(net).items() if not k.startswith("fc.")}
        fc = replace_classifier(net, 7)
        assert net.fc is fc
        assert isinstance(fc, nn.Linear)
        assert (fc.in_features, fc.out_features) == (512, 7)
        assert [n for n, p in net.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
        opt = torch.optim.SGD(fc.parameters(), lr=0.1)
        x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 6])
        loss = train_one_epoch(net, [(x, y)], nn.functional.cross_entropy, opt)
        assert loss > 0
        assert net(x).shape == (4, 7)
        after = snapshot(net)
        for key, value in backbone.items():
            assert torch.equal(after[key], value), key

    def test_custom_nested_attribute(self):
        net = stage1_model()
        fc = replace_classifier(net, 5, classifier_attr="head.1", bias=False)
        assert net.head[1] is fc
        assert fc.bias is None
        assert fc.out_features == 5
        assert get_classifier(net, "head.1") is fc
        assert net(torch.randn(2, 3, 6, 6)).shape == (2, 5)

    def test_same_device_and_dtype(self):
        net = stage1_model().double()
        fc = replace_classifier(net, 4, classifier_attr="head.1")
        assert fc.weight.dtype == torch.float64
        assert fc.weight.device == net.head[1].weight.device

    def test_no_freeze(self):
        net = stage1_model()
        replace_classifier(net, 4, classifier_attr="head.1", freeze=False)
        assert all(p.requires_grad for p in net.parameters())

    def test_exceptions(self):
        net = stage1_model()
        with pytest.raises(ValueError, match="name a submodule"):
            replace_classifier(net, 3, classifier_attr="fc")
        with pytest.raises(ValueError, match="'nope' is not a submodule"):
            replace_classifier(net, 3, classifier_attr="nope.fc")
        with pytest.raises(TypeError, match=r"`model.head.0` to be an nn.Linear, but got Flatten"):
            replace_classifier(net, 3, classifier_attr="head.0")
        with pytest.raises(ValueError, match="`num_classes` to be >= 1"):
            replace_classifier(net, 0, classifier_attr="head.1")
        with pytest.raises(TypeError, match="`num_classes` to be an int"):
            replace_classifier(net, 2.0, classifier_attr="head.1")
        with pytest.raises(TypeError, match=r"`model` to be an nn\.Module"):
            get_classifier("net", "fc")
        with pytest.raises(TypeError, match="`classifier_attr` to be a non-empty str"):
            get_classifier(net, "")


class TestFreezeBackbone:
    def test_params_and_bn_buffers_unchanged_in_stage2(self):
        net = stage1_model()
        fc = replace_classifier(net, 3, classifier_attr="head.1")
        backbone_before = snapshot(net.features)
        fc_before = snapshot(fc)
        opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)  # even over all params
        data = [(torch.randn(8, 3, 6, 6) * 3 - 1, torch.randint(0, 3, (8,))) for _ in range(4)]
        for _ in range(2):
            net.train()
            train_one_epoch(net, data, nn.functional.cross_entropy, opt)
        net.train()
        assert net.training
        assert net.head[1].training
        for key, value in snapshot(net.features).items():
            assert torch.equal(value, backbone_before[key]), key  # running_mean/var, num_batches_tracked, weights
        assert not torch.equal(fc.weight, fc_before["weight"])
        # Eval-mode backbone: dropout is off, so two forward passes in train mode agree.
        x = torch.randn(4, 3, 6, 6)
        assert torch.equal(net(x), net(x))

    def test_requires_grad_alone_lets_bn_drift(self):
        # Control for the test above: freezing only requires_grad (the reference codebases' bug) changes BN stats.
        net = stage1_model()
        for p in net.features.parameters():
            p.requires_grad_(False)
        before = snapshot(net.features)
        net.train()
        with torch.no_grad():
            net(torch.randn(8, 3, 6, 6))
        assert not torch.equal(net.features[1].running_mean, before["1.running_mean"])

    def test_submodule_called_directly_stays_frozen(self):
        net = stage1_model()
        freeze_backbone(net, "head.1")
        before = snapshot(net.features)
        net.features.train()
        net.features(torch.randn(8, 3, 6, 6))
        assert torch.equal(net.features[1].running_mean, before["1.running_mean"])

    def test_remove_restores(self):
        net = stage1_model()
        net.features[0].weight.requires_grad_(False)
        with freeze_backbone(net, "head.1") as handle:
            assert isinstance(handle, BackboneFreeze)
            assert not net.features[2].training
        assert [p.requires_grad for p in net.parameters()] == [False, True, True, True, True, True]
        net.train()
        net(torch.randn(8, 3, 6, 6))
        assert int(net.features[1].num_batches_tracked) == 4

    def test_deepcopy_and_state_dict(self):
        net = stage1_model()
        replace_classifier(net, 3, classifier_attr="head.1")
        clone = copy.deepcopy(net)
        clone.train()
        before = snapshot(clone.features)
        clone(torch.randn(8, 3, 6, 6))
        assert torch.equal(clone.features[1].running_mean, before["1.running_mean"])
        assert set(net.state_dict()) == set(stage1_model().state_dict())
