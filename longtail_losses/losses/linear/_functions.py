"""The two functional forms: :func:`linear_balanced_softmax_loss` and :func:`linear_bfs_loss`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional, TypedDict

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import (
    CountsLike,
    check_bfs,
    check_bool,
    check_ignore_index,
    check_int,
    check_linear_inputs,
    check_reduction,
    check_target_values,
    check_weight_decay,
)
from longtail_losses.losses import _engine
from longtail_losses.losses._engine import Unpack
from longtail_losses.losses.class_balanced import class_balanced_weights
from longtail_losses.losses.linear._kernel import LinearLoss, Options, ProcessGroup

__all__ = [
    "OPTION_NAMES",
    "LinearOptions",
    "check_options",
    "linear_balanced_softmax_loss",
    "linear_bfs_loss",
    "linear_loss",
]


class LinearOptions(TypedDict, total=False):
    """The keyword options of the linear losses after their hyperparameters (:func:`linear_balanced_softmax_loss`)."""

    weight_decay: float
    reduction: str
    ignore_index: int
    validate_args: bool
    chunk_size: Optional[int]
    process_group: Optional[ProcessGroup]


LinearOptions.__module__ = "longtail_losses.losses.linear"  # documented there, with the public functions


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


#: The names of :class:`LinearOptions`, in their order.
OPTION_NAMES: tuple[str, ...] = tuple(LinearOptions.__annotations__)


def check_options(options: Mapping[str, Any], function: str) -> dict[str, Any]:
    """The options of :class:`LinearOptions`, checked, with their defaults: the one place that holds them.

    Raises:
        TypeError: For a keyword that is no option of ``function`` (as Python does for a plain signature).
    """
    for name in options:
        if name not in OPTION_NAMES:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")
    return {
        "weight_decay": check_weight_decay(options.get("weight_decay", 0.0)),
        "reduction": check_reduction(options.get("reduction", "mean")),
        "ignore_index": check_ignore_index(options.get("ignore_index", -100)),
        "validate_args": check_bool("validate_args", options.get("validate_args", True)),
        "chunk_size": check_int("chunk_size", options.get("chunk_size"), 1, optional=True),
        "process_group": options.get("process_group"),
    }


def linear_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    bias: Optional[Tensor],
    hyper: tuple[float, float, float],
    options: Mapping[str, Any],
    *,
    function: str,
    check_counts: Optional[bool] = None,
    class_start: Optional[int] = None,
) -> Tensor:
    """Check the arguments, prepare the per-class tensors and apply :class:`LinearLoss`.

    ``hyper`` is ``(alpha, beta, gamma)`` of the focal term (zeros: balanced softmax), ``options`` those of
    :class:`LinearOptions` and ``function`` the caller's name. ``check_counts`` (default: the option
    ``validate_args``) checks the counts' values; ``class_start`` is the first class of this rank's slice (None:
    gathered from the ranks).
    """
    alpha, beta, gamma = check_bfs(*hyper)
    checked = check_options(options, function)
    weight_decay, reduction, ignore_index, validate_args, chunk_size, process_group = (checked[k] for k in OPTION_NAMES)
    check_linear_inputs(features, weight, bias, target)
    counts = _engine._counts(class_counts, features.device, validate_args if check_counts is None else check_counts)
    num_classes = counts.shape[0]
    if process_group is None:
        if weight.shape[0] != num_classes:
            raise ValueError(
                f"Expected `weight` to have C = len(class_counts) = {num_classes} rows, "
                f"but got shape {tuple(weight.shape)}"
            )
        class_start = 0
    elif class_start is None:
        class_start = _shard_start(weight.shape[0], num_classes, process_group, features.device)
    target = target.long()  # before any comparison: a uint8 156 must not compare equal to ignore_index -100
    values_checked = _engine._checks_values(validate_args)
    if values_checked:
        check_target_values(target, num_classes, ignore_index)
    dtype = _engine.compute_dtype(features.dtype)
    keep = target != ignore_index
    # Unchecked labels out of range give their sample a nan loss, never another class's (as the other losses).
    invalid = None if values_checked else keep & ((target < 0) | (target >= num_classes))
    safe_target = torch.where(keep if invalid is None else keep & ~invalid, target, 0)
    log_counts = counts.to(dtype).log()
    cb = None
    if alpha > 0.0:
        cb = class_balanced_weights(counts, beta, dtype=dtype)
    needs = (features.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
    if not torch.is_grad_enabled():
        needs = (False, False, False)
    kernel = Options(alpha, gamma, weight_decay, reduction, chunk_size, class_start, process_group)
    loss: Tensor = LinearLoss.apply(
        features, weight, bias, safe_target, keep, log_counts, counts.to(dtype), cb, kernel, needs
    )
    if invalid is not None:
        loss = torch.where(invalid if reduction == "none" else invalid.any(), math.nan, loss)
    return loss


@fill
def linear_balanced_softmax_loss(  # noqa: D417 (the arguments shared with linear_bfs_loss: {linear_args})
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    bias: Optional[Tensor] = None,
    **options: Unpack[LinearOptions],
) -> Tensor:
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
        **options: The keyword options below (:class:`~longtail_losses.losses.linear.LinearOptions`).

    Keyword Args:
        weight_decay: :math:`\lambda \ge 0` of the penalty :math:`\frac{\lambda}{2}\lVert W\rVert^2`. Default: ``0``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        ignore_index: Label whose samples contribute nothing. Default: ``-100``.
        validate_args: Check tensor values (counts, label range); this synchronises with the device. Default:
            ``True``.
        chunk_size: Classes per block; None (the default) picks about :math:`2^{21} / N`.
        process_group: Shard the classes over this ``torch.distributed`` group (see above). Default: ``None``.

    {linear_sections}

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> weight = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> linear_balanced_softmax_loss(features, weight, torch.tensor([0, 1]), [90, 10])
        tensor(0.7380)
        >>> linear_balanced_softmax_loss(features, weight, torch.tensor([0, 1]), [90, 10], chunk_size=1)
        tensor(0.7380)
    """
    name = "linear_balanced_softmax_loss"
    return linear_loss(features, weight, target, class_counts, bias, (0.0, 0.0, 0.0), options, function=name)


@fill
def linear_bfs_loss(  # noqa: D417 (the arguments shared with linear_balanced_softmax_loss: {linear_args})
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    bias: Optional[Tensor] = None,
    *,
    alpha: float = 0.1,
    beta: float = 0.9999,
    gamma: float = 1.0,
    **options: Unpack[LinearOptions],
) -> Tensor:
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
        **options: ``weight_decay`` (:math:`\lambda \ge 0` of the penalty), ``reduction``, ``ignore_index``,
            ``validate_args``, ``chunk_size``, ``process_group``: as for :func:`linear_balanced_softmax_loss`.

    {linear_sections}

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> weight = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> linear_bfs_loss(features, weight, torch.tensor([0, 1]), [90, 10], beta=0.99)
        tensor(0.7064)
        >>> linear_bfs_loss(features, weight, torch.tensor([0, 1]), [90, 10], beta=0.99, weight_decay=0.1)
        tensor(0.9564)
    """
    name = "linear_bfs_loss"
    return linear_loss(features, weight, target, class_counts, bias, (alpha, beta, gamma), options, function=name)
