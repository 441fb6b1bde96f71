"""Drop-in PyTorch losses for long-tailed recognition.

Class-balanced focal loss (Cui et al. 2019), balanced softmax (Ren et al. 2020), their mixture BFS and the
Balanced Weight Learning Mechanism BWLM (Fan et al. 2024), a classifier-norm decay hook (Alshammari et al.
2022), and the two-stage training method of the BWLM paper.
"""

from longtail_losses import data, functional, losses, metrics, models, optim, paper, training, twostage
from longtail_losses.data.counts import class_counts
from longtail_losses.losses import *  # noqa: F403  (the loss modules, listed once: losses.__all__)
from longtail_losses.losses._kernel import compiled_path
from longtail_losses.losses.lade import shift_prior
from longtail_losses.losses.ldam import drw_weights
from longtail_losses.losses.logit_adjustment import posthoc_adjust, tune_tau
from longtail_losses.optim import ClassNormDecay

__version__ = "0.1.0.dev0"

__all__ = [
    "ClassNormDecay",
    "__version__",
    "class_counts",
    "compiled_path",
    "data",
    "drw_weights",
    "functional",
    "losses",
    "metrics",
    "models",
    "optim",
    "paper",
    "posthoc_adjust",
    "shift_prior",
    "training",
    "tune_tau",
    "twostage",
]
__all__ += losses.__all__
