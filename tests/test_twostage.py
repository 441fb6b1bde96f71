"""Tests of longtail_losses.twostage: data balanced review, frozen backbone, feature-cache stage 2."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, Subset, TensorDataset

import longtail_losses as ltl
from longtail_losses.data import SeededBatchSampler
from longtail_losses.training import predict, train_one_epoch, warn_double_decay
from longtail_losses.twostage import (
    BackboneFreeze,
    data_balanced_review,
    extract_features,
    freeze_backbone,
    get_classifier,
    head_tail_classes,
    replace_classifier,
    train_classifier,
    train_classifier_epoch,
)


def cifar100_lt_counts(imbalance_factor: float) -> list[int]:
    # The CIFAR-LT profile written out independently of longtail_losses.data.
    return [int(500 * (1 / imbalance_factor) ** (i / 99)) for i in range(100)]


def labels_from_counts(counts: list[int], order: list[int] | None = None) -> torch.Tensor:
    """Labels with ``counts[c]`` samples of class c, stored class by class in ``order`` (default 0..C-1)."""
    order = list(range(len(counts))) if order is None else order
    return torch.cat([torch.full((counts[c],), c, dtype=torch.int64) for c in order])


def reference_review(labels: torch.Tensor) -> tuple[set[int], set[int], int]:
    """(head classes, tail classes, n_{m+1}) spelled out from the paper's definition with a plain loop."""
    num_classes = int(labels.max()) + 1
    counts = [int((labels == c).sum()) for c in range(num_classes)]
    order = sorted(range(num_classes), key=lambda c: (-counts[c], c))
    m = num_classes // 2
    return set(order[:m]), set(order[m:]), counts[order[m]]


class TestDataBalancedReview:
    def test_cifar100_lt_if100_sizes(self):
        labels = labels_from_counts(cifar100_lt_counts(100))
        assert labels.numel() == 10847  # the paper's Table 1
        stage1, stage2 = data_balanced_review(labels)
        assert stage1.numel() == 9901
        assert stage2.numel() == 3346
        assert stage1.dtype == torch.int64
        assert stage2.dtype == torch.int64
        counts2 = ltl.class_counts(labels[stage2], num_classes=100)
        # Head classes 0..49 are cut to n_51 = 48 (class index 50), the tail is kept whole.
        assert counts2[:50].tolist() == [48] * 50
        assert counts2[50:].tolist() == cifar100_lt_counts(100)[50:]
        assert ltl.class_counts(labels[stage1], num_classes=100)[:50].tolist() == cifar100_lt_counts(100)[:50]

    @pytest.mark.parametrize("imbalance_factor", [10, 50, 200])
    def test_other_imbalance_factors_match_reference(self, imbalance_factor):
        counts = cifar100_lt_counts(imbalance_factor)
        labels = labels_from_counts(counts)
        stage1, stage2 = data_balanced_review(labels)
        assert stage1.numel() == sum(counts[:50])
        assert stage2.numel() == 50 * counts[50] + sum(counts[50:])

    def test_classes_not_in_frequency_order(self):
        # Counts assigned to shuffled class indices, and samples stored interleaved (not grouped by class).
        gen = torch.Generator().manual_seed(1)
        counts = [40, 3, 17, 25, 9, 30, 5, 12]
        labels = labels_from_counts(counts)[torch.randperm(sum(counts), generator=gen)]
        head, _tail, n_review = reference_review(labels)
        assert head == {0, 3, 5, 2}
        assert n_review == 12
        stage1, stage2 = data_balanced_review(labels, seed=3)
        assert set(labels[stage1].tolist()) == head
        assert stage1.tolist() == [i for i in range(labels.numel()) if int(labels[i]) in head]
        counts2 = ltl.class_counts(labels[stage2], num_classes=8)
        assert counts2.tolist() == [12, 3, 12, 12, 9, 12, 5, 12]
        assert torch.equal(head_tail_classes(labels)[0], torch.tensor([0, 5, 3, 2]))
        assert torch.equal(head_tail_classes(labels)[1], torch.tensor([7, 4, 6, 1]))

    def test_ties_lower_index_first(self):
        # Classes 1 and 2 tie for the last head place: class 1 is head, class 2 tail, so n_{m+1} = 5.
        counts = [9, 5, 5, 2]
        labels = labels_from_counts(counts, order=[3, 2, 1, 0])
        head, tail = head_tail_classes(labels)
        assert head.tolist() == [0, 1]
        assert tail.tolist() == [2, 3]
        stage1, stage2 = data_balanced_review(labels)
        assert set(labels[stage1].tolist()) == {0, 1}
        assert ltl.class_counts(labels[stage2]).tolist() == [5, 5, 5, 2]

    def test_odd_number_of_classes(self):
        counts = [10, 8, 6, 4, 2]  # m = 2: head {0, 1}, tail {2, 3, 4}, n_{m+1} = 6
        labels = labels_from_counts(counts)
        stage1, stage2 = data_balanced_review(labels)
        assert stage1.numel() == 18
        assert ltl.class_counts(labels[stage2]).tolist() == [6, 6, 6, 4, 2]

    def test_properties(self):
        labels = labels_from_counts(cifar100_lt_counts(50))[torch.randperm(12608, generator=torch.Generator())]
        _head, tail, _ = reference_review(labels)
        stage1, stage2 = data_balanced_review(labels, seed=7)
        for idx in (stage1, stage2):
            assert torch.equal(idx, torch.sort(idx).values)  # sorted
            assert idx.unique().numel() == idx.numel()  # no duplicates
            assert int(idx.min()) >= 0
            assert int(idx.max()) < labels.numel()
        # Stage 2 keeps every tail sample, and its head samples are a subset of stage 1.
        tail_idx = {i for i in range(labels.numel()) if int(labels[i]) in tail}
        s1, s2 = set(stage1.tolist()), set(stage2.tolist())
        assert tail_idx <= s2
        assert s2 - tail_idx <= s1
        assert s1.isdisjoint(tail_idx)
        assert s1 | tail_idx == set(range(labels.numel()))

    def test_deterministic_by_seed(self):
        labels = labels_from_counts(cifar100_lt_counts(100))
        a1, a2 = data_balanced_review(labels, seed=0)
        b1, b2 = data_balanced_review(labels, seed=0)
        c1, c2 = data_balanced_review(labels, seed=1)
        assert torch.equal(a1, b1)
        assert torch.equal(a2, b2)
        assert torch.equal(a1, c1)
        assert not torch.equal(a2, c2)
        assert a2.numel() == c2.numel()

    def test_head_subset_is_uniform(self):
        # Each sample of a head class is drawn with probability n_{m+1} / n_j: check over seeds.
        labels = labels_from_counts([10, 2])
        hits = torch.zeros(10)
        for seed in range(1000):
            _, stage2 = data_balanced_review(labels, seed=seed)
            hits[stage2[stage2 < 10]] += 1
        assert_close(hits / 1000, torch.full((10,), 0.2), atol=0.05, rtol=0)  # 4 binomial std devs

    def test_accepts_list_array_dataset_and_subset(self):
        numpy = pytest.importorskip("numpy")
        labels = [0, 0, 0, 1, 1, 2]
        expected = data_balanced_review(torch.tensor(labels))

        class WithTargets(torch.utils.data.Dataset):
            targets = labels

            def __len__(self):
                return len(labels)

            def __getitem__(self, i):
                raise AssertionError("must not decode samples")

        for source in (labels, numpy.array(labels), WithTargets()):
            got = data_balanced_review(source)
            assert torch.equal(got[0], expected[0])
            assert torch.equal(got[1], expected[1])
        sub = Subset(WithTargets(), [5, 4, 3, 2, 1, 0])  # reversed: positions refer to the subset
        s1, _ = data_balanced_review(sub)
        assert s1.tolist() == [3, 4, 5]

    def test_exceptions(self):
        with pytest.raises(ValueError, match="at least 2 classes"):
            data_balanced_review([0, 0, 0])
        with pytest.raises(ValueError, match="first tail class"):
            data_balanced_review([3, 3, 0])  # counts 1, 0, 0, 2: class 1 is the first tail class and has none
        with pytest.raises(TypeError, match="`seed` to be an int"):
            data_balanced_review([0, 1], seed=1.5)
        with pytest.raises(TypeError, match="integer class indices"):
            data_balanced_review(torch.tensor([0.0, 1.0]))
        with pytest.raises(ValueError, match="1-D"):
            head_tail_classes(torch.zeros(2, 2, dtype=torch.int64))


class SmallNet(nn.Module):
    """Conv + BatchNorm + dropout backbone with a linear head at a custom, nested attribute."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def stage1_model(seed: int = 0) -> SmallNet:
    torch.manual_seed(seed)
    net = SmallNet()
    net.train()
    with torch.no_grad():  # move the BN statistics away from their initial values
        for _ in range(3):
            net(torch.randn(8, 3, 6, 6) * 2 + 1)
    return net


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


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


class TestSeededBatchSampler:
    def test_batches_are_a_permutation_by_epoch(self):
        sampler = SeededBatchSampler(10, 3, seed=4)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert [len(b) for b in batches] == [3, 3, 3, 1]
            assert len(sampler) == 4
            flat = [i for batch in batches for i in batch]
            assert flat == torch.randperm(10, generator=torch.Generator().manual_seed(4 + epoch)).tolist()
            assert list(sampler) == batches  # same epoch, same batches
        sampler = SeededBatchSampler(10, 3, shuffle=False, drop_last=True)
        assert list(sampler) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]

    def test_exceptions(self):
        with pytest.raises(ValueError, match="`batch_size` to be >= 1"):
            SeededBatchSampler(4, 0)
        with pytest.raises(ValueError, match="`num_samples` to be >= 0"):
            SeededBatchSampler(-1, 2)
        with pytest.raises(TypeError, match="`seed` to be an int"):
            SeededBatchSampler(4, 2, seed=None)


class TestLoopBlocks:
    def test_train_one_epoch_matches_manual_and_weights_loss_by_batch_size(self):
        torch.manual_seed(0)
        net = nn.Linear(3, 2).double()
        ref = copy.deepcopy(net)
        batches = [
            (torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0])),
            (torch.randn(1, 3, dtype=torch.float64), torch.tensor([1])),
        ]
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        mean = train_one_epoch(net, batches, nn.functional.cross_entropy, opt, progress=list)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
        total = 0.0
        for x, y in batches:
            ref_opt.zero_grad()
            loss = nn.functional.cross_entropy(ref(x), y)
            loss.backward()
            ref_opt.step()
            total += loss.item() * len(y)
        assert mean == pytest.approx(total / 5, rel=1e-12)
        assert_close(net.weight, ref.weight)

    def test_predict_raw_logits_and_restores_mode(self):
        net = stage1_model()
        net.train()
        x, y = torch.randn(6, 3, 6, 6), torch.arange(6) % 3
        logits, targets = predict(net, DataLoader(TensorDataset(x, y), batch_size=4))
        net.eval()
        with torch.no_grad():
            expected = net(x)
        assert_close(logits, expected)
        assert torch.equal(targets, y)
        net.train()
        predict(net, [(x, y)])
        assert all(m.training for m in net.modules())
        with pytest.raises(ValueError, match="at least one batch"):
            predict(net, [])

    def test_autocast_bfloat16_cpu(self):
        net = stage1_model()
        fc = replace_classifier(net, 3, classifier_attr="head.1")
        opt = torch.optim.SGD(fc.parameters(), lr=0.1)
        data = [(torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 0]))]
        loss = train_one_epoch(
            net, data, nn.functional.cross_entropy, opt, autocast_dtype=torch.bfloat16, channels_last=True
        )
        assert torch.isfinite(torch.tensor(loss))
        feats, _ = extract_features(net, data[0], classifier_attr="head.1", autocast_dtype=torch.bfloat16)
        assert feats.dtype == torch.float32
        logits, _ = predict(net, data, autocast_dtype=torch.bfloat16)
        assert logits.dtype == torch.float32

    @pytest.mark.gpu
    def test_cuda_autocast_and_scaler(self):
        net = stage1_model().cuda()
        fc = replace_classifier(net, 3, classifier_attr="head.1")
        opt = torch.optim.SGD(fc.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cuda")
        data = [(torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 0]))]
        loss = train_one_epoch(
            net,
            data,
            nn.functional.cross_entropy,
            opt,
            autocast_dtype=torch.float16,
            grad_scaler=scaler,
            channels_last=True,
        )
        assert torch.isfinite(torch.tensor(loss))
        feats, labels = extract_features(net, data[0], classifier_attr="head.1", autocast_dtype=torch.float16)
        assert feats.is_cuda
        assert labels.is_cuda
        assert feats.dtype == torch.float32
        train_classifier(fc, feats, labels, nn.CrossEntropyLoss(), epochs=2, batch_size=2)


class TestWarnDoubleDecay:
    def _setup(self, *, bwlm_decay: float = 5e-3):
        torch.manual_seed(0)
        fc = nn.Linear(4, 3)
        return fc, ltl.BWLM([20, 5, 2], classifier=fc, weight_decay=bwlm_decay)

    def test_warns_when_optimizer_also_decays_the_classifier(self):
        fc, criterion = self._setup()
        opt = torch.optim.SGD(fc.parameters(), lr=0.1, weight_decay=5e-4)
        with pytest.warns(UserWarning, match=r"param group 0 applies weight_decay=0.0005 .* decays twice"):
            assert warn_double_decay(criterion, opt)

    def test_silent_when_only_one_decay_applies(self, recwarn):
        fc, criterion = self._setup()
        assert not warn_double_decay(criterion, torch.optim.SGD(fc.parameters(), lr=0.1))
        # The decayed group holds only the bias: the weight is decayed once.
        groups = [{"params": [fc.weight], "weight_decay": 0.0}, {"params": [fc.bias], "weight_decay": 1e-4}]
        assert not warn_double_decay(criterion, torch.optim.SGD(groups, lr=0.1))
        _, no_penalty = self._setup(bwlm_decay=0.0)
        assert not warn_double_decay(no_penalty, torch.optim.SGD(fc.parameters(), lr=0.1, weight_decay=1e-4))
        assert not warn_double_decay(nn.CrossEntropyLoss(), torch.optim.SGD(fc.parameters(), lr=0.1, weight_decay=1))
        assert not [w for w in recwarn if issubclass(w.category, UserWarning)]

    def test_train_classifier_warns(self):
        fc, criterion = self._setup()
        features, labels = torch.randn(12, 4), torch.arange(12) % 3
        with pytest.warns(UserWarning, match="decays twice"):
            train_classifier(fc, features, labels, criterion, epochs=1, batch_size=4, weight_decay=1e-3)

    def test_train_one_epoch_warns(self):
        fc, criterion = self._setup()
        opt = torch.optim.SGD(fc.parameters(), lr=0.1, weight_decay=1e-3)
        with pytest.warns(UserWarning, match="decays twice"):
            train_one_epoch(fc, [(torch.randn(3, 4), torch.tensor([0, 1, 2]))], criterion, opt)
