"""Drop-in PyTorch losses for long-tailed recognition.

Class-balanced focal loss (Cui et al. 2019), balanced softmax (Ren et al. 2020), their mixture BFS and the
Balanced Weight Learning Mechanism BWLM (Fan et al. 2024), a classifier-norm decay hook (Alshammari et al.
2022), and the two-stage training method of the BWLM paper.
"""

from longtail_losses import data, functional, metrics, models, twostage
from longtail_losses._engine import LossOptions
from longtail_losses.adaptive import EQLv2Loss, SeesawLoss
from longtail_losses.balanced_softmax import BalancedSoftmax
from longtail_losses.class_balanced import ClassBalancedFocal
from longtail_losses.combined import BFS, BWLM
from longtail_losses.counts import class_counts
from longtail_losses.ldam import LDAMLoss, drw_weights
from longtail_losses.linear import LinearBalancedSoftmax, LinearBFS
from longtail_losses.logit_adjustment import LogitAdjustedLoss, posthoc_adjust, tune_tau
from longtail_losses.optim import ClassNormDecay

__version__ = "0.1.0.dev0"

__all__ = [
    "BFS",
    "BWLM",
    "BalancedSoftmax",
    "ClassBalancedFocal",
    "ClassNormDecay",
    "EQLv2Loss",
    "LDAMLoss",
    "LinearBFS",
    "LinearBalancedSoftmax",
    "LogitAdjustedLoss",
    "LossOptions",
    "SeesawLoss",
    "__version__",
    "class_counts",
    "data",
    "drw_weights",
    "functional",
    "metrics",
    "models",
    "posthoc_adjust",
    "tune_tau",
    "twostage",
]
