"""Stage-2 speed-up of the feature cache: a frozen ResNet-32 run every step vs. a classifier on cached features.

Stage 2 of the BWLM paper trains only a new linear classifier on a frozen backbone. Without data augmentation
the backbone is a fixed function, so ``longtail_losses.twostage.extract_features`` can run it once and
``train_classifier`` can train on the cached features; both give the same classifier
(``tests/twostage/test_features.py::TestFeatureCache::test_cached_equals_live_stage2``). This script times, on 32x32
inputs with a ResNet-32 (CIFAR ResNet of He et al. 2016: 3 stages x 5 basic blocks, 16/32/64 channels):

* ``live``: one stage-2 epoch through ``train_one_epoch`` (frozen backbone forward every step, eval mode);
* ``extract``: the one-off feature extraction;
* ``cached``: one stage-2 epoch through ``train_classifier_epoch`` on the cached features,

each with ``F.cross_entropy`` (the baseline) and, for the cached epoch, also ``BWLM``. It prints median and IQR
(``torch.utils.benchmark.Timer.blocked_autorange``), the speed-up live/cached, the break-even number of epochs
``extract / (live - cached)``, and the stage-2 wall time of the paper's 320 epochs both ways; and writes JSON.

Default size: 3,346 samples, the stage-2 set of CIFAR-100-LT with imbalance factor 100. Run::

    python benchmarks/bench_stage2_cache.py            # full (CPU: a couple of minutes)
    python benchmarks/bench_stage2_cache.py --quick    # 512 samples
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from _harness import git_commit  # first: it puts this checkout on sys.path
from torch import Tensor
from torch.utils import benchmark

import longtail_losses as ltl
from longtail_losses.data import SeededBatchSampler
from longtail_losses.models import resnet32
from longtail_losses.training import train_one_epoch
from longtail_losses.twostage import extract_features, replace_classifier, train_classifier_epoch


def _summary(m: benchmark.Measurement) -> dict[str, float]:
    return {"median_s": m.median, "iqr_s": m.iqr, "runs": len(m.times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3346, help="stage-2 samples (default: CIFAR-100-LT IF=100)")
    parser.add_argument("--quick", action="store_true", help="512 samples and shorter timing")
    parser.add_argument("--batch-size", type=int, default=64, help="stage-2 batch size (paper: 64)")
    parser.add_argument("--extract-batch-size", type=int, default=256, help="batch size of the feature extraction")
    parser.add_argument("--epochs", type=int, default=320, help="epochs for the total-time estimate (paper: 320)")
    parser.add_argument("--min-run-time", type=float, default=None, help="seconds per blocked_autorange")
    parser.add_argument("--repeats", type=int, default=3, help="at least this many timed runs of each statement")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stage2_cache.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    samples = 512 if args.quick else args.samples
    min_run_time = args.min_run_time or 1.0
    device = torch.device(args.device)
    num_classes = 100

    torch.manual_seed(0)
    model = resnet32(num_classes).to(device)
    fc = replace_classifier(model, num_classes)  # frozen backbone (eval mode), new trainable fc
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, 32, 32, generator=gen).to(device)
    y = (torch.arange(samples) % num_classes).to(device)
    counts = ltl.class_counts(y.cpu(), num_classes=num_classes)
    sampler = SeededBatchSampler(samples, args.batch_size, seed=0)

    def batches() -> list[tuple[Tensor, Tensor]]:
        return [(x[i], y[i]) for i in map(torch.tensor, sampler)]

    live_opt = torch.optim.SGD(fc.parameters(), lr=0.01, momentum=0.9)

    def live_epoch() -> None:
        train_one_epoch(model, batches(), F.cross_entropy, live_opt)

    def extract() -> tuple[Tensor, Tensor]:
        return extract_features(model, (x, y), batch_size=args.extract_batch_size)

    feats, labels = extract()
    cached_opt = torch.optim.SGD(fc.parameters(), lr=0.01, momentum=0.9)
    bwlm = ltl.BWLM(counts.to(device), classifier=fc)

    def cached_epoch(criterion: object) -> None:
        train_classifier_epoch(fc, feats, labels, criterion, cached_opt, batch_size=args.batch_size)  # type: ignore[arg-type]

    def timer(fn: object, label: str) -> benchmark.Measurement:
        t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, label="stage-2 epoch", description=label)
        once = t.timeit(number=1).median  # also a warm-up
        # Enough time for `--repeats` runs of one call each, however slow the statement.
        return t.blocked_autorange(min_run_time=max(min_run_time, args.repeats * once * 1.1))

    print(
        f"ResNet-32, {samples} samples of 3x32x32, batch {args.batch_size}, device {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    live = timer(live_epoch, "live: frozen backbone every step (F.cross_entropy)")
    ext = timer(extract, "extract features once")
    cached = timer(lambda: cached_epoch(F.cross_entropy), "cached features (F.cross_entropy)")
    cached_bwlm = timer(lambda: cached_epoch(bwlm), "cached features (BWLM)")

    speedup = live.median / cached.median
    break_even = ext.median / (live.median - cached.median)
    total_live = args.epochs * live.median
    total_cached = ext.median + args.epochs * cached.median
    for name, m in (
        ("live epoch", live),
        ("extraction", ext),
        ("cached epoch (CE)", cached),
        ("cached epoch (BWLM)", cached_bwlm),
    ):
        print(f"{name:>20}: median {m.median * 1e3:10.2f} ms  IQR {m.iqr * 1e3:8.2f} ms  ({len(m.times)} runs)")
    print(f"speed-up of a stage-2 epoch (live / cached, CE): {speedup:.1f}x")
    print(f"break-even: extraction pays for itself after {break_even:.2f} epochs ({math.ceil(break_even)})")
    print(
        f"{args.epochs} stage-2 epochs: live {total_live:.1f} s vs. extract + cached {total_cached:.2f} s "
        f"({total_live / total_cached:.1f}x)"
    )

    result = {
        "benchmark": "stage2_cache",
        "model": "longtail_losses.models.resnet32 (3x5 basic blocks, 16/32/64 channels)",
        "samples": samples,
        "input_shape": [3, 32, 32],
        "batch_size": args.batch_size,
        "num_classes": num_classes,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": git_commit(full=True),
        "live_epoch": _summary(live),
        "extract": _summary(ext),
        "cached_epoch_cross_entropy": _summary(cached),
        "cached_epoch_bwlm": _summary(cached_bwlm),
        "speedup_live_over_cached": speedup,
        "break_even_epochs": break_even,
        "epochs": args.epochs,
        "total_live_s": total_live,
        "total_cached_s": total_cached,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
