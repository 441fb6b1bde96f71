"""Functional forms of every loss (``from longtail_losses import functional as LF``)."""

from longtail_losses.losses.asymmetric import asymmetric_loss
from longtail_losses.losses.balanced_softmax import balanced_softmax_loss
from longtail_losses.losses.bwlm import bfs_loss, bwlm_loss
from longtail_losses.losses.class_balanced import class_balanced_focal_loss, class_balanced_weights
from longtail_losses.losses.distribution_balanced import distribution_balanced_loss, rebalanced_weights
from longtail_losses.losses.eqlv2 import eqlv2_loss
from longtail_losses.losses.influence_balanced import influence_balanced_loss
from longtail_losses.losses.label_aware_smoothing import label_aware_smoothing_factors, label_aware_smoothing_loss
from longtail_losses.losses.lade import lade_loss
from longtail_losses.losses.ldam import ldam_loss, ldam_margins
from longtail_losses.losses.linear import linear_balanced_softmax_loss, linear_bfs_loss
from longtail_losses.losses.logit_adjustment import logit_adjusted_loss
from longtail_losses.losses.multilabel import logit_adjusted_bce_loss, multilabel_class_balanced_focal_loss
from longtail_losses.losses.regularizers import classifier_norm_penalty
from longtail_losses.losses.seesaw import seesaw_loss
from longtail_losses.losses.vs import vs_loss

__all__ = [
    "asymmetric_loss",
    "balanced_softmax_loss",
    "bfs_loss",
    "bwlm_loss",
    "class_balanced_focal_loss",
    "class_balanced_weights",
    "classifier_norm_penalty",
    "distribution_balanced_loss",
    "eqlv2_loss",
    "influence_balanced_loss",
    "label_aware_smoothing_factors",
    "label_aware_smoothing_loss",
    "lade_loss",
    "ldam_loss",
    "ldam_margins",
    "linear_balanced_softmax_loss",
    "linear_bfs_loss",
    "logit_adjusted_bce_loss",
    "logit_adjusted_loss",
    "multilabel_class_balanced_focal_loss",
    "rebalanced_weights",
    "seesaw_loss",
    "vs_loss",
]
