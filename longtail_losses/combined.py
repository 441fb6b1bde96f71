"""BFS (Balanced Focal Softmax) and BWLM (BFS plus the classifier-norm penalty), Fan et al. 2024."""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

from longtail_losses._common import CountsLoss, run_loss
from longtail_losses._fused import fused_loss, use_fast_path
from longtail_losses._validation import (
    CountsLike,
    check_alpha,
    check_beta,
    check_gamma,
    check_weight_decay,
    check_weight_matrix,
)
from longtail_losses.balanced_softmax import _balanced_softmax, _reference_balanced_softmax_per_sample
from longtail_losses.class_balanced import _class_balanced_weights, _reference_class_balanced_focal_per_sample
from longtail_losses.regularizers import classifier_norm_penalty

__all__ = ["BFS", "BWLM", "bfs_loss", "bwlm_loss"]

ClassifierLike = Union[nn.Module, Tensor]


def _bfs_per_sample(
    logits: Tensor, target: Tensor, keep: Tensor, counts: Tensor, alpha: float, beta: float, gamma: float
) -> Tensor:
    """Per-sample BFS; the fused fast path (both terms in one pass) when it applies, else the reference."""
    if not use_fast_path(logits):
        return _reference_bfs_per_sample(logits, target, keep, counts, alpha, beta, gamma)
    per_sample = fused_loss(
        logits,
        target,
        log_counts=counts.to(logits.dtype).log() if alpha < 1.0 else None,
        weights=_class_balanced_weights(counts, beta, logits.dtype) if alpha > 0.0 else None,
        alpha=alpha,
        gamma=gamma,
        reference=lambda z: _reference_bfs_per_sample(z, target, keep, counts, alpha, beta, gamma),
    )
    return torch.where(keep, per_sample, 0.0)


def _reference_bfs_per_sample(
    logits: Tensor, target: Tensor, keep: Tensor, counts: Tensor, alpha: float, beta: float, gamma: float
) -> Tensor:
    """Reference path: the two reference terms mixed per sample, zero where ``keep`` is False."""
    # alpha = 0 or 1 skips the unused term: the result is then exactly the other loss.
    if alpha == 1.0:
        return _reference_class_balanced_focal_per_sample(logits, target, keep, counts, beta, gamma)
    balanced_softmax = _reference_balanced_softmax_per_sample(logits, target, keep, counts)
    if alpha == 0.0:
        return balanced_softmax
    focal = _reference_class_balanced_focal_per_sample(logits, target, keep, counts, beta, gamma)
    return alpha * focal + (1.0 - alpha) * balanced_softmax


def bfs_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    *,
    alpha: float = 0.1,
    beta: float = 0.9999,
    gamma: float = 1.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    validate_args: bool = True,
) -> Tensor:
    r"""Balanced Focal Softmax loss, eq. (11)–(13) of the BWLM paper :cite:`fan2024bwlm`.

    A per-sample mixture of the class-balanced sigmoid focal loss (:func:`class_balanced_focal_loss`, which
    favours the common classes) and the balanced softmax (:func:`balanced_softmax_loss`, which favours the
    rare ones):

    .. math::
        \ell_{BFS}(z, y) = \alpha\, \ell_{CB}(z, y) + (1-\alpha)\, \ell_{BS}(z, y)
        = -\alpha\, w_y \sum_{j=1}^{C} (1-p^t_j)^{\gamma} \log p^t_j
          - (1-\alpha) \log \frac{n_y e^{z_y}}{\sum_{i} n_i e^{z_i}}

    with the conventions of the two parts: :math:`w` normalised to sum to C, sigmoid :math:`p^t_j`.
    ``alpha=1`` gives exactly :func:`class_balanced_focal_loss` and ``alpha=0`` exactly
    :func:`balanced_softmax_loss`. The default ``alpha=0.1`` is the paper's recommendation (section 4.3).
    ``'mean'`` averages the per-sample mixture over the samples that are not ignored.

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)``, or ``ignore_index``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        alpha: Weight :math:`\alpha \in [0, 1]` of the class-balanced focal term.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)` of the focal term.
        gamma: Focusing parameter :math:`\gamma \ge 0` of the focal term.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        ignore_index: Label whose samples contribute nothing.
        validate_args: Check tensor values (counts, label range); this synchronises with the device.

    Shape:
        logits: :math:`(N, C)`.
        target: :math:`(N)`.
        class_counts: :math:`(C)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Raises:
        TypeError: If ``logits`` is not floating point or ``target`` is not an integer tensor.
        ValueError: If the shapes disagree, a count or label is invalid, or a hyperparameter is out of range.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> target = torch.tensor([0, 1])
        >>> bfs_loss(logits, target, [90, 10], alpha=0.1, beta=0.99)
        tensor(0.7064)
    """
    return _bfs(logits, target, class_counts, alpha, beta, gamma, reduction, ignore_index, validate_args, validate_args)


def _bfs(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    alpha: float,
    beta: float,
    gamma: float,
    reduction: str,
    ignore_index: int,
    check_labels: bool,
    check_counts: bool,
) -> Tensor:
    alpha, beta, gamma = check_alpha(alpha), check_beta(beta), check_gamma(gamma)
    if alpha == 0.0:  # exactly balanced softmax, by the same code path
        return _balanced_softmax(logits, target, class_counts, reduction, ignore_index, check_labels, check_counts)

    def per_sample(z: Tensor, y: Tensor, keep: Tensor, counts: Tensor) -> Tensor:
        return _bfs_per_sample(z, y, keep, counts, alpha, beta, gamma)

    return run_loss(per_sample, logits, target, class_counts, reduction, ignore_index, check_labels, check_counts)


def _add_penalty(loss: Tensor, target: Tensor, ignore_index: int, penalty: Tensor, reduction: str) -> Tensor:
    penalty = penalty.to(loss.dtype)
    if reduction != "none":
        return loss + penalty
    # Spread the penalty over the kept samples, so that the result summed equals reduction="sum".
    keep = target != ignore_index
    return loss + keep.to(loss.dtype) * (penalty / keep.sum().clamp_min(1))


def bwlm_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    weight: ClassifierLike,
    *,
    alpha: float = 0.1,
    beta: float = 0.9999,
    gamma: float = 1.0,
    weight_decay: float = 5e-3,
    reduction: str = "mean",
    ignore_index: int = -100,
    validate_args: bool = True,
) -> Tensor:
    r"""Balanced Weight Learning Mechanism loss, eq. (17) of the BWLM paper :cite:`fan2024bwlm`.

    :func:`bfs_loss` plus the classifier-norm penalty (:func:`classifier_norm_penalty`) on the rows
    :math:`\theta_j` of the classifier's weight (the bias is excluded):

    .. math::
        \mathcal{L}_{BWLM} = \operatorname{reduce}_n \ell_{BFS}(z_n, y_n)
        + \frac{\lambda}{2} \sum_{j=1}^{C} \lVert \theta_j \rVert_2^2

    The penalty is added once to the reduced loss, so its gradient is exactly ``weight_decay * theta``: the same
    update as SGD's ``weight_decay`` on the classifier, which is how the paper's :math:`\lambda` (eq. 14, from
    Alshammari et al. :cite:`alshammari2022long`) transfers. The paper writes :math:`\lambda\lVert\theta\rVert^2`;
    this factor of 2 is the library's one convention to remember. With ``reduction='none'`` the penalty is
    spread evenly over the samples that are not ignored, so the result summed equals ``reduction='sum'``.

    Args:
        logits: Unnormalised class scores :math:`z`, produced by ``weight``.
        target: Class indices in ``[0, C)``, or ``ignore_index``.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        weight: The classifier's weight :math:`\theta` (one row per class) or the classifier module itself
            (anything with a 2-D ``.weight``, such as :class:`~torch.nn.Linear`).
        alpha: Weight :math:`\alpha \in [0, 1]` of the class-balanced focal term.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)`.
        gamma: Focusing parameter :math:`\gamma \ge 0`.
        weight_decay: :math:`\lambda \ge 0`; the penalty's gradient is ``weight_decay * theta``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        ignore_index: Label whose samples contribute nothing.
        validate_args: Check tensor values (counts, label range); this synchronises with the device.

    Shape:
        logits: :math:`(N, C)`.
        target: :math:`(N)`.
        class_counts: :math:`(C)`.
        weight: :math:`(C, D)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If the shapes disagree (including ``weight`` rows vs. ``C``), a count or label is invalid,
            or a hyperparameter is out of range.

    Example:
        >>> fc = torch.nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> loss = bwlm_loss(logits, torch.tensor([0, 1]), [90, 10], fc, beta=0.99, weight_decay=0.1)
        >>> round(loss.item(), 4)  # bfs_loss 0.7064 plus 0.1 / 2 * (1 + 4)
        0.9564
    """
    return _bwlm(
        logits,
        target,
        class_counts,
        weight,
        alpha,
        beta,
        gamma,
        weight_decay,
        reduction,
        ignore_index,
        validate_args,
        validate_args,
    )


def _bwlm(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    weight: ClassifierLike,
    alpha: float,
    beta: float,
    gamma: float,
    weight_decay: float,
    reduction: str,
    ignore_index: int,
    check_labels: bool,
    check_counts: bool,
) -> Tensor:
    w = check_weight_matrix(weight, "weight")
    loss = _bfs(logits, target, class_counts, alpha, beta, gamma, reduction, ignore_index, check_labels, check_counts)
    if w.shape[0] != logits.shape[1]:
        raise ValueError(
            f"Expected `weight` to have one row per class ({logits.shape[1]}), but got shape {tuple(w.shape)}"
        )
    return _add_penalty(loss, target, ignore_index, classifier_norm_penalty(w, weight_decay=weight_decay), reduction)


class BFS(CountsLoss):
    r"""Module form of :func:`bfs_loss`: :math:`\alpha\,\ell_{CB} + (1-\alpha)\,\ell_{BS}` (paper eq. 11).

    Args:
        class_counts: Training samples per class, all ``> 0``.
        alpha: Weight of the class-balanced focal term, in ``[0, 1]``. Default: ``0.1`` (the paper's advice).
        beta: Effective-number hyperparameter in ``[0, 1)``. Default: ``0.9999`` (Cui et al., CIFAR).
        gamma: Focusing parameter ``>= 0``. Default: ``1.0`` (Cui et al., CIFAR; they used ``beta=0.999``,
            ``gamma=0.5`` on ImageNet).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        ignore_index: Label to ignore. Default: ``-100``.
        validate_args: Check the label range on every call (a device sync). Default: ``True``.

    Shape:
        logits: :math:`(N, C)`.
        target: :math:`(N)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Example:
        >>> criterion = BFS([90, 10], alpha=0.1, beta=0.99)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.7064)
    """

    _hyperparameters: tuple[str, ...] = ("alpha", "beta", "gamma")

    def __init__(
        self,
        class_counts: CountsLike,
        *,
        alpha: float = 0.1,
        beta: float = 0.9999,
        gamma: float = 1.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        validate_args: bool = True,
    ) -> None:
        super().__init__(class_counts, reduction=reduction, ignore_index=ignore_index, validate_args=validate_args)
        self.alpha = check_alpha(alpha)
        self.beta = check_beta(beta)
        self.gamma = check_gamma(gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`bfs_loss`."""
        return _bfs(
            logits,
            target,
            self.class_counts,
            self.alpha,
            self.beta,
            self.gamma,
            self.reduction,
            self.ignore_index,
            self.validate_args,
            False,
        )


class BWLM(BFS):
    r"""Module form of :func:`bwlm_loss`: :class:`BFS` plus :math:`\frac{\lambda}{2}\sum_j\lVert\theta_j\rVert^2`.

    The classifier is referenced, not owned: it is not registered as a submodule, so its parameters appear
    neither in ``criterion.parameters()`` nor in ``criterion.state_dict()`` (optimise ``model.parameters()`` as
    usual), and the penalty always reads the classifier's current ``.weight``. Use it in stage 2 of the
    two-stage method, where only the new classifier trains; the penalty's gradient is exactly
    ``weight_decay * theta``, so do not also give that parameter an optimizer ``weight_decay``.

    Args:
        class_counts: Training samples per class, all ``> 0``.
        classifier: The module producing the logits (anything with a 2-D ``.weight`` of shape (C, D), e.g.
            ``model.fc``), or that weight tensor itself.
        alpha: Weight of the class-balanced focal term, in ``[0, 1]``. Default: ``0.1``.
        beta: Effective-number hyperparameter in ``[0, 1)``. Default: ``0.9999``.
        gamma: Focusing parameter ``>= 0``. Default: ``1.0``.
        weight_decay: :math:`\lambda \ge 0`. Default: ``5e-3``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
        ignore_index: Label to ignore. Default: ``-100``.
        validate_args: Check the label range on every call (a device sync). Default: ``True``.

    Shape:
        logits: :math:`(N, C)`.
        target: :math:`(N)`.
        output: a scalar, or :math:`(N)` if ``reduction='none'``.

    Example:
        >>> fc = torch.nn.Linear(3, 2)
        >>> criterion = BWLM([90, 10], classifier=fc, alpha=0.1, weight_decay=5e-3)
        >>> criterion
        BWLM(num_classes=2, alpha=0.1, beta=0.9999, gamma=1.0, weight_decay=0.005, reduction='mean', ignore_index=-100)
        >>> loss = criterion(fc(torch.randn(4, 3)), torch.tensor([0, 1, 1, 0]))
        >>> loss.backward()
        >>> fc.weight.grad.shape
        torch.Size([2, 3])
    """

    _hyperparameters = ("alpha", "beta", "gamma", "weight_decay")

    def __init__(
        self,
        class_counts: CountsLike,
        *,
        classifier: ClassifierLike,
        alpha: float = 0.1,
        beta: float = 0.9999,
        gamma: float = 1.0,
        weight_decay: float = 5e-3,
        reduction: str = "mean",
        ignore_index: int = -100,
        validate_args: bool = True,
    ) -> None:
        super().__init__(
            class_counts,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            reduction=reduction,
            ignore_index=ignore_index,
            validate_args=validate_args,
        )
        weight = check_weight_matrix(classifier, "classifier")
        if weight.shape[0] != self.num_classes:
            raise ValueError(
                f"Expected `classifier` weight to have one row per class ({self.num_classes}), "
                f"but got shape {tuple(weight.shape)}"
            )
        self.weight_decay = check_weight_decay(weight_decay)
        # A plain tuple keeps the classifier out of this module's parameters, state_dict and .to().
        self._classifier: tuple[ClassifierLike] = (classifier,)

    @property
    def classifier_weight(self) -> Tensor:
        r"""The classifier weight :math:`\theta` that the penalty acts on, shape (C, D)."""
        return check_weight_matrix(self._classifier[0], "classifier")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`bwlm_loss`."""
        return _bwlm(
            logits,
            target,
            self.class_counts,
            self.classifier_weight,
            self.alpha,
            self.beta,
            self.gamma,
            self.weight_decay,
            self.reduction,
            self.ignore_index,
            self.validate_args,
            False,
        )
