r"""EQLv2 loss :cite:`tan2021eqlv2`: sigmoid loss reweighted by accumulated positive and negative gradients."""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor

from longtail_losses._validation import as_counts, check_bool, check_gamma, check_number, check_tensor
from longtail_losses.losses import _engine, _kernel
from longtail_losses.losses._base import CountsLoss, all_reduce
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["EQLv2Loss", "eqlv2_loss"]

#: Added to the accumulated negative gradient before the ratio, as in the official EQLv2 code.
EQLV2_RATIO_EPS = 1e-10


# ----------------------------------------------------------------------------------------------------------------
# EQLv2


def _eqlv2_weights(
    pos_grad: Tensor, neg_grad: Tensor, *, gamma: float, mu: float, alpha: float, background: bool
) -> tuple[Tensor, Tensor]:
    r"""Per column, the weights of positives and of negatives (float64), a trailing 1 for the background."""
    ratio = pos_grad.to(torch.float64) / (neg_grad.to(torch.float64) + EQLV2_RATIO_EPS)
    neg_w = torch.sigmoid(gamma * (ratio - mu))  # 1 / (1 + exp(-gamma (g - mu)))
    pos_w = 1.0 + alpha * (1.0 - neg_w)
    if background:
        one = neg_w.new_ones(1)
        neg_w, pos_w = torch.cat([neg_w, one]), torch.cat([pos_w, one])
    return pos_w, neg_w


def _eqlv2_batch_grads(rows: _engine.Rows, pos_w: Tensor, neg_w: Tensor, num_classes: int) -> Tensor:
    r"""(2, C) float64: per class, the batch's weighted positive and negative gradient magnitudes.

    :math:`|\partial \operatorname{BCE}(z, t) / \partial z| = |\sigma(z) - t|` is :math:`-f'(s)` of the sigmoid
    term at :math:`\gamma = 0`, times the weight it had in the loss, summed over the valid rows (not divided by their
    number), as the official code's ``collect_grad`` does. The background column is left out.
    """
    z, labels = rows.logits.detach(), rows.labels
    assert labels is not None
    is_target = torch.arange(z.shape[1], device=z.device) == labels.unsqueeze(1)
    _, derivative = _kernel.focal_terms(torch.where(is_target, z, -z), 0.0)
    assert derivative is not None
    # Rows with a non-finite logit contribute nothing: one nan would otherwise poison the statistics for good.
    counted = rows.valid & torch.isfinite(z).all(dim=1)
    magnitude = torch.where(counted.unsqueeze(1), derivative.neg_(), 0.0)
    positives = torch.where(is_target, magnitude, 0.0).sum(dim=0, dtype=torch.float64)
    negatives = torch.where(is_target, 0.0, magnitude).sum(dim=0, dtype=torch.float64)
    weighted = torch.stack([positives * pos_w.to(torch.float64), negatives * neg_w.to(torch.float64)])
    return weighted[:, :num_classes]


def _check_eqlv2(gamma: object, mu: object, alpha: object, background: object) -> tuple[float, float, float, bool]:
    return (
        check_gamma(gamma),
        check_number("mu", mu, low=-math.inf),
        check_number("alpha", alpha, low=0.0),
        check_bool("background", background),
    )


def eqlv2_loss(
    logits: Tensor, target: Tensor, pos_grad: Optional[Tensor] = None, neg_grad: Optional[Tensor] = None, *,
    gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0, background: bool = False,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Equalization loss v2 :cite:`tan2021eqlv2` for given accumulated gradient statistics.

    A sigmoid binary cross-entropy per class, each sample a positive of its class and a negative of the others,
    with the weights of class :math:`j` set by the ratio :math:`g_j` of its accumulated positive to negative
    gradient magnitudes:

    .. math::
        \ell(z, y) = \sum_{j} w_j^{t_j}\, \operatorname{BCE}(z_j, t_j), \qquad
        g_j = \frac{G^{pos}_j}{G^{neg}_j + 10^{-10}},

    .. math::
        w^{0}_j = \frac{1}{1 + e^{-\gamma (g_j - \mu)}}, \qquad w^{1}_j = 1 + \alpha\,(1 - w^{0}_j),

    with :math:`t_j = [j = y]`: negatives get :math:`w^0_j`, positives :math:`w^1_j`. Without statistics
    (``pos_grad = neg_grad = None``, the first step) every weight is 1 and the loss is the plain sigmoid BCE
    summed over the classes. :class:`EQLv2Loss` accumulates the statistics and calls the same code.

    With ``background=True`` the logits have a trailing background column :math:`C` (a detection head's
    :math:`C + 1` outputs), label :math:`C` means background, and that column is always weighted 1.

    ``'mean'`` divides the sum over classes and samples by the number of samples whose label is not
    ``ignore_index``, as the official code divides by the number of proposals.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` (``[0, C]`` with ``background``) or ``ignore_index``. Class
            probabilities are refused: positives and negatives are defined by one label.
        pos_grad: Accumulated positive gradient magnitude per class :math:`G^{pos}`, ``>= 0``.
        neg_grad: Accumulated negative gradient magnitude per class :math:`G^{neg}`, ``>= 0``.
        gamma: Steepness :math:`\gamma` of the weighting function, ``>= 0``.
        mu: Centre :math:`\mu` of the weighting function.
        alpha: Extra weight :math:`\alpha \ge 0` of the positives of rare classes.
        background: Whether the logits end with a background column.
        **options: ``reduction``, ``ignore_index``, ``validate_args`` (counts, labels and statistics: a device sync):
            :ref:`call-options`; ``label_smoothing`` must be 0.

    Shape:
        logits: :math:`(K)`, :math:`(N, K)` or :math:`(N, K, d_1, ..., d_k)`, :math:`K = C` (:math:`C + 1` with
        ``background``).
        target: :math:`()`, :math:`(N)` or :math:`(N, d_1, ..., d_k)`.
        pos_grad: :math:`(C)`.
        neg_grad: :math:`(C)`.
        output: a scalar, or the shape of ``target`` if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``target`` holds probabilities or an argument has the wrong type.
        ValueError: If the shapes disagree, a statistic is negative, only one statistic is given, a label is out of
            range or an option is unknown.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]])
        >>> target = torch.tensor([0, 1])
        >>> eqlv2_loss(logits, target)  # first step: every weight 1
        tensor(1.0942)
        >>> eqlv2_loss(logits, target, torch.tensor([8.0, 1.0, 0.0]), torch.tensor([10.0, 10.0, 10.0]))
        tensor(1.1468)
    """
    gamma, mu, alpha, background = _check_eqlv2(gamma, mu, alpha, background)
    checked = _engine.check_options(**options).without_smoothing("EQLv2")
    check_tensor("logits", logits)
    num_columns = logits.shape[0 if logits.ndim == 1 else 1] if logits.ndim else 0
    rows = _engine.prepare(logits, target, num_columns, checked, loss="EQLv2")
    if (pos_grad is None) != (neg_grad is None):
        raise ValueError(
            "Expected `pos_grad` and `neg_grad` to be both tensors or both None, "
            f"but got {type(pos_grad).__name__} and {type(neg_grad).__name__}"
        )
    pos_w = neg_w = rows.logits.new_ones(num_columns)
    if pos_grad is not None and neg_grad is not None:
        pos, neg = (
            as_counts(
                value,
                name,
                num_classes=num_columns - int(background),
                minimum=0,
                dtype=torch.float64,
                check_values=checked.check_values,
            ).to(rows.logits.device)
            for name, value in (("pos_grad", pos_grad), ("neg_grad", neg_grad))
        )
        pos_w, neg_w = _eqlv2_weights(pos, neg, gamma=gamma, mu=mu, alpha=alpha, background=background)
    return _engine.finish(_engine.sigmoid_per_row(rows, pos_w, neg_w), rows, checked.reduction)


class EQLv2Loss(CountsLoss):
    r"""Module form of :func:`eqlv2_loss` that accumulates the gradient statistics while it trains.

    Every call computes the loss with the weights of the statistics accumulated *before* it (all weights 1
    until the first update). Then, in training mode, it adds the batch's weighted gradient magnitudes
    :math:`\sum_n w_j^{t_{nj}}\,|\sigma(z_{nj}) - t_{nj}|` over the positives and the negatives of each class,
    summed over the ranks when :mod:`torch.distributed` is initialised, to the ``float64`` buffers ``pos_grad``
    and ``neg_grad``, and counts the update in ``num_updates`` if the (global) batch had a label that is not
    ``ignore_index``: a first batch with none leaves every weight 1 (the official code would start weighting from
    zero statistics there, which all but switches off every negative). This is the official code's ``collect_grad``,
    which works from the analytic gradient of the weighted BCE of each element, in ``forward`` and with no
    backward hook; ``reduction`` does not change it. A row with a non-finite logit is left out of the statistics
    (with a :class:`RuntimeWarning` when ``validate_args``): its loss is ``nan`` as the input says, but later
    batches are weighted as if it had not been seen (:class:`SeesawLoss` counts labels only, so it needs no such
    rule).

    The statistics stay ``float64`` under ``.half()``, ``.float()`` and ``.to(dtype)`` (a float16 sum of
    gradients would lose the tail classes); ``.to(device)`` moves them.

    Args:
        num_classes: Number of foreground classes C.
        gamma: Steepness :math:`\gamma` of the weighting function. Default: ``12.0``.
        mu: Centre :math:`\mu` of the weighting function. Default: ``0.8``.
        alpha: Extra weight of the positives of rare classes. Default: ``4.0``.
        background: Whether the logits end with a background column (label C), weighted 1 and not accumulated.
            Default: ``False``.
        process_group: Group whose ranks share the statistics (``None``: the default group).
        **options: ``reduction``, ``ignore_index`` (its samples are not accumulated either), ``validate_args``
            (a device sync on every call): :ref:`call-options`; ``label_smoothing`` must be 0.

    Shape:
        logits: :math:`(K)`, :math:`(N, K)` or :math:`(N, K, d_1, ..., d_k)` with :math:`K = C` (:math:`C + 1`
        with ``background``).
        target: class indices of the shape of ``logits`` without the class dimension.
        output: a scalar, or the shape of ``target`` if ``reduction='none'``.

    Example:
        >>> criterion = EQLv2Loss(3)
        >>> criterion
        EQLv2Loss(num_classes=3, gamma=12.0, mu=0.8, alpha=4.0, background=False, reduction='mean', ignore_index=-100)
        >>> logits, target = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0]]), torch.tensor([0, 1])
        >>> criterion(logits, target), criterion(logits, target)
        (tensor(1.0942), tensor(0.6698))
        >>> criterion.pos_grad
        tensor([0.7147, 0.6274, 0.0000], dtype=torch.float64)
    """

    pos_grad: Tensor
    neg_grad: Tensor
    num_updates: Tensor
    _per_class: ClassVar[dict[str, tuple[int, torch.dtype]]] = {
        "pos_grad": (0, torch.float64),
        "neg_grad": (0, torch.float64),
    }
    _float64 = ("pos_grad", "neg_grad")
    _hyperparameters = ("gamma", "mu", "alpha", "background")

    def __init__(
        self, num_classes: int, *,
        gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0, background: bool = False,
        process_group: Optional[Any] = None,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(num_classes=num_classes, **options)
        self.options.without_smoothing("EQLv2")
        self.gamma, self.mu, self.alpha, self.background = _check_eqlv2(gamma, mu, alpha, background)
        for name in self._per_class:
            self._register_per_class(name, torch.zeros(self.num_classes, dtype=torch.float64))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))
        self.process_group = process_group

    def weights(self) -> tuple[Tensor, Tensor]:
        """The current per-column weights of positives and of negatives (``float64``, all 1 before any update).

        Returns:
            ``(pos_w, neg_w)``, each of shape :math:`(K)`.
        """
        pos_w, neg_w = _eqlv2_weights(
            self.pos_grad, self.neg_grad, gamma=self.gamma, mu=self.mu, alpha=self.alpha, background=self.background
        )
        started = self.num_updates > 0  # a tensor condition: no device sync
        return torch.where(started, pos_w, 1.0), torch.where(started, neg_w, 1.0)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss, then update the statistics (training mode); see :func:`eqlv2_loss`."""
        rows = _engine.prepare(logits, target, self.num_classes + int(self.background), self.options, loss="EQLv2")
        pos_w, neg_w = (w.to(rows.logits.device) for w in self.weights())
        loss = _engine.finish(_engine.sigmoid_per_row(rows, pos_w, neg_w), rows, self.reduction)
        if self.training:
            with torch.no_grad():
                grads = _eqlv2_batch_grads(rows, pos_w, neg_w, self.num_classes)
                if self.validate_args and not bool(torch.isfinite(rows.logits).all()):  # a sync, as validate_args
                    warnings.warn(
                        "EQLv2Loss: rows with a non-finite logit were left out of the gradient statistics",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                labelled = rows.valid.sum(dtype=torch.float64).reshape(1)
                batch = all_reduce(
                    torch.cat([grads.reshape(-1), labelled]).to(self.pos_grad.device), self.process_group
                )
                c = self.num_classes
                self.pos_grad.add_(batch[:c])
                self.neg_grad.add_(batch[c : 2 * c])
                self.num_updates.add_((batch[2 * c] > 0).to(torch.int64))  # a batch with no label is no update
        return loss

    def reset_statistics(self) -> None:
        """Set the statistics back to zero: the next call weights every term 1 again."""
        with torch.no_grad():
            self.pos_grad.zero_()
            self.neg_grad.zero_()
            self.num_updates.zero_()
