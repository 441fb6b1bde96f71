"""The library's losses inside the real Hugging Face ``Trainer`` (tiny BERT from a config, CPU, no download)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import longtail_losses as ltl
from longtail_losses.integrations.huggingface import TrainerLoss, dataset_class_counts
from tests.integrations._examples import load

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer's own requirement
datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def example():
    return load("hf_trainer")


def _one_sgd_step(example, model, train, out: Path, *, batch: int, accumulate: int, loss_func=None):
    """One optimizer step of plain SGD (lr 1, no momentum, no clipping) over all of ``train``; the new weights."""
    args = example.training_args(
        str(out), per_device_train_batch_size=batch, gradient_accumulation_steps=accumulate, max_steps=1,
        optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0, logging_strategy="no",
    )  # fmt: skip
    trainer = example.make_trainer(model, train, args)
    if loss_func is not None:
        trainer.compute_loss_func = loss_func
    trainer.train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_accumulating_2x4_equals_one_batch_of_8(example, tmp_path: Path) -> None:
    train = example.long_tailed_dataset([4, 2, 1, 1])  # 8 rows: one optimizer step sees all of them
    start = example.tiny_model()
    one = _one_sgd_step(example, copy.deepcopy(start), train, tmp_path / "a", batch=8, accumulate=1)
    two = _one_sgd_step(example, copy.deepcopy(start), train, tmp_path / "b", batch=4, accumulate=2)
    moved = 0
    for key, weight in one.items():
        # Two micro-batches sum the gradient in another order than one batch: float32 rounding only.
        torch.testing.assert_close(two[key], weight, rtol=1e-5, atol=1e-6)
        moved += int(not torch.equal(weight, start.state_dict()[key]))
    assert moved > 10  # the step changed the model: the comparison is not of two untouched copies

    # The trap the adapter avoids: a per-micro-batch mean, as a plain compute_loss_func returns it. Where the Trainer
    # passes num_items_in_batch to compute_loss_func, it leaves the scaling to it: two micro-batches, twice the step.
    seen = []

    def plain_mean(outputs, labels, num_items_in_batch=None):
        seen.append(num_items_in_batch)
        return ltl.BalancedSoftmax(example.dataset_class_counts(train))(outputs["logits"], labels)

    model = copy.deepcopy(start)
    plain_two = _one_sgd_step(example, model, train, tmp_path / "c", batch=4, accumulate=2, loss_func=plain_mean)
    model = copy.deepcopy(start)
    plain_one = _one_sgd_step(example, model, train, tmp_path / "d", batch=8, accumulate=1, loss_func=plain_mean)
    if seen[0] is None:
        pytest.skip("this transformers does not pass num_items_in_batch to compute_loss_func")
    head = "classifier.weight"
    step_one, step_two = plain_one[head] - start.state_dict()[head], plain_two[head] - start.state_dict()[head]
    torch.testing.assert_close(step_two, 2 * step_one, rtol=1e-4, atol=1e-6)  # float32 rounding of the two steps


def test_training_runs_and_the_loss_is_the_librarys(example, tmp_path: Path) -> None:
    train = example.long_tailed_dataset([24, 8, 3, 1])
    model = example.tiny_model()
    before = model.classifier.weight.detach().clone()
    trainer = example.make_trainer(model, train, example.training_args(str(tmp_path), max_steps=3))
    result = trainer.train()
    assert result.global_step == 3
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(model.classifier.weight, before)
    criterion = trainer.compute_loss_func.criterion
    assert criterion.classifier_weight is model.classifier.weight  # BWLM penalises the head the Trainer trains

    # The Trainer's eval loss on one batch of all 36 rows is the library's loss on the same logits.
    trainer.args.per_device_eval_batch_size = len(train)
    eval_loss = trainer.evaluate(eval_dataset=train)["eval_loss"]
    model.eval()
    with torch.no_grad():
        inputs = {k: torch.tensor(train[k]) for k in ("input_ids", "attention_mask")}
        logits = model(**inputs).logits
        expected = ltl.BWLM(ltl.class_counts(train["label"]), classifier=model.classifier)(
            logits, torch.tensor(train["label"])
        )
    assert eval_loss == pytest.approx(float(expected), rel=1e-5)


def test_micro_batches_add_up_to_the_mean_with_the_penalty_once() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(5, 4)
    features, labels = torch.randn(8, 5), torch.tensor([0, 0, 0, -100, 1, 2, 3, 0])
    criterion = ltl.BWLM([10, 5, 2, 1], classifier=head, weight_decay=0.5)
    loss_func = TrainerLoss(criterion)
    whole = criterion(head(features), labels)
    kept = torch.tensor(7)  # what the Trainer counts: labels != -100 over the accumulated batch
    parts = [loss_func({"logits": head(features[s])}, labels[s], num_items_in_batch=kept) for s in (slice(0, 4),
             slice(4, 8))]  # fmt: skip
    torch.testing.assert_close(parts[0] + parts[1], whole)
    grad_parts = torch.autograd.grad(parts[0] + parts[1], head.weight)[0]
    grad_whole = torch.autograd.grad(criterion(head(features), labels), head.weight)[0]
    torch.testing.assert_close(grad_parts, grad_whole)
    # A micro-batch whose labels are all ignored adds nothing (not nan).
    empty = loss_func({"logits": head(features[:2])}, torch.tensor([-100, -100]), num_items_in_batch=kept)
    assert empty.item() == 0.0
    assert torch.autograd.grad(empty, head.weight)[0].eq(0).all()


def test_token_logits_are_flattened_and_half_logits_upcast() -> None:
    criterion = ltl.BalancedSoftmax([3, 2, 1])
    logits, labels = torch.randn(2, 5, 3), torch.tensor([[0, 1, 2, -100, 0], [1, 1, -100, 2, 0]])
    got = TrainerLoss(criterion)((logits,), labels)
    torch.testing.assert_close(got, criterion(logits.reshape(-1, 3), labels.reshape(-1)))
    half = TrainerLoss(criterion)({"logits": logits.bfloat16()}, labels)
    assert half.dtype == torch.float32


class _Elsewhere(torch.nn.Module):
    """A criterion whose buffer is on another device than the logits; records where it is moved."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("class_counts", torch.ones(3, dtype=torch.int64, device="meta"))
        self.moves: list[torch.device] = []

    def to(self, device):  # type: ignore[override]
        self.moves.append(torch.device(device))
        return self

    def forward(self, logits, target):
        return logits.sum()


def test_the_criterion_follows_the_logits_device() -> None:
    criterion = _Elsewhere()
    loss_func = TrainerLoss(criterion)
    loss_func({"logits": torch.randn(2, 3)}, torch.tensor([0, 1]))
    assert criterion.moves == [torch.device("cpu")]


def test_the_adapter_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, longtail_losses.integrations.huggingface\n"
        "print(sorted({'transformers', 'datasets', 'lightning', 'timm', 'accelerate'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_exceptions() -> None:
    with pytest.raises(TypeError, match="Expected `criterion` to be a loss"):
        TrainerLoss("bs")
    with pytest.raises(ValueError, match="Expected `criterion` to have reduction='mean'"):
        TrainerLoss(ltl.BalancedSoftmax([2, 1], reduction="sum"))
    with pytest.raises(ValueError, match="Expected `criterion` to have ignore_index=-100"):
        TrainerLoss(ltl.BalancedSoftmax([2, 1], ignore_index=0))
    loss_func = TrainerLoss(ltl.BalancedSoftmax([2, 1]))
    with pytest.raises(TypeError, match="multi-label"):
        loss_func({"logits": torch.randn(3, 2)}, torch.tensor([[1.0, 0.0]] * 3))
    with pytest.raises(ValueError, match="Expected `labels` in the batch"):
        loss_func({"logits": torch.randn(3, 2)}, None)
    with pytest.raises(ValueError, match="Expected one label per row"):
        loss_func({"logits": torch.randn(3, 2)}, torch.tensor([0, 1]))


def test_dataset_class_counts() -> None:
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    features = Features({"label": ClassLabel(names=["a", "b", "c", "d"]), "tags": Sequence(Value("int64"))})
    ds = Dataset.from_dict({"label": [0, 2, 2, 1, 0, 0], "tags": [[0, 1]] * 6}, features=features)
    assert dataset_class_counts(ds).tolist() == [3, 1, 2, 0]  # four names: class "d" counts 0
    assert dataset_class_counts(ds.select([1, 2, 3])).tolist() == [0, 1, 2, 0]  # the selection, not the table
    assert dataset_class_counts(ds.filter(lambda r: r["label"] > 0)).tolist() == [0, 1, 2, 0]
    plain = Dataset.from_dict({"y": [1, 1, 3]})
    assert dataset_class_counts(plain, "y").tolist() == [0, 2, 0, 1]
    assert dataset_class_counts([0, 1, 1]).tolist() == [1, 2]  # labels: ltl.class_counts
    with pytest.raises(ValueError, match="Expected `column` to be one of"):
        dataset_class_counts(ds, "labels")
    with pytest.raises(TypeError, match="one integer class index per row"):
        dataset_class_counts(ds, "tags")
    with pytest.raises(ValueError, match="to be < num_classes=2"):
        dataset_class_counts(ds, num_classes=2)
