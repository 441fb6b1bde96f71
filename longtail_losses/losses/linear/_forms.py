"""The public forms: two functions, and two modules that own the classifier and its loss."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longtail_losses._docstrings import fill
from longtail_losses._validation import CountsLike, as_counts, check_bfs, check_int, check_weight_decay
from longtail_losses.losses import _engine
from longtail_losses.losses._base import WeightedLoss
from longtail_losses.losses._engine import LossOptions, Unpack
from longtail_losses.losses.linear._chunked import ProcessGroup, default_chunk, linear_loss

__all__ = ["LinearBFS", "LinearBalancedSoftmax", "linear_balanced_softmax_loss", "linear_bfs_loss", "shard_range"]


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous class range ``[start, stop)`` that rank ``rank`` of ``world_size`` holds (near-equal slices).

    Example:
        >>> from longtail_losses.losses.linear import shard_range
        >>> [shard_range(10, r, 3) for r in range(3)]
        [(0, 3), (3, 6), (6, 10)]
    """
    return num_classes * rank // world_size, num_classes * (rank + 1) // world_size


def _linear(
    features: Tensor, weight: Tensor, target: Tensor, class_counts: CountsLike, bias: Optional[Tensor],
    hyper: tuple[float, float, float], options: LossOptions, *,
    class_weights: Optional[CountsLike],
    weight_decay: float, chunk_size: Optional[int], process_group: Optional[ProcessGroup],
) -> Tensor:  # fmt: skip
    """The checks of a function's call (a module makes them once, in ``__init__``), then :func:`linear_loss`."""
    hyper = check_bfs(*hyper)
    checked = _engine.check_options(**options)
    counts = as_counts(class_counts, check_values=checked.check_values)
    weights = _engine.class_weights_arg(class_weights, counts.shape[0], checked)
    weight_decay, chunk_size = check_weight_decay(weight_decay), check_int("chunk_size", chunk_size, 1, optional=True)
    kwargs: dict[str, Any] = {"weight_decay": weight_decay, "chunk_size": chunk_size, "process_group": process_group}
    return linear_loss(features, weight, target, counts, bias, checked, hyper, class_weights=weights, **kwargs)


@fill  # the signature is linear_bfs_loss's without alpha, beta, gamma; its lines grouped by hand, as there
def linear_balanced_softmax_loss(  # noqa: D417 (the Args shared with linear_bfs_loss are fragments)
    features: Tensor, weight: Tensor, target: Tensor, class_counts: CountsLike, bias: Optional[Tensor] = None, *,
    class_weights: Optional[CountsLike] = None,
    weight_decay: float = 0.0, chunk_size: Optional[int] = None, process_group: Optional[ProcessGroup] = None,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r""":func:`~longtail_losses.functional.balanced_softmax_loss` of a linear classifier, without its logits.

    Computes, class block by class block, the balanced softmax :cite:`ren2020balanced` of the logits
    :math:`z = x W^\top + b` and the gradients of ``features``, ``weight`` and ``bias``, never holding the
    :math:`(N, C)` logits or their gradient:

    .. math::
        \ell_n = \sum_{k=1}^{C} t_{n,k}\, v_k \Bigl(\log \sum_{c=1}^{C} n_c e^{z_{n,c}} - \log n_k - z_{n,k}\Bigr),
        \qquad \mathcal{L} = \operatorname{reduce}_n \ell_n + \frac{\lambda}{2} \lVert W \rVert_F^2

    with the target :math:`t_n = (1-\varepsilon)\,\mathbf{e}_{y_n} + \varepsilon / C` (``label_smoothing``
    :math:`\varepsilon`, default 0) and the class weights :math:`v` (``class_weights``, default ones): by default
    :math:`\ell_n = \log \sum_c n_c e^{z_{n,c}} - \log n_{y_n} - z_{n,y_n}`.

    It equals ``balanced_softmax_loss(features @ weight.T + bias, target, class_counts, label_smoothing=...)`` (plus
    the penalty), in value and gradients, up to rounding; with ``class_weights`` it is
    ``F.cross_entropy(features @ weight.T + bias + log n, target, weight=class_weights, ...)``, which is
    :func:`~torch.nn.functional.linear_cross_entropy` with ``linear_bias=bias + log n``. ``'mean'`` divides by
    :math:`\sum_n v_{y_n}` over the samples whose label is not ``ignore_index`` (their number without
    ``class_weights``; ``nan`` if it is 0), as cross-entropy's ``weight`` does. The penalty (``weight_decay``
    :math:`=\lambda`, default off) is added once to the reduced loss, so its gradient is exactly
    ``weight_decay * weight``; with ``reduction='none'`` it is spread evenly over the kept samples, as in
    :func:`~longtail_losses.functional.bwlm_loss`. Memory beyond the gradients is a few blocks of
    :math:`N \times` ``chunk_size`` elements; time is about that of the plain computation (one more matrix
    product). Half and bfloat16 inputs are computed in float32. Double backward is not supported.

    With ``process_group``, ``weight`` (and ``bias``) are this rank's contiguous slice of the classifier's rows,
    in rank order, and ``features``, ``target``, ``class_counts`` and ``class_weights`` (all C classes) are the same
    on every rank;
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
        >>> linear_balanced_softmax_loss(features, weight, torch.tensor([0, 1]), [90, 10], label_smoothing=0.1)
        tensor(0.8130)
        >>> linear_balanced_softmax_loss(features, weight, torch.tensor([0, 1]), [90, 10], class_weights=[1.0, 3.0])
        tensor(1.0996)
        >>> logits = features @ weight.T + torch.tensor([90.0, 10.0]).log()  # the same, as F.cross_entropy
        >>> torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]), weight=torch.tensor([1.0, 3.0]))
        tensor(1.0996)
    """
    return _linear(
        features, weight, target, class_counts, bias, (0.0, 0.0, 0.0), options,
        class_weights=class_weights, weight_decay=weight_decay, chunk_size=chunk_size, process_group=process_group,
    )  # fmt: skip


@fill  # the signature's lines grouped by hand: tensors, focal term, loss weights, penalty and blocks, options
def linear_bfs_loss(  # noqa: D417 (the Args shared with linear_balanced_softmax_loss are fragments)
    features: Tensor, weight: Tensor, target: Tensor, class_counts: CountsLike, bias: Optional[Tensor] = None, *,
    alpha: float = 0.1, beta: float = 0.9999, gamma: float = 1.0,
    class_weights: Optional[CountsLike] = None,
    weight_decay: float = 0.0, chunk_size: Optional[int] = None, process_group: Optional[ProcessGroup] = None,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r""":func:`~longtail_losses.functional.bfs_loss` (and BWLM) of a linear classifier, without its logits.

    Computes, class block by class block, the Balanced Focal Softmax of the BWLM paper :cite:`fan2024bwlm`
    (eq. 11) on the logits :math:`z = x W^\top + b`, and the gradients of ``features``, ``weight`` and ``bias``,
    never holding the :math:`(N, C)` logits or their gradient:

    .. math::
        \ell_n = \sum_{k=1}^{C} t_{n,k}\, v_k \Bigl(-\alpha\, w_k \sum_{c=1}^{C} (1-p^{(k)}_{n,c})^{\gamma}
          \log p^{(k)}_{n,c} - (1-\alpha) \log \frac{n_k e^{z_{n,k}}}{\sum_{c} n_c e^{z_{n,c}}}\Bigr),
        \qquad \mathcal{L} = \operatorname{reduce}_n \ell_n + \frac{\lambda}{2} \lVert W \rVert_F^2

    with :math:`p^{(k)}_{n,c} = \sigma(\pm z_{n,c})` (``+`` for :math:`c = k`), the class-balanced weights
    :math:`w` normalised to sum to C, as in :func:`~longtail_losses.functional.bfs_loss`, and the target
    :math:`t` and class weights :math:`v` of :func:`~longtail_losses.functional.linear_balanced_softmax_loss`: by
    default only :math:`k = y_n` remains, the BFS of the label. It equals
    ``bfs_loss(features @ weight.T + bias, target, class_counts, label_smoothing=...)``: a smoothed target gives
    the expected loss over the target distribution, its focal part computed block by block as
    :math:`\sum_c [(E - e_c) f(-z_c) + e_c f(z_c)]` (:math:`f` the focal term, :math:`e_c` the target's weight on
    class :math:`c`, :math:`E = \sum_c e_c`). With ``weight_decay`` :math:`=\lambda > 0` it is BWLM's loss
    (eq. 17, :func:`~longtail_losses.functional.bwlm_loss`): the penalty is added once to the reduced loss, its
    gradient is exactly ``weight_decay * weight`` and, with ``reduction='none'``, it is spread evenly over the
    kept samples. ``'mean'`` divides by :math:`\sum_n v_{y_n}` over the samples whose label is not
    ``ignore_index`` (their number without ``class_weights``). The focal term is computed from log-sigmoids
    (:math:`\log(1-p) = \log\sigma(-z)`), so it stays finite for any finite logits. Memory, dtypes, double backward
    and ``process_group`` are as in :func:`~longtail_losses.functional.linear_balanced_softmax_loss`.

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
        >>> linear_bfs_loss(features, weight, torch.tensor([0, 1]), [90, 10], beta=0.99, label_smoothing=0.1)
        tensor(0.7822)
        >>> linear_bfs_loss(features, weight, torch.tensor([0, 1]), [90, 10], beta=0.99, class_weights=[1.0, 3.0])
        tensor(1.0478)
    """
    return _linear(
        features, weight, target, class_counts, bias, (alpha, beta, gamma), options,
        class_weights=class_weights, weight_decay=weight_decay, chunk_size=chunk_size, process_group=process_group,
    )  # fmt: skip


class LinearBalancedSoftmax(WeightedLoss):
    r"""Module form of :func:`~longtail_losses.functional.linear_balanced_softmax_loss`: classifier and loss.

    It owns the classifier's ``weight`` :math:`(C, D)` and ``bias`` :math:`(C)` (initialised as
    :class:`~torch.nn.Linear` does) and ``forward(features, target)`` returns the loss without materialising the
    :math:`(N, C)` logits. For evaluation, :meth:`logits` returns them plainly, :meth:`iter_logits` block by block
    and :meth:`topk` the best classes without holding them. The class counts are an ``int64`` buffer and
    ``class_weights`` a float64 buffer (or ``None``), checked in ``__init__`` and by ``load_state_dict``, as those of
    :class:`~longtail_losses.LDAMLoss`: a checkpoint saved with or without them loads into a module built either way.

    With ``process_group`` the module holds only this rank's contiguous slice of the classes,
    :func:`~longtail_losses.losses.linear.shard_range` of the group's rank (``class_start``, ``num_local_classes``); see
    :func:`~longtail_losses.functional.linear_balanced_softmax_loss` for what each rank must pass and receives.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        in_features: Size :math:`D` of each feature vector.
        bias: Whether the classifier has a bias. Default: ``True``.
        device: Device of the parameters.
        dtype: Floating-point dtype of the parameters.
        class_weights: Per-class loss weights :math:`(C)`, finite and ``>= 0`` (all C classes, also when sharded), or
            ``None``. Default: ``None``.
        weight_decay: :math:`\lambda \ge 0` of the penalty on ``weight``. Default: ``0``.
        chunk_size: Classes per block; None picks about :math:`2^{16} / N`. Default: ``None``.
        process_group: Shard the classes over this group. Default: ``None``.
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args`` (checked on every call: the
            label range, a device sync): :ref:`call-options`.

    Shape:
        features: :math:`(N, D)`.
        target: :math:`(N)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Example:
        >>> head = LinearBalancedSoftmax([90, 10, 5], in_features=4, class_weights=[1.0, 2.0, 4.0], label_smoothing=0.1)
        >>> head
        LinearBalancedSoftmax(num_classes=3, in_features=4, bias=True, weight_decay=0.0, weighted=True,
          reduction='mean', ignore_index=-100, label_smoothing=0.1)
        >>> sorted(head.state_dict())
        ['bias', 'class_counts', 'class_weights', 'weight']
        >>> loss = head(torch.randn(8, 4), torch.randint(0, 3, (8,)))
        >>> loss.backward()
        >>> head.weight.grad.shape, head.logits(torch.randn(8, 4)).shape
        (torch.Size([3, 4]), torch.Size([8, 3]))
    """

    _hyperparameters: ClassVar[tuple[str, ...]] = ("weight_decay", "weighted")

    def __init__(  # lines grouped by hand: positional, the parameters, loss weights, penalty and blocks, options
        self, class_counts: CountsLike, in_features: int, *,
        bias: bool = True, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
        class_weights: Optional[CountsLike] = None,
        weight_decay: float = 0.0, chunk_size: Optional[int] = None, process_group: Optional[ProcessGroup] = None,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, class_weights, **options)
        self.in_features = check_int("in_features", in_features, 1)
        self.weight_decay = check_weight_decay(weight_decay)
        self.chunk_size = check_int("chunk_size", chunk_size, 1, optional=True)
        self.process_group = process_group
        start, stop = 0, self.num_classes
        if process_group is not None:
            import torch.distributed as dist

            start, stop = shard_range(stop, dist.get_rank(process_group), dist.get_world_size(process_group))
        self.class_start, self.num_local_classes = start, stop - start
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(stop - start, in_features, **factory))  # type: ignore[arg-type]
        self.bias = nn.Parameter(torch.empty(stop - start, **factory)) if bias else None  # type: ignore[arg-type]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``weight`` and ``bias`` as :class:`~torch.nn.Linear` does (uniform, bound ``1/sqrt(D)``)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        """Show the sizes and the hyperparameters in ``repr``."""
        fields = [f"in_features={self.in_features}", f"bias={self.bias is not None}"]
        if self.process_group is not None:
            fields.append(f"class_start={self.class_start}, num_local_classes={self.num_local_classes}")
        head, rest = super().extra_repr().split(", ", 1)
        return ", ".join([head, *fields, rest])

    @property
    def classifier_weight(self) -> Tensor:
        """The weight the penalty acts on, ``weight`` itself (read by ``training.warn_double_decay``)."""
        return self.weight

    def _hyper(self) -> tuple[float, float, float]:
        return (0.0, 0.0, 0.0)

    def forward(self, features: Tensor, target: Tensor) -> Tensor:
        """Compute the loss of the classifier's logits on ``features``; see :func:`linear_bfs_loss`."""
        return linear_loss(
            features,
            self.weight,
            target,
            self.class_counts,
            self.bias,
            self.options,
            self._hyper(),
            class_weights=self.class_weights,
            weight_decay=self.weight_decay,
            chunk_size=self.chunk_size,
            process_group=self.process_group,
            class_start=self.class_start,
        )

    def logits(self, features: Tensor) -> Tensor:
        """The plain logits ``features @ weight.T + bias`` (this rank's classes when sharded), shape (N, C)."""
        return F.linear(features, self.weight, self.bias)

    def iter_logits(self, features: Tensor, chunk_size: Optional[int] = None) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(first_class, logits)`` block by block: the logits of classes ``first_class, ...`` (global ids).

        Example:
            >>> head = LinearBalancedSoftmax([5, 4, 3, 2, 1], in_features=2)
            >>> [(start, tuple(z.shape)) for start, z in head.iter_logits(torch.randn(3, 2), chunk_size=2)]
            [(0, (3, 2)), (2, (3, 2)), (4, (3, 1))]
        """
        chunk = check_int("chunk_size", chunk_size, 1, optional=True) or self.chunk_size or default_chunk(len(features))
        for start in range(0, self.num_local_classes, chunk):
            stop = min(start + chunk, self.num_local_classes)
            bias = None if self.bias is None else self.bias[start:stop]
            yield self.class_start + start, F.linear(features, self.weight[start:stop], bias)

    @torch.no_grad()
    def topk(self, features: Tensor, k: int = 1, chunk_size: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """The ``k`` largest logits of each sample and their (global) classes, without holding all the logits.

        When sharded, the result covers this rank's classes only.

        Example:
            >>> head = LinearBalancedSoftmax([5, 4, 3, 2, 1], in_features=2, bias=False)
            >>> _ = head.weight.data.copy_(torch.arange(10.0).view(5, 2))
            >>> head.topk(torch.tensor([[1.0, 1.0], [-1.0, 0.0]]), k=2, chunk_size=2)
            (tensor([[17., 13.],
                    [ 0., -2.]]), tensor([[4, 3],
                    [0, 1]]))
        """
        values = features.new_empty(features.shape[0], 0)
        indices = values.long()
        for start, z in self.iter_logits(features, chunk_size):  # the best k of those so far and of this block
            ids = torch.arange(start, start + z.shape[1], device=z.device).expand_as(z)
            values, indices = torch.cat([values, z], dim=1), torch.cat([indices, ids], dim=1)
            top = values.topk(min(k, values.shape[1]), dim=1)
            values, indices = top.values, indices.gather(1, top.indices)
        return values, indices


class LinearBFS(LinearBalancedSoftmax):
    r"""Module form of :func:`~longtail_losses.functional.linear_bfs_loss`: classifier and BFS (or BWLM) loss.

    Like :class:`~longtail_losses.LinearBalancedSoftmax` (which see for
    :meth:`~longtail_losses.LinearBalancedSoftmax.logits`, :meth:`~longtail_losses.LinearBalancedSoftmax.iter_logits`,
    :meth:`~longtail_losses.LinearBalancedSoftmax.topk` and ``process_group``), with the focal term's
    hyperparameters. With ``weight_decay > 0`` it is BWLM's loss, eq. (17) of the paper.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        in_features: Size :math:`D` of each feature vector.
        alpha: Weight of the class-balanced focal term, in ``[0, 1]``. Default: ``0.1``.
        beta: Effective-number hyperparameter in ``[0, 1)``. Default: ``0.9999``.
        gamma: Focusing parameter ``>= 0``. Default: ``1.0``.
        **kwargs: ``bias``, ``device``, ``dtype``, ``class_weights`` and the options (``weight_decay``,
            ``reduction``, ``label_smoothing``, ...): as for :class:`LinearBalancedSoftmax`.

    Shape:
        features: :math:`(N, D)`.
        target: :math:`(N)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Example:
        >>> head = LinearBFS([90, 10, 5], in_features=4, weight_decay=5e-3)
        >>> head
        LinearBFS(num_classes=3, in_features=4, bias=True, alpha=0.1, beta=0.9999, gamma=1.0, weight_decay=0.005,
          weighted=False, reduction='mean', ignore_index=-100)
        >>> features, target = torch.randn(8, 4), torch.randint(0, 3, (8,))
        >>> loss = head(features, target)
        >>> plain = torch.nn.functional.linear(features, head.weight, head.bias)
        >>> from longtail_losses.functional import bwlm_loss
        >>> torch.allclose(loss, bwlm_loss(plain, target, [90, 10, 5], head.weight, weight_decay=5e-3))
        True
    """

    _hyperparameters = ("alpha", "beta", "gamma", "weight_decay", "weighted")

    def __init__(  # the signature's lines grouped by hand, as linear_bfs_loss's: the positional ones, the focal term
        self, class_counts: CountsLike, in_features: int, *,
        alpha: float = 0.1, beta: float = 0.9999, gamma: float = 1.0, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(class_counts, in_features, **kwargs)  # bias, weight_decay, options: as LinearBalancedSoftmax
        self.alpha, self.beta, self.gamma = check_bfs(alpha, beta, gamma)

    def _hyper(self) -> tuple[float, float, float]:
        return (self.alpha, self.beta, self.gamma)
