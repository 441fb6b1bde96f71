"""Evidence on real data: do the BWLM paper's claims hold on Fashion-MNIST-LT? A seeded, multi-seed study.

One command regenerates everything (JSON of every run, a Markdown report with the verdict per claim, PNG plots)::

    python benchmarks/real_data_lt.py                  # full study: IF 10/100/200, 5 seeds (CPU, ~15-30 min)
    python benchmarks/real_data_lt.py --quick          # smoke test: IF 100, 2 seeds, few epochs (CI)

Design (chosen once, before any result was seen; the same recipe for every row):

* Data: Fashion-MNIST from ``--root`` (default: Debian's ``dataset-fashion-mnist`` in
  ``/usr/share/datasets/fashion-mnist``), long-tailed by :func:`longtail_losses.data.fashion_mnist_lt` with
  ``max_count=500`` per class, the class size of CIFAR-100-LT, so the paper's Many (> 100) / Medium (20-100) /
  Few (< 20) thresholds apply unchanged (scale factor 500/500 = 1). The subsample depends on the seed.
  Evaluation on the full balanced 10,000-image test set.
* Network: a tiny CNN for 28x28 images (two conv-BN-ReLU-maxpool blocks with 8 and 16 channels, a 64-unit
  linear-BN-ReLU feature layer, and a linear classifier ``fc``).
* One-stage ("naive") and stage-1 training: SGD, momentum 0.9, batch 64, lr 0.05 with per-step cosine decay to
  0 over 30 epochs, weight decay 5e-3 (the paper also uses weight decay in its first stage; value of
  Alshammari et al.), cross-entropy, no augmentation. The naive model sees the whole long-tailed set; stage 1
  sees the head half (data balanced review, eq. 2), with a 10-way classifier.
* Stage 2 (two-stage rows): the stage-1 backbone is frozen in eval mode
  (:func:`~longtail_losses.twostage.replace_classifier`), its features on the review set and on the test set
  are cached once (:func:`~longtail_losses.twostage.extract_features`), and a new 10-way linear classifier is
  trained on the cached features with :func:`~longtail_losses.twostage.train_classifier`: SGD, momentum 0.9,
  batch 64, cosine decay to 0, with the paper's optimisation length on CIFAR-100-LT IF=100 in lr x steps:
  the paper runs 320 epochs x 53 batches (3,346 images) = 16,960 steps at lr 0.01, i.e. lr x T = 169.6; here
  lr 0.05 (the stage-1 lr) for 3,392 steps, five times cheaper on a 2-core CPU, so that the classifier weight
  decay acts as strongly as in the paper (lr x lambda x T / 2 = 0.42 e-folds). (The paper's 320 *epochs* of our
  much smaller review sets would be 1,920-5,760 steps at lr 0.01, a 3-9x weaker decay.) Every row of one
  (IF, seed) starts from the same initial classifier and sees the same batches (paired design). The losses get
  the class counts of the review set they are trained on. CB: ``ClassBalancedFocal(beta=0.9999, gamma=1)``;
  BS: ``BalancedSoftmax``; BFS/BWLM: ``alpha=0.1`` (the paper's default), same beta/gamma. The "W" rows add
  the classifier-norm penalty ``LF.classifier_norm_penalty(fc.weight, weight_decay=5e-3)`` (BWLM's in-loss
  convention, gradient ``lambda * theta``) with the same lambda = 5e-3 for CEW, CBW, BSW and BWLM; the plain
  rows have no decay at all.
* Alpha sweep (paper Fig. 4): BWLM with alpha = 0.1 ... 0.9 at IF = 100, same seeds and stage-1 models.
* Statistics: mean +- sample std over seeds; each claim is checked as paired differences over seeds (same data,
  stage-1 model and initial classifier), with a two-sided paired t-test at 5% (:func:`scipy.stats.ttest_rel`; no
  correction for the number of comparisons). "Replicates": significant in the claimed direction; "contradicted":
  significant in the other; otherwise "not resolved at this scale".

Rows of several stage-2 losses are trained together as one module of independent heads whose loss is the sum of
the heads' losses: each head's gradient, momentum buffer, schedule and batches are exactly those of training it
alone, and the per-step overhead is paid once (``tests/integration/test_real_data_lt.py`` checks the equivalence).

Parallelism: ``--jobs`` worker processes (default 2, a ``concurrent.futures.ProcessPoolExecutor``) with one
intra-op thread each; one job is one (imbalance factor, seed) pair. Every job is deterministic given its seed,
whatever the number of workers.

The code is in the package ``benchmarks/study/`` (:mod:`study.paper_study`: recipe, jobs, claims and report); the
rows and their losses are those of :mod:`longtail_losses.paper`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import paper_study
from study.common import main as study_main


def main(argv: Optional[Sequence[str]] = None) -> int:
    return study_main(argv, paper_study, __doc__ or "", "smoke test: IF 100, 2 seeds, few epochs (not evidence)")


if __name__ == "__main__":
    raise SystemExit(main())
