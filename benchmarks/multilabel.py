"""Multi-label long tail: the library's multi-label losses and sampler on Fashion-MNIST mosaics, mAP by shot.

One command regenerates everything (JSON of every run, a Markdown report, a PNG plot)::

    python benchmarks/multilabel.py           # full study: IF 10/50/100, 5 seeds (2 cores, about 15-30 min)
    python benchmarks/multilabel.py --quick   # smoke test: IF 100, 2 seeds, 1 epoch (CI; not evidence)

Design (fixed in this docstring before any result was seen):

* Data: :func:`~longtail_losses.data.fashion_mnist_mosaic` from ``--root`` (Debian's ``dataset-fashion-mnist``):
  2 x 2 mosaics of 14 x 14 Fashion-MNIST tiles, one tile per label, the label set the classes present. Training
  positives per class follow :func:`~longtail_losses.data.longtail_counts` ``(10, 1000, IF)`` for IF in {10, 50,
  100}; the class order is permuted per seed (``torch.randperm(10)``, generator seed ``10_000 + seed``, as in
  ``choosing_a_method.py``) so every seed has a different tail. Validation: balanced mosaics with 100 positives
  per class from training images the training mosaics did not use; test: balanced mosaics with 300 positives per
  class from the test images. Seeds 0-4. Many (> 100) / Medium (20-100) / Few (< 20) training positives.
* Network and recipe: the tiny CNN of the other studies (``study.training.TinyCNN``), SGD momentum 0.9, batch 64,
  lr 0.05 with per-step cosine decay to 0 over 30 epochs, weight decay 5e-4, no augmentation; every row of one
  (IF, seed) starts from the same weights and, except for the sampler row, sees the same batches. Every loss
  uses ``reduction='mean'`` over elements (the scale of ``BCEWithLogitsLoss``), so the learning rate is shared.
* Rows (hyperparameters fixed in advance, the library's defaults unless said):

  - ``BCE``: :func:`~torch.nn.functional.binary_cross_entropy_with_logits`;
  - ``Focal``: sigmoid focal loss, gamma 2 (:class:`~longtail_losses.AsymmetricLoss` with both exponents 2 and no
    shift);
  - ``CB-Focal``: :class:`~longtail_losses.MultiLabelClassBalancedFocal`, beta 0.999, gamma 2;
  - ``LA-BCE``: :class:`~longtail_losses.LogitAdjustedBCE`, tau in {0.5, 1, 2} chosen per (IF, seed) by
    validation mAP (the only tuned row);
  - ``ASL``: :class:`~longtail_losses.AsymmetricLoss` (gamma_neg 4, gamma_pos 1, clip 0.05);
  - ``DB``: :class:`~longtail_losses.DistributionBalancedLoss` (DB-Focal with the reference code's defaults);
  - ``BCE + sampler``: BCE on batches drawn by :class:`~longtail_losses.data.MultiLabelClassAwareSampler`
    (a class uniformly, then a mosaic containing it; as many draws per epoch as training mosaics).

* Metric: test mAP (:func:`~longtail_losses.metrics.shot_map`, per-class AP on the raw logits) over all classes
  and per shot group. Statistics: mean +- sample std over seeds; each row against BCE by paired differences
  over seeds with a two-sided paired t-test at 5% (:func:`scipy.stats.ttest_rel`; no correction for multiple
  comparisons).

Parallelism: ``--jobs`` worker processes (default 2), one thread each; one task is one model. The code is in
``benchmarks/study/multilabel_study.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import multilabel_study
from study.common import main as study_main


def main(argv: Optional[Sequence[str]] = None) -> int:
    return study_main(argv, multilabel_study, __doc__ or "", "smoke test: IF 100, 2 seeds, 1 epoch (not evidence)")


if __name__ == "__main__":
    raise SystemExit(main())
