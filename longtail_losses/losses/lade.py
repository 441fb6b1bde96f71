r"""LADE (Hong et al., CVPR 2021): label distribution disentangling, and the post-hoc change to a known test prior.

The loss is the PC softmax cross-entropy (the logits shifted by the log training prior: balanced softmax) plus
the LADER regulariser, which fits the logits to the log-likelihood ratio of the balanced label distribution with
a Donsker-Varadhan bound estimated on the batch, class by class. The statistics of that bound are sums over the
batch: :class:`LADELoss` sums them over the ranks of ``torch.distributed`` (differentiably), so that data-parallel
training with half batches computes what one process computes on the whole batch.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import CountsLike, as_counts, check_finite
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack
from longtail_losses.losses.logit_adjustment import add_log_prior

__all__ = ["LADELoss", "lade_loss", "shift_prior"]


def _world(group: Optional[Any]) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


class _SumRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: every rank's copy of the sum is differentiated."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Optional[Any]) -> Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def _sum_ranks(tensor: Tensor, group: Optional[Any]) -> Tensor:
    """The sum over the ranks of ``group``, differentiable (its backward sums the gradients of every rank)."""
    return _SumRanks.apply(tensor, group) if _world(group) else tensor


def _lader(rows: _engine.Rows, log_prior: Tensor, remine_lambda: float, gather: bool, group: Optional[Any]) -> Tensor:
    r"""The LADER regulariser :math:`-\sum_c \pi_c (T_1(c) - T_2(c) - \lambda T_2(c)^2)` of the kept rows."""
    z = rows.logits
    num_classes = z.shape[1]
    kept = torch.ones(z.shape[0], dtype=torch.bool, device=z.device) if rows.keep is None else rows.valid
    if rows.probs is not None:  # soft assignment to the classes (mixup, label smoothing)
        assign = rows.probs
    else:
        assert rows.labels is not None
        assign = (torch.arange(num_classes, device=z.device) == rows.labels.unsqueeze(1)).to(z.dtype)
    assign = torch.where(kept.unsqueeze(1), assign, 0.0)
    masked = torch.where(kept.unsqueeze(1), z, -math.inf)
    top = masked.detach().amax(dim=0) if z.shape[0] else torch.full((num_classes,), -math.inf, device=z.device)
    sums = torch.stack([(assign * torch.where(kept.unsqueeze(1), z, 0.0)).sum(dim=0), assign.sum(dim=0)])
    count = kept.sum().to(z.dtype).reshape(1)
    if gather and _world(group):
        top = top.clone()
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
    top = torch.where(torch.isfinite(top), top, 0.0)
    exp_sum = torch.exp(masked - top).sum(dim=0)
    if gather:
        sums, exp_sum, count = (_sum_ranks(t, group) for t in (sums, exp_sum, count))
    # T_1(c): the mean logit of class c over its samples (0 for a class without a sample in the batch).
    first = torch.where(sums[1] > 0, sums[0] / sums[1].clamp_min(torch.finfo(z.dtype).tiny), 0.0)
    # T_2(c) = log( (1/N) sum_n exp(z_{n,c}) p_u(c) / p_s(c) ), with p_u = 1/C.
    has_rows = count > 0
    lse = top + torch.where(has_rows, exp_sum, 1.0).log()
    second = lse - count.clamp_min(1.0).log() - log_prior - math.log(num_classes)
    estimate = first - second - remine_lambda * second.square()
    return torch.where(has_rows, -(log_prior.exp() * estimate).sum(), 0.0).squeeze(0)


def _lade(
    logits: Tensor, target: Tensor, counts: Tensor, options: _engine.CallOptions, *,
    remine_lambda: float, estim_loss_weight: float, gather: bool = False, group: Optional[Any] = None,
) -> Tensor:  # fmt: skip
    rows = _engine.prepare(logits, target, counts.shape[0], options)
    n = counts.to(device=rows.logits.device, dtype=rows.logits.dtype)
    log_prior = (n / n.sum()).log()
    loss = _engine.finish(_engine.softmax_per_row(rows, shift=log_prior), rows, options.reduction)
    if estim_loss_weight == 0.0:
        return loss
    penalty = estim_loss_weight * _lader(rows, log_prior, remine_lambda, gather, group)
    keep = None if rows.keep is None else rows.keep.reshape(rows.shape)
    return _engine.add_penalty(loss, penalty, keep, options.reduction)


def _check_lade(remine_lambda: object, estim_loss_weight: object) -> tuple[float, float]:
    return check_finite("remine_lambda", remine_lambda, low=0.0), check_finite(
        "estim_loss_weight", estim_loss_weight, low=0.0
    )


def lade_loss(
    logits: Tensor, target: Tensor, class_counts: CountsLike, *,
    remine_lambda: float = 0.1, estim_loss_weight: float = 0.1,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""LADE loss :cite:`hong2021lade`: PC softmax cross-entropy plus the LADER regulariser on the batch.

    With the training prior :math:`p_s(c) = n_c / \sum_i n_i`, the uniform prior :math:`p_u(c) = 1/C`, and a batch
    of :math:`N` samples (:math:`N_c` of class :math:`c`):

    .. math::
        \mathcal{L} = \frac{1}{N}\sum_n -\log \frac{p_s(y_n)\, e^{z_{n,y_n}}}{\sum_j p_s(j)\, e^{z_{n,j}}}
        \;+\; \alpha\, \mathcal{L}_{LADER}, \qquad
        \mathcal{L}_{LADER} = -\sum_{c} p_s(c) \Bigl[ T_1(c) - T_2(c) - \lambda\, T_2(c)^2 \Bigr],

    .. math::
        T_1(c) = \frac{1}{N_c} \sum_{n:\, y_n = c} z_{n,c}, \qquad
        T_2(c) = \log \frac{1}{N} \sum_{n} e^{z_{n,c}}\, \frac{p_u(c)}{p_s(c)},

    the regularised (ReMINE) Donsker-Varadhan bound of each class, weighted by :math:`p_s(c)`; :math:`\alpha` is
    ``estim_loss_weight`` and :math:`\lambda` ``remine_lambda``. This follows Hong et al.'s released code
    (``PriorCELoss`` + ``LADELoss``, configured with ``remine_lambda = 0.1`` and loss weight 0.1 on CIFAR-100-LT:
    the defaults here); the equation numbers of the paper and its other data sets' weights were not checked.
    Two details follow the code: a class without a sample in the batch has :math:`T_1(c) = 0` (the code divides
    by :math:`N_c + 10^{-8}`) and still contributes :math:`T_2(c)`; the :math:`10^{-9}` the code adds to the
    priors is left out (the counts are positive). ``estim_loss_weight = 0`` is exactly
    :func:`~longtail_losses.functional.balanced_softmax_loss`. Predict with the raw logits for a balanced test set,
    or with :func:`shift_prior` for a known test prior.

    **Batch statistics.** :math:`T_1` and :math:`T_2` are computed over the rows of this call (every position of
    dense logits; ``ignore_index`` rows left out, :math:`N` the kept rows). Under data-parallel training this
    function sees only the rank's batch; :class:`LADELoss` sums the statistics over the ranks instead. **Probability
    targets** :math:`t` (and ``label_smoothing``) assign samples to classes softly: :math:`N_c = \sum_n t_{n,c}` and
    :math:`T_1(c) = \sum_n t_{n,c} z_{n,c} / N_c`, and the cross-entropy term is the expectation over :math:`t`
    (a one-hot :math:`t` gives the class-index loss). **Reduction**: the cross-entropy term as
    :func:`~torch.nn.functional.cross_entropy` (``'mean'`` over the kept samples); the regulariser, one number per
    batch, is added once to ``'mean'`` and ``'sum'``, and spread over the kept entries of ``'none'`` (which then
    sums to ``'sum'``). Half and bfloat16 logits are computed (and returned) in float32.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities of the shape of
            ``logits``.
        class_counts: Training samples per class :math:`n_c`, all ``> 0``.
        remine_lambda: :math:`\lambda \ge 0` of the ReMINE term.
        estim_loss_weight: :math:`\alpha \ge 0`, the weight of the regulariser.
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).
        output: a scalar, or the shape of the class-index target if ``reduction='none'``.

    Raises:
        TypeError: If ``logits`` is not floating point, or ``target`` is neither integer nor floating point.
        ValueError: If the shapes disagree, a count or label is invalid, or a hyperparameter is negative.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
        >>> target = torch.tensor([0, 1, 0])
        >>> lade_loss(logits, target, [90, 10])
        tensor(0.4651)
        >>> lade_loss(logits, target, [90, 10], estim_loss_weight=0.0)  # balanced softmax
        tensor(0.5138)
    """
    remine_lambda, estim_loss_weight = _check_lade(remine_lambda, estim_loss_weight)
    counts, checked = _engine.function_args(logits, class_counts, options)
    return _lade(logits, target, counts, checked, remine_lambda=remine_lambda, estim_loss_weight=estim_loss_weight)


@fill
class LADELoss(CountsLoss):
    r"""Module form of :func:`lade_loss`, with the batch statistics summed over the ranks of ``torch.distributed``.

    When :mod:`torch.distributed` is initialised with several ranks, the per-class sums of the regulariser
    (:math:`\sum_n t_{n,c} z_{n,c}`, :math:`N_c`, :math:`\sum_n e^{z_{n,c}}` with a shared maximum, and
    :math:`N`) are summed over ``process_group`` with a differentiable all-reduce, so every rank computes the
    regulariser of the global batch. Its backward sums the gradients of the ranks' copies, so each rank's logits
    get the global regulariser's gradient times the number of ranks, and the averaging of
    :class:`~torch.nn.parallel.DistributedDataParallel` gives exactly the single-process gradient of the global
    batch (tested with two gloo processes). The cross-entropy term is each rank's mean, as for any loss under DDP.
    Every rank must call the loss, and backward, in every step (a collective). Without ``torch.distributed``
    it equals :func:`lade_loss`.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        remine_lambda: :math:`\lambda \ge 0`. Default: ``0.1`` (Hong et al.'s code).
        estim_loss_weight: :math:`\alpha \ge 0`. Default: ``0.1`` (Hong et al.'s CIFAR-100-LT configuration).
        process_group: Group whose ranks share the statistics (``None``: the default group).
        {module_options}

    Shape:
        {logits_shape}

    Example:
        >>> criterion = LADELoss([90, 10])
        >>> criterion
        LADELoss(num_classes=2, remine_lambda=0.1, estim_loss_weight=0.1, reduction='mean', ignore_index=-100)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5]]), torch.tensor([0, 1, 0]))
        tensor(0.4651)
    """

    _hyperparameters = ("remine_lambda", "estim_loss_weight")

    def __init__(
        self, class_counts: CountsLike, *,
        remine_lambda: float = 0.1, estim_loss_weight: float = 0.1, process_group: Optional[Any] = None,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, **options)
        self.remine_lambda, self.estim_loss_weight = _check_lade(remine_lambda, estim_loss_weight)
        self.process_group = process_group

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss with the statistics of every rank; see :func:`lade_loss`."""
        hyper = {"remine_lambda": self.remine_lambda, "estim_loss_weight": self.estim_loss_weight}
        return _lade(logits, target, self.class_counts, self.options, gather=True, group=self.process_group, **hyper)


def shift_prior(logits: Tensor, test_prior: CountsLike) -> Tensor:
    r"""Move logits trained for a uniform label prior to a known test prior :cite:`hong2021lade`.

    A model trained with :class:`LADELoss` (or balanced softmax) has logits whose softmax estimates the posterior
    under the uniform prior :math:`p_u`; for a test set with label distribution :math:`p_t`,

    .. math::
        p_t(y \mid x) \propto e^{z_y}\, \frac{p_t(y)}{p_u(y)}, \qquad \text{so predict with } z + \log p_t

    (the constant :math:`-\log p_u` is dropped: the softmax ignores it). ``test_prior`` may be counts or
    probabilities (it is normalised); a class of prior 0 gets the logit :math:`-\infty`. A balanced test set
    leaves the prediction unchanged.

    Args:
        logits: Class scores of a model trained for the uniform prior.
        test_prior: The test label distribution :math:`p_t` (or counts proportional to it), finite, ``>= 0``,
            not all 0.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`: the classes on dimension 1
        (0 unbatched).
        test_prior: :math:`(C)`.
        output: the shape of ``logits``, in its dtype.

    Raises:
        TypeError: If ``logits`` is not a floating-point tensor.
        ValueError: If ``test_prior`` is invalid or ``logits`` has no class dimension of size C.

    Example:
        >>> shift_prior(torch.tensor([[1.0, 1.2]]), [3, 1])  # the test set has three times as many of class 0
        tensor([[ 0.7123, -0.1863]])
    """
    prior = as_counts(test_prior, "test_prior", minimum=0, dtype=torch.float64)
    if float(prior.sum()) <= 0.0:
        raise ValueError(f"Expected `test_prior` to have a positive sum, but got {prior.tolist()}")
    return add_log_prior(logits, prior, 1.0)
