r"""Balanced softmax and BFS of a linear classifier, computed class chunk by class chunk.

For heads with :math:`10^5`–:math:`10^7` classes (faces, products, species) the logits
:math:`z = x W^\top + b` of shape :math:`(N, C)` and their gradient dominate memory. The functions here take the
classifier itself (``features``, ``weight``, ``bias``) and compute the loss and the gradients of all three
without ever holding :math:`(N, C)`: a custom autograd function walks over blocks of classes twice.

* Pass 1 recomputes each block's logits and keeps, per sample, an online log-sum-exp of
  :math:`z + \log n` (balanced softmax) and the focal term's row sum (the sigmoid focal loss is element-wise over
  classes, so it splits over blocks exactly).
* Pass 2 recomputes each block's logits again and forms its gradient
  :math:`G = (1-\alpha)\,(\operatorname{softmax}(z + \log n) - \operatorname{onehot}(y))
  + \alpha\, w_y\, \partial_z \ell_{CB}`, scaled per sample by the reduction, then accumulates
  :math:`\partial x \mathrel{+}= G W_c` and writes :math:`\partial W_c = G^\top x`,
  :math:`\partial b_c = \sum_n G_n`.

With ``reduction='mean'`` or ``'sum'`` pass 2 runs inside forward (the gradient of a scalar loss is known up to
the factor ``grad_output``, applied in place in backward), and the focal row sums come out of pass 2, so pass 1
only computes the log-sum-exp. With ``reduction='none'`` the gradient depends on the per-sample
``grad_output``, so pass 2 runs in backward. Peak extra memory is a few blocks of :math:`N \times` ``chunk_size``
elements plus the gradients themselves.

The class-sharded form (``process_group``) follows PartialFC: every rank holds a contiguous slice of the
classifier's rows and the full batch of features; the log-sum-exp is combined across ranks by an all-reduce of
the maxima and of the rescaled sums of exponentials, the target logit comes from the rank that owns the class,
the focal sums and the squared weight norm are summed, and the gradient of the features is summed across ranks.

The package holds the chunked kernel and its preparation (``_chunked``) and the functions and modules
(``_forms``); every public name is imported from here.
"""

from __future__ import annotations

from longtail_losses.losses.linear._chunked import CHUNK_ELEMENTS
from longtail_losses.losses.linear._forms import (
    LinearBalancedSoftmax,
    LinearBFS,
    linear_balanced_softmax_loss,
    linear_bfs_loss,
    shard_range,
)

__all__ = [
    "CHUNK_ELEMENTS",
    "LinearBFS",
    "LinearBalancedSoftmax",
    "linear_balanced_softmax_loss",
    "linear_bfs_loss",
    "shard_range",
]
