"""BFS (Balanced Focal Softmax) and BWLM (BFS plus the classifier-norm penalty), Fan et al. 2024."""

from __future__ import annotations

import copy
from typing import Any, Callable, ClassVar, Optional, Union

from torch import Tensor, nn

from longtail_losses._docstrings import fill
from longtail_losses._validation import (
    CountsLike,
    check_bfs,
    check_weight_decay,
    check_weight_matrix,
    replaced_classifiers,
)
from longtail_losses.losses import _engine, _kernel
from longtail_losses.losses._base import CountsLoss
from longtail_losses.losses._engine import LossOptions, Unpack
from longtail_losses.losses.regularizers import norm_penalty

__all__ = ["BFS", "BWLM", "bfs_loss", "bwlm_loss"]

ClassifierLike = Union[nn.Module, Tensor]


@fill
def bfs_loss(
    logits: Tensor, target: Tensor, class_counts: CountsLike, *,
    alpha: float = 0.1, beta: float = 0.9999, gamma: float = 1.0,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
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
    ``'mean'`` averages the per-sample mixture over the samples that are not ignored. Probability targets
    (and ``label_smoothing``) mix both terms in the same way, each term being the expected loss over the target
    distribution (see :func:`class_balanced_focal_loss`).

    Args:
        logits: Unnormalised class scores :math:`z`.
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        alpha: Weight :math:`\alpha \in [0, 1]` of the class-balanced focal term.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)` of the focal term.
        gamma: Focusing parameter :math:`\gamma \ge 0` of the focal term.
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        {logits_shape}

    Raises:
        TypeError: If ``logits`` is not floating point or ``target`` is not an integer tensor.
        ValueError: If the shapes disagree, a count or label is invalid, or a hyperparameter is out of range.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> target = torch.tensor([0, 1])
        >>> bfs_loss(logits, target, [90, 10], alpha=0.1, beta=0.99)
        tensor(0.7064)
    """
    alpha, beta, gamma = check_bfs(alpha, beta, gamma)
    counts, checked = _engine.function_args(logits, class_counts, options)
    return _engine.mixture_loss(logits, target, counts, checked, alpha=alpha, beta=beta, gamma=gamma, tau=1.0)


def bwlm_loss(
    logits: Tensor, target: Tensor, class_counts: CountsLike, classifier: ClassifierLike, *,
    alpha: float = 0.1, beta: float = 0.9999, gamma: float = 1.0, weight_decay: float = 5e-3,
    **options: Unpack[LossOptions],
) -> Tensor:  # fmt: skip
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
    spread evenly over the samples that are not ignored (over all of them when every one is ignored), so the
    result summed equals ``reduction='sum'``; an empty batch has no entry to carry it, so its ``'none'`` result is
    empty while ``'sum'`` and ``'mean'`` still hold the penalty.

    Args:
        logits: Unnormalised class scores :math:`z`, produced by ``classifier``.
        target: Class indices in ``[0, C)`` or ``ignore_index``, or class probabilities.
        class_counts: Training samples per class :math:`n_j`, all ``> 0``.
        classifier: The classifier module (anything with a 2-D ``.weight``, such as :class:`~torch.nn.Linear`)
            or its weight :math:`\theta` itself, one row per class.
        alpha: Weight :math:`\alpha \in [0, 1]` of the class-balanced focal term.
        beta: Effective-number hyperparameter :math:`\beta \in [0, 1)`.
        gamma: Focusing parameter :math:`\gamma \ge 0`.
        weight_decay: :math:`\lambda \ge 0`; the penalty's gradient is ``weight_decay * theta``.
        **options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``: :ref:`call-options`.

    Shape:
        logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.
        target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).
        classifier: weight :math:`(C, D)`.
        output: a scalar, or the shape of the class-index target if ``reduction='none'``.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If the shapes disagree (including the classifier's rows vs. ``C``), a count or label is invalid,
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
    alpha, beta, gamma = check_bfs(alpha, beta, gamma)
    penalty = _penalty(check_weight_matrix(classifier), check_weight_decay(weight_decay), logits)
    counts, checked = _engine.function_args(logits, class_counts, options)
    hyper: dict[str, Any] = {"alpha": alpha, "beta": beta, "gamma": gamma, "tau": 1.0}
    return _engine.mixture_loss(logits, target, counts, checked, **hyper, penalty=penalty)


def _penalty(weight: Tensor, weight_decay: float, logits: Tensor) -> Callable[[], Tensor]:
    """The penalty of :func:`~longtail_losses.losses._engine.mixture_loss`, called once the logits are checked.

    ``weight`` and ``weight_decay`` come checked; only the rows against the logits' classes are left to check.
    """

    def penalty() -> Tensor:
        check_weight_matrix(weight, num_classes=logits.shape[0 if logits.ndim == 1 else 1])
        return norm_penalty(weight, weight_decay)

    return penalty


@fill
class BFS(CountsLoss):
    r"""Module form of :func:`bfs_loss`: :math:`\alpha\,\ell_{CB} + (1-\alpha)\,\ell_{BS}` (paper eq. 11).

    Args:
        class_counts: Training samples per class, all ``> 0``.
        alpha: Weight of the class-balanced focal term, in ``[0, 1]``. Default: ``0.1`` (the paper's advice).
        beta: Effective-number hyperparameter in ``[0, 1)``. Default: ``0.9999`` (Cui et al., CIFAR).
        gamma: Focusing parameter ``>= 0``. Default: ``1.0`` (Cui et al., CIFAR; they used ``beta=0.999``,
            ``gamma=0.5`` on ImageNet).
        {module_options}

    Shape:
        {logits_shape}

    Example:
        >>> criterion = BFS([90, 10], alpha=0.1, beta=0.99)
        >>> criterion(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.7064)
    """

    _hyperparameters: ClassVar[tuple[str, ...]] = ("alpha", "beta", "gamma")

    def __init__(
        self, class_counts: CountsLike, *,
        alpha: float = 0.1, beta: float = 0.9999, gamma: float = 1.0,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, **options)
        self.alpha, self.beta, self.gamma = check_bfs(alpha, beta, gamma)

    def _loss(self, logits: Tensor, target: Tensor, penalty: Optional[Callable[[], Tensor]] = None) -> Tensor:
        hyper = {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "tau": 1.0}
        return _engine.mixture_loss(logits, target, self.class_counts, self.options, **hyper, penalty=penalty)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`bfs_loss`."""
        return self._loss(logits, target)


@fill
class BWLM(BFS):
    r"""Module form of :func:`bwlm_loss`: :class:`BFS` plus :math:`\frac{\lambda}{2}\sum_j\lVert\theta_j\rVert^2`.

    The classifier is referenced, not owned: it is not registered as a submodule, so its parameters appear
    neither in ``criterion.parameters()`` nor in ``criterion.state_dict()`` (optimise ``model.parameters()`` as
    usual), and the penalty always reads the classifier's current ``.weight``. The penalty's gradient is exactly
    ``weight_decay * theta``, so do not also give that parameter an optimizer ``weight_decay``
    (:func:`~longtail_losses.training.warn_double_decay` checks). Every "W" row of the paper (+CEW, +CBW, +BSW,
    +BWLM) is a ``BWLM``: ``alpha=1`` is the class-balanced focal loss, ``alpha=0`` balanced softmax, and
    ``alpha=0`` with equal counts plain cross-entropy.

    Copies follow the live classifier: ``copy.deepcopy(criterion)`` refers to the same classifier, or to its copy
    when the same ``deepcopy`` call copies it too (e.g. ``deepcopy({{"loss": criterion, "model": model}})``, in any
    order: the copy looks its classifier up in that call's memo on first use). Pickling (``pickle``,
    ``torch.save``) is refused, because the classifier would be saved as a detached copy: save
    ``criterion.state_dict()`` and build a new ``BWLM`` on the restored model. After
    :func:`longtail_losses.twostage.replace_classifier` swaps the layer out, calling the criterion raises until
    :meth:`rebind` points it at the new layer (the library records the replacement on its side; it writes
    nothing onto your layer).

    Args:
        class_counts: Training samples per class, all ``> 0``.
        classifier: The module producing the logits (anything with a ``.weight`` with one row per class, e.g.
            ``model.fc``, or a 1x1 convolution), or that weight tensor itself.
        alpha: Weight of the class-balanced focal term, in ``[0, 1]``. Default: ``0.1``.
        beta: Effective-number hyperparameter in ``[0, 1)``. Default: ``0.9999``.
        gamma: Focusing parameter ``>= 0``. Default: ``1.0``.
        weight_decay: :math:`\lambda \ge 0`. Default: ``5e-3``.
        {module_options}

    Shape:
        {logits_shape}

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
        self, class_counts: CountsLike, *,
        classifier: ClassifierLike, alpha: float = 0.1, beta: float = 0.9999, gamma: float = 1.0,
        weight_decay: float = 5e-3,
        **options: Unpack[LossOptions],
    ) -> None:  # fmt: skip
        super().__init__(class_counts, alpha=alpha, beta=beta, gamma=gamma, **options)
        self.weight_decay = check_weight_decay(weight_decay)
        self.rebind(classifier)

    def rebind(self, classifier: ClassifierLike) -> BWLM:
        """Penalise ``classifier`` from now on; returns ``self``.

        Use it after :func:`~longtail_losses.twostage.replace_classifier`, with the new ``model.fc``.

        Raises:
            TypeError: If ``classifier`` has no floating-point weight.
            ValueError: If its weight does not have one row per class.
        """
        check_weight_matrix(classifier, num_classes=self.num_classes)
        # A plain tuple keeps the classifier out of this module's parameters, state_dict and .to().
        self._classifier: tuple[ClassifierLike] = (classifier,)
        self._copy_memo: Optional[dict[int, Any]] = None
        return self

    @property
    def classifier_weight(self) -> Tensor:
        r"""The classifier weight :math:`\theta` that the penalty acts on, one row per class."""
        if self._copy_memo is not None:  # a deep copy: the classifier's copy, if that deepcopy call made one
            original = self._classifier[0]
            self._classifier = (self._copy_memo.get(id(original), original),)
            self._copy_memo = None
        classifier = self._classifier[0]
        replaced_by = None if _kernel.tracing() else replaced_classifiers.get(classifier)  # no graph break
        if replaced_by is not None:
            raise RuntimeError(
                f"Expected the classifier of this BWLM to be the live one, but it was replaced by "
                f"{type(replaced_by).__name__} in twostage.replace_classifier; call `criterion.rebind(new_layer)` "
                "or build a new BWLM on the new layer"
            )
        return check_weight_matrix(classifier)

    def __deepcopy__(self, memo: dict[int, Any]) -> BWLM:
        # Everything but the classifier is copied; the classifier stays the live one unless the same deepcopy call
        # copies it too, before or after this module: the memo is read on first use (classifier_weight).
        clone = BWLM.__new__(type(self))
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            if key not in ("_classifier", "_copy_memo"):
                clone.__dict__[key] = copy.deepcopy(value, memo)
        clone._classifier = self._classifier
        clone._copy_memo = memo
        return clone

    def __copy__(self) -> BWLM:
        clone = BWLM.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        for key in ("_parameters", "_buffers", "_modules"):
            clone.__dict__[key] = dict(self.__dict__[key])
        return clone

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            "Expected a BWLM not to be pickled: it refers to a classifier it does not own, which would be saved as "
            "a dead copy. Save `criterion.state_dict()` instead and build a new BWLM on the restored model "
            "(`BWLM(counts, classifier=model.fc)`, then `load_state_dict`)"
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss; see :func:`bwlm_loss`."""
        return self._loss(logits, target, _penalty(self.classifier_weight, self.weight_decay, logits))
