"""Choosing a method: every long-tail method of the library side by side on Fashion-MNIST-LT (issue 13).

The question is the user's, not the paper's: which loss goes into my training loop, is a decoupled or two-stage
pipeline worth it, and when does a post-hoc logit adjustment of a plain cross-entropy model suffice? One command
regenerates everything (JSON of every run, a Markdown report, PNG plots)::

    python benchmarks/choosing_a_method.py           # full study: IF 10/50/100/200, 5 seeds (2 cores, ~15-30 min)
    python benchmarks/choosing_a_method.py --quick   # smoke test: IF 100, 2 seeds, 1 epoch, 2 taus (CI; not evidence)

Design (fixed in this docstring before any result was seen; the same recipe for every row of a group):

* Data: Fashion-MNIST from ``--root`` (Debian's ``dataset-fashion-mnist`` by default). **The class order is
  permuted per seed** (``torch.randperm(10)`` with generator seed ``10_000 + seed``): class of frequency rank
  ``r`` is Fashion-MNIST class ``order[r]``, so every seed has a different tail, and the labels are relabelled
  by rank (label 0 = head). The long-tailed training set keeps
  :func:`~longtail_losses.data.longtail_counts` ``(10, 500, IF)`` images per rank, chosen by
  :func:`~longtail_losses.data.longtail_indices` with the seed, for IF in {10, 50, 100, 200} and seeds 0-4.
  Many (> 100) / Medium (20-100) / Few (< 20) training images: the paper's thresholds (head class of 500 as in
  CIFAR-100-LT). **Validation split**: 30 images per class carved from the Fashion-MNIST training images that
  the long-tailed subsample did not take (class-balanced, seeded, disjoint from the training and test images);
  every tuned value below is chosen on it by balanced accuracy. **The test set (all 10,000 balanced test
  images) selects nothing**; it is evaluated once per model.
* Network: the tiny CNN of ``benchmarks/real_data_lt.py`` (``study.training.TinyCNN``), 64-d features, linear ``fc``.
* One-stage recipe (every one-stage row, the CE backbone of the decoupled rows, and stage 1 of the paper's
  two-stage rows): SGD, momentum 0.9, batch 64, lr 0.05 with per-step cosine decay to 0 over **20 epochs**,
  weight decay 5e-3 on every parameter, no augmentation. Every one-stage row of one (IF, seed) starts from the
  same initial weights and sees the same batches (paired design); only the loss differs. Rows:

  - ``CE``: :func:`~torch.nn.functional.cross_entropy`.
  - ``BalancedSoftmax``: :class:`~longtail_losses.BalancedSoftmax`.
  - ``LogitAdjusted``: :class:`~longtail_losses.LogitAdjustedLoss` with tau in {0.5, 1.0, 1.5, 2.0}, one model
    per tau, the tau of best validation balanced accuracy reported (ties: the first). Its tau = 1 candidate is
    the ``BalancedSoftmax`` model (the same loss: log prior and log counts differ by a constant).
  - ``ClassBalancedFocal``: beta 0.9999, gamma 1; ``BFS`` and ``BWLM``: alpha 0.1 with the same beta and gamma,
    BWLM's in-loss classifier penalty with lambda 5e-3 on ``fc`` (on top of the recipe's weight decay, which is
    what dropping BWLM into a loop with weight decay does). The criteria are those of the paper's rows
    (:func:`longtail_losses.paper.criterion`), with the paper's default hyperparameters as in ``real_data_lt.py``.
  - ``LDAM-DRW``: :class:`~longtail_losses.LDAMLoss` with max margin 0.5 and scale 1 (raw linear logits, not
    Cao et al.'s cosine classifier with scale 30), deferred re-weighting
    (:func:`~longtail_losses.drw_weights`, beta 0.9999) from epoch 16 of 20 (Cao et al.: 160 of 200).
  - ``CE + post-hoc``: the CE model's logits adjusted by :func:`~longtail_losses.posthoc_adjust`, tau tuned with
    :func:`~longtail_losses.tune_tau` on the validation split over 0.0, 0.1, ..., 3.0.

* Decoupled rows on the CE model (Kang et al.), backbone frozen in eval mode, features of the training,
  validation and test images cached once with :func:`~longtail_losses.twostage.extract_features`:

  - ``cRT``: a new linear classifier trained on class-balanced batches
    (:class:`~longtail_losses.data.ClassAwareSampler`, power 0) with CE, SGD 0.9, lr 0.05 cosine to 0, 500 steps
    of 64, no weight decay.
  - ``LWS``: :class:`~longtail_losses.LearnableWeightScaling` of the CE classifier, trained on the same batches
    with the same optimiser settings.
  - ``tau-norm``: :func:`~longtail_losses.tau_normalize` (bias dropped), tau in 0.0, 0.1, ..., 2.0 tuned on the
    validation split.
  - ``NCM``: :func:`~longtail_losses.nearest_class_mean` on the training features (cosine similarity).

* The paper's two-stage rows ``+CE`` ... ``+BWLM`` as in ``real_data_lt.py`` (the same stage 2,
  ``study.training.run_stage2``, and the losses of :func:`longtail_losses.paper.criterion`): stage 1 with the
  one-stage recipe and CE on the head half (data balanced review), frozen backbone, cached features, new 10-way
  classifier for every row from one initialisation, SGD 0.9, lr 0.05 cosine to 0, batch 64, about 3,392 stage-2
  steps as there. Only stage 1 is shorter (20 epochs, not 30: the one-stage recipe of this study).
  ``study.paper_study.run_job`` itself is not reused: it loads the fixed class order and trains its own naive
  model.
* Statistics: mean +- sample std over seeds; every row is compared with ``CE`` on All and Few accuracy by paired
  differences over seeds (same data, class order, initialisation and batches) with a two-sided paired t-test at
  5% (:func:`scipy.stats.ttest_rel` in ``study.stats.compare``; no correction for the number of comparisons).
  Four further pairs are fixed in advance (``EXTRA_PAIRS``): LogitAdjusted and BalancedSoftmax against CE +
  post-hoc, cRT against CE + post-hoc, and one-stage BWLM against two-stage +BWLM. Ranking per IF by mean All
  accuracy.

Parallelism: ``--jobs`` worker processes (default 2, a ``concurrent.futures.ProcessPoolExecutor``) with one
intra-op thread each; one task is one model of one (IF, seed) (the CE task also runs every decoupled row and the
post-hoc adjustment, the two-stage task its stage 2). Every task is deterministic given its seed, whatever the
number of workers.

The code is in the package ``benchmarks/study/`` (:mod:`study.method_study`: design, data, tasks and report).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import method_study
from study.common import main as study_main


def main(argv: Optional[Sequence[str]] = None) -> int:
    return study_main(argv, method_study, __doc__ or "", "smoke test: IF 100, 2 seeds, 1 epoch (not evidence)")


if __name__ == "__main__":
    raise SystemExit(main())
