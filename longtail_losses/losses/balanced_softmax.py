"""Balanced softmax (Ren et al. 2020): cross-entropy on logits shifted by the log class prior."""

from __future__ import annotations

from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import CountsLike
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["BalancedSoftmax", "balanced_softmax_loss"]


def balanced_softmax_loss(
    logits: Tensor, target: Tensor, class_counts: CountsLike,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Balanced softmax loss :cite:`ren2020balanced`, eq. (9)–(10) of the BWLM paper :cite:`fan2024bwlm`.

    The softmax is reweighted by the training prior of each class,

    .. math::
        \phi_j = \frac{n_j e^{z_j}}{\sum_{i=1}^{C} n_i e^{z_i}}, \qquad
        \ell_{BS}(z, y) = -\log \phi_y = -\log \frac{n_y e^{z_y}}{\sum_{i=1}^{C} n_i e^{z_i}},

    which is the cross-entropy of the shifted logits :math:`z_j + \log n_j`. In every input form it is exactly
    ``F.cross_entropy(logits + log(n), target, ...)`` with :math:`\log n` broadcast on the class dimension, with
    the same ``ignore_index``, ``label_smoothing``, probability targets and reductions. The shift is a
    training-time correction only: evaluate and predict with the raw logits :math:`z`.

    With equal counts it is exactly :func:`~torch.nn.functional.cross_entropy`; multiplying every count by the
    same factor, or adding a constant to a row of logits, leaves it unchanged.

    Half and bfloat16 logits are computed (and returned) in float32; float64 stays float64.
    ``'mean'`` divides the sum by the number of samples whose label is not ``ignore_index``, as
    :func:`~torch.nn.functional.cross_entropy` does (``nan`` if every sample is ignored), and by the number of
    samples for probability targets.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` or ``ignore_index`` (any integer dtype), or class probabilities of
            the shape of ``logits`` (mixup, cutmix, distillation).
        class_counts: Training samples per class :math:`n_j`, all ``> 0`` (a sequence, array or tensor).
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices :math:`()`, :math:`(N)` or :math:`(N, d_1, ..., d_k)`; or probabilities of the
        shape of ``logits``.
        class_counts: :math:`(C)`.
        output: a scalar, or the shape of the class-index target if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``logits`` is not floating point or ``target`` is neither integer nor floating point.
        ValueError: If the shapes disagree, a count is not a positive whole number, a label is out of range, or
            an option is unknown.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> target = torch.tensor([0, 1])
        >>> balanced_softmax_loss(logits, target, torch.tensor([90, 10]))
        tensor(0.7380)
        >>> balanced_softmax_loss(logits, target, torch.tensor([50, 50]))  # equal counts: plain cross-entropy
        tensor(0.2201)
        >>> balanced_softmax_loss(logits, torch.tensor([[0.7, 0.3], [0.0, 1.0]]), [90, 10])  # probabilities
        tensor(1.3676)
    """
    counts, checked = _engine.function_args(logits, class_counts, options)
    return _engine.mixture_loss(logits, target, counts, checked, alpha=0.0, beta=0.0, gamma=0.0, tau=1.0)


@fill
class BalancedSoftmax(CountsLoss):
    r"""Module form of :func:`balanced_softmax_loss`: cross-entropy of :math:`z + \log n`.

    A drop-in replacement for :class:`~torch.nn.CrossEntropyLoss` when the training set is long-tailed: the same
    input forms, ``reduction``, ``ignore_index`` and ``label_smoothing``. The counts are kept as an ``int64``
    buffer, so ``.to()``, ``.cuda()``, ``state_dict()`` and ``deepcopy`` carry them and ``.half()`` cannot round
    them; ``load_state_dict`` checks them again.

    Args:
        class_counts: Training samples per class, all ``> 0`` (a sequence, NumPy array or tensor).
        {module_options}

    Shape:
        {logits_shape}

    Example:
        >>> criterion = BalancedSoftmax([90, 10])
        >>> criterion
        BalancedSoftmax(num_classes=2, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.7380)
    """

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`balanced_softmax_loss`."""
        return _engine.mixture_loss(
            logits, target, self.class_counts, self.options, alpha=0.0, beta=0.0, gamma=0.0, tau=1.0
        )
