r"""The losses and their engine.

Every loss is a function (also in :mod:`longtail_losses.functional`) and an ``nn.Module``, in one file per method:
:mod:`~longtail_losses.losses.class_balanced`, :mod:`~longtail_losses.losses.balanced_softmax`,
:mod:`~longtail_losses.losses.bwlm` (the paper's BFS and BWLM), :mod:`~longtail_losses.losses.regularizers` (the
classifier-norm penalty), :mod:`~longtail_losses.losses.logit_adjustment`, :mod:`~longtail_losses.losses.ldam`,
:mod:`~longtail_losses.losses.seesaw`, :mod:`~longtail_losses.losses.eqlv2`,
:mod:`~longtail_losses.losses.vs`, :mod:`~longtail_losses.losses.lade`,
:mod:`~longtail_losses.losses.label_aware_smoothing`, :mod:`~longtail_losses.losses.influence_balanced`, the
multi-label losses
(:mod:`~longtail_losses.losses.asymmetric`, :mod:`~longtail_losses.losses.distribution_balanced`,
:mod:`~longtail_losses.losses.multilabel`) and
:mod:`~longtail_losses.losses.linear` (classifier and loss fused, for many classes). The private modules are the
engine they share: ``_engine`` (checks, input forms, per-row kernels, reduction, penalty), ``_kernel`` (the
element-wise terms, each written once as value and derivative, and the dense fast path) and ``_base`` (the
module base class: checked per-class buffers, call options, repr).
"""

from longtail_losses.losses._engine import LossOptions
from longtail_losses.losses.asymmetric import AsymmetricLoss
from longtail_losses.losses.balanced_softmax import BalancedSoftmax
from longtail_losses.losses.bwlm import BFS, BWLM
from longtail_losses.losses.class_balanced import ClassBalancedFocal
from longtail_losses.losses.distribution_balanced import DistributionBalancedLoss
from longtail_losses.losses.eqlv2 import EQLv2Loss
from longtail_losses.losses.influence_balanced import IBLoss
from longtail_losses.losses.label_aware_smoothing import LabelAwareSmoothing
from longtail_losses.losses.lade import LADELoss
from longtail_losses.losses.ldam import LDAMLoss
from longtail_losses.losses.linear import LinearBalancedSoftmax, LinearBFS
from longtail_losses.losses.logit_adjustment import LogitAdjustedLoss
from longtail_losses.losses.multilabel import LogitAdjustedBCE, MultiLabelClassBalancedFocal
from longtail_losses.losses.seesaw import SeesawLoss
from longtail_losses.losses.vs import VSLoss

__all__ = [
    "BFS",
    "BWLM",
    "AsymmetricLoss",
    "BalancedSoftmax",
    "ClassBalancedFocal",
    "DistributionBalancedLoss",
    "EQLv2Loss",
    "IBLoss",
    "LADELoss",
    "LDAMLoss",
    "LabelAwareSmoothing",
    "LinearBFS",
    "LinearBalancedSoftmax",
    "LogitAdjustedBCE",
    "LogitAdjustedLoss",
    "LossOptions",
    "MultiLabelClassBalancedFocal",
    "SeesawLoss",
    "VSLoss",
]
