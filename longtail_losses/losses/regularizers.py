"""The classifier-norm penalty of BWLM (eq. 14 of the paper), as a loss term."""

from __future__ import annotations

from typing import Union

from torch import Tensor, nn

from longtail_losses._validation import check_weight_decay, check_weight_matrix
from longtail_losses.losses._engine import compute_dtype

__all__ = ["classifier_norm_penalty"]


def classifier_norm_penalty(classifier: Union[nn.Module, Tensor], *, weight_decay: float = 5e-3) -> Tensor:
    r"""Half the squared L2 norm of the classifier's class rows, times ``weight_decay``.

    .. math::
        R(\theta) = \frac{\lambda}{2} \sum_{j=1}^{C} \lVert \theta_j \rVert_2^2,
        \qquad \frac{\partial R}{\partial \theta_j} = \lambda\, \theta_j

    :math:`\theta_j` is row :math:`j` of the classifier's weight (the bias is excluded). The factor
    :math:`\frac{1}{2}` makes the gradient exactly ``weight_decay * theta``, the update of SGD's own
    ``weight_decay`` restricted to the classifier; this is how the paper's :math:`\lambda` in eq. (14), taken
    from Alshammari et al. :cite:`alshammari2022long`, transfers to this library. (The paper writes
    :math:`\lambda \sum_j \lVert\theta_j\rVert^2`, whose gradient is :math:`2\lambda\theta`; it selects
    :math:`\lambda` as the optimizer's weight decay of that reference, which is the convention used here.)

    Args:
        classifier: The classifier module (anything with a 2-D ``.weight``, such as :class:`~torch.nn.Linear`)
            or its weight :math:`\theta` itself, one row per class.
        weight_decay: :math:`\lambda \ge 0`.

    Shape:
        classifier: weight :math:`(C, D)`.
        output: a scalar (float32 for half/bfloat16 weights).

    Raises:
        TypeError: If ``classifier`` is neither a 2-D floating-point tensor nor a module that has one.
        ValueError: If ``weight_decay < 0``.

    Example:
        >>> classifier_norm_penalty(torch.tensor([[3.0, 4.0], [0.0, 1.0]]), weight_decay=0.1)
        tensor(1.3000)
    """
    return norm_penalty(check_weight_matrix(classifier), check_weight_decay(weight_decay))


def norm_penalty(weight: Tensor, weight_decay: float) -> Tensor:
    """:func:`classifier_norm_penalty` of a weight tensor and a ``weight_decay`` checked already (BWLM's hot path)."""
    return (0.5 * weight_decay) * weight.to(compute_dtype(weight.dtype)).pow(2).sum()
