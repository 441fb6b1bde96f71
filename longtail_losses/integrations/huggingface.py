r"""The Hugging Face ``Trainer``: any loss of the library as its ``compute_loss_func``, and class counts.

``Trainer(..., compute_loss_func=TrainerLoss(criterion))`` trains with ``criterion`` in place of the model's own
loss. The adapter handles the trap of that hook: a ``compute_loss_func`` must normalise its loss over the whole
accumulated batch itself (recent ``transformers`` no longer divide it by the gradient accumulation steps), so a
per-micro-batch mean gives the wrong gradient under gradient accumulation. This module imports neither
``transformers`` nor ``datasets``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from longtail_losses.data.counts import class_counts

__all__ = ["TrainerLoss", "dataset_class_counts"]

#: The label the ``Trainer`` leaves out when it counts ``num_items_in_batch`` (``labels.ne(-100)``).
TRAINER_IGNORE_INDEX = -100


class TrainerLoss:
    r"""A loss of the library as the ``compute_loss_func`` of a Hugging Face ``Trainer``.

    The ``Trainer`` calls ``compute_loss_func(outputs, labels, num_items_in_batch=n)``, where ``n`` counts the
    labels that are not ``-100`` in **all** the micro-batches of one optimizer step (and of all processes), and
    back-propagates the returned loss as it is. With the criterion's ``'mean'`` loss :math:`\bar\ell_k` over the
    :math:`m_k` labels of micro-batch :math:`k` that are not ignored, this returns

    .. math::
        L_k = \bar\ell_k \, \frac{m_k}{n}, \qquad \sum_k L_k = \frac{1}{n} \sum_{k} \sum_{i \in k} \ell_i + P,

    the mean over the real items of the whole accumulated batch: gradient accumulation over :math:`K` micro-batches
    gives the gradient of one batch of :math:`K` times the size. A penalty :math:`P` that the criterion adds once
    per call (:class:`~longtail_losses.BWLM`'s classifier-norm term) is spread the same way, so it too counts once
    per optimizer step, not once per micro-batch. Without ``num_items_in_batch`` (older ``transformers``, or
    labels the ``Trainer`` cannot count) the criterion's own mean is returned.

    The logits are ``outputs["logits"]`` (or ``outputs[0]``), classes last: :math:`(N, C)` from a sequence
    classifier or :math:`(N, L, C)` from a token classifier, flattened to :math:`(N L, C)` with the labels.
    Logits in half precision are upcast to ``float32`` first. The criterion follows the logits' device: if its
    buffers (the class counts) are elsewhere, it is moved there once, with ``criterion.to(device)``.

    Multi-label classification (float multi-hot labels, ``problem_type="multi_label_classification"``) is not
    supported yet: the library has no multi-label loss. When it has one, this adapter is where it plugs in (a
    floating-point ``labels`` of the logits' shape); until then such labels raise a ``TypeError``.

    Args:
        criterion: A loss of the library (``criterion(logits, target) -> scalar``), built with
            ``reduction='mean'`` and ``ignore_index=-100`` (the defaults); its mean divides by the labels that are
            not ignored, as every loss of the library does. For :class:`~longtail_losses.BWLM`, pass the model's
            classification head as its classifier, e.g. ``classifier=model.classifier``.

    Raises:
        TypeError: If ``criterion`` is not callable.
        ValueError: If ``criterion`` has a ``reduction`` other than ``'mean'`` or an ``ignore_index`` other than
            ``-100``.

    Example:
        >>> import longtail_losses as ltl
        >>> loss_func = TrainerLoss(ltl.BalancedSoftmax([90, 10]))
        >>> logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> loss_func({"logits": logits}, labels)  # no num_items_in_batch: the criterion's own mean
        tensor(0.7380)
        >>> # micro-batch of 2 of a step of 4 items: half the mean, so that the two micro-batches add up to the mean
        >>> loss_func({"logits": logits}, labels, num_items_in_batch=torch.tensor(4))
        tensor(0.3690)
    """

    def __init__(self, criterion: Callable[[Tensor, Tensor], Tensor]) -> None:
        if not callable(criterion):
            raise TypeError(
                f"Expected `criterion` to be a loss, callable as criterion(logits, target), but got "
                f"{type(criterion).__name__}"
            )
        reduction = getattr(criterion, "reduction", "mean")
        if reduction != "mean":
            raise ValueError(
                f"Expected `criterion` to have reduction='mean' (the adapter rescales the mean for gradient "
                f"accumulation), but got reduction={reduction!r}"
            )
        ignore_index = getattr(criterion, "ignore_index", TRAINER_IGNORE_INDEX)
        if ignore_index != TRAINER_IGNORE_INDEX:
            raise ValueError(
                f"Expected `criterion` to have ignore_index={TRAINER_IGNORE_INDEX}, the label the Trainer leaves "
                f"out of num_items_in_batch, but got ignore_index={ignore_index}"
            )
        self.criterion = criterion

    def __repr__(self) -> str:
        return f"TrainerLoss({self.criterion!r})"

    def __call__(
        self, outputs: Any, labels: Optional[Tensor], num_items_in_batch: Optional[Union[Tensor, int]] = None
    ) -> Tensor:
        """The loss of one micro-batch, normalised over the ``num_items_in_batch`` items of the optimizer step."""
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        if labels is None:
            raise ValueError("Expected `labels` in the batch (a column named 'labels'), but got None")
        if labels.is_floating_point():
            # Extension point: a multi-label loss of the library would take these multi-hot labels here.
            raise TypeError(
                f"Expected `labels` to hold integer class indices, but got dtype {labels.dtype} with shape "
                f"{tuple(labels.shape)}; multi-label (multi-hot) labels are not supported yet"
            )
        logits = logits.reshape(-1, logits.shape[-1])
        labels = labels.reshape(-1)
        if logits.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Expected one label per row of the logits ({logits.shape[0]} rows, classes last), but got "
                f"{labels.shape[0]} labels"
            )
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        self._follow(logits.device)
        loss = self.criterion(logits, labels)
        if num_items_in_batch is None:
            return loss
        kept = (labels != TRAINER_IGNORE_INDEX).sum()
        if not bool(kept):  # every label ignored: this micro-batch adds nothing (its mean would be nan)
            return logits.sum() * 0.0
        return loss * kept / num_items_in_batch

    def _follow(self, device: torch.device) -> None:
        to = getattr(self.criterion, "to", None)
        buffers = getattr(self.criterion, "buffers", None)
        if to is None or buffers is None:
            return
        if any(b.device != device for b in buffers()):
            to(device)


def dataset_class_counts(dataset: Any, column: str = "label", *, num_classes: Optional[int] = None) -> Tensor:
    """Training samples per class, read from a column of a Hugging Face ``datasets.Dataset`` or from labels.

    A ``datasets.Dataset`` is read through Arrow without decoding a row (a million labels take about a
    millisecond), after its ``select``/``filter``/``shuffle``; ``num_classes`` defaults to the number of names
    of the column's ``ClassLabel`` feature, so that a class without samples still gets its entry. Anything
    else (a list, an array, a tensor of labels, a torch data set) goes to :func:`longtail_losses.class_counts`.

    Args:
        dataset: A ``datasets.Dataset`` or the labels themselves.
        column: The column of class indices of a ``datasets.Dataset``.
        num_classes: Number of classes C. Default: the ``ClassLabel``'s, else ``max(label) + 1``.

    Returns:
        An ``int64`` tensor of shape :math:`(C)` on the CPU.

    Raises:
        ValueError: If the column does not exist, or a label is negative or ``>= num_classes``.
        TypeError: If the column does not hold integer class indices (a multi-label column of lists, say).

    Example:
        >>> dataset_class_counts([0, 0, 1, 2, 2, 2])
        tensor([2, 1, 3])
    """
    if not (hasattr(dataset, "with_format") and hasattr(dataset, "column_names")):
        return class_counts(dataset, num_classes)
    if column not in dataset.column_names:
        raise ValueError(f"Expected `column` to be one of {dataset.column_names}, but got {column!r}")
    feature = dataset.features[column]
    if num_classes is None:
        num_classes = getattr(feature, "num_classes", None)
    values = dataset.with_format("arrow")[column]  # the Arrow column, with the data set's row selection applied
    array = values.to_numpy()
    if array.dtype.kind not in "iu":  # lists of labels (multi-label) come as objects, scores as floats
        raise TypeError(
            f"Expected column {column!r} to hold one integer class index per row, but got feature {feature}"
        )
    return class_counts(torch.as_tensor(array.copy()), num_classes)
