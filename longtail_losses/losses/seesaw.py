r"""Seesaw loss :cite:`wang2021seesaw`: mitigation and compensation factors from accumulated class counts."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from longtail_losses._validation import CountsLike, as_counts, check_number, check_tensor
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss, all_reduce
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["SeesawLoss", "seesaw_loss"]


# ----------------------------------------------------------------------------------------------------------------
# Seesaw


def _seesaw(logits: Tensor, target: Tensor, counts: Tensor, options: _engine.CallOptions, **hyper: float) -> Tensor:
    rows = _engine.prepare(logits, target, counts.shape[0], options, loss="Seesaw")
    return _engine.finish(_seesaw_per_row(rows, counts.to(rows.logits.device), **hyper), rows, options.reduction)


def _seesaw_per_row(rows: _engine.Rows, counts: Tensor, *, p: float, q: float, eps: float) -> Tensor:
    r"""The softmax term with the per-row shift :math:`\log S_{y j}` (:math:`j \ne y`), built in log space.

    :math:`\log S_{y j} = p \min(0, \log N_j - \log N_y) + q \max(0, \log\sigma_j - \log\max(\sigma_y, \epsilon))`.
    """
    z, labels = rows.logits, rows.labels
    assert labels is not None
    y = labels.unsqueeze(1)
    if p > 0.0:  # mitigation: (N_j / N_y)^p where N_j < N_y
        log_n = counts.clamp_min(1).to(z.dtype).log()
        log_weight = (log_n - log_n[labels].unsqueeze(1)).clamp_max_(0.0).mul_(p)
    else:
        log_weight = torch.zeros_like(z)
    if q > 0.0:  # compensation: (sigma_j / sigma_y)^q where sigma_j > sigma_y, from the detached logits
        log_sigma = F.log_softmax(z.detach(), dim=1)
        log_sigma_y = log_sigma.gather(1, y).clamp_min(math.log(eps))
        log_weight.add_(log_sigma.sub_(log_sigma_y).clamp_min_(0.0).mul_(q))
    return _engine.softmax_per_row(rows, shift=log_weight.scatter_(1, y, 0.0))  # the factors are for j != y


def seesaw_loss(
    logits: Tensor, target: Tensor, accumulated_counts: CountsLike, *,
    p: float = 0.8, q: float = 2.0, eps: float = 1e-2,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Seesaw loss :cite:`wang2021seesaw` for given accumulated class counts.

    The softmax of the target class is computed with every other class :math:`j` scaled by a Seesaw factor,

    .. math::
        \ell(z, y) = -\log \frac{e^{z_y}}{e^{z_y} + \sum_{j \ne y} S_{y j}\, e^{z_j}}, \qquad
        S_{y j} = M_{y j}\, C_{y j},

    with the mitigation factor :math:`M_{y j} = (N_j / N_y)^p` if :math:`N_j < N_y` (else 1) and the compensation
    factor :math:`C_{y j} = (\sigma_j / \max(\sigma_y, \epsilon))^q` if that ratio exceeds 1 (else 1), where
    :math:`\sigma = \operatorname{softmax}(z)` is computed from the *detached* logits and :math:`N` are the
    class counts, a count of 0 read as 1 (as in the official code, which clamps them). It is the cross-entropy
    of :math:`z_j + \log S_{y j}` for :math:`j \ne y`, computed in log space and only for the :math:`N \times C`
    entries the batch needs. :class:`SeesawLoss` accumulates :math:`N` over training, *including the current
    batch*, and calls this function.

    ``p = q = 0`` gives exactly :func:`~torch.nn.functional.cross_entropy`. ``'mean'`` divides by the number of
    samples whose label is not ``ignore_index`` (``nan`` if there is none).

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` or ``ignore_index``. Class probabilities are refused: the factors
            are defined for one target class.
        accumulated_counts: Accumulated samples per class :math:`N_j`, whole numbers ``>= 0`` (not the training
            counts of the other losses: zeros are allowed and read as 1).
        p: Exponent of the mitigation factor, ``>= 0``.
        q: Exponent of the compensation factor, ``>= 0``.
        eps: Floor of :math:`\sigma_y` in the compensation factor, in ``(0, 1]``.
        **options: ``reduction``, ``ignore_index``, ``validate_args`` (counts, labels and statistics: a device sync):
            :ref:`call-options`; ``label_smoothing`` must be 0.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: :math:`()`, :math:`(N)` or :math:`(N, d_1, ..., d_k)`.
        accumulated_counts: :math:`(C)`.
        output: a scalar, or the shape of ``target`` if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``target`` holds probabilities or an argument has the wrong type.
        ValueError: If the shapes disagree, a count is negative, a label is out of range or an option is unknown.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]])
        >>> target = torch.tensor([0, 1])
        >>> seesaw_loss(logits, target, torch.tensor([90, 9, 1]))
        tensor(2.1464)
        >>> seesaw_loss(logits, target, [90, 9, 1], p=0.0, q=0.0)  # plain cross-entropy
        tensor(1.2887)
    """
    p, q, eps = _check_seesaw(p, q, eps)
    checked = _engine.check_options(**options).without_smoothing("Seesaw")
    check_tensor("logits", logits)
    counts = as_counts(accumulated_counts, "accumulated_counts", minimum=0, check_values=checked.check_values)
    return _seesaw(logits, target, counts, checked, p=p, q=q, eps=eps)


def _check_seesaw(p: object, q: object, eps: object) -> tuple[float, float, float]:
    return (
        check_number("p", p, low=0.0),
        check_number("q", q, low=0.0),
        check_number("eps", eps, low=0.0, strict_low=True, high=1.0),
    )


class SeesawLoss(CountsLoss):
    r"""Module form of :func:`seesaw_loss` that accumulates the class counts :math:`N` while it trains.

    In training mode every call first adds the batch's labels (``ignore_index`` excluded) to the ``int64`` buffer
    ``accumulated_counts``, summed over the ranks when :mod:`torch.distributed` is initialised, and then computes the
    loss with the updated counts, as the official code does. In evaluation mode the counts are only read.
    ``state_dict`` saves them; :meth:`reset_statistics` sets them back to their initial value.

    Args:
        num_classes: Number of classes C.
        p: Exponent of the mitigation factor. Default: ``0.8``.
        q: Exponent of the compensation factor. Default: ``2.0``.
        eps: Floor of :math:`\sigma_y` in the compensation factor. Default: ``1e-2``.
        initial_counts: Counts to start from (e.g. known training counts), whole numbers ``>= 0``.
            Default: zeros.
        process_group: Group whose ranks share the counts (``None``: the default group).
        **options: ``reduction``, ``ignore_index`` (its samples are not counted either), ``validate_args``
            (a device sync on every call): :ref:`call-options`; ``label_smoothing`` must be 0.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices of the shape of ``logits`` without the class dimension.
        output: a scalar, or the shape of ``target`` if ``reduction='none'``.

    Example:
        >>> criterion = SeesawLoss(3)
        >>> criterion
        SeesawLoss(num_classes=3, p=0.8, q=2.0, eps=0.01, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]]), torch.tensor([0, 0]))
        tensor(4.3510)
        >>> criterion.accumulated_counts
        tensor([2, 0, 0])
    """

    accumulated_counts: Tensor
    initial_counts: Tensor
    _per_class: ClassVar[dict[str, tuple[int, torch.dtype]]] = {
        "accumulated_counts": (0, torch.int64),
        "initial_counts": (0, torch.int64),
    }
    _hyperparameters = ("p", "q", "eps")

    def __init__(
        self, num_classes: int, *,
        p: float = 0.8, q: float = 2.0, eps: float = 1e-2, initial_counts: Optional[CountsLike] = None,
        process_group: Optional[Any] = None,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(num_classes=num_classes, **options)
        self.options.without_smoothing("Seesaw")
        self.p, self.q, self.eps = _check_seesaw(p, q, eps)
        initial = torch.zeros(self.num_classes, dtype=torch.int64) if initial_counts is None else initial_counts
        self._register_per_class("initial_counts", initial)
        self._register_per_class("accumulated_counts", self.initial_counts)
        self.process_group = process_group

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Update the counts (training mode), then compute the loss; see :func:`seesaw_loss`."""
        rows = _engine.prepare(logits, target, self.num_classes, self.options, loss="Seesaw")
        if self.training:
            with torch.no_grad():
                batch = torch.zeros(self.num_classes, dtype=torch.int64, device=rows.logits.device)
                assert rows.labels is not None
                batch.index_add_(0, rows.labels, rows.valid.to(torch.int64))
                self.accumulated_counts.add_(all_reduce(batch, self.process_group).to(self.accumulated_counts.device))
        counts = self.accumulated_counts.to(rows.logits.device)
        hyper = {"p": self.p, "q": self.q, "eps": self.eps}
        return _engine.finish(_seesaw_per_row(rows, counts, **hyper), rows, self.reduction)

    def reset_statistics(self) -> None:
        """Set the accumulated counts back to their initial value (``initial_counts`` of ``__init__``, or zeros)."""
        with torch.no_grad():
            self.accumulated_counts.copy_(self.initial_counts)
