"""Reductions shared by every loss, with ``ignore_index`` handled as :func:`torch.nn.functional.cross_entropy` does."""

from __future__ import annotations

from torch import Tensor


def reduce_loss(per_sample: Tensor, keep: Tensor | None, reduction: str) -> Tensor:
    """Reduce a per-sample loss of shape (N,) whose ignored entries are already zero.

    ``'none'`` returns it as is (zeros where ignored), ``'sum'`` its sum and ``'mean'`` the sum divided by the
    number of kept samples (``nan`` when every sample is ignored, like :func:`~torch.nn.functional.cross_entropy`).
    """
    if reduction == "none":
        return per_sample
    total = per_sample.sum()
    if reduction == "sum":
        return total
    if keep is None:
        return total / per_sample.shape[0]
    return total / keep.sum().to(total.dtype)
