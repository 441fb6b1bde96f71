r"""The two-stage training method of the BWLM paper (section 3.2), as building blocks.

Stage 1 trains the whole network with cross-entropy on the *head* half of the classes. Stage 2 freezes that
network, replaces its classifier with a new :class:`~torch.nn.Linear` over all :math:`C` classes and trains
only the new layer, on a roughly balanced subset, with a balanced loss such as :class:`~longtail_losses.BWLM`:

.. math::
    \Theta^* = \operatorname{argmin}_{\Theta} F(\Theta; D_{stage1}), \qquad
    \hat\Theta = \operatorname{argmin}_{\Theta_{fc}} F(\Theta_{fc}; \hat D)_{\Theta^*}

The steps: :func:`data_balanced_review` (eq. 2), :func:`replace_classifier` (with :func:`freeze_backbone`, which
freezes BatchNorm statistics too), then a fast stage 2 on cached features (:func:`extract_features`,
:func:`train_classifier`) or :func:`~longtail_losses.training.train_one_epoch` with augmentation. Kang et al.'s
decoupled classifiers are in :mod:`~longtail_losses.twostage.decoupled`.

Evaluate on the **raw** logits of the model (:func:`~longtail_losses.training.predict`): the balanced-softmax
prior (:math:`+\log n_c`) of :class:`~longtail_losses.BalancedSoftmax`, :class:`~longtail_losses.BFS` and
:class:`~longtail_losses.BWLM` is a training-time correction only. Everything here is optional: the losses are
drop-in for any training loop.
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
