"""A long-tail loss in the Hugging Face Trainer: a tiny BERT, built from a config, on long-tailed random text.

Offline (no download): the model is randomly initialised from a ``BertConfig`` and the data are random token ids
whose first token gives the label, so a few steps already lower the loss. The lines that matter for your own
fine-tuning are in ``make_trainer``: the class counts from the ``datasets.Dataset`` column, the loss on the
model's classification head, and ``compute_loss_func=TrainerLoss(criterion)``.

Run:  python examples/integrations/hf_trainer.py     (needs `pip install -e ".[integrations]"`)
"""

from __future__ import annotations

import tempfile

import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

import longtail_losses as ltl
from longtail_losses.integrations.huggingface import TrainerLoss, dataset_class_counts

NUM_LABELS, SEQ_LEN, VOCAB = 4, 8, 32


def long_tailed_dataset(counts: list[int], seed: int = 0) -> Dataset:
    """``counts[c]`` rows of class ``c``: random token ids, the first of which is the label's token."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    ids = torch.randint(NUM_LABELS, VOCAB, (len(labels), SEQ_LEN), generator=gen)
    ids[:, 0] = labels  # tokens 0..3 name the class
    features = Features(
        {
            "input_ids": Sequence(Value("int64")),
            "attention_mask": Sequence(Value("int64")),
            "label": ClassLabel(num_classes=NUM_LABELS),
        }
    )
    rows = {"input_ids": ids.tolist(), "attention_mask": [[1] * SEQ_LEN] * len(labels), "label": labels.tolist()}
    return Dataset.from_dict(rows, features=features)


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    """A two-head, one-layer BERT from a config: random weights, no download; no dropout, so runs compare exactly."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=SEQ_LEN, num_labels=NUM_LABELS, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def make_trainer(model: BertForSequenceClassification, train: Dataset, args: TrainingArguments) -> Trainer:
    counts = dataset_class_counts(train, "label")  # int64 counts per class, from the Arrow column
    # BWLM penalises the classification head: give it the model's head, and keep the Trainer's weight_decay at 0.
    criterion = ltl.BWLM(counts, classifier=model.classifier, weight_decay=5e-3)
    return Trainer(model=model, args=args, train_dataset=train, compute_loss_func=TrainerLoss(criterion))


def training_args(output_dir: str, **overrides: object) -> TrainingArguments:
    """CPU, no logging to services, nothing saved; ``overrides`` replace any of these."""
    settings: dict = {
        "output_dir": output_dir, "use_cpu": True, "report_to": "none", "save_strategy": "no",
        "disable_tqdm": True, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2,
        "learning_rate": 1e-3, "weight_decay": 0.0, "max_steps": 20, "logging_steps": 10, "seed": 0,
    }  # fmt: skip
    settings.update(overrides)
    return TrainingArguments(**settings)


def main() -> None:
    train = long_tailed_dataset([48, 16, 6, 2])
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(tiny_model(), train, training_args(out))
        result = trainer.train()
        print(f"{result.global_step} steps, training loss {result.training_loss:.4f}")
        print(f"eval loss on the training set: {trainer.evaluate(eval_dataset=train)['eval_loss']:.4f}")


if __name__ == "__main__":
    main()
