r"""Model surgery for stage 2: find the classifier, freeze the backbone, put a new classifier on."""

from __future__ import annotations

from typing import Any

from torch import nn

from longtail_losses._validation import check_int, replaced_classifiers

__all__ = ["BackboneFreeze", "freeze_backbone", "get_classifier", "replace_classifier"]


def _resolve(model: nn.Module, classifier_attr: str) -> tuple[nn.Module, str, nn.Module]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be an nn.Module, but got {type(model).__name__}")
    if not isinstance(classifier_attr, str) or not classifier_attr:
        raise TypeError(f"Expected `classifier_attr` to be a non-empty str, but got {classifier_attr!r}")
    parts = classifier_attr.split(".")
    parent: nn.Module = model
    module: Any = model
    for i, part in enumerate(parts):
        parent, module = module, getattr(module, part, None)
        if not isinstance(module, nn.Module):
            last = i == len(parts) - 1
            names = [n for n, _ in model.named_modules() if n] if last else []
            hint = f" (its submodules end with {names[-3:]})" if names else ""
            where = "" if last else f": {'.'.join(parts[: i + 1])!r} is not a submodule"
            raise ValueError(
                f"Expected `classifier_attr` to name a submodule of {type(model).__name__}{hint}, "
                f"but got {classifier_attr!r}{where}"
            )
    return parent, parts[-1], module


def get_classifier(model: nn.Module, classifier_attr: str = "fc") -> nn.Module:
    """Return the submodule of ``model`` named by ``classifier_attr``.

    Args:
        model: The network.
        classifier_attr: Attribute name of the classifier; dotted names such as ``"head.fc"`` or
            ``"classifier.1"`` reach into submodules. torchvision's ResNet and ResNeXt use ``"fc"``.

    Returns:
        The submodule itself (not a copy).

    Raises:
        TypeError: If ``model`` is not a module or ``classifier_attr`` not a string.
        ValueError: If ``model`` has no submodule ``classifier_attr``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> get_classifier(net, "1")
        Linear(in_features=4, out_features=3, bias=True)
    """
    return _resolve(model, classifier_attr)[2]


def _force_eval(module: nn.Module, args: Any) -> None:
    # Forward pre-hook: this module runs in eval mode whatever ``.train()`` set.
    module.training = False


class BackboneFreeze:
    """Handle returned by :func:`freeze_backbone`; ``remove()`` undoes the freeze.

    Also a context manager: the freeze ends when the ``with`` block exits.
    """

    def __init__(self, model: nn.Module, handles: list[Any], frozen: list[tuple[nn.Parameter, bool]]) -> None:
        self.model = model
        self._handles = handles
        self._frozen = frozen

    def remove(self) -> None:
        """Remove the eval-mode hooks and restore each backbone parameter's previous ``requires_grad``."""
        for handle in self._handles:
            handle.remove()
        for param, requires_grad in self._frozen:
            param.requires_grad_(requires_grad)
        self._handles, self._frozen = [], []

    def __enter__(self) -> BackboneFreeze:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def freeze_backbone(model: nn.Module, classifier_attr: str = "fc") -> BackboneFreeze:
    r"""Freeze every part of ``model`` except its classifier, parameters *and* normalisation statistics.

    Every parameter outside ``model.<classifier_attr>`` gets ``requires_grad=False``, and every submodule outside it
    (except ``model`` itself and the classifier's ancestors) a forward pre-hook that puts it in eval mode. So the
    backbone's BatchNorm layers use, and never update, their stage-1 running statistics and its dropout is off,
    even after ``model.train()``, which in stage 2 trains only the classifier. (Freezing only ``requires_grad``
    lets BatchNorm statistics drift in stage 2, a known bug of reference implementations.)

    Args:
        model: The stage-1 network.
        classifier_attr: Attribute name of the classifier, see :func:`get_classifier`.

    Returns:
        A :class:`BackboneFreeze` handle; its ``remove()`` (or leaving its ``with`` block) undoes the freeze.

    Raises:
        TypeError: If ``model`` is not a module or ``classifier_attr`` not a string.
        ValueError: If ``model`` has no submodule ``classifier_attr``.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
        >>> handle = freeze_backbone(net, "2")
        >>> _ = net.train()(torch.randn(8, 4))
        >>> net[1].training, net[1].num_batches_tracked.item(), net[2].training
        (False, 0, True)
        >>> [p.requires_grad for p in net.parameters()]
        [False, False, False, False, True, True]
        >>> handle.remove()
    """
    _, _, classifier = _resolve(model, classifier_attr)
    keep = {id(m) for m in classifier.modules()}
    parts = classifier_attr.split(".")
    ancestors = {id(model)} | {id(get_classifier(model, ".".join(parts[:i]))) for i in range(1, len(parts))}
    keep_params = {id(p) for p in classifier.parameters()}
    frozen = [(p, p.requires_grad) for p in model.parameters() if id(p) not in keep_params]
    for param, _ in frozen:
        param.requires_grad_(False)
    handles = []
    for module in model.modules():
        if id(module) in keep or id(module) in ancestors:
            continue
        module.training = False
        handles.append(module.register_forward_pre_hook(_force_eval))
    return BackboneFreeze(model, handles, frozen)


def replace_classifier(
    model: nn.Module, num_classes: int, *, classifier_attr: str = "fc", bias: bool = True, freeze: bool = True
) -> nn.Linear:
    r"""Start stage 2: put a new trainable :class:`~torch.nn.Linear` classifier on a frozen stage-1 model.

    ``model.<classifier_attr>``, an :class:`~torch.nn.Linear`, is replaced in place by a freshly initialised
    ``nn.Linear(in_features, num_classes)`` on the same device and dtype.

    Args:
        model: The stage-1 network; modified in place.
        num_classes: Outputs of the new classifier (all :math:`C` classes).
        classifier_attr: Attribute name of the classifier, see :func:`get_classifier`.
        bias: Whether the new classifier has a bias.
        freeze: Freeze everything but the new classifier with :func:`freeze_backbone`, for the model's lifetime.

    Returns:
        The new classifier; optimise only its parameters. A :class:`~longtail_losses.BWLM` built on the old
        layer raises when called: build it on the new one, or call its :meth:`~longtail_losses.BWLM.rebind`.

    Raises:
        TypeError: If ``model.<classifier_attr>`` is not an ``nn.Linear`` or ``num_classes`` is not an int.
        ValueError: If ``model`` has no submodule ``classifier_attr`` or ``num_classes < 1``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> fc = replace_classifier(net, 5, classifier_attr="1")
        >>> fc is net[1], fc.out_features, fc.weight.requires_grad
        (True, 5, True)
    """
    check_int("num_classes", num_classes, 1)
    parent, name, old = _resolve(model, classifier_attr)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"Expected `model.{classifier_attr}` to be an nn.Linear, but got {type(old).__name__}")
    new = nn.Linear(old.in_features, num_classes, bias=bias, device=old.weight.device, dtype=old.weight.dtype)
    new.train(old.training)
    setattr(parent, name, new)
    # Record the replacement (on the library's side) so that a BWLM still pointing at the old layer or its weight
    # fails loudly instead of penalising a dead weight; see BWLM.rebind.
    replaced_classifiers[old] = replaced_classifiers[old.weight] = new
    if freeze:
        freeze_backbone(model, classifier_attr)
    return new
