r"""Logit adjustment (Menon et al., ICLR 2021): the logit-adjusted loss, post-hoc adjustment and tuning of tau.

Both forms correct a classifier for the long-tailed training prior :math:`\pi_j = n_j / \sum_i n_i`: during
training, by the cross-entropy of :math:`z + \tau\log\pi` (:func:`logit_adjusted_loss`); after training a model
with plain cross-entropy, by predicting with :math:`z - \tau\log\pi` (:func:`posthoc_adjust`), with
:math:`\tau` chosen on a held-out validation set (:func:`tune_tau`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import (
    CountsLike,
    as_counts,
    check_finite,
    check_ignore_index,
    check_logits_target,
    check_target_values,
    check_tensor,
)
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack
from longtail_losses.metrics import per_class_accuracy

__all__ = ["LogitAdjustedLoss", "logit_adjusted_loss", "posthoc_adjust", "tune_tau"]

#: The default grid of :func:`tune_tau`: 0.0, 0.1, ..., 3.0.
DEFAULT_TAUS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(31))


def logit_adjusted_loss(
    logits: Tensor, target: Tensor, class_counts: CountsLike, *,
    tau: float = 1.0,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Logit-adjusted softmax cross-entropy :cite:`menon2021logit`, eq. (10).

    The cross-entropy of the logits shifted by :math:`\tau` times the log prior of the training set,
    :math:`\pi_j = n_j / \sum_i n_i`:

    .. math::
        \ell_{LA}(z, y) = -\log \frac{e^{z_y + \tau \log \pi_y}}{\sum_{j=1}^{C} e^{z_j + \tau \log \pi_j}}
        = -\log \frac{n_y^\tau e^{z_y}}{\sum_{j=1}^{C} n_j^\tau e^{z_j}}.

    :math:`\log\pi_j` and :math:`\log n_j` differ by the same constant for every class, which the softmax
    ignores, so ``tau=1`` is exactly :func:`~longtail_losses.functional.balanced_softmax_loss` and ``tau=0`` is
    :func:`~torch.nn.functional.cross_entropy`. The shift is a training-time correction: predict with the raw
    logits :math:`z`. Menon et al. use ``tau=1`` (their results also tune it).

    It takes every input form, ``ignore_index``, ``label_smoothing`` and probability target of
    :func:`~torch.nn.functional.cross_entropy`, and is exactly ``F.cross_entropy(logits + tau * log(n), ...)``
    with the shift broadcast on the class dimension. ``'mean'`` divides by the number of samples whose label is
    not ``ignore_index`` (by the number of samples for probability targets). Half and bfloat16 logits are
    computed (and returned) in float32.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities of the shape of
            ``logits``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        tau: Strength :math:`\tau` of the adjustment, a finite real number.
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).
        output: a scalar, or the shape of the class-index target if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``logits`` is not floating point, ``target`` is neither integer nor floating point, or
            ``tau`` is not a real number.
        ValueError: If the shapes disagree, a count or label is invalid, or ``tau`` is not finite.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> target = torch.tensor([0, 1])
        >>> logit_adjusted_loss(logits, target, [90, 10], tau=1.0)  # = balanced_softmax_loss
        tensor(0.7380)
        >>> logit_adjusted_loss(logits, target, [90, 10], tau=0.5)
        tensor(0.3939)
    """
    tau = check_finite("tau", tau)
    counts, checked = _engine.function_args(logits, class_counts, options)
    return _engine.mixture_loss(logits, target, counts, checked, alpha=0.0, beta=0.0, gamma=0.0, tau=tau)


@fill
class LogitAdjustedLoss(CountsLoss):
    r"""Module form of :func:`logit_adjusted_loss`: cross-entropy of :math:`z + \tau \log \pi`.

    ``LogitAdjustedLoss(counts, tau=1.0)`` computes the same as :class:`~longtail_losses.BalancedSoftmax`. The
    counts are an ``int64`` buffer (``.to()``, ``state_dict()``, ``deepcopy`` and ``.half()`` safe).

    Args:
        class_counts: Training samples per class, all ``> 0``.
        tau: Strength of the adjustment, a finite real number. Default: ``1.0``.
        {module_options}

    Shape:
        {logits_shape}

    Example:
        >>> criterion = LogitAdjustedLoss([90, 10], tau=0.5)
        >>> criterion
        LogitAdjustedLoss(num_classes=2, tau=0.5, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.3939)
    """

    _hyperparameters = ("tau",)

    def __init__(
        self, class_counts: CountsLike, *,
        tau: float = 1.0,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, **options)
        self.tau = check_finite("tau", tau)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`logit_adjusted_loss`."""
        counts, options = self.class_counts, self.options
        return _engine.mixture_loss(logits, target, counts, options, alpha=0.0, beta=0.0, gamma=0.0, tau=self.tau)


def _log_prior(counts: Tensor, dtype: torch.dtype) -> Tensor:
    r""":math:`\log \pi_j = \log n_j - \log \sum_i n_i`, in float64 then cast (exact for any counts)."""
    n = counts.to(torch.float64)
    return (n.log() - n.sum().log()).to(dtype)


def posthoc_adjust(logits: Tensor, class_counts: CountsLike, *, tau: float = 1.0) -> Tensor:
    r"""Post-hoc logit adjustment :cite:`menon2021logit`, eq. (9): :math:`z - \tau \log \pi`.

    For a model trained with plain cross-entropy on a long-tailed set, predicting
    :math:`\operatorname{argmax}_j\, z_j - \tau \log \pi_j` (with :math:`\pi_j = n_j / \sum_i n_i` the training
    prior) targets the balanced error. ``tau=1`` is the Bayes-optimal correction when the softmax of :math:`z`
    estimates the training posterior; choose :math:`\tau` with :func:`tune_tau` on a held-out validation set.

    Do not apply it to a model trained with a balanced loss (:class:`~longtail_losses.BalancedSoftmax`,
    :class:`LogitAdjustedLoss`, ...): their logits are already adjusted.

    Args:
        logits: Class scores of a model trained with cross-entropy.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        tau: Strength :math:`\tau` of the adjustment, a finite real number.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`: the classes on dimension 1
        (0 unbatched).
        class_counts: :math:`(C)`.
        output: the shape of ``logits``, in its dtype.

    Raises:
        TypeError: If ``logits`` is not a floating-point tensor or ``tau`` not a real number.
        ValueError: If a count is invalid, or ``logits`` has no class dimension of size C.

    Example:
        >>> logits = torch.tensor([[2.0, 1.5], [0.0, 1.0]])
        >>> adjusted = posthoc_adjust(logits, [90, 10])
        >>> adjusted
        tensor([[2.1054, 3.8026],
                [0.1054, 3.3026]])
        >>> adjusted.argmax(1)  # the first sample moves to the rare class
        tensor([1, 1])
    """
    return add_log_prior(logits, as_counts(class_counts), -check_finite("tau", tau))


def add_log_prior(logits: Tensor, counts: Tensor, factor: float) -> Tensor:
    r""":math:`z + \text{factor} \cdot \log \pi` on the class dimension, :math:`\pi` the counts normalised (checked).

    :func:`posthoc_adjust` (factor :math:`-\tau`, training counts) and
    :func:`~longtail_losses.losses.lade.shift_prior` (factor 1, a test prior) are this; computed in float32 or
    float64 and returned in the dtype of ``logits``.
    """
    check_tensor("logits", logits)
    if not logits.dtype.is_floating_point:
        raise TypeError(f"Expected `logits` to be a floating-point tensor, but got dtype {logits.dtype}")
    class_dim = 0 if logits.ndim == 1 else 1
    if logits.ndim == 0 or logits.shape[class_dim] != counts.shape[0]:
        raise ValueError(
            f"Expected `logits` to have C = {counts.shape[0]} classes on dimension "
            f"{class_dim}, but got shape {tuple(logits.shape)}"
        )
    shift = _log_prior(counts, _engine.compute_dtype(logits.dtype)).to(logits.device)
    shift = shift if logits.ndim <= 2 else shift.view(-1, *([1] * (logits.ndim - 2)))
    return (logits.to(shift.dtype) + factor * shift).to(logits.dtype)


def tune_tau(
    logits: Tensor, target: Tensor, class_counts: CountsLike, *,
    taus: Union[Sequence[float], Tensor] = DEFAULT_TAUS, ignore_index: int = -100,
) -> float:  # fmt: skip
    r"""The :math:`\tau` of :func:`posthoc_adjust` that maximises balanced accuracy on a validation set.

    Balanced accuracy is the mean over classes of the per-class accuracy of
    :math:`\operatorname{argmax}_j\, z_j - \tau \log \pi_j` (the complement of the balanced error that
    Menon et al. :cite:`menon2021logit` minimise, section 4); classes absent from ``target`` are left out of the
    mean. Ties go to the first maximiser in the order of ``taus``.

    **Tune it on held-out validation data, never on the test set**: a tau picked on the test set makes the
    reported test accuracy optimistic. For a balanced test set, hold out a class-balanced validation split of
    the training distribution's classes (or of a separate balanced validation set, as ImageNet-LT's).

    Args:
        logits: Validation logits of a model trained with cross-entropy.
        target: Their class indices; samples labelled ``ignore_index`` are left out.
        class_counts: Training samples per class :math:`n_j` (of the training set, not the validation set).
        taus: Candidate values, each finite. Default: ``0.0, 0.1, ..., 3.0``.
        ignore_index: Label of samples to leave out.

    Shape:
        logits: :math:`(N, C)`.
        target: :math:`(N)`.
        class_counts: :math:`(C)`.

    Returns:
        The best :math:`\tau`, a Python float.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the shapes disagree, a label is out of range, ``taus`` is empty or holds a non-finite
            value, or no sample is left.

    Example:
        >>> logits = torch.tensor([[2.0, 0.5], [3.0, 0.0], [1.0, 0.9], [0.0, 1.0]])
        >>> target = torch.tensor([0, 0, 1, 1])
        >>> tune_tau(logits, target, [90, 10], taus=[0.0, 0.5, 1.0])
        0.5
    """
    counts = as_counts(class_counts)
    check_logits_target(logits, target, counts.shape[0])
    if logits.ndim != 2 or target.dtype.is_floating_point:
        raise ValueError(
            f"Expected `logits` of shape (N, C) and `target` of class indices of shape (N,), but got "
            f"{tuple(logits.shape)} and {tuple(target.shape)} of dtype {target.dtype}"
        )
    if isinstance(taus, Tensor):
        taus = taus.detach().cpu().reshape(-1).tolist()
    elif hasattr(taus, "tolist") and not isinstance(taus, (str, bytes)):  # a NumPy array
        taus = taus.tolist()
    if isinstance(taus, (str, bytes)) or not isinstance(taus, Sequence):
        raise TypeError(f"Expected `taus` to be a sequence of real numbers, but got {type(taus).__name__}")
    candidates = [check_finite("tau", t) for t in taus]
    if not candidates:
        raise ValueError("Expected `taus` to hold at least one value, but got an empty sequence")
    ignore_index = check_ignore_index(ignore_index)
    labels = target.long()
    keep = labels != ignore_index
    z, labels = logits[keep], labels[keep]
    if labels.numel() == 0:
        raise ValueError("Expected `target` to hold at least one label that is not ignore_index, but got none")
    check_target_values(labels, counts.shape[0], ignore_index)
    log_prior = _log_prior(counts, torch.float64).to(z.device)
    z = z.to(torch.float64)
    # Balanced accuracy, in float64: the mean per-class accuracy over the classes present (nanmean skips the rest).
    scores = torch.stack(
        [
            per_class_accuracy((z - t * log_prior).argmax(1), labels, counts.shape[0], dtype=torch.float64).nanmean()
            for t in candidates
        ]
    )
    # Scores within the rounding of that mean are ties, which go to the first candidate (3/8 == 1/4 + 1/8).
    tied = scores >= scores.max() - 4 * counts.shape[0] * torch.finfo(torch.float64).eps
    return candidates[int(tied.nonzero()[0, 0])]
