"""`longtail_losses.training.train_one_epoch`: shards of a global batch and the progress-bar postfix."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

import longtail_losses as ltl
from longtail_losses.training import predict, train_one_epoch, warn_double_decay
from longtail_losses.twostage import (
    extract_features,
    replace_classifier,
    train_classifier,
)
from tests._nets import stage1_model


def _grads_after_one_step(model: nn.Module, batch: tuple, world_size: int) -> list[torch.Tensor]:
    # lr=0: the step leaves the weights alone and the gradients stay in .grad.
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train_one_epoch(model, [batch], F.cross_entropy, opt, world_size=world_size)
    return [p.grad.clone() for p in model.parameters()]


class TestTrainOneEpochShards:
    def test_averaged_shard_gradients_equal_the_global_mean(self) -> None:
        # Global batch of 5 over 2 processes: shards of 3 and 2. DDP averages the two gradients.
        torch.manual_seed(0)
        model = nn.Linear(4, 3).double()
        x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
        shards = [(x[:3], y[:3], 5), (x[3:], y[3:], 5)]
        per_rank = [_grads_after_one_step(model, shard, world_size=2) for shard in shards]
        averaged = [(a + b) / 2 for a, b in zip(*per_rank)]
        # Reference: autograd of the mean loss over the whole global batch, without the loop.
        ref = copy.deepcopy(model)
        F.cross_entropy(ref(x), y).backward()
        for got, p in zip(averaged, ref.parameters()):
            torch.testing.assert_close(got, p.grad)

    def test_unscaled_shard_gradients_would_differ(self) -> None:
        # The same shards without their global size: the plain average of the two means is not the global mean.
        torch.manual_seed(0)
        model = nn.Linear(4, 3).double()
        x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
        per_rank = [_grads_after_one_step(model, (xs, ys), world_size=2) for xs, ys in ((x[:3], y[:3]), (x[3:], y[3:]))]
        ref = copy.deepcopy(model)
        F.cross_entropy(ref(x), y).backward()
        assert not torch.allclose((per_rank[0][0] + per_rank[1][0]) / 2, next(ref.parameters()).grad)

    def test_full_batch_is_unchanged_bitwise(self) -> None:
        # A batch that is the whole global batch on one process takes the unscaled path: identical weights.
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        data = [(torch.randn(6, 4), torch.randint(0, 3, (6,))) for _ in range(3)]
        a, b = copy.deepcopy(model), copy.deepcopy(model)
        loss_a = train_one_epoch(a, data, F.cross_entropy, torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9))
        loss_b = train_one_epoch(
            b, [(x, y, 6) for x, y in data], F.cross_entropy, torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
        )
        assert loss_a == loss_b
        for pa, pb in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=0, atol=0)

    def test_returned_loss_is_unscaled(self) -> None:
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
        expected = float(F.cross_entropy(model(x), y).detach())
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        got = train_one_epoch(model, [(x, y, 8)], F.cross_entropy, opt, world_size=2)
        assert got == pytest.approx(expected, rel=1e-6)

    @pytest.mark.parametrize("world_size", [0, -1, 1.5, True])
    def test_world_size_exceptions(self, world_size: object) -> None:
        model = nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(ValueError, match=r"Expected `world_size` to be an integer >= 1, but got"):
            train_one_epoch(model, [], F.cross_entropy, opt, world_size=world_size)  # type: ignore[arg-type]

    @pytest.mark.parametrize("global_size", [2, 0, 3.0])
    def test_global_batch_size_exceptions(self, global_size: object) -> None:
        model = nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        batch = (torch.randn(3, 2), torch.tensor([0, 1, 0]), global_size)
        with pytest.raises(
            ValueError, match=r"`global_batch_size` of a batch \(its third item\) to be an integer >= its 3"
        ):
            train_one_epoch(model, [batch], F.cross_entropy, opt)


class _Bar:
    """A stand-in for a tqdm bar: iterates the batches and records the postfix texts."""

    def __init__(self, batches: list) -> None:
        self.batches = batches
        self.texts: list[str] = []

    def __iter__(self):
        return iter(self.batches)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.texts.append(text)


class TestTrainOneEpochPostfix:
    def test_running_loss_every_ten_batches(self) -> None:
        torch.manual_seed(0)
        model = nn.Linear(2, 2)
        data = [(torch.randn(4, 2), torch.randint(0, 2, (4,))) for _ in range(12)]
        first = float(F.cross_entropy(model(data[0][0]), data[0][1]).detach())
        bars: list[_Bar] = []

        def progress(loader):
            bars.append(_Bar(list(loader)))
            return bars[-1]

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        mean = train_one_epoch(model, data, F.cross_entropy, opt, progress=progress)
        texts = bars[0].texts
        assert len(texts) == 2  # batches 0 and 10
        assert texts[0] == f"loss {first:.4f}"
        assert texts[1].startswith("loss ")
        assert mean > 0

    def test_no_postfix_without_a_bar(self) -> None:
        model = nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        data = [(torch.randn(4, 2), torch.randint(0, 2, (4,)))]
        assert train_one_epoch(model, data, F.cross_entropy, opt, progress=list) > 0


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
