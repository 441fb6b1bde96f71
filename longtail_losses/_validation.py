"""Argument checks shared by every public function and module.

All wording lives here so that messages are identical everywhere. Every message names the argument in
backticks, states the rule and shows what was received: "Expected `x` to be ..., but got ...".

Checks on metadata (type, ndim, shape, dtype) and on Python scalars always run. Checks on tensor *values*
(labels in range, counts positive) force a device-to-host synchronisation; they run only when the caller
asks for them (``validate_args=True``).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

__all__ = [
    "CountsLike",
    "as_counts",
    "as_real_tensor",
    "check_alpha",
    "check_beta",
    "check_bfs",
    "check_bool",
    "check_features_labels",
    "check_finite",
    "check_gamma",
    "check_ignore_index",
    "check_int",
    "check_label_smoothing",
    "check_labels",
    "check_linear_inputs",
    "check_logits_target",
    "check_lr",
    "check_max_norm",
    "check_mean_over",
    "check_multihot",
    "check_multihot_values",
    "check_num_samples",
    "check_number",
    "check_probabilities",
    "check_real",
    "check_reduction",
    "check_seed",
    "check_target_values",
    "check_tensor",
    "check_weight_decay",
    "check_weight_matrix",
    "replaced_classifiers",
]

#: Anything :func:`as_counts` accepts: a sequence of numbers, a NumPy array or a tensor.
CountsLike = Union[Sequence[int], Sequence[float], Tensor, Any]

_REDUCTIONS = ("none", "mean", "sum")
_MEAN_OVER = ("elements", "samples")


def check_real(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a real number (a one-element tensor too), not nan; inf passes."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex and value.dtype != torch.bool:
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be a real number, but got {value!r} of type {type(value).__name__}")
    result = float(value)
    if math.isnan(result):
        raise ValueError(f"Expected `{name}` to be a real number, but got nan")
    return result


def check_number(
    name: str, value: object, *,
    low: float = -math.inf, high: float = math.inf, strict_low: bool = False, strict_high: bool = False,
    interval: bool = False, optional: bool = False,
) -> Any:  # fmt: skip
    """Return ``value`` as a float if it is a finite real number between ``low`` and ``high``.

    The bounds are inclusive unless ``strict_*``. The rule reads "a finite number >= low and <= high", or with
    ``interval`` "in [low, high)"; with ``optional``, None is returned as is.
    """
    if optional and value is None:
        return None
    result = check_real(name, value)
    above = result > low if strict_low else result >= low
    below = result < high if strict_high else result <= high
    if not (math.isfinite(result) and above and below):
        if interval:
            rule = f"in {'(' if strict_low else '['}{low:g}, {high:g}{')' if strict_high else ']'}"
        else:
            rule = "a finite number"
            rule += "" if low == -math.inf else f" {'>' if strict_low else '>='} {low:g}"
            rule += (
                ""
                if high == math.inf
                else f"{' and' if low > -math.inf else ''} {'<' if strict_high else '<='} {high:g}"
            )
        raise ValueError(f"Expected `{name}` to be {'None or ' if optional else ''}{rule}, but got {value}")
    return result


def check_finite(name: str, value: object, *, low: float = -math.inf, strict: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real number ``>= low`` (``> low`` if ``strict``)."""
    return check_number(name, value, low=low, strict_low=strict)


def check_int(name: str, value: object, minimum: int, *, optional: bool = False) -> Any:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``; with ``optional``, or None."""
    if optional and value is None:
        return None
    rule = "None or an int" if optional else "an int"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Expected `{name}` to be {rule}, but got {value!r} of type {type(value).__name__}")
    if value < minimum:
        # The value is an int by now: the rule says only what it broke.
        raise ValueError(
            f"Expected `{name}` to be {'None or an int ' if optional else ''}>= {minimum}, but got {value}"
        )
    return int(value)


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is an int that, plus any epoch, still seeds a :class:`torch.Generator`."""
    value: int = check_int("seed", seed, -(2**63))
    if value >= 2**63:
        raise ValueError(f"Expected `seed` to be < 2**63 (plus the epoch, it seeds a torch.Generator), but got {value}")
    return value


def check_imbalance_factor(imbalance_factor: object) -> float:
    """Return ``imbalance_factor`` (largest / smallest class count) as a float if it is finite and ``>= 1``."""
    return check_number("imbalance_factor", imbalance_factor, low=1.0)


def check_reduction(reduction: object) -> str:
    """Return ``reduction`` if it is one of ``'none'``, ``'mean'``, ``'sum'``."""
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"Expected `reduction` to be one of {_REDUCTIONS}, but got {reduction!r}")
    return reduction


def check_ignore_index(ignore_index: object) -> int:
    """Return ``ignore_index`` as an ``int`` that fits in ``int64`` (the dtype labels are compared in)."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"Expected `ignore_index` to be an int, but got {ignore_index!r}")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"Expected `ignore_index` to fit in int64 ([-2**63, 2**63)), but got {ignore_index}")
    return int(ignore_index)


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool`` (``validate_args="no"`` is a mistake, not ``True``)."""
    if not isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be a bool, but got {value!r} of type {type(value).__name__}")
    return value


def check_label_smoothing(label_smoothing: object) -> float:
    """Return ``label_smoothing`` if it lies in ``[0, 1]``."""
    return check_number("label_smoothing", label_smoothing, low=0.0, high=1.0, interval=True)


def check_lr(lr: object) -> float:
    """Return the learning rate ``lr`` if it is finite and ``>= 0``."""
    return check_number("lr", lr, low=0.0)


def check_beta(beta: object) -> float:
    """Return ``beta`` if it lies in ``[0, 1)``."""
    return check_number("beta", beta, low=0.0, high=1.0, strict_high=True, interval=True)


def check_gamma(gamma: object) -> float:
    """Return ``gamma`` if it is finite and ``>= 0``."""
    return check_number("gamma", gamma, low=0.0)


def check_alpha(alpha: object) -> float:
    """Return ``alpha`` if it lies in ``[0, 1]``."""
    return check_number("alpha", alpha, low=0.0, high=1.0, interval=True)


def check_bfs(alpha: object, beta: object, gamma: object) -> tuple[float, float, float]:
    """Return BFS's ``(alpha, beta, gamma)`` if ``alpha`` is in [0, 1], ``beta`` in [0, 1) and ``gamma >= 0``."""
    return check_alpha(alpha), check_beta(beta), check_gamma(gamma)


def check_weight_decay(weight_decay: object) -> float:
    """Return ``weight_decay`` if it is finite and ``>= 0``."""
    return check_number("weight_decay", weight_decay, low=0.0)


def check_max_norm(max_norm: object) -> Optional[float]:
    """Return ``max_norm`` if it is ``None`` or finite and ``> 0``."""
    return check_number("max_norm", max_norm, low=0.0, strict_low=True, optional=True)


def as_real_tensor(name: str, value: object, rule: str) -> Tensor:
    """``value`` as a detached tensor of real numbers; ``rule`` says what an array-like ``value`` must be.

    Raises:
        TypeError: If ``value`` is not array-like (``"Expected `name` to be <rule>, ..."``), or holds booleans or
            complex numbers.
    """
    if isinstance(value, Tensor):
        tensor = value.detach()
    else:
        if isinstance(value, (str, bytes)) or value is None:
            raise TypeError(f"Expected `{name}` to be {rule}, but got {value!r}")
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"Expected `{name}` to be {rule}, but got {type(value).__name__}: {err}") from None
    if tensor.dtype == torch.bool or tensor.dtype.is_complex:
        raise TypeError(f"Expected `{name}` to hold real numbers, but got dtype {tensor.dtype}")
    return tensor


def as_counts(
    value: object, name: str = "class_counts", *,
    num_classes: Optional[int] = None, minimum: int = 1, dtype: torch.dtype = torch.int64, check_values: bool = True,
) -> Tensor:  # fmt: skip
    """The one check of per-class numbers: a non-empty 1-D tensor of finite values ``>= minimum``, in ``dtype``.

    Training counts (the default) are positive whole numbers (``5`` and ``5.0`` both work; ``5.5`` does not), as
    ``int64`` on the device of a tensor input. ``minimum=0`` admits zeros (counts of a test set, Seesaw's
    accumulated counts); a floating-point ``dtype`` admits any finite number ``>= minimum`` (EQLv2's statistics).
    ``num_classes`` fixes the length. The values are checked (one device sync) when ``check_values`` is true and
    the tensor is not on the meta device; the type and shape always.

    Raises:
        TypeError: If ``value`` is not array-like, or holds booleans or complex numbers.
        ValueError: If it is not 1-D, is empty, has the wrong length, or holds a value that breaks the rule.
    """
    whole = not dtype.is_floating_point
    rule = "positive whole numbers" if whole and minimum == 1 else "real numbers"
    if not whole and not isinstance(value, Tensor):  # a list of floats read in `dtype`: 1e-50 is no float32 zero
        with contextlib.suppress(TypeError, ValueError, RuntimeError):  # as_real_tensor says what is wrong
            if torch.as_tensor(value).dtype.is_floating_point:  # booleans stay booleans, and are refused below
                value = torch.as_tensor(value, dtype=dtype)
    tensor = as_real_tensor(name, value, f"a sequence, NumPy array or tensor of {rule}")
    if tensor.ndim != 1:
        raise ValueError(f"Expected `{name}` to be 1-D (one count per class), but got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"Expected `{name}` to hold at least one class, but got an empty sequence")
    if num_classes is not None and tensor.shape[0] != num_classes:
        raise ValueError(f"Expected `{name}` to have shape ({num_classes},), but got {tuple(tensor.shape)}")
    if check_values and tensor.device.type != "meta":
        if tensor.dtype.is_floating_point:
            bad = ~torch.isfinite(tensor) | ((tensor != torch.round(tensor)) if whole else (tensor < 0))
            if bool(bad.any()):
                j = int(bad.nonzero()[0, 0])
                rule = "finite whole numbers" if whole else "finite numbers >= 0"
                raise ValueError(f"Expected `{name}` to hold {rule}, but got {tensor[j].item()} for class {j}")
            if whole and bool((tensor.abs() >= 2.0**63).any()):
                j = int((tensor.abs() >= 2.0**63).nonzero()[0, 0])
                raise ValueError(f"Expected `{name}` to fit in int64, but got {tensor[j].item():g} for class {j}")
        bad = tensor < minimum
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            hint = " (a class with no training sample cannot be reweighted; drop it or count it as 1)"
            raise ValueError(
                f"Expected every entry of `{name}` to be {'> 0' + hint if minimum == 1 else '>= 0'}, "
                f"but got {tensor[j].item():g} for class {j}"
            )
    return tensor.to(dtype)


def check_labels(name: str, labels: object, *, one_dim: bool = True) -> Tensor:
    """Return ``labels`` if it is a tensor of integer class indices, 1-D unless ``one_dim=False`` (metadata only)."""
    tensor: Tensor = check_tensor(name, labels)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"Expected `{name}` to hold integer class indices, but got dtype {tensor.dtype}")
    if one_dim and tensor.ndim != 1:
        raise ValueError(f"Expected `{name}` to be 1-D, but got shape {tuple(tensor.shape)}")
    return tensor


def check_features_labels(features: object, labels: object) -> tuple[Tensor, Tensor]:
    """Return ``features`` :math:`(N, D)` (floating point) and ``labels`` :math:`(N)` (class indices), checked."""
    x: Tensor = check_tensor("features", features)
    y = check_labels("labels", labels, one_dim=False)
    if not x.dtype.is_floating_point:
        raise TypeError(f"Expected `features` to be a floating-point tensor, but got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"Expected `features` to have shape (N, D), but got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"Expected `labels` to have shape ({x.shape[0]},) to match features, but got {tuple(y.shape)}")
    return x, y


def _check_logits(logits: object, target: object, num_classes: Optional[int]) -> tuple[Tensor, Tensor, int]:
    """Both are tensors, ``logits`` floating point with C = ``num_classes`` (any C if None); with the class dim."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"Expected `logits` to be a torch.Tensor, but got {type(logits).__name__}")
    if not isinstance(target, Tensor):
        raise TypeError(f"Expected `target` to be a torch.Tensor, but got {type(target).__name__}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"Expected `logits` to be a floating-point tensor, but got dtype {logits.dtype}")
    if logits.ndim == 0:
        raise ValueError("Expected `logits` to have shape (C,), (N, C) or (N, C, d1, ..., dk), but got a scalar")
    class_dim = 0 if logits.ndim == 1 else 1
    if num_classes is not None and logits.shape[class_dim] != num_classes:
        raise ValueError(
            f"Expected `logits` to have C = {num_classes} classes on dimension {class_dim}, "
            f"but got shape {tuple(logits.shape)}"
        )
    return logits, target, class_dim


def check_logits_target(logits: object, target: object, num_classes: int) -> bool:
    """Check the types, dtypes and shapes of ``logits`` and ``target``; return whether ``target`` holds probabilities.

    The forms are those of :func:`torch.nn.functional.cross_entropy`: logits :math:`(C)`, :math:`(N, C)` or
    :math:`(N, C, d_1, ..., d_k)` with the classes on dimension 1 (0 when unbatched), and either integer class
    indices of the logits' shape without the class dimension or floating-point class probabilities of the
    logits' shape.
    """
    logits, target, class_dim = _check_logits(logits, target, num_classes)
    if target.device != logits.device:
        raise ValueError(f"Expected `target` on the device of `logits` ({logits.device}), but got {target.device}")
    if target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(
            "Expected `target` to hold integer class indices or floating-point class probabilities, "
            f"but got dtype {target.dtype}"
        )
    if target.dtype.is_floating_point:
        if target.shape != logits.shape:
            raise ValueError(
                f"Expected `target` of class probabilities to have the shape of `logits` {tuple(logits.shape)}, "
                f"but got {tuple(target.shape)}"
            )
        return True
    expected = logits.shape[:class_dim] + logits.shape[class_dim + 1 :]
    if target.shape != expected:
        raise ValueError(
            f"Expected `target` of class indices to have shape {tuple(expected)} to match `logits` "
            f"{tuple(logits.shape)}, but got {tuple(target.shape)}"
        )
    return False


def check_probabilities(probs: Tensor, class_dim: int) -> None:
    """Check that probability targets are finite, ``>= 0`` and sum to 1 over the classes (a device sync).

    The sums may miss 1 by ``1e-3``, or by four rounding units of the target's dtype where that is more
    (``bfloat16``: 0.031), so a softmax computed in half precision passes as ``F.cross_entropy`` takes it.
    """
    if probs.numel() == 0:
        return
    sums = probs.sum(dim=class_dim, dtype=torch.float64)
    tolerance = max(1e-3, 4 * torch.finfo(probs.dtype).eps)
    bad = ~torch.isfinite(probs).all() | (probs < 0).any() | ((sums - 1.0).abs() > tolerance).any()
    if bool(bad):
        raise ValueError(
            "Expected `target` of class probabilities to be finite, >= 0 and to sum to 1 over the classes, "
            f"but got values in [{probs.min().item()}, {probs.max().item()}] and sums in "
            f"[{sums.min().item()}, {sums.max().item()}]"
        )


def check_target_values(target: Tensor, num_classes: int, ignore_index: int) -> None:
    """Check that every int64 label is in ``[0, C)`` or equals ``ignore_index`` (synchronises with the device).

    The position in the message counts the labels in row-major order (``target.flatten()``).
    """
    if target.numel() == 0:
        return
    low, high = torch.aminmax(target)
    if int(low) >= 0 and int(high) < num_classes:  # the common case: one reduction, one sync
        return
    flat = target.reshape(-1)
    bad = ((flat < 0) | (flat >= num_classes)) & (flat != ignore_index)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"Expected every `target` label to be in [0, {num_classes}) or equal to ignore_index={ignore_index}, "
            f"but got {int(flat[i])} at position {i}"
        )


#: Classifier layers (and their weights) that :func:`longtail_losses.twostage.replace_classifier` took out of a
#: model -> the layer that replaced them; held by the library, weakly, so nothing is written onto the user's layer.
replaced_classifiers: WeakIdKeyDictionary = WeakIdKeyDictionary()


def check_weight_matrix(weight: object, name: str = "classifier", num_classes: Optional[int] = None) -> Tensor:
    """Return the weight of a classifier module, or the tensor itself: one row per class on dimension 0.

    A linear layer's ``(C, D)`` weight and a 1x1 convolution's ``(C, D, 1, 1)`` weight both qualify. With
    ``num_classes``, it must have that many rows.
    """
    if isinstance(weight, torch.nn.Module):
        w = getattr(weight, "weight", None)
        if not isinstance(w, Tensor):
            raise TypeError(
                f"Expected `{name}` to have a `.weight` tensor (e.g. an nn.Linear), "
                f"but {type(weight).__name__} has none"
            )
        weight = w
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"Expected `{name}` to be an nn.Module with a `.weight` (e.g. nn.Linear) or a weight tensor, "
            f"but got {type(weight).__name__}"
        )
    if weight.ndim < 2:
        raise ValueError(
            f"Expected `{name}` weight to be at least 2-D (num_classes, features, ...), "
            f"but got shape {tuple(weight.shape)}"
        )
    if not weight.dtype.is_floating_point:
        raise TypeError(f"Expected `{name}` weight to be floating point, but got dtype {weight.dtype}")
    if num_classes is not None and weight.shape[0] != num_classes:
        raise ValueError(
            f"Expected `{name}` weight to have one row per class ({num_classes}), but got shape {tuple(weight.shape)}"
        )
    return weight


def check_tensor(name: str, value: object, *, optional: bool = False) -> Any:
    """Return ``value`` if it is a tensor (or, with ``optional``, None)."""
    if not isinstance(value, Tensor) and not (optional and value is None):
        rule = "None or a torch.Tensor" if optional else "a torch.Tensor"
        raise TypeError(f"Expected `{name}` to be {rule}, but got {type(value).__name__}")
    return value


def check_linear_inputs(features: Any, weight: Any, bias: Any, target: Any) -> None:
    """Types, dtypes, shapes and devices of ``features`` (N, D), ``weight`` (C, D), ``bias`` (C) and ``target`` (N)."""
    for name, value in (("features", features), ("weight", weight), ("target", target)):
        check_tensor(name, value)
    check_tensor("bias", bias, optional=True)
    if not features.dtype.is_floating_point:
        raise TypeError(f"Expected `features` to be a floating-point tensor, but got dtype {features.dtype}")
    if features.ndim != 2:
        raise ValueError(f"Expected `features` to have shape (N, D), but got shape {tuple(features.shape)}")
    if weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"Expected `weight` to have shape (C, D) with D = {features.shape[1]} to match `features` "
            f"{tuple(features.shape)}, but got shape {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(
            f"Expected `bias` to have shape (C,) = ({weight.shape[0]},) to match `weight`, "
            f"but got shape {tuple(bias.shape)}"
        )
    for name, value in (("weight", weight), ("bias", bias)):
        if isinstance(value, Tensor) and (value.dtype != features.dtype or value.device != features.device):
            raise TypeError(
                f"Expected `{name}` to have the dtype and device of `features` ({features.dtype}, {features.device}), "
                f"but got ({value.dtype}, {value.device})"
            )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(
            f"Expected `target` to hold integer class indices (e.g. torch.int64), but got dtype {target.dtype}"
        )
    if target.shape != (features.shape[0],):
        raise ValueError(
            f"Expected `target` to have shape (N,) = ({features.shape[0]},) to match `features` "
            f"{tuple(features.shape)}, but got {tuple(target.shape)}"
        )
    if target.device != features.device:
        raise ValueError(f"Expected `target` on the device of `features` ({features.device}), but got {target.device}")


# ----------------------------------------------------------------------------------------------------------------
# Multi-hot targets


def check_mean_over(mean_over: object) -> str:
    """Return ``mean_over`` if it is ``'elements'`` or ``'samples'`` (what ``reduction='mean'`` divides by)."""
    if not isinstance(mean_over, str) or mean_over not in _MEAN_OVER:
        raise ValueError(f"Expected `mean_over` to be one of {_MEAN_OVER}, but got {mean_over!r}")
    return mean_over


def check_multihot(logits: object, target: object, num_classes: Optional[int], weight: object = None) -> None:
    """Check the types, dtypes, shapes and devices of multi-hot ``target`` and per-element ``weight`` (metadata).

    ``logits`` :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`; ``target`` of the same shape, of any
    real dtype (bool, integer or floating point); ``weight`` None or a real tensor broadcastable to that shape.
    ``num_classes`` None accepts any C.
    """
    logits, target, _ = _check_logits(logits, target, num_classes)
    if target.dtype.is_complex:
        raise TypeError(f"Expected `target` to hold multi-hot labels (real numbers in [0, 1]), but got {target.dtype}")
    if target.shape != logits.shape:
        raise ValueError(
            f"Expected multi-hot `target` to have the shape of `logits` {tuple(logits.shape)}, "
            f"but got {tuple(target.shape)}"
        )
    if target.device != logits.device:
        raise ValueError(f"Expected `target` on the device of `logits` ({logits.device}), but got {target.device}")
    if weight is None:
        return
    w = check_tensor("weight", weight)
    if w.dtype.is_complex or w.dtype == torch.bool:
        raise TypeError(f"Expected `weight` to hold real numbers, but got dtype {w.dtype}")
    if w.device != logits.device:
        raise ValueError(f"Expected `weight` on the device of `logits` ({logits.device}), but got {w.device}")
    try:
        torch.broadcast_shapes(w.shape, logits.shape)
    except RuntimeError:
        raise ValueError(
            f"Expected `weight` to be broadcastable to the shape of `logits` {tuple(logits.shape)}, "
            f"but got {tuple(w.shape)}"
        ) from None
    if torch.broadcast_shapes(w.shape, logits.shape) != logits.shape:
        raise ValueError(
            f"Expected `weight` to be broadcastable to the shape of `logits` {tuple(logits.shape)}, "
            f"but got {tuple(w.shape)}"
        )


def check_multihot_values(target: Tensor, ignore_index: int) -> None:
    """Check that every ``target`` value is in ``[0, 1]`` or equals ``ignore_index`` (synchronises with the device).

    The position in the message counts the values in row-major order (``target.flatten()``).
    """
    if target.numel() == 0:
        return
    flat = target.reshape(-1)
    if flat.dtype == torch.bool:
        return
    values = flat.double() if flat.dtype.is_floating_point else flat.long()
    bad = ~((values >= 0) & (values <= 1)) & (values != ignore_index)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"Expected every multi-hot `target` value to be in [0, 1] or equal to ignore_index={ignore_index}, "
            f"but got {flat[i].item()} at position {i}"
        )


def check_num_samples(num_samples: object, counts: Tensor, *, check_values: bool = True) -> int:
    """Return ``num_samples`` N (an int ``>= 1``) if every positive count is ``< N`` (a device sync, with values).

    A class positive in every sample has prior 1, whose logit is infinite.
    """
    n: int = check_int("num_samples", num_samples, 1)
    if check_values and counts.device.type != "meta" and counts.numel():
        top = int(counts.max())
        if top >= n:
            j = int(counts.argmax())
            raise ValueError(
                f"Expected every entry of `class_counts` to be < num_samples={n} (a class positive in every sample "
                f"has an infinite prior logit), but got {top} for class {j}"
            )
    return n
