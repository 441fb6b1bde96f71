"""ClassNormDecay: decoupled per-class weight decay and MaxNorm of a classifier, as an optimizer hook."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from longtail_losses._validation import as_counts, check_lr, check_max_norm, check_weight_decay, check_weight_matrix

__all__ = ["ClassNormDecay"]


class ClassNormDecay:
    r"""Shrink, and optionally cap, the norm of every class row of a classifier after each optimizer step.

    After every ``optimizer.step()``, each class row :math:`\theta_j` of the classifier's weight becomes

    .. math::
        \theta_j \leftarrow \theta_j \,(1 - \eta\, \lambda\, s_j), \qquad
        \theta_j \leftarrow \theta_j \min\!\Big(1, \frac{\tau}{\lVert\theta_j\rVert_2}\Big) \text{ if } \tau
        \text{ is set,}

    where :math:`\eta` is the current learning rate of the param group that holds the weight, :math:`\lambda`
    is ``weight_decay``, :math:`s_j` is ``per_class[j]`` (default 1) and :math:`\tau` is ``max_norm``. The first
    step is decoupled weight decay (as in :class:`~torch.optim.AdamW`): it does not pass through the optimizer's
    momentum or adaptive scaling. The second is the MaxNorm projection of Alshammari et al.
    :cite:`alshammari2022long` ("weight balancing"). Only the weight rows are touched, never the bias. A step
    must shrink, never flip, the rows: :meth:`apply` raises if :math:`\eta\lambda s_j > 1` for some class.

    For plain SGD without momentum, decay by :math:`1 - \eta\lambda` equals adding :math:`\lambda\theta` to the
    gradient, i.e. :class:`BWLM`'s penalty; with momentum or Adam-style optimizers the two differ. Use one or
    the other, and give the classifier's weight no optimizer ``weight_decay`` besides.

    Args:
        classifier: A module with a ``.weight`` with one row per class: (C, D) for a linear layer (e.g.
            ``model.fc``), (C, D, 1, 1) for a 1x1 convolution; or that weight itself.
        weight_decay: :math:`\lambda \ge 0`.
        max_norm: Upper bound :math:`\tau > 0` on every row's L2 norm, or ``None`` for no projection.
        per_class: Optional non-negative factors :math:`s_j`, one per class, scaling the decay of each row.

    Raises:
        TypeError: If ``classifier`` has no floating-point weight, or ``per_class`` is not numeric.
        ValueError: If ``weight_decay < 0``, ``max_norm <= 0``, or ``per_class`` has the wrong shape or a
            negative or non-finite value; from :meth:`attach`, if the optimizer does not hold the weight.

    Example:
        >>> fc = torch.nn.Linear(4, 3)
        >>> opt = torch.optim.SGD(fc.parameters(), lr=0.1)
        >>> handle = ClassNormDecay(fc, weight_decay=0.5).attach(opt)
        >>> before = fc.weight.detach().clone()
        >>> opt.step()  # no gradients yet: the step itself changes nothing, the hook decays by 1 - 0.1 * 0.5
        >>> torch.allclose(fc.weight, 0.95 * before)
        True
        >>> handle.remove()
    """

    def __init__(
        self, classifier: Union[nn.Module, Tensor], weight_decay: float, max_norm: Optional[float] = None,
        per_class: Optional[Union[Tensor, Any]] = None,
    ) -> None:  # fmt: skip
        self.weight = check_weight_matrix(classifier)
        num_classes = self.weight.shape[0]
        self.weight_decay = check_weight_decay(weight_decay)
        self.max_norm = check_max_norm(max_norm)
        self.per_class = (
            None
            if per_class is None
            else as_counts(per_class, "per_class", num_classes=num_classes, minimum=0, dtype=torch.float32)
        )
        # The largest decay factor, a Python float, so that the sign check in apply() needs no device sync.
        self._max_factor = 1.0 if self.per_class is None else float(self.per_class.max())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.weight.shape[0]}, weight_decay={self.weight_decay}, "
            f"max_norm={self.max_norm}, per_class={'None' if self.per_class is None else 'tensor'})"
        )

    def _group_lr(self, optimizer: Optimizer) -> Any:
        for group in optimizer.param_groups:
            if any(p is self.weight for p in group["params"]):
                return group["lr"]
        raise ValueError(
            "Expected `optimizer` to hold the classifier weight in one of its param groups, but none of its "
            f"{len(optimizer.param_groups)} group(s) does; pass the classifier's parameters to the optimizer"
        )

    @torch.no_grad()
    def apply(self, lr: float) -> None:
        """Decay (and cap) the rows once, as after an optimizer step taken with learning rate ``lr``.

        Raises:
            ValueError: If ``lr`` is negative or not finite, or ``lr * weight_decay * per_class[j] > 1`` for some
                class (the decay would flip the sign of that row).
        """
        lr = check_lr(lr)
        weight = self.weight
        if self.weight_decay:
            step = lr * self.weight_decay * self._max_factor
            if step > 1.0:
                raise ValueError(
                    f"Expected `lr * weight_decay * per_class` to be <= 1 so that the decay shrinks the rows, but got "
                    f"{lr} * {self.weight_decay} * {self._max_factor} = {step}; the rows would flip sign. Lower the "
                    "learning rate or weight_decay"
                )
            shape = (-1,) + (1,) * (weight.ndim - 1)  # one factor per class row
            factors = 1.0 if self.per_class is None else self.per_class.to(weight.device, weight.dtype).view(shape)
            weight.mul_(1.0 - lr * self.weight_decay * factors)
        if self.max_norm is not None:
            weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=self.max_norm))

    def attach(self, optimizer: Optimizer) -> RemovableHandle:
        """Run :meth:`apply` after every ``optimizer.step()``, with the lr of the weight's param group.

        The param group is looked up at every step, following schedulers and ``optimizer.load_state_dict``.

        Returns:
            A handle whose ``.remove()`` detaches the hook.

        Raises:
            TypeError: If ``optimizer`` is not a :class:`torch.optim.Optimizer`.
            ValueError: If no param group of ``optimizer`` holds the classifier weight.
        """
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"Expected `optimizer` to be a torch.optim.Optimizer, but got {type(optimizer).__name__}")
        self._group_lr(optimizer)  # fail early, at attach time

        def hook(opt: Optimizer, args: Any, kwargs: Any) -> None:
            self.apply(self._group_lr(opt))

        return optimizer.register_step_post_hook(hook)
