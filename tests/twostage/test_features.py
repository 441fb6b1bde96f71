"""Fast stage 2 on cached features: same classifier as running the backbone every step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

import longtail_losses as ltl
from longtail_losses.data import SeededBatchSampler
from longtail_losses.training import train_one_epoch
from longtail_losses.twostage import (
    extract_features,
    replace_classifier,
    train_classifier,
    train_classifier_epoch,
)
from tests._nets import snapshot, stage1_model


def make_data(n: int = 37, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 6, 6, generator=gen, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (n,), generator=gen)
    return TensorDataset(x, y)


class TestFeatureCache:
    def test_extract_features_matches_backbone(self):
        net = stage1_model().double()
        data = make_data()
        feats, labels = extract_features(net, data, classifier_attr="head.1", batch_size=10)
        net.eval()
        with torch.no_grad():
            expected = net.head[0](net.features(data.tensors[0]))
        assert feats.dtype == torch.float64
        assert_close(feats, expected)
        assert torch.equal(labels, data.tensors[1])
        assert isinstance(net.head[1], nn.Linear)

    def test_extract_features_restores_modes_and_state(self):
        net = stage1_model()
        net.train()
        before = snapshot(net)
        extract_features(net, torch.randn(5, 3, 6, 6), classifier_attr="head.1")
        assert all(m.training for m in net.modules())
        after = snapshot(net)
        assert all(torch.equal(before[k], after[k]) for k in before)

    def test_extract_features_input_types(self):
        net = stage1_model()
        x, y = torch.randn(9, 3, 6, 6), torch.arange(9) % 3
        ref, _ = extract_features(net, (x, y), classifier_attr="head.1")
        loader = DataLoader(TensorDataset(x, y), batch_size=4)
        for data in (loader, TensorDataset(x, y)):
            feats, labels = extract_features(net, data, classifier_attr="head.1")
            assert_close(feats, ref)
            assert torch.equal(labels, y)
        feats, labels = extract_features(net, x, classifier_attr="head.1")
        assert_close(feats, ref)
        assert labels.numel() == 0
        backbone = nn.Sequential(net.features, nn.Flatten())
        feats, _ = extract_features(backbone, (x, y), classifier_attr=None)
        assert_close(feats, ref)

    def test_extract_features_exceptions(self):
        net = stage1_model()
        with pytest.raises(TypeError, match="`data` to be a DataLoader"):
            extract_features(net, 3, classifier_attr="head.1")
        with pytest.raises(ValueError, match="at least one sample"):
            extract_features(net, torch.empty(0, 3, 6, 6), classifier_attr="head.1")
        with pytest.raises(ValueError, match="name a submodule"):
            extract_features(net, torch.randn(2, 3, 6, 6))

    @pytest.mark.parametrize("with_bwlm", [False, True])
    # Every kind of decay at once on purpose (SGD weight_decay, BWLM, ClassNormDecay): both paths must agree.
    @pytest.mark.filterwarnings("ignore:.*decays twice:UserWarning")
    def test_cached_equals_live_stage2(self, with_bwlm):
        # float64 throughout so both paths agree to the default float64 tolerance; the feature cache is
        # computed in batches of 256 and the live path in batches of 8, which changes rounding only.
        torch.manual_seed(0)
        base = stage1_model().double()
        data = make_data()
        live_net, cache_net = copy.deepcopy(base), copy.deepcopy(base)
        live_fc = replace_classifier(live_net, 3, classifier_attr="head.1")
        cache_fc = replace_classifier(cache_net, 3, classifier_attr="head.1")
        cache_fc.load_state_dict(live_fc.state_dict())
        counts = ltl.class_counts(data.tensors[1], num_classes=3)
        epochs, batch_size, lr = 3, 8, 0.05

        def criterion_for(fc):
            if with_bwlm:
                return ltl.BWLM(counts, classifier=fc, weight_decay=5e-2)
            return nn.CrossEntropyLoss()

        # Live: the frozen backbone runs every step, in train mode, over SeededBatchSampler's batches.
        sampler = SeededBatchSampler(len(data), batch_size, seed=5)
        loader = DataLoader(data, batch_sampler=sampler)
        opt = torch.optim.SGD(live_fc.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
        decay = ltl.ClassNormDecay(live_fc, 1e-2).attach(opt) if with_bwlm else None
        live_history = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            live_history.append(train_one_epoch(live_net, loader, criterion_for(live_fc), opt, scheduler=sched))
        if decay is not None:
            decay.remove()

        # Cached: features once, then the classifier alone.
        feats, labels = extract_features(cache_net, data, classifier_attr="head.1")
        hooks = (lambda o: ltl.ClassNormDecay(cache_fc, 1e-2).attach(o)) if with_bwlm else None
        seen = []
        history = train_classifier(
            cache_fc,
            feats,
            labels,
            criterion_for(cache_fc),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=1e-3,
            seed=5,
            optimizer_hooks=hooks,
            callback=lambda e, loss: seen.append(e),
        )
        assert seen == [0, 1, 2]
        assert_close(torch.tensor(history), torch.tensor(live_history))
        assert_close(cache_fc.weight, live_fc.weight)
        assert_close(cache_fc.bias, live_fc.bias)
        assert not torch.equal(cache_fc.weight, base.head[1].weight[:3])  # it did train
        # The backbones are untouched by either path.
        for key, value in snapshot(base.features).items():
            assert torch.equal(snapshot(live_net.features)[key], value)
            assert torch.equal(snapshot(cache_net.features)[key], value)

    def test_cosine_schedule_reaches_zero(self):
        fc = nn.Linear(2, 2)
        lrs = []
        feats, labels = torch.randn(10, 2), torch.arange(10) % 2

        def hook(opt):
            opt.register_step_post_hook(lambda o, a, k: lrs.append(o.param_groups[0]["lr"]))

        train_classifier(fc, feats, labels, nn.CrossEntropyLoss(), epochs=2, batch_size=4, lr=0.1, optimizer_hooks=hook)
        assert len(lrs) == 6  # 2 epochs x ceil(10 / 4) steps
        expected = [0.05 * (1 + torch.cos(torch.tensor(torch.pi * t / 6)).item()) for t in range(6)]
        assert_close(torch.tensor(lrs), torch.tensor(expected))
        lrs.clear()
        train_classifier(
            fc, feats, labels, nn.CrossEntropyLoss(), epochs=1, lr=0.1, scheduler=None, optimizer_hooks=hook
        )
        assert lrs == [0.1]

    def test_matches_hand_written_loop(self):
        # Independent reference: one epoch of plain SGD written out step by step.
        torch.manual_seed(0)
        feats, labels = torch.randn(10, 3, dtype=torch.float64), torch.arange(10) % 2
        fc = nn.Linear(3, 2).double()
        ref = copy.deepcopy(fc)
        train_classifier(
            fc,
            feats,
            labels,
            nn.CrossEntropyLoss(),
            epochs=1,
            batch_size=4,
            lr=0.1,
            momentum=0.0,
            scheduler=None,
            seed=2,
        )
        order = torch.randperm(10, generator=torch.Generator().manual_seed(2))
        for start in range(0, 10, 4):
            idx = order[start : start + 4]
            loss = nn.functional.cross_entropy(ref(feats[idx]), labels[idx])
            grads = torch.autograd.grad(loss, list(ref.parameters()))
            with torch.no_grad():
                for p, g in zip(ref.parameters(), grads):
                    p -= 0.1 * g
        assert_close(fc.weight, ref.weight)
        assert_close(fc.bias, ref.bias)

    def test_epoch_function_and_drop_last(self):
        fc = nn.Linear(2, 2)
        opt = torch.optim.SGD(fc.parameters(), lr=0.0)
        calls = []
        loss = train_classifier_epoch(
            fc,
            torch.randn(10, 2),
            torch.arange(10) % 2,
            lambda z, y: calls.append(len(y)) or z.sum() * 0,
            opt,
            batch_size=4,
            drop_last=True,
        )
        assert calls == [4, 4]
        assert loss == 0.0

    def test_train_classifier_exceptions(self):
        fc = nn.Linear(2, 2)
        crit = nn.CrossEntropyLoss()
        with pytest.raises(ValueError, match=r"`features` to have shape \(N, D\)"):
            train_classifier(fc, torch.randn(4), torch.zeros(4, dtype=torch.int64), crit, epochs=1)
        with pytest.raises(ValueError, match=r"`labels` to have shape \(4,\)"):
            train_classifier(fc, torch.randn(4, 2), torch.zeros(3, dtype=torch.int64), crit, epochs=1)
        with pytest.raises(TypeError, match=r"`features` to be a torch\.Tensor"):
            train_classifier(fc, [[0.0]], torch.zeros(1, dtype=torch.int64), crit, epochs=1)
        with pytest.raises(ValueError, match="`epochs` to be >= 1"):
            train_classifier(fc, torch.randn(4, 2), torch.zeros(4, dtype=torch.int64), crit, epochs=0)
        with pytest.raises(ValueError, match="`scheduler` to be one of"):
            train_classifier(fc, torch.randn(4, 2), torch.zeros(4, dtype=torch.int64), crit, epochs=1, scheduler="step")
