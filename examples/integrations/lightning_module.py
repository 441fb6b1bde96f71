"""A long-tail loss and a class-aware sampler in a LightningModule, on one CPU process or several (DDP).

What to copy into your own module:

* the loss is a **submodule** (``self.criterion``): its ``int64`` class-counts buffer moves with the module, is in
  its ``state_dict``, and keeps its dtype when ``precision="bf16-true"`` casts the module (``.to()`` casts only
  floating-point tensors);
* BWLM's classifier is the module's own head (``classifier=self.net[-1]``), and the optimizer gives that head no
  ``weight_decay`` (BWLM's penalty is its weight decay);
* the sampler is built in ``train_dataloader``, once DDP has started, so it knows its rank and shards the draws
  itself; ``Trainer(use_distributed_sampler=False)`` keeps it. Lightning's default (``True``) would wrap it in its
  own distributed sampler, which shards the already-sharded draws a second time.

Run:  python examples/integrations/lightning_module.py [--devices 2]  (needs `pip install -e ".[integrations]"`)
Each rank prints what it drew; ``--report DIR`` also writes ``rank<r>.json`` there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.append(str(Path(__file__).resolve().parents[2]))  # longtail_losses from a clone, if not installed

import longtail_losses as ltl
from longtail_losses.data import ClassAwareSampler

COUNTS = [120, 40, 12, 4]


def toy_data(counts: list[int], seed: int = 0) -> tuple[Tensor, Tensor]:
    """Features of 16 dimensions, class c shifted along axis c; ``counts[c]`` samples of class c."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    features = torch.randn(len(labels), 16, generator=gen) + 2.0 * nn.functional.one_hot(labels, 16).float()
    return features, labels


class LongTailClassifier(L.LightningModule):
    """A small MLP trained with BWLM on ``features``/``labels``, drawn class-balanced by a ClassAwareSampler."""

    def __init__(self, features: Tensor, labels: Tensor, *, batch_size: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.features, self.labels, self.batch_size, self.lr = features, labels, batch_size, lr
        self.net = nn.Sequential(nn.Linear(features.shape[1], 32), nn.ReLU(), nn.Linear(32, len(COUNTS)))
        counts = ltl.class_counts(labels, num_classes=len(COUNTS))
        self.criterion = ltl.BWLM(counts, classifier=self.net[-1], weight_decay=5e-3)

    def forward(self, x: Tensor) -> Tensor:
        """Raw logits: evaluate with these (the losses' class prior is a training-time correction)."""
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """The loss of one batch; the inputs take the module's dtype (bfloat16 under ``bf16-true``)."""
        x, y = batch
        loss = self.criterion(self(x.to(self.dtype)), y)
        self.log("train_loss", loss.float())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD; no weight decay on the head, which BWLM's penalty decays."""
        head = self.net[-1].weight
        rest = [p for p in self.parameters() if p is not head]
        groups = [{"params": rest, "weight_decay": 5e-4}, {"params": [head], "weight_decay": 0.0}]
        return torch.optim.SGD(groups, lr=self.lr, momentum=0.9)

    def train_dataloader(self) -> DataLoader:
        """Class-balanced batches from a ClassAwareSampler that shards its draws over the DDP ranks."""
        # Built here, after DDP has started: the sampler reads the rank and the world size from torch.distributed.
        sampler = ClassAwareSampler(self.labels, power=0.0, seed=0)  # class-balanced draws, sharded over the ranks
        return DataLoader(TensorDataset(self.features, self.labels), batch_size=self.batch_size, sampler=sampler)


class SamplerReport(L.Callback):
    """Print (and with ``folder``, save) the sampler each rank trains with and the classes it drew."""

    def __init__(self, folder: Optional[Path] = None) -> None:
        self.folder, self.epochs = folder, []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Report the sampler of this rank and the classes of its draws in the epoch that ended."""
        sampler = trainer.train_dataloader.sampler
        draws = list(sampler)  # the epoch's draws again: a pure function of (seed, epoch)
        drawn = torch.bincount(module.labels[draws], minlength=len(COUNTS)).tolist()
        self.epochs.append({"epoch": trainer.current_epoch, "draws": draws})
        print(f"rank {trainer.global_rank}: {type(sampler).__name__}, {len(draws)} draws, per class {drawn}")
        if self.folder is not None:
            report = {
                "sampler": type(sampler).__name__,
                "num_replicas": getattr(sampler, "num_replicas", None),
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "epochs": self.epochs,
                "counts_dtype": str(module.criterion.class_counts.dtype),
                "weight_dtype": str(module.net[-1].weight.dtype),
                "classifier_is_the_modules": module.criterion.classifier_weight is module.net[-1].weight,
                "head": module.net[-1].weight.float().tolist(),
            }
            (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def make_trainer(devices: int, precision: str, epochs: int, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        use_distributed_sampler=False,  # keep the class-aware sampler: it shards itself
        precision=precision,  # "bf16-true" casts the module to bfloat16; the counts stay int64
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def main(argv: Optional[list[str]] = None) -> LongTailClassifier:
    parser = argparse.ArgumentParser(description="A LightningModule with BWLM and a class-aware sampler.")
    parser.add_argument("--devices", type=int, default=1, help="CPU processes (DDP when more than 1)")
    parser.add_argument("--precision", default="bf16-true", help="Lightning precision")
    parser.add_argument("--epochs", type=int, default=2, help="epochs")
    parser.add_argument("--report", type=Path, default=None, help="write rank<r>.json of what each rank drew here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    module = LongTailClassifier(*toy_data(COUNTS))
    trainer = make_trainer(args.devices, args.precision, args.epochs, [SamplerReport(args.report)])
    trainer.fit(module)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # before exit: an undestroyed gloo group can abort at teardown
    return module


if __name__ == "__main__":
    main()
