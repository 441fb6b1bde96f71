"""The library's loss and sampler in the real Lightning ``Trainer``: bf16 precision on the CPU, DDP over 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longtail_losses.data import ClassAwareSampler
from tests.integrations._examples import EXAMPLES, ROOT, load

L = pytest.importorskip("lightning")


@pytest.fixture(scope="module")
def example():
    return load("lightning_module")


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_bf16_keeps_the_counts_and_the_classifier(example, precision: str) -> None:
    torch.manual_seed(0)
    module = example.LongTailClassifier(*example.toy_data(example.COUNTS))
    counts = module.criterion.class_counts.clone()
    head = module.net[-1].weight
    before = head.detach().float().clone()
    trainer = example.make_trainer(1, precision, 1, [])
    trainer.fit(module)
    assert module.criterion.class_counts.dtype == torch.int64  # .to(bfloat16) casts floating-point tensors only
    assert torch.equal(module.criterion.class_counts, counts)
    expected = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert module.net[-1].weight.dtype == expected  # the precision plugin did cast the module (or not)
    assert module.net[-1].weight is head  # the parameter object survived the cast ...
    assert module.criterion.classifier_weight is module.net[-1].weight  # ... and BWLM penalises the module's head
    assert not torch.equal(module.net[-1].weight.float(), before)
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert "criterion.class_counts" in module.state_dict()


@pytest.mark.slow
def test_ddp_two_processes_keep_the_class_aware_sampler(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(EXAMPLES / "lightning_module.py"), "--devices", "2", "--report", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    example = load("lightning_module")
    _, labels = example.toy_data(example.COUNTS)
    for rank, report in enumerate(reports):
        assert report["sampler"] == "ClassAwareSampler"  # kept: not wrapped in Lightning's distributed sampler
        assert (report["rank"], report["num_replicas"], report["world_size"]) == (rank, 2, 2)
        assert report["counts_dtype"] == "torch.int64"
        assert report["weight_dtype"] == "torch.bfloat16"
        assert report["classifier_is_the_modules"]
    assert reports[0]["head"] == reports[1]["head"]  # DDP kept the replicas equal
    one = ClassAwareSampler(labels, power=0.0, seed=0, num_replicas=1, rank=0)
    for epoch in (0, 1):
        one.set_epoch(epoch)  # Lightning called set_epoch on the kept sampler: each epoch draws anew
        shards = [r["epochs"][epoch]["draws"] for r in reports]
        assert [i for pair in zip(*shards) for i in pair] == list(one)  # the ranks' draws interleave to one process's
    assert reports[0]["epochs"][0]["draws"] != reports[0]["epochs"][1]["draws"]


def test_lightnings_default_would_shard_the_draws_twice() -> None:
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    labels = torch.tensor([0] * 30 + [1] * 10)
    sharded = ClassAwareSampler(labels, num_replicas=2, rank=0)  # what the sampler does under DDP: 20 of 40 draws
    wrapped = DistributedSamplerWrapper(sharded, num_replicas=2, rank=0, shuffle=False)  # use_distributed_sampler=True
    assert len(sharded) == 20
    assert len(list(wrapped)) == 10  # a quarter of the epoch per rank instead of half
