r"""The two-stage training method of the BWLM paper (section 3.2), as building blocks.

Stage 1 trains the whole network with cross-entropy on the *head* half of the classes. Stage 2 freezes that
network, replaces its classifier with a new :class:`~torch.nn.Linear` over all :math:`C` classes and trains
only the new layer, on a roughly balanced subset, with a balanced loss such as :class:`~longtail_losses.BWLM`:

.. math::
    \Theta^* = \operatorname{argmin}_{\Theta} F(\Theta; D_{stage1}), \qquad
    \hat\Theta = \operatorname{argmin}_{\Theta_{fc}} F(\Theta_{fc}; \hat D)_{\Theta^*}

The pieces:

* :func:`data_balanced_review` splits a long-tailed training set into the two stages' index sets (eq. 2);
  :func:`head_tail_classes` gives the class split behind it.
* :func:`replace_classifier` puts a new trainable classifier on a stage-1 model and freezes the rest with
  :func:`freeze_backbone`, which also keeps the backbone in eval mode: its BatchNorm statistics do **not**
  drift in stage 2, even if you call ``model.train()``.
* :func:`~longtail_losses.training.train_one_epoch` and :func:`~longtail_losses.training.predict` (in
  :mod:`longtail_losses.training`: nothing two-stage about them) are a generic loop body for either stage.
* Fast stage 2: the frozen backbone is a fixed function, so :func:`extract_features` runs it once and
  :func:`train_classifier` trains the new layer on the cached features. Without data augmentation this gives the
  same classifier as running the backbone every step (same batches from
  :class:`~longtail_losses.data.SeededBatchSampler`), at a fraction of the cost
  (``benchmarks/bench_stage2_cache.py``).

Evaluation always uses the **raw** logits of the model. The balanced-softmax prior (:math:`+\log n_c`) of
:class:`~longtail_losses.BalancedSoftmax`, :class:`~longtail_losses.BFS` and :class:`~longtail_losses.BWLM`
is a training-time correction only; never add it at test time.

Everything here is optional: the losses are drop-in for any training loop. A whole run, in outline::

    import longtail_losses as ltl
    from longtail_losses import training, twostage
    from torch.utils.data import DataLoader, Subset

    stage1_idx, stage2_idx = twostage.data_balanced_review(train_set, seed=0)
    # Stage 1: cross-entropy on the head classes, all parameters.
    loader = DataLoader(Subset(train_set, stage1_idx.tolist()), batch_size=64, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    for epoch in range(epochs):
        training.train_one_epoch(model, loader, torch.nn.CrossEntropyLoss(), optimizer, scheduler=scheduler)
    # Stage 2: frozen backbone, new classifier over all classes, BWLM on the reviewed set.
    fc = twostage.replace_classifier(model, num_classes)
    counts = ltl.class_counts(Subset(train_set_without_augmentation, stage2_idx.tolist()), num_classes)
    features, labels = twostage.extract_features(model, Subset(train_set_without_augmentation, stage2_idx.tolist()))
    twostage.train_classifier(fc, features, labels, ltl.BWLM(counts, classifier=fc), epochs=epochs)
    logits, targets = training.predict(model, test_loader)  # raw logits: no prior at test time

With data augmentation in stage 2, replace the last two stage-2 lines by
:func:`~longtail_losses.training.train_one_epoch` over a loader of the augmented subset,
optimising ``fc.parameters()`` only.

The package, by concern: :mod:`~longtail_losses.twostage.review` (eq. 2), :mod:`~longtail_losses.twostage.surgery`
(classifier replacement and the frozen backbone), :mod:`~longtail_losses.twostage.features` (the feature cache
and the classifier loop on it) and :mod:`~longtail_losses.twostage.decoupled` (the decoupled classifiers of Kang
et al.: cRT's re-training is :func:`train_classifier`, plus LWS, tau-normalisation and NCM).
"""

from __future__ import annotations

from longtail_losses.twostage.decoupled import (
    LearnableWeightScaling,
    NearestClassMean,
    nearest_class_mean,
    tau_normalize,
)
from longtail_losses.twostage.features import extract_features, train_classifier, train_classifier_epoch
from longtail_losses.twostage.review import data_balanced_review, head_tail_classes
from longtail_losses.twostage.surgery import BackboneFreeze, freeze_backbone, get_classifier, replace_classifier

__all__ = [
    "BackboneFreeze",
    "LearnableWeightScaling",
    "NearestClassMean",
    "data_balanced_review",
    "extract_features",
    "freeze_backbone",
    "get_classifier",
    "head_tail_classes",
    "nearest_class_mean",
    "replace_classifier",
    "tau_normalize",
    "train_classifier",
    "train_classifier_epoch",
]
