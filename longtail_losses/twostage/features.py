r"""Fast stage 2: run the frozen backbone once, cache its features, train the new classifier on them."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset, TensorDataset

from longtail_losses._validation import check_features_labels, check_int
from longtail_losses.data.samplers import SeededBatchSampler
from longtail_losses.training import Criterion, DeviceLike, _forward_all, _model_device, train_one_epoch
from longtail_losses.twostage.surgery import _resolve

__all__ = ["extract_features", "train_classifier", "train_classifier_epoch"]


def _as_loader(data: Any, batch_size: int, num_workers: int) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Tensor):
        data = TensorDataset(data)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        data = TensorDataset(data[0], torch.as_tensor(data[1]))
    elif not (isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__"))):
        raise TypeError(
            "Expected `data` to be a DataLoader, a Dataset, a Tensor or an (inputs, targets) pair of tensors, "
            f"but got {type(data).__name__}"
        )
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def extract_features(
    model: nn.Module, data: Any, *,
    classifier_attr: Optional[str] = "fc", device: DeviceLike = None, batch_size: int = 256, num_workers: int = 0,
    autocast_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    r"""Run the frozen backbone once over ``data`` and return its penultimate features (fast stage 2).

    Runs without gradients, in eval mode, and keeps the input of ``model.<classifier_attr>`` (caught by a forward
    pre-hook, removed afterwards: the model is not modified; its modes are restored). Caching is exact only without
    random data augmentation: pass the un-augmented training set.

    Args:
        model: The stage-1 model (the features are its classifier's input), or, with ``classifier_attr=None``,
            a backbone that already returns features.
        data: A :class:`~torch.utils.data.DataLoader` or data set yielding ``(inputs, targets)``, an
            ``(inputs, targets)`` pair of tensors, or a tensor of inputs.
        classifier_attr: Attribute name of the classifier to bypass (see :func:`get_classifier`), or ``None``.
        device: Where to run and keep the features. Default: the device of the model's first parameter.
        batch_size: Batch size when ``data`` is not a ``DataLoader``.
        num_workers: DataLoader workers when ``data`` is not a ``DataLoader``.
        autocast_dtype: ``torch.float16`` or ``torch.bfloat16`` for mixed precision (float32 features), or ``None``.
        channels_last: Send 4-D inputs in ``channels_last`` memory format.

    Returns:
        ``(features, labels)`` on ``device``, in data order: :math:`(N, D)` (flattened; in the model's dtype
        without autocast) and ``int64`` :math:`(N)`, empty for a bare tensor ``data``.

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
    loader = _as_loader(data, batch_size, num_workers)
    # The classifier's input of every batch, caught by a forward pre-hook: the model itself is left as it is.
    inputs: list[Tensor] = []
    classifier = _resolve(model, classifier_attr)[2] if classifier_attr is not None else None
    hook = None if classifier is None else classifier.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
    try:
        features, labels = _forward_all(
            model, loader, device, out=device, autocast_dtype=autocast_dtype, channels_last=channels_last,
            empty="`data` to hold at least one sample",
            take=None if classifier is None else lambda _: inputs.pop(),
        )  # fmt: skip
    finally:
        if hook is not None:
            hook.remove()
    return features.flatten(1), labels


def train_classifier_epoch(
    classifier: nn.Module, features: Tensor, labels: Tensor, criterion: Criterion, optimizer: Optimizer, *,
    batch_size: int = 64, epoch: int = 0, seed: int = 0, scheduler: Any = None, drop_last: bool = False,
) -> float:  # fmt: skip
    """One stage-2 epoch of ``classifier`` on cached features; the loop body of :func:`train_classifier`.

    :func:`~longtail_losses.training.train_one_epoch` over the batches of
    ``SeededBatchSampler(len(labels), batch_size, seed=seed)`` at ``epoch``. Use it to write your own stage-2 loop.

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
    check_features_labels(features, labels)
    sampler = SeededBatchSampler(labels.shape[0], batch_size, seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    order = sampler.permutation().to(features.device)
    starts = range(0, len(sampler) * batch_size, batch_size)
    batches = ((features[i], labels[i]) for i in (order[start : start + batch_size] for start in starts))
    return train_one_epoch(classifier, batches, criterion, optimizer, scheduler=scheduler, device=features.device)


def train_classifier(
    classifier: nn.Module, features: Tensor, labels: Tensor, criterion: Criterion, *,
    epochs: int, batch_size: int = 64, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
    scheduler: Optional[str] = "cosine", seed: int = 0, drop_last: bool = False,
    optimizer_hooks: Optional[Callable[[Optimizer], Any]] = None,
    callback: Optional[Callable[[int, float], Any]] = None,
) -> list[float]:  # fmt: skip
    r"""Train the stage-2 classifier on cached features with the paper's recipe (fast stage 2).

    SGD with momentum over ``classifier``'s trainable parameters; with ``scheduler="cosine"`` the learning rate
    decays per step (:class:`~torch.optim.lr_scheduler.CosineAnnealingLR`) from ``lr`` to 0 over all
    :math:`T = \text{epochs} \cdot \lceil N / \text{batch\_size} \rceil` steps:

    .. math::
        \eta_t = \tfrac{1}{2}\,\eta_0 \left(1 + \cos \frac{\pi t}{T}\right)

    Each epoch is :func:`train_classifier_epoch`, so the result equals running the frozen backbone every step
    over the same batches (without augmentation), at a fraction of the cost.

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
        weight_decay: SGD (L2) weight decay; leave it at 0 with a BWLM criterion (a warning says so).
        scheduler: ``"cosine"`` (decay to 0, as in the paper) or ``None`` (constant learning rate).
        seed: Base seed of the batch permutations.
        drop_last: Drop each epoch's last batch if it is smaller than ``batch_size``.
        optimizer_hooks: Called once with the optimizer, e.g. ``lambda opt: ClassNormDecay(clf, 5e-3).attach(opt)``;
            a returned handle with ``remove()`` is removed when training ends.
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
    check_features_labels(features, labels)
    check_int("epochs", epochs, 1)
    if scheduler not in ("cosine", None):
        raise ValueError(f"Expected `scheduler` to be one of ('cosine', None), but got {scheduler!r}")
    params = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps = len(SeededBatchSampler(labels.shape[0], batch_size, seed=seed, drop_last=drop_last))
    sched = None
    if scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps, eta_min=0.0)
    handle: Any = optimizer_hooks(optimizer) if optimizer_hooks is not None else None
    common: dict[str, Any] = {"batch_size": batch_size, "seed": seed, "scheduler": sched, "drop_last": drop_last}
    history: list[float] = []
    try:
        for epoch in range(epochs):
            loss = train_classifier_epoch(classifier, features, labels, criterion, optimizer, epoch=epoch, **common)
            history.append(loss)
            if callback is not None:
                callback(epoch, loss)
    finally:
        if callable(getattr(handle, "remove", None)):
            handle.remove()
    return history
