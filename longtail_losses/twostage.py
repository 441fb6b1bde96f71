r"""The two-stage training method of the BWLM paper (section 3.2), as building blocks.

Stage 1 trains the whole network with cross-entropy on the *head* half of the classes. Stage 2 freezes that
network, replaces its classifier with a new :class:`~torch.nn.Linear` over all :math:`C` classes and trains
only the new layer, on a roughly balanced subset, with a balanced loss such as :class:`~longtail_losses.BWLM`:

.. math::
    \Theta^* = \operatorname{argmin}_{\Theta} F(\Theta; D_{stage1}), \qquad
    \hat\Theta = \operatorname{argmin}_{\Theta_{fc}} F(\Theta_{fc}; \hat D)_{\Theta^*}

The pieces:

* :func:`data_balanced_review` splits a long-tailed training set into the two stages' index sets (eq. 2);
  :func:`head_tail_classes` gives the class split behind it.
* :func:`replace_classifier` puts a new trainable classifier on a stage-1 model and freezes the rest with
  :func:`freeze_backbone`, which also keeps the backbone in eval mode: its BatchNorm statistics do **not**
  drift in stage 2, even if you call ``model.train()``.
* :func:`train_one_epoch` and :func:`predict` are a generic loop body for either stage (any model, any loader
  yielding ``(inputs, targets)``).
* Fast stage 2: the frozen backbone is a fixed function, so :func:`extract_features` runs it once and
  :func:`train_classifier` trains the new layer on the cached features. Without data augmentation this gives the
  same classifier as running the backbone every step (same batches from :class:`SeededBatchSampler`), at a
  fraction of the cost (``benchmarks/bench_stage2_cache.py``).

Evaluation always uses the **raw** logits of the model. The balanced-softmax prior (:math:`+\log n_c`) of
:class:`~longtail_losses.BalancedSoftmax`, :class:`~longtail_losses.BFS` and :class:`~longtail_losses.BWLM`
is a training-time correction only; never add it at test time.

Everything here is optional: the losses are drop-in for any training loop. A whole run, in outline::

    import longtail_losses as ltl
    from longtail_losses import twostage
    from torch.utils.data import DataLoader, Subset

    stage1_idx, stage2_idx = twostage.data_balanced_review(train_set, seed=0)
    # Stage 1: cross-entropy on the head classes, all parameters.
    loader = DataLoader(Subset(train_set, stage1_idx.tolist()), batch_size=64, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    for epoch in range(epochs):
        twostage.train_one_epoch(model, loader, torch.nn.CrossEntropyLoss(), optimizer, scheduler=scheduler)
    # Stage 2: frozen backbone, new classifier over all classes, BWLM on the reviewed set.
    fc = twostage.replace_classifier(model, num_classes)
    counts = ltl.class_counts(Subset(train_set_without_augmentation, stage2_idx.tolist()), num_classes)
    features, labels = twostage.extract_features(model, Subset(train_set_without_augmentation, stage2_idx.tolist()))
    twostage.train_classifier(fc, features, labels, ltl.BWLM(counts, classifier=fc), epochs=epochs)
    logits, targets = twostage.predict(model, test_loader)  # raw logits: no prior at test time

With data augmentation in stage 2, replace the last two stage-2 lines by :func:`train_one_epoch` over a loader
of the augmented subset, optimising ``fc.parameters()`` only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from longtail_losses.counts import _labels_of, class_counts

__all__ = [
    "BackboneFreeze",
    "SeededBatchSampler",
    "data_balanced_review",
    "extract_features",
    "freeze_backbone",
    "get_classifier",
    "head_tail_classes",
    "predict",
    "replace_classifier",
    "train_classifier",
    "train_classifier_epoch",
    "train_one_epoch",
    "warn_double_decay",
]

Criterion = Callable[[Tensor, Tensor], Tensor]
DeviceLike = Union[torch.device, str, None]


# --------------------------------------------------------------------------------------------------------------------
# Data balanced review (eq. 2)
# --------------------------------------------------------------------------------------------------------------------


def _frequency_order(counts: Tensor) -> list[int]:
    # Descending count; ties keep the lower class index first.
    values = counts.tolist()
    return sorted(range(len(values)), key=lambda c: (-values[c], c))


def _review_labels(labels: Any) -> tuple[Tensor, Tensor, list[int]]:
    counts = class_counts(labels)
    values = _labels_of(labels, None).to(device="cpu", dtype=torch.int64)
    if counts.numel() < 2:
        raise ValueError(f"Expected `labels` to hold at least 2 classes, but got {counts.numel()}")
    return values, counts, _frequency_order(counts)


def head_tail_classes(labels: Any) -> tuple[Tensor, Tensor]:
    r"""Split the classes into the head and tail halves of :func:`data_balanced_review`.

    The classes are ordered by their number of training samples, descending (ties: lower class index first).
    The first :math:`m = \lfloor C/2 \rfloor` are the head, the other :math:`C - m` the tail.
    :math:`C` is ``max(labels) + 1``.

    Args:
        labels: Class indices of the training set (tensor, list or array), or a data set with ``.targets``.

    Returns:
        ``(head, tail)``: ``int64`` class indices, each in the order above (most frequent first).

    Raises:
        TypeError: If ``labels`` is not integer-valued.
        ValueError: If ``labels`` is not 1-D, is negative, or has fewer than 2 classes.

    Example:
        >>> head, tail = head_tail_classes([2, 2, 2, 0, 0, 1, 1, 1, 1, 3])
        >>> head, tail
        (tensor([1, 2]), tensor([0, 3]))
    """
    _, counts, order = _review_labels(labels)
    m = counts.numel() // 2
    return torch.tensor(order[:m], dtype=torch.int64), torch.tensor(order[m:], dtype=torch.int64)


def data_balanced_review(labels: Any, seed: int = 0) -> tuple[Tensor, Tensor]:
    r"""Index sets of the two training stages by the data balanced review of the paper, eq. (2).

    Order the :math:`C` classes by training count, descending (ties: lower class index first), number them
    :math:`1..C` in that order and let :math:`m = \lfloor C/2 \rfloor`. With :math:`D_j` the samples of class
    :math:`j` and :math:`n_{m+1}` the count of the most frequent tail class,

    .. math::
        D_{stage1} = \bigcup_{j=1}^{m} D_j, \qquad
        \hat D = \bigcup_{j=1}^{m} \mathrm{sam}(D_j, n_{m+1}) \;\cup\; \bigcup_{j=m+1}^{C} D_j,

    where :math:`\mathrm{sam}(D_j, n)` draws :math:`n` samples of :math:`D_j` uniformly without replacement
    (seeded: the same ``seed`` gives the same subset on every machine). Stage 1 sees the head classes only;
    stage 2 trains the new classifier on all :math:`C` classes, each head class cut down to :math:`n_{m+1}`.
    For CIFAR-100-LT with imbalance factor 100 (10,847 images) that is 9,901 and 3,346 samples.

    Args:
        labels: Class indices of the training set (tensor, list or array), or a data set with ``.targets``
            (read without decoding a sample). :math:`C` is ``max(labels) + 1``.
        seed: Seed of the :class:`torch.Generator` that draws the head classes' stage-2 subsets.

    Returns:
        ``(stage1_indices, stage2_indices)``: sorted ``int64`` positions into ``labels``, e.g. for
        :class:`~torch.utils.data.Subset`.

    Raises:
        TypeError: If ``labels`` is not integer-valued or ``seed`` not an int.
        ValueError: If ``labels`` is not 1-D, is negative, has fewer than 2 classes, or its first tail class
            has no sample.

    Example:
        >>> labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]  # counts 4, 2, 3, 1: head = {0, 2}, n_{m+1} = 2
        >>> stage1, stage2 = data_balanced_review(labels, seed=0)
        >>> stage1
        tensor([0, 1, 2, 3, 6, 7, 8])
        >>> class_counts(torch.tensor(labels)[stage2])
        tensor([2, 2, 2, 1])
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"Expected `seed` to be an int, but got {seed!r}")
    values, counts, order = _review_labels(labels)
    m = counts.numel() // 2
    head, tail = order[:m], order[m:]
    n_review = int(counts[tail[0]])
    if n_review == 0:
        raise ValueError(
            f"Expected the first tail class (class {tail[0]}) to have samples, but got 0; "
            "every class of `labels` should have at least one sample"
        )
    generator = torch.Generator().manual_seed(seed)
    is_head = torch.zeros(counts.numel(), dtype=torch.bool)
    is_head[head] = True
    stage1 = torch.nonzero(is_head[values]).flatten()
    parts = [torch.nonzero(~is_head[values]).flatten()]
    for c in head:  # most frequent first; fixes the order in which the generator is consumed
        members = torch.nonzero(values == c).flatten()
        parts.append(members[torch.randperm(members.numel(), generator=generator)[:n_review]])
    stage2 = torch.sort(torch.cat(parts)).values
    return stage1, stage2


# --------------------------------------------------------------------------------------------------------------------
# Classifier replacement and the frozen backbone
# --------------------------------------------------------------------------------------------------------------------


def _resolve(model: nn.Module, attr: str) -> tuple[nn.Module, str, nn.Module]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be an nn.Module, but got {type(model).__name__}")
    if not isinstance(attr, str) or not attr:
        raise TypeError(f"Expected `attr` to be a non-empty str, but got {attr!r}")
    *path, name = attr.split(".")
    parent = model
    for i, part in enumerate(path):
        child = getattr(parent, part, None)
        if not isinstance(child, nn.Module):
            raise ValueError(
                f"Expected `attr` to name a submodule of {type(model).__name__}, but got {attr!r}: "
                f"{'.'.join(path[: i + 1])!r} is not a submodule"
            )
        parent = child
    module = getattr(parent, name, None)
    if not isinstance(module, nn.Module):
        names = [n for n, _ in model.named_modules() if n]
        hint = f" (its submodules end with {names[-3:]})" if names else ""
        raise ValueError(f"Expected `attr` to name a submodule of {type(model).__name__}{hint}, but got {attr!r}")
    return parent, name, module


def get_classifier(model: nn.Module, attr: str = "fc") -> nn.Module:
    """Return the submodule of ``model`` named by ``attr``.

    Args:
        model: The network.
        attr: Attribute name of the classifier; dotted names such as ``"head.fc"`` or ``"classifier.1"`` reach
            into submodules. torchvision's ResNet and ResNeXt use ``"fc"``.

    Returns:
        The submodule itself (not a copy).

    Raises:
        TypeError: If ``model`` is not a module or ``attr`` not a string.
        ValueError: If ``model`` has no submodule ``attr``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> get_classifier(net, "1")
        Linear(in_features=4, out_features=3, bias=True)
    """
    return _resolve(model, attr)[2]


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

    Every parameter outside ``model.<classifier_attr>`` gets ``requires_grad=False``, and every submodule
    outside it (except ``model`` itself and the classifier's ancestors) gets a forward pre-hook that sets it
    to eval mode before it runs. So the backbone's BatchNorm layers normalise with, and never update, their
    stage-1 running statistics, and its dropout is off, even after ``model.train()``: calling ``model.train()``
    in stage 2 trains only the classifier. (Freezing only ``requires_grad`` lets BatchNorm statistics drift in
    stage 2, a known bug of reference implementations.) The classifier follows ``model.train()``/``eval()``
    as usual.

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
    model: nn.Module, num_classes: int, *, attr: str = "fc", bias: bool = True, freeze: bool = True
) -> nn.Linear:
    r"""Start stage 2: put a new trainable :class:`~torch.nn.Linear` classifier on a frozen stage-1 model.

    ``model.<attr>`` must be an :class:`~torch.nn.Linear` (as the ``fc`` of torchvision's ResNet and ResNeXt);
    it is replaced, in place, by a freshly initialised ``nn.Linear(in_features, num_classes)`` on the same
    device and dtype. With ``freeze=True`` the rest of the model is then frozen by :func:`freeze_backbone`
    (parameters and BatchNorm statistics, eval mode even under ``model.train()``), for the model's lifetime.

    Args:
        model: The stage-1 network; modified in place.
        num_classes: Outputs of the new classifier (all :math:`C` classes).
        attr: Attribute name of the classifier, see :func:`get_classifier`.
        bias: Whether the new classifier has a bias.
        freeze: Freeze everything but the new classifier with :func:`freeze_backbone`.

    Returns:
        The new classifier, e.g. for ``BWLM(counts, classifier=...)`` and
        :class:`~longtail_losses.ClassNormDecay`; optimise only its parameters. A
        :class:`~longtail_losses.BWLM` built on the old layer raises when called: build it on the new one, or
        call its :meth:`~longtail_losses.BWLM.rebind`.

    Raises:
        TypeError: If ``model.<attr>`` is not an ``nn.Linear`` or ``num_classes`` is not an int.
        ValueError: If ``model`` has no submodule ``attr`` or ``num_classes < 1``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> fc = replace_classifier(net, 5, attr="1")
        >>> fc is net[1], fc.out_features, fc.weight.requires_grad
        (True, 5, True)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"Expected `num_classes` to be an int, but got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"Expected `num_classes` to be >= 1, but got {num_classes}")
    parent, name, old = _resolve(model, attr)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"Expected `model.{attr}` to be an nn.Linear, but got {type(old).__name__}")
    new = nn.Linear(
        old.in_features, num_classes, bias=bias, device=old.weight.device, dtype=old.weight.dtype
    ).requires_grad_(True)
    new.train(old.training)
    setattr(parent, name, new)
    # Mark the old layer (and its weight) so that a BWLM still pointing at it fails loudly instead of penalising a
    # dead weight; see BWLM.rebind.
    old._ltl_replaced_by = new
    old.weight._ltl_replaced_by = new  # type: ignore[attr-defined]
    if freeze:
        freeze_backbone(model, attr)
    return new


# --------------------------------------------------------------------------------------------------------------------
# Loop building blocks
# --------------------------------------------------------------------------------------------------------------------


def _model_device(model: nn.Module, device: DeviceLike) -> torch.device:
    if device is not None:
        return torch.device(device)
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _prepare(x: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _autocast(device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)


def _upcast(t: Tensor) -> Tensor:
    # Half-precision outputs of autocast go to float32; float32 and float64 stay as they are.
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def _restore(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


def warn_double_decay(criterion: Any, optimizer: Optimizer) -> bool:
    r"""Warn if ``optimizer`` also decays the classifier weight that a :class:`~longtail_losses.BWLM` penalises.

    :class:`~longtail_losses.BWLM` adds :math:`\frac{\lambda}{2}\sum_j\lVert\theta_j\rVert^2` to the loss, whose
    gradient is exactly ``weight_decay * theta``: an optimizer ``weight_decay`` on the same tensor decays the
    classifier a second time, silently. :func:`train_one_epoch` and :func:`train_classifier` call this check;
    call it yourself in a hand-written loop, once, after building the optimizer.

    Args:
        criterion: The loss; only a :class:`~longtail_losses.BWLM` with ``weight_decay > 0`` is checked.
        optimizer: Its param groups are searched for ``criterion.classifier_weight``.

    Returns:
        ``True`` if it warned (a :class:`UserWarning`), else ``False``.

    Example:
        >>> import warnings
        >>> import longtail_losses as ltl
        >>> fc = nn.Linear(4, 2)
        >>> criterion = ltl.BWLM([90, 10], classifier=fc, weight_decay=5e-3)
        >>> warn_double_decay(criterion, torch.optim.SGD(fc.parameters(), lr=0.01))
        False
        >>> with warnings.catch_warnings(record=True):
        ...     warn_double_decay(criterion, torch.optim.SGD(fc.parameters(), lr=0.01, weight_decay=5e-4))
        True
    """
    import longtail_losses  # here, not at the top: the package imports this module

    if not isinstance(criterion, longtail_losses.BWLM) or not criterion.weight_decay:
        return False
    weight = criterion.classifier_weight
    for i, group in enumerate(optimizer.param_groups):
        decay = group.get("weight_decay", 0.0)
        if decay and any(p is weight for p in group["params"]):
            warnings.warn(
                f"The optimizer's param group {i} applies weight_decay={decay:g} to the classifier weight that BWLM "
                f"already penalises (BWLM weight_decay={criterion.weight_decay:g}): the classifier decays twice. "
                "Give the classifier's parameters weight_decay=0 in the optimizer, or build BWLM with weight_decay=0.",
                UserWarning,
                stacklevel=3,
            )
            return True
    return False


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Any],
    criterion: Criterion,
    optimizer: Optimizer,
    *,
    scheduler: Any = None,
    device: DeviceLike = None,
    autocast_dtype: Optional[torch.dtype] = None,
    grad_scaler: Any = None,
    channels_last: bool = False,
    progress: Optional[Callable[[Iterable[Any]], Iterable[Any]]] = None,
) -> float:
    r"""Train ``model`` for one pass over ``loader``: a generic loop body for either stage.

    Calls ``model.train()`` (a backbone frozen by :func:`freeze_backbone` stays in eval mode), then for every
    batch ``(inputs, targets)``: forward (under :class:`torch.autocast` if ``autocast_dtype`` is given),
    ``loss = criterion(_upcast(logits), targets)``, backward (through ``grad_scaler`` if given),
    ``optimizer.step()``, then ``scheduler.step()`` if given: **the scheduler steps once per batch**, so
    build it over all steps, e.g. ``CosineAnnealingLR(optimizer, T_max=epochs * len(loader))`` for the
    paper's cosine decay to 0.

    Works unchanged for a :class:`~torch.nn.parallel.DistributedDataParallel` model; the returned loss is
    then this process's own.

    Args:
        model: The network (any ``nn.Module``; logits of shape :math:`(B, C)`).
        loader: Yields ``(inputs, targets)`` batches, e.g. a :class:`~torch.utils.data.DataLoader`.
        criterion: ``criterion(logits, targets) -> scalar``, e.g. :class:`~longtail_losses.BWLM`; it gets
            ``float32`` logits under autocast. A BWLM whose classifier weight the optimizer also decays gets a
            warning (:func:`warn_double_decay`).
        optimizer: Steps once per batch.
        scheduler: Learning-rate scheduler stepped after every optimizer step, or ``None``.
        device: Device for the batches. Default: the device of the model's first parameter.
        autocast_dtype: ``torch.float16`` or ``torch.bfloat16`` for mixed precision, or ``None``.
        grad_scaler: A ``torch.amp.GradScaler`` (needed with ``float16``), or ``None``.
        channels_last: Send 4-D inputs in ``channels_last`` memory format (use with a channels-last model).
        progress: Wraps ``loader``, e.g. ``functools.partial(tqdm.tqdm, desc="stage 1")``.

    Returns:
        The mean training loss of the epoch (batch losses weighted by batch size).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Linear(2, 2)
        >>> data = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))] * 3
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> round(train_one_epoch(net, data, nn.functional.cross_entropy, opt), 4)
        0.6894
    """
    warn_double_decay(criterion, optimizer)
    device = _model_device(model, device)
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    for inputs, targets in progress(loader) if progress is not None else loader:
        inputs = _prepare(inputs, device, channels_last)
        targets = targets.to(device, non_blocking=True)
        with _autocast(device, autocast_dtype):
            logits = model(inputs)
        loss = criterion(_upcast(logits), targets)
        optimizer.zero_grad(set_to_none=True)
        if grad_scaler is not None:
            grad_scaler.scale(loss).backward()
            grad_scaler.step(optimizer)
            grad_scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach().double() * targets.shape[0]
        seen += int(targets.shape[0])
    return float(total) / max(seen, 1)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: DeviceLike = None,
    autocast_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Raw logits and targets of ``model`` over ``loader``, in eval mode and without gradients.

    These are the logits to evaluate: **never** add the balanced-softmax prior :math:`\log n_c` at test time,
    it corrects the training loss only. The modes of ``model`` and its submodules are restored afterwards.

    Args:
        model: The network.
        loader: Yields ``(inputs, targets)`` batches.
        device: Device for the batches. Default: the device of the model's first parameter.
        autocast_dtype: ``torch.float16`` or ``torch.bfloat16`` for mixed precision, or ``None``.
        channels_last: Send 4-D inputs in ``channels_last`` memory format.

    Returns:
        ``(logits, targets)``: :math:`(N, C)` (``float32`` under autocast, else the model's dtype) and ``int64``
        :math:`(N)`, on the CPU, in loader order.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> logits, targets = predict(net, [(torch.zeros(4, 2), torch.tensor([0, 1, 2, 0]))])
        >>> logits.shape, targets.tolist()
        (torch.Size([4, 3]), [0, 1, 2, 0])
    """
    device = _model_device(model, device)
    modes = _modes(model)
    model.eval()
    outputs, labels = [], []
    try:
        for inputs, targets in loader:
            with _autocast(device, autocast_dtype):
                logits = model(_prepare(inputs, device, channels_last))
            outputs.append(_upcast(logits).cpu())
            labels.append(torch.as_tensor(targets).to("cpu", torch.int64))
    finally:
        _restore(modes)
    if not outputs:
        raise ValueError("Expected `loader` to yield at least one batch, but got none")
    return torch.cat(outputs), torch.cat(labels)


# --------------------------------------------------------------------------------------------------------------------
# Fast stage 2 on cached features
# --------------------------------------------------------------------------------------------------------------------


def _as_loader(data: Any, batch_size: int, num_workers: int) -> tuple[Iterable[Any], bool]:
    if isinstance(data, DataLoader):
        return data, True
    if isinstance(data, Tensor):
        return DataLoader(TensorDataset(data), batch_size=batch_size, shuffle=False, num_workers=num_workers), False
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        dataset = TensorDataset(data[0], torch.as_tensor(data[1]))
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers), True
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers), True
    raise TypeError(
        "Expected `data` to be a DataLoader, a Dataset, a Tensor or an (inputs, targets) pair of tensors, "
        f"but got {type(data).__name__}"
    )


@torch.no_grad()
def extract_features(
    model: nn.Module,
    data: Any,
    *,
    classifier_attr: Optional[str] = "fc",
    device: DeviceLike = None,
    batch_size: int = 256,
    num_workers: int = 0,
    autocast_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Run the frozen backbone once over ``data`` and return its penultimate features (fast stage 2).

    Runs under :class:`torch.no_grad` with ``model`` in eval mode (BatchNorm uses its running statistics), with
    ``model.<classifier_attr>`` temporarily swapped for :class:`~torch.nn.Identity`; the classifier and all
    modes are restored afterwards. Train the stage-2 classifier on the result with :func:`train_classifier`.
    Caching is exact only without random data augmentation: pass the un-augmented training set.

    Args:
        model: The stage-1 model (its classifier is bypassed), or, with ``classifier_attr=None``, a backbone
            that already returns features.
        data: A :class:`~torch.utils.data.DataLoader` or data set yielding ``(inputs, targets)``, an
            ``(inputs, targets)`` pair of tensors, or a tensor of inputs.
        classifier_attr: Attribute name of the classifier to bypass (see :func:`get_classifier`), or ``None``.
        device: Where to run and keep the features. Default: the device of the model's first parameter.
        batch_size: Batch size when ``data`` is not a ``DataLoader``.
        num_workers: DataLoader workers when ``data`` is not a ``DataLoader``.
        autocast_dtype: ``torch.float16`` or ``torch.bfloat16`` for mixed precision, or ``None``; the features
            are returned in ``float32`` then (else in the model's dtype).
        channels_last: Send 4-D inputs in ``channels_last`` memory format.

    Returns:
        ``(features, labels)``: :math:`(N, D)` (flattened) on ``device`` and ``int64`` :math:`(N)` on
        ``device``, in data order. For a bare tensor ``data``, ``labels`` is empty.

    Raises:
        TypeError: If ``data`` has an unsupported type or ``model.<classifier_attr>`` is not a module.
        ValueError: If ``model`` has no submodule ``classifier_attr`` or ``data`` is empty.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4))
        >>> feats, labels = extract_features(net, (torch.ones(5, 2), torch.arange(5)), classifier_attr="2")
        >>> feats.shape, labels.tolist(), isinstance(net[2], nn.Linear)
        (torch.Size([5, 3]), [0, 1, 2, 3, 4], True)
    """
    device = _model_device(model, device)
    loader, has_targets = _as_loader(data, batch_size, num_workers)
    swap = _resolve(model, classifier_attr) if classifier_attr is not None else None
    modes = _modes(model)
    features, labels = [], []
    try:
        if swap is not None:
            setattr(swap[0], swap[1], nn.Identity())
        model.eval()
        for batch in loader:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            with _autocast(device, autocast_dtype):
                out = model(_prepare(inputs, device, channels_last))
            features.append(_upcast(out).flatten(1))
            if has_targets:
                labels.append(torch.as_tensor(batch[1]).to(device, torch.int64))
    finally:
        if swap is not None:
            setattr(swap[0], swap[1], swap[2])
        _restore(modes)
    if not features:
        raise ValueError("Expected `data` to hold at least one sample, but got none")
    targets = torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64, device=device)
    return torch.cat(features), targets


class SeededBatchSampler(Sampler[list[int]]):
    r"""Mini-batches of a fresh random permutation per epoch, a pure function of ``(seed, epoch)``.

    Epoch :math:`e` uses ``torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed + e))``,
    cut into consecutive batches. :func:`train_classifier` draws its batches the same way, so a
    ``DataLoader(dataset, batch_sampler=SeededBatchSampler(...))`` with :func:`train_one_epoch` (running the
    frozen backbone every step) sees exactly the batches of the cached-feature path; and a run resumed at
    epoch :math:`k` (``set_epoch(k)``) sees the batches of an uninterrupted one.

    Args:
        num_samples: Size of the data set.
        batch_size: Samples per batch.
        seed: Base seed.
        shuffle: Permute (``True``) or keep the data order (``False``).
        drop_last: Drop the last batch if it is smaller than ``batch_size``.

    Raises:
        TypeError: If an argument is not an int.
        ValueError: If ``num_samples < 0`` or ``batch_size < 1``.

    Example:
        >>> sampler = SeededBatchSampler(5, 2, seed=0)
        >>> sampler.set_epoch(3)
        >>> list(sampler)
        [[1, 0], [3, 4], [2]]
        >>> torch.randperm(5, generator=torch.Generator().manual_seed(3)).tolist()
        [1, 0, 3, 4, 2]
    """

    def __init__(
        self, num_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True, drop_last: bool = False
    ) -> None:
        for name, value in (("num_samples", num_samples), ("batch_size", batch_size), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Expected `{name}` to be an int, but got {value!r}")
        if num_samples < 0:
            raise ValueError(f"Expected `num_samples` to be >= 0, but got {num_samples}")
        if batch_size < 1:
            raise ValueError(f"Expected `batch_size` to be >= 1, but got {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (as :class:`~torch.utils.data.distributed.DistributedSampler`)."""
        self.epoch = epoch

    def permutation(self) -> Tensor:
        """The sample order of the current epoch, ``int64`` :math:`(N)`."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        order = self.permutation()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)


def _check_features(features: Tensor, labels: Tensor) -> None:
    if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
        raise TypeError(
            f"Expected `features` and `labels` to be tensors, but got {type(features).__name__} and "
            f"{type(labels).__name__}"
        )
    if features.ndim != 2:
        raise ValueError(f"Expected `features` to have shape (N, D), but got {tuple(features.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(
            f"Expected `labels` to have shape ({features.shape[0]},) to match features, but got {tuple(labels.shape)}"
        )


def train_classifier_epoch(
    classifier: nn.Module,
    features: Tensor,
    labels: Tensor,
    criterion: Criterion,
    optimizer: Optimizer,
    *,
    batch_size: int = 64,
    epoch: int = 0,
    seed: int = 0,
    scheduler: Any = None,
    drop_last: bool = False,
) -> float:
    """One stage-2 epoch of ``classifier`` on cached features; the loop body of :func:`train_classifier`.

    The batches are those of ``SeededBatchSampler(len(labels), batch_size, seed=seed)`` at ``epoch``; each
    step is ``loss = criterion(classifier(x), y)``, backward, ``optimizer.step()``, then ``scheduler.step()``
    if given (once per batch). Use it to write your own stage-2 loop (checkpoints, validation per epoch).

    Args:
        classifier: The new classifier, e.g. from :func:`replace_classifier`.
        features: Cached features from :func:`extract_features`.
        labels: Their class indices.
        criterion: ``criterion(logits, targets) -> scalar``.
        optimizer: Optimises the classifier's parameters.
        batch_size: Samples per batch.
        epoch: Epoch number; selects the permutation.
        seed: Base seed of the permutations.
        scheduler: Learning-rate scheduler stepped after every optimizer step, or ``None``.
        drop_last: Drop the last batch if it is smaller than ``batch_size``.

    Shape:
        features: :math:`(N, D)`.
        labels: :math:`(N)`.

    Returns:
        The mean training loss of the epoch (batch losses weighted by batch size).

    Raises:
        TypeError: If ``features`` or ``labels`` is not a tensor.
        ValueError: If their shapes disagree.
    """
    _check_features(features, labels)
    sampler = SeededBatchSampler(labels.shape[0], batch_size, seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    order = sampler.permutation().to(features.device)
    classifier.train()
    total = torch.zeros((), dtype=torch.float64, device=features.device)
    seen = 0
    for start in range(0, len(sampler) * batch_size, batch_size):
        index = order[start : start + batch_size]
        logits = classifier(features[index])
        loss = criterion(_upcast(logits), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach().double() * index.shape[0]
        seen += int(index.shape[0])
    return float(total) / max(seen, 1)


def train_classifier(
    classifier: nn.Module,
    features: Tensor,
    labels: Tensor,
    criterion: Criterion,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    scheduler: Optional[str] = "cosine",
    seed: int = 0,
    drop_last: bool = False,
    optimizer_hooks: Optional[Callable[[Optimizer], Any]] = None,
    callback: Optional[Callable[[int, float], Any]] = None,
) -> list[float]:
    r"""Train the stage-2 classifier on cached features with the paper's recipe (fast stage 2).

    SGD with momentum over ``classifier``'s trainable parameters; with ``scheduler="cosine"`` the learning rate
    follows :class:`~torch.optim.lr_scheduler.CosineAnnealingLR` per step, from ``lr`` to 0 over all
    :math:`T = \text{epochs} \cdot \lceil N / \text{batch\_size} \rceil` steps:

    .. math::
        \eta_t = \tfrac{1}{2}\,\eta_0 \left(1 + \cos \frac{\pi t}{T}\right)

    Epoch :math:`e` draws its batches from ``SeededBatchSampler(N, batch_size, seed=seed)`` at epoch
    :math:`e`, so the result equals running the frozen backbone every step with :func:`train_one_epoch` over
    those batches (without augmentation), at a fraction of the cost.

    Args:
        classifier: The new classifier, e.g. from :func:`replace_classifier`, on the device of ``features``.
        features: Cached features from :func:`extract_features`.
        labels: Their class indices.
        criterion: ``criterion(logits, targets) -> scalar``; ``BWLM(counts, classifier=classifier)`` works as is
            (its norm penalty reads ``classifier.weight``).
        epochs: Number of passes over the features.
        batch_size: Samples per batch (paper: 64).
        lr: Initial learning rate (paper: 0.01).
        momentum: SGD momentum (paper: 0.9).
        weight_decay: SGD (L2) weight decay on all classifier parameters; leave it at 0 with a
            :class:`~longtail_losses.BWLM` criterion, which already penalises the weight (a warning says so).
        scheduler: ``"cosine"`` (decay to 0, as in the paper) or ``None`` (constant learning rate).
        seed: Base seed of the batch permutations.
        drop_last: Drop each epoch's last batch if it is smaller than ``batch_size``.
        optimizer_hooks: Called once with the optimizer before training, e.g.
            ``lambda opt: ClassNormDecay(classifier, 5e-3).attach(opt)``; a returned handle with ``remove()`` is
            removed when training ends.
        callback: Called as ``callback(epoch, mean_loss)`` after every epoch.

    Shape:
        features: :math:`(N, D)`.
        labels: :math:`(N)`.

    Returns:
        The mean training loss of every epoch.

    Raises:
        TypeError: If ``features`` or ``labels`` is not a tensor.
        ValueError: If their shapes disagree, ``epochs < 1`` or ``scheduler`` is unknown.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> features, labels = torch.randn(32, 4), torch.arange(32) % 2
        >>> features[:, 0] += 2 * labels  # separable along the first feature
        >>> clf = nn.Linear(4, 2)
        >>> history = train_classifier(clf, features, labels, nn.CrossEntropyLoss(), epochs=20, batch_size=8, lr=0.1)
        >>> history[-1] < history[0]
        True
    """
    _check_features(features, labels)
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise TypeError(f"Expected `epochs` to be an int, but got {epochs!r}")
    if epochs < 1:
        raise ValueError(f"Expected `epochs` to be >= 1, but got {epochs}")
    if scheduler not in ("cosine", None):
        raise ValueError(f"Expected `scheduler` to be one of ('cosine', None), but got {scheduler!r}")
    params = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    warn_double_decay(criterion, optimizer)
    steps = len(SeededBatchSampler(labels.shape[0], batch_size, seed=seed, drop_last=drop_last))
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps, eta_min=0.0)
        if scheduler == "cosine"
        else None
    )
    handle = optimizer_hooks(optimizer) if optimizer_hooks is not None else None
    history: list[float] = []
    try:
        for epoch in range(epochs):
            loss = train_classifier_epoch(
                classifier,
                features,
                labels,
                criterion,
                optimizer,
                batch_size=batch_size,
                epoch=epoch,
                seed=seed,
                scheduler=sched,
                drop_last=drop_last,
            )
            history.append(loss)
            if callback is not None:
                callback(epoch, loss)
    finally:
        if handle is not None and callable(getattr(handle, "remove", None)):
            handle.remove()
    return history


from longtail_losses.decoupled import (  # noqa: E402  (re-export; defined in decoupled.py)
    LearnableWeightScaling,
    NearestClassMean,
    nearest_class_mean,
    tau_normalize,
)

__all__ += ["LearnableWeightScaling", "NearestClassMean", "nearest_class_mean", "tau_normalize"]
