"""Functional forms of every loss (``from longtail_losses import functional as LF``)."""

from longtail_losses.adaptive import eqlv2_loss, seesaw_loss
from longtail_losses.balanced_softmax import balanced_softmax_loss
from longtail_losses.class_balanced import class_balanced_focal_loss, class_balanced_weights
from longtail_losses.combined import bfs_loss, bwlm_loss
from longtail_losses.ldam import ldam_loss, ldam_margins
from longtail_losses.linear import linear_balanced_softmax_loss, linear_bfs_loss
from longtail_losses.logit_adjustment import logit_adjusted_loss
from longtail_losses.regularizers import classifier_norm_penalty

__all__ = [
    "balanced_softmax_loss",
    "bfs_loss",
    "bwlm_loss",
    "class_balanced_focal_loss",
    "class_balanced_weights",
    "classifier_norm_penalty",
    "eqlv2_loss",
    "ldam_loss",
    "ldam_margins",
    "linear_balanced_softmax_loss",
    "linear_bfs_loss",
    "logit_adjusted_loss",
    "seesaw_loss",
]
