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

**Label smoothing and class weights.** The loss of a target distribution :math:`t` is
:math:`\sum_k t_k v_k \ell(z, k)` (:math:`v`: ``class_weights``), as for every loss of the package. The smoothed
label :math:`t = (1-\varepsilon)\operatorname{onehot}(y) + \varepsilon / C` splits it into the label's loss,
weighted by :math:`(1-\varepsilon) v_y`, and a uniform part whose weights :math:`e_c = \varepsilon v_c / C` are the
same for every sample, so each term stays a sum over classes: the softmax term needs the row sum
:math:`\sum_c e_c (z_c + \log n_c)` besides the log-sum-exp, and its gradient gains :math:`-e_c` and a factor
:math:`(1-\varepsilon) v_y + \sum_c e_c` on the softmax; the focal term (the label's value weighted by
:math:`(1-\varepsilon) v_y w_y`) gains :math:`\sum_c [(E - e'_c) f(-z_c) + e'_c f(z_c)]` with
:math:`e'_c = e_c w_c`, :math:`E = \sum_c e'_c` (no cancellation), one more element-wise evaluation of the focal
term per block.

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
