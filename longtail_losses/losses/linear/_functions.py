"""The two functional forms: :func:`linear_balanced_softmax_loss` and :func:`linear_bfs_loss`."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import (
    CountsLike,
    as_counts,
    check_bfs,
    check_int,
    check_linear_inputs,
    check_target_values,
    check_weight_decay,
)
from longtail_losses.losses import _engine
from longtail_losses.losses._engine import LossOptions, Unpack
from longtail_losses.losses.linear._chunked import Engine, LinearLoss, ProcessGroup, default_chunk

__all__ = ["linear_balanced_softmax_loss", "linear_bfs_loss", "linear_loss"]


def _shard_start(num_local: int, num_classes: int, group: ProcessGroup, device: torch.device) -> int:
    """Offset of this rank's class slice: the sizes of the slices of the lower ranks, summed."""
    import torch.distributed as dist

    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor([num_local], dtype=torch.int64, device=device), group=group)
    counts = [int(s) for s in sizes]
    if sum(counts) != num_classes:
        raise ValueError(
            f"Expected the ranks' `weight` slices to hold C = len(class_counts) = {num_classes} rows in all, "
            f"but got {counts}"
        )
    return sum(counts[: dist.get_rank(group)])


def linear_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    counts: Tensor,
    bias: Optional[Tensor],
    options: _engine.CallOptions,
    hyper: tuple[float, float, float],
    *,
    weight_decay: float,
    chunk_size: Optional[int],
    process_group: Optional[ProcessGroup],
    class_start: Optional[int] = None,
) -> Tensor:
    """Prepare the :class:`Engine` and apply :class:`LinearLoss`; everything but the inputs comes checked.

    ``hyper`` is ``(alpha, beta, gamma)``; ``class_start`` is the first class of this rank's slice (None: gathered
    from the ranks).
    """
    check_linear_inputs(features, weight, bias, target)
    counts = counts.to(features.device)
    num_classes, num_local = counts.shape[0], weight.shape[0]
    if process_group is None:
        if num_local != num_classes:
            raise ValueError(f"Expected `weight` to have C = {num_classes} rows, but got shape {tuple(weight.shape)}")
        class_start = 0
    elif class_start is None:
        class_start = _shard_start(num_local, num_classes, process_group, features.device)
    checked = options.check_values
    if checked:
        check_target_values(target.long(), num_classes, options.ignore_index)
    safe_target, keep, invalid = _engine.labels(target, num_classes, options, checked=checked)
    dtype = _engine.compute_dtype(features.dtype)
    alpha, beta, gamma = hyper
    needs = (features.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
    engine = Engine(
        features=features.detach().to(dtype),
        weight=weight.detach(),
        bias=None if bias is None else bias.detach(),
        target=safe_target - class_start,
        keep=keep,
        counts=counts[class_start : class_start + num_local].to(dtype),
        log_n_y=counts.to(dtype).log()[safe_target],
        cb_weight=_engine.class_balanced_weights(counts, beta, dtype)[safe_target] if alpha > 0.0 else None,
        alpha=alpha,
        gamma=gamma,
        weight_decay=weight_decay,
        reduction=options.reduction,
        chunk=chunk_size or default_chunk(features.shape[0]),
        group=process_group,
        needs=needs if torch.is_grad_enabled() else (False, False, False),
    )
    loss: Tensor = LinearLoss.apply(features, weight, bias, engine)
    if invalid is not None:  # unchecked labels out of range: nan, never another class's loss
        loss = torch.where(invalid if options.reduction == "none" else invalid.any(), math.nan, loss)
    return loss


def _linear(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    bias: Optional[Tensor],
    hyper: tuple[float, float, float],
    weight_decay: float,
    chunk_size: Optional[int],
    process_group: Optional[ProcessGroup],
    options: LossOptions,
    function: str,
) -> Tensor:
    """The checks of a function's call (a module makes them once, in ``__init__``), then :func:`linear_loss`."""
    hyper = check_bfs(*hyper)
    checked = _engine.check_options(**options).without_smoothing(function)
    counts = as_counts(class_counts, check_values=checked.check_values)
    weight_decay = check_weight_decay(weight_decay)
    chunk_size = check_int("chunk_size", chunk_size, 1, optional=True)
    kwargs: dict[str, Any] = {"weight_decay": weight_decay, "chunk_size": chunk_size, "process_group": process_group}
    return linear_loss(features, weight, target, counts, bias, checked, hyper, **kwargs)


@fill  # the signature is linear_bfs_loss's without alpha, beta, gamma; its lines grouped by hand, as there
def linear_balanced_softmax_loss(  # noqa: D417 (the Args shared with linear_bfs_loss are fragments)
    features: Tensor, weight: Tensor, target: Tensor, class_counts: CountsLike, bias: Optional[Tensor] = None, *,
    weight_decay: float = 0.0, chunk_size: Optional[int] = None, process_group: Optional[ProcessGroup] = None,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r""":func:`~longtail_losses.functional.balanced_softmax_loss` of a linear classifier, without its logits.

    Computes, class block by class block, the balanced softmax :cite:`ren2020balanced` of the logits
    :math:`z = x W^\top + b` and the gradients of ``features``, ``weight`` and ``bias``, never holding the
    :math:`(N, C)` logits or their gradient:

    .. math::
        \ell_n = \log \sum_{c=1}^{C} n_c e^{z_{n,c}} - \log n_{y_n} - z_{n,y_n},
        \qquad \mathcal{L} = \operatorname{reduce}_n \ell_n + \frac{\lambda}{2} \lVert W \rVert_F^2

    It equals ``balanced_softmax_loss(features @ weight.T + bias, target, class_counts)`` (plus the penalty), in
    value and gradients, up to rounding. ``'mean'`` divides by the number of samples whose label is not
    ``ignore_index`` (``nan`` if there is none). The penalty (``weight_decay`` :math:`=\lambda`, default off) is
    added once to the reduced loss, so its gradient is exactly ``weight_decay * weight``; with
    ``reduction='none'`` it is spread evenly over the kept samples, as in
    :func:`~longtail_losses.functional.bwlm_loss`. Memory beyond the gradients is a few blocks of
    :math:`N \times` ``chunk_size`` elements; time is about that of the plain computation (one more matrix
    product). Half and bfloat16 inputs are computed in float32. Double backward is not supported.

    With ``process_group``, ``weight`` (and ``bias``) are this rank's contiguous slice of the classifier's rows,
    in rank order, and ``features``, ``target`` and ``class_counts`` (all C classes) are the same on every rank;
    every rank returns the same loss, its slice's gradients, and the full gradient of ``features`` (summed over
    the ranks). Every rank must call forward and backward.

    Args:
        {linear_args}
        {linear_options}

    {linear_sections}

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> weight = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> linear_balanced_softmax_loss(features, weight, torch.tensor([0, 1]), [90, 10])
        tensor(0.7380)
        >>> linear_balanced_softmax_loss(features, weight, torch.tensor([0, 1]), [90, 10], chunk_size=1)
        tensor(0.7380)
    """
    args = (features, weight, target, class_counts, bias, (0.0, 0.0, 0.0), weight_decay, chunk_size, process_group)
    return _linear(*args, options, "linear_balanced_softmax_loss")


@fill  # the signature's lines grouped by hand: the tensors, the focal term, the penalty and the blocks, the options
def linear_bfs_loss(  # noqa: D417 (the Args shared with linear_balanced_softmax_loss are fragments)
    features: Tensor, weight: Tensor, target: Tensor, class_counts: CountsLike, bias: Optional[Tensor] = None, *,
    alpha: float = 0.1, beta: float = 0.9999, gamma: float = 1.0,
    weight_decay: float = 0.0, chunk_size: Optional[int] = None, process_group: Optional[ProcessGroup] = None,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r""":func:`~longtail_losses.functional.bfs_loss` (and BWLM) of a linear classifier, without its logits.

    Computes, class block by class block, the Balanced Focal Softmax of the BWLM paper :cite:`fan2024bwlm`
    (eq. 11) on the logits :math:`z = x W^\top + b`, and the gradients of ``features``, ``weight`` and ``bias``,
    never holding the :math:`(N, C)` logits or their gradient:

    .. math::
        \ell_n = -\alpha\, w_{y_n} \sum_{c=1}^{C} (1-p^t_{n,c})^{\gamma} \log p^t_{n,c}
          - (1-\alpha) \log \frac{n_{y_n} e^{z_{n,y_n}}}{\sum_{c} n_c e^{z_{n,c}}},
        \qquad \mathcal{L} = \operatorname{reduce}_n \ell_n + \frac{\lambda}{2} \lVert W \rVert_F^2

    with sigmoid :math:`p^t` and the class-balanced weights :math:`w` normalised to sum to C, as in
    :func:`~longtail_losses.functional.bfs_loss`. With ``weight_decay`` :math:`=\lambda > 0` it is BWLM's loss
    (eq. 17, :func:`~longtail_losses.functional.bwlm_loss`): the penalty is added once to the reduced loss, its
    gradient is exactly ``weight_decay * weight`` and, with ``reduction='none'``, it is spread evenly over the
    kept samples. ``'mean'`` divides by the number of samples whose label is not ``ignore_index``. The focal
    term is computed from log-sigmoids (:math:`\log(1-p) = \log\sigma(-z)`), so it stays finite for any finite
    logits. Memory, dtypes, double backward and ``process_group`` are as in
    :func:`~longtail_losses.functional.linear_balanced_softmax_loss`.

    Args:
        {linear_args}
        alpha: Weight :math:`\alpha \in [0, 1]` of the class-balanced focal term.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)` of the focal term.
        gamma: Focusing parameter :math:`\gamma \ge 0` of the focal term.
        {linear_options}

    {linear_sections}

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> weight = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> linear_bfs_loss(features, weight, torch.tensor([0, 1]), [90, 10], beta=0.99)
        tensor(0.7064)
        >>> linear_bfs_loss(features, weight, torch.tensor([0, 1]), [90, 10], beta=0.99, weight_decay=0.1)
        tensor(0.9564)
    """
    args = (features, weight, target, class_counts, bias, (alpha, beta, gamma), weight_decay, chunk_size, process_group)
    return _linear(*args, options, "linear_bfs_loss")
