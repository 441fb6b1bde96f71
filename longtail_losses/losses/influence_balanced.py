r"""Influence-balanced loss (Park et al., ICCV 2021): each sample's loss divided by its influence.

The influence of a sample is approximated by the L1 norm of the loss gradient with respect to the logits times the
L1 norm of the penultimate features (the classifier's input), so the loss needs the features as a third input:
it cannot be a plain ``(logits, target)`` loss. :class:`IBLoss` also carries the epoch schedule of the paper
(plain cross-entropy before ``start_epoch``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from longtail_losses._docstrings import fill
from longtail_losses._validation import CountsLike, check_bool, check_finite, check_int, check_tensor
from longtail_losses.losses import _engine
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack

__all__ = ["IBLoss", "influence_balanced_loss"]


def _inverse_weights(counts: Tensor, dtype: torch.dtype) -> Tensor:
    # The released code's IBReweight: 1 / n_j, normalised to sum to C.
    inverse = 1.0 / counts.to(dtype)
    return inverse * (counts.shape[0] / inverse.sum())


def _feature_norms(features: Tensor, logits: Tensor) -> Tensor:
    """The L1 norm of every row's features: (D,), (N, D) or (N, D, d1, ..., dk) -> (M,)."""
    check_tensor("features", features)
    if not features.dtype.is_floating_point:
        raise TypeError(f"Expected `features` to be a floating-point tensor, but got dtype {features.dtype}")
    expected = logits.shape[:1] + logits.shape[2:] if logits.ndim > 1 else ()
    got = features.shape[:1] + features.shape[2:] if features.ndim > 1 else ()
    if features.ndim != max(logits.ndim, 1) or got != expected:
        want = "(D,)" if logits.ndim == 1 else f"({logits.shape[0]}, D{''.join(f', {d}' for d in logits.shape[2:])})"
        raise ValueError(
            f"Expected `features` to have shape {want} to match logits {tuple(logits.shape)}, "
            f"but got {tuple(features.shape)}"
        )
    return features.abs().sum(dim=0 if features.ndim == 1 else 1).reshape(-1)


def _ib(
    logits: Tensor, target: Tensor, features: Tensor, counts: Tensor, options: _engine.CallOptions, *,
    alpha: float, epsilon: float, reweight: bool,
) -> Tensor:  # fmt: skip
    rows = _engine.prepare(logits, target, counts.shape[0], options)
    z = rows.logits
    norms = _feature_norms(features, logits).to(z.dtype)
    w = _inverse_weights(counts.to(z.device), z.dtype) if reweight else None
    if rows.probs is None:
        assert rows.labels is not None
        goal = (torch.arange(z.shape[1], device=z.device) == rows.labels.unsqueeze(1)).to(z.dtype)
    else:
        goal = rows.probs
    # The L1 norm of the cross-entropy's logit gradient, softmax(z) - t, times the L1 norm of the features.
    influence = (torch.softmax(z, dim=1) - goal).abs().sum(dim=1) * norms
    per_row = _engine.softmax_per_row(rows, class_weights=w) * (alpha / (influence + epsilon))
    return _engine.finish(per_row, rows, options.reduction)


def _check_ib(alpha: object, epsilon: object, reweight: object) -> tuple[float, float, bool]:
    return (
        check_finite("alpha", alpha, low=0.0, strict=True),
        check_finite("epsilon", epsilon, low=0.0, strict=True),
        check_bool("reweight", reweight),
    )


def influence_balanced_loss(
    logits: Tensor, target: Tensor, features: Tensor, class_counts: CountsLike, *,
    alpha: float = 1000.0, epsilon: float = 1e-3, reweight: bool = True,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
    r"""Influence-balanced loss :cite:`park2021ib`: cross-entropy divided by each sample's influence.

    .. math::
        \ell_{IB}(z, y, h) = \frac{\alpha\, w_y\, \mathrm{CE}(z, y)}
        {\lVert \operatorname{softmax}(z) - e_y \rVert_1 \, \lVert h \rVert_1 + \epsilon},

    where :math:`h` are the sample's penultimate features (the input of the linear classifier that produced
    :math:`z`), :math:`\lVert \operatorname{softmax}(z) - e_y\rVert_1` is the L1 norm of the gradient of the
    cross-entropy with respect to the logits, and :math:`w_y` the class weight, with ``reweight=True``
    :math:`w_j = C\, n_j^{-1} / \sum_i n_i^{-1}` (the released code's ``IBReweight``; ``reweight=False``:
    :math:`w = 1`). This follows Park et al.'s released code (``IBLoss``; :math:`\alpha = 1000`,
    :math:`\epsilon = 10^{-3}`, used from epoch 100 of 200 on CIFAR, plain cross-entropy before: see
    :class:`IBLoss`), including that the influence term is **not** detached: the gradient also flows through
    the denominator, into the logits and the features. The equation numbers of the paper were not checked
    against its text.

    **Probability targets** :math:`t` (and ``label_smoothing``) use :math:`\lVert\operatorname{softmax}(z) -
    t\rVert_1`, the logit gradient of the cross-entropy with :math:`t`, and the expected weighted cross-entropy
    :math:`\sum_k t_k w_k \mathrm{CE}(z, k)`. ``'mean'`` divides by the number of samples whose label is not
    ``ignore_index`` (the code's ``.mean()``; not by the summed weights), by the number of samples for
    probability targets. Half and bfloat16 logits are computed (and returned) in float32.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities of the shape of
            ``logits``.
        features: The penultimate features :math:`h` of every sample (the classifier's input), e.g. from a forward
            pre-hook on the classifier; their L1 norm is taken over dimension 1 (0 unbatched).
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        alpha: Scale :math:`\alpha > 0` of the loss.
        epsilon: :math:`\epsilon > 0` in the denominator.
        reweight: Weigh classes by their inverse frequency (normalised to sum to C).
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).
        features: :math:`(D)`, :math:`(N, D)` or :math:`(N, D, d_1, ..., d_k)`: the shape of ``logits`` with
        :math:`D` features in place of the :math:`C` classes.
        output: a scalar, or the shape of the class-index target if ``reduction='none'`` (zero where ignored).

    Raises:
        TypeError: If ``logits`` or ``features`` is not floating point, or ``target`` is neither integer nor
            floating point.
        ValueError: If the shapes disagree, a count or label is invalid, or ``alpha``/``epsilon`` are not positive.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> features = torch.tensor([[1.0, -0.5, 0.5], [0.2, 0.1, 0.0]])
        >>> influence_balanced_loss(logits, torch.tensor([0, 1]), features, [90, 10])
        tensor(1762.9963)
    """
    alpha, epsilon, reweight = _check_ib(alpha, epsilon, reweight)
    counts, checked = _engine.function_args(logits, class_counts, options)
    return _ib(logits, target, features, counts, checked, alpha=alpha, epsilon=epsilon, reweight=reweight)


@fill
class IBLoss(CountsLoss):
    r"""Module form of :func:`influence_balanced_loss`, with its start epoch: ``criterion(logits, target, features)``.

    Before ``start_epoch`` it is plain :func:`~torch.nn.functional.cross_entropy` (unweighted, ``features`` not
    needed), from ``start_epoch`` on the influence-balanced loss, as in Park et al.'s code (which starts at epoch
    100 of 200 on CIFAR: the representation must first be trained for the influence to mean something). Tell it
    the epoch with :meth:`set_epoch` at the start of every epoch (or assign :attr:`epoch`); the epoch is saved in
    ``state_dict``. ``features`` are the inputs of the linear classifier, one row per sample; a forward
    pre-hook gets them without changing the model::

        criterion = IBLoss(counts, start_epoch=100)
        captured = {}
        model.fc.register_forward_pre_hook(lambda module, args: captured.update(features=args[0]))
        for epoch in range(200):
            criterion.set_epoch(epoch)
            for x, y in loader:
                loss = criterion(model(x), y, captured["features"])
                ...

    Args:
        class_counts: Training samples per class, all ``> 0``.
        alpha: Scale of the loss, ``> 0``. Default: ``1000.0`` (Park et al.'s code).
        epsilon: Added to the influence, ``> 0``. Default: ``1e-3`` (Park et al.'s code).
        reweight: Inverse-frequency class weights. Default: ``True`` (the code's ``IBReweight``).
        start_epoch: The first epoch (counted from 0) with the influence-balanced loss, ``>= 0``. Default: ``0``.
        {module_options}

    Shape:
        {logits_shape}
        features: the shape of ``logits`` with :math:`D` features in place of the :math:`C` classes.

    Example:
        >>> criterion = IBLoss([90, 10], start_epoch=1)
        >>> criterion
        IBLoss(num_classes=2, alpha=1000.0, epsilon=0.001, reweight=True, start_epoch=1, epoch=0, reduction='mean', ignore_index=-100)
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> criterion(logits, target)  # epoch 0: cross-entropy
        tensor(0.2201)
        >>> criterion.set_epoch(1)
        >>> criterion(logits, target, torch.tensor([[1.0, -0.5, 0.5], [0.2, 0.1, 0.0]]))
        tensor(1762.9963)
    """  # noqa: E501

    epoch_tensor: Tensor
    _hyperparameters = ("alpha", "epsilon", "reweight", "start_epoch", "epoch")

    def __init__(
        self, class_counts: CountsLike, *,
        alpha: float = 1000.0, epsilon: float = 1e-3, reweight: bool = True, start_epoch: int = 0,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, **options)
        self.alpha, self.epsilon, self.reweight = _check_ib(alpha, epsilon, reweight)
        self.start_epoch = check_int("start_epoch", start_epoch, 0)
        self.register_buffer("epoch_tensor", torch.zeros((), dtype=torch.int64))

    @property
    def epoch(self) -> int:
        """The current epoch (saved in ``state_dict`` as ``epoch_tensor``)."""
        return int(self.epoch_tensor)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.epoch_tensor.fill_(check_int("epoch", value, 0))

    def set_epoch(self, epoch: int) -> None:
        """Set the current epoch (call it at the start of every epoch, like a sampler's ``set_epoch``)."""
        self.epoch = epoch

    @property
    def active(self) -> bool:
        """Whether the influence-balanced loss is used (``epoch >= start_epoch``)."""
        return self.epoch >= self.start_epoch

    def forward(self, logits: Tensor, target: Tensor, features: Optional[Tensor] = None) -> Tensor:
        """Cross-entropy before ``start_epoch``, then :func:`influence_balanced_loss` (``features`` required)."""
        if not self.active:
            rows = _engine.prepare(logits, target, self.num_classes, self.options)
            return _engine.finish(_engine.softmax_per_row(rows), rows, self.reduction)
        if features is None:
            raise ValueError(
                f"Expected `features` (the classifier's inputs) from epoch {self.start_epoch} on, but got None at "
                f"epoch {self.epoch}"
            )
        return _ib(
            logits, target, features, self.class_counts, self.options,
            alpha=self.alpha, epsilon=self.epsilon, reweight=self.reweight,
        )  # fmt: skip
