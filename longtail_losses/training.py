r"""Generic training and prediction loops, for any model and any loader of ``(inputs, targets)`` batches."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

__all__ = ["predict", "train_one_epoch", "warn_double_decay"]

Criterion = Callable[[Tensor, Tensor], Tensor]
DeviceLike = Union[torch.device, str, None]


def _model_device(model: nn.Module, device: DeviceLike) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next((t.device for t in itertools.chain(model.parameters(), model.buffers())), torch.device("cpu"))


def _prepare(x: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _autocast(device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def _upcast(t: Tensor) -> Tensor:
    # Half-precision outputs of autocast go to float32; float32 and float64 stay as they are.
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


@torch.no_grad()
def _forward_all(
    model: nn.Module, loader: Iterable[Any], device: torch.device, *,
    out: DeviceLike, autocast_dtype: Optional[torch.dtype], channels_last: bool, empty: str,
    take: Optional[Callable[[Tensor], Tensor]] = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    # The eval-mode loop of predict and extract_features: (outputs, int64 targets) on `out`, the modes of `model`
    # restored afterwards; the targets are empty if the batches are bare inputs. `take` maps the model's output
    # of a batch to what is kept (extract_features: the classifier's input, caught by a hook).
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    outputs, labels = [], []
    try:
        for batch in loader:
            paired = isinstance(batch, (tuple, list))
            with _autocast(device, autocast_dtype):
                logits = model(_prepare(batch[0] if paired else batch, device, channels_last))
            outputs.append(_upcast(logits if take is None else take(logits)).to(out))
            if paired and len(batch) > 1:
                labels.append(torch.as_tensor(batch[1]).to(out, torch.int64))
    finally:
        for module, training in modes:
            module.training = training
    if not outputs:
        raise ValueError(f"Expected {empty}, but got none")
    return torch.cat(outputs), torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64, device=out)


def warn_double_decay(criterion: Any, optimizer: Optimizer) -> bool:
    r"""Warn if ``optimizer`` also decays the classifier weight that a penalised loss already decays.

    :class:`~longtail_losses.BWLM` adds :math:`\frac{\lambda}{2}\sum_j\lVert\theta_j\rVert^2` to the loss, whose
    gradient is exactly ``weight_decay * theta``: an optimizer ``weight_decay`` on the same tensor decays the
    classifier a second time, silently. :func:`train_one_epoch` calls this check; call it yourself in a
    hand-written loop, once, after building the optimizer.

    Args:
        criterion: The loss; checked if penalised (BWLM, the linear losses) with ``weight_decay > 0``.
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
    weight = getattr(criterion, "classifier_weight", None)  # BWLM and the linear losses: the penalised loss
    if not isinstance(weight, Tensor) or not getattr(criterion, "weight_decay", 0.0):
        return False
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
    model: nn.Module, loader: Iterable[Any], criterion: Criterion, optimizer: Optimizer, *,
    scheduler: Any = None, device: DeviceLike = None, autocast_dtype: Optional[torch.dtype] = None,
    grad_scaler: Any = None, channels_last: bool = False,
    progress: Optional[Callable[[Iterable[Any]], Iterable[Any]]] = None, world_size: int = 1,
) -> float:  # fmt: skip
    r"""Train ``model`` for one pass over ``loader``: a generic loop body for either stage.

    Calls ``model.train()`` (a backbone frozen by :func:`freeze_backbone` stays in eval mode), then per batch:
    forward (under :class:`torch.autocast` with ``autocast_dtype``), ``criterion`` on ``float32`` logits, backward
    (through ``grad_scaler`` if given), ``optimizer.step()`` and ``scheduler.step()``: **the scheduler steps once
    per batch**, so build it over all steps, e.g. ``CosineAnnealingLR(optimizer, T_max=epochs * len(loader))``.

    Works unchanged for a :class:`~torch.nn.parallel.DistributedDataParallel` model (the returned loss is this
    process's own). DDP averages the gradients of the ``world_size`` processes, the gradient of the global batch's
    mean loss only if their shards are equal. For unequal shards (an uneven last batch), yield
    ``(inputs, targets, global_batch_size)``: the loss back-propagated is then
    ``loss * len(targets) * world_size / global_batch_size``, whose averaged gradient is exactly that of the mean
    over the global batch (a penalty inside ``criterion``, such as BWLM's, counted once). The returned loss stays
    unscaled.

    Args:
        model: The network; logits of shape :math:`(B, C)`.
        loader: Yields ``(inputs, targets)`` or ``(inputs, targets, global_batch_size)`` batches (see above).
        criterion: ``criterion(logits, targets) -> scalar``, e.g. :class:`~longtail_losses.BWLM`; one whose
            classifier weight the optimizer also decays gets a warning (:func:`warn_double_decay`).
        optimizer: Steps once per batch.
        scheduler: Learning-rate scheduler stepped after every optimizer step, or ``None``.
        device: Device for the batches. Default: the device of the model's first parameter.
        autocast_dtype: ``torch.float16`` or ``torch.bfloat16`` for mixed precision, or ``None``.
        grad_scaler: A ``torch.amp.GradScaler`` (needed with ``float16``), or ``None``.
        channels_last: Send 4-D inputs in ``channels_last`` memory format.
        progress: Wraps ``loader``, e.g. ``functools.partial(tqdm.tqdm, desc="stage 1")``; if the result has a
            ``set_postfix_str`` method (a tqdm bar), it shows the running mean loss every 10 batches (a device sync).
        world_size: Processes that share each global batch; used only for batches that carry its size.

    Returns:
        The mean training loss of the epoch (batch losses weighted by batch size).

    Raises:
        ValueError: If ``world_size < 1``, or a batch's ``global_batch_size`` is smaller than its targets.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Linear(2, 2)
        >>> data = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))] * 3
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> round(train_one_epoch(net, data, nn.functional.cross_entropy, opt), 4)
        0.6894

        A shard of 3 samples of a global batch of 4 on 2 processes back-propagates ``loss * 3 * 2 / 4``:

        >>> shard = [(torch.randn(3, 2), torch.tensor([0, 1, 0]), 4)]
        >>> loss = train_one_epoch(net, shard, nn.functional.cross_entropy, opt, world_size=2)
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"Expected `world_size` to be an integer >= 1, but got {world_size!r}")
    warn_double_decay(criterion, optimizer)
    device = _model_device(model, device)
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    batches = progress(loader) if progress is not None else loader
    postfix = getattr(batches, "set_postfix_str", None)
    for step, batch in enumerate(batches):
        targets, n = batch[1].to(device, non_blocking=True), int(batch[1].shape[0])
        with _autocast(device, autocast_dtype):
            logits = model(_prepare(batch[0], device, channels_last))
        loss = criterion(_upcast(logits), targets)
        factor = _shard_factor(batch, n, world_size)
        scaled = loss * factor if factor != 1.0 else loss
        optimizer.zero_grad(set_to_none=True)
        if grad_scaler is not None:
            grad_scaler.scale(scaled).backward()
            grad_scaler.step(optimizer)
            grad_scaler.update()
        else:
            scaled.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach().double() * n
        seen += n
        if postfix is not None and step % 10 == 0:
            postfix(f"loss {float(total) / max(seen, 1):.4f}", refresh=False)
    return float(total) / max(seen, 1)


def _shard_factor(batch: Any, local: int, world_size: int) -> float:
    # local * world_size / global for a batch that carries its global size, else 1.
    if len(batch) < 3:
        return 1.0
    global_size = batch[2]
    if isinstance(global_size, Tensor):
        global_size = int(global_size)
    if isinstance(global_size, bool) or not isinstance(global_size, int) or global_size < max(local, 1):
        raise ValueError(
            f"Expected the `global_batch_size` of a batch (its third item) to be an integer >= its {local} targets, "
            f"but got {global_size!r}"
        )
    return local * world_size / global_size


def predict(
    model: nn.Module, loader: Iterable[Any], *,
    device: DeviceLike = None, autocast_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
) -> tuple[Tensor, Tensor]:  # fmt: skip
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
    return _forward_all(
        model,
        loader,
        device,
        out="cpu",
        autocast_dtype=autocast_dtype,
        channels_last=channels_last,
        empty="`loader` to yield at least one batch",
    )
