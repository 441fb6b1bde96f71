"""Docstring fragments that many losses share, written once and put in place at import.

A docstring line that holds only ``{name}`` is replaced by the fragment ``name``, each of its lines indented as the
placeholder was. :func:`fill` does it at import, so ``help()``, Sphinx autodoc and the doctests all read the
complete text.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["FRAGMENTS", "fill"]

T = TypeVar("T")

#: The shared fragments, by name.
FRAGMENTS: dict[str, str] = {
    # Shape of every loss on logits, for class-index or probability targets.
    "logits_shape": (
        "logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.\n"
        "target: class indices (``logits``' shape without C) or probabilities (``logits``' shape).\n"
        "output: a scalar, or the shape of the class-index target if ``reduction='none'``."
    ),
    # The per-class loss weights and the call options of a module form with class weights (LDAM, VS), after its Args.
    "weighted_module_options": (
        "class_weights: Per-class loss weights :math:`(C)`, finite and ``>= 0``, or ``None``. Default: ``None``.\n"
        "**options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``, as for the function."
    ),
    # Shape of the multi-label losses (functions and modules).
    "multihot_shape": (
        "logits: :math:`(C)`, :math:`(N, C)` or :math:`(N, C, d_1, ..., d_k)`.\n"
        "target: the shape of ``logits``, any real dtype (bool, integer, floating point).\n"
        "weight: broadcastable to the shape of ``logits``.\n"
        "output: a scalar, or the shape of ``logits`` if ``reduction='none'`` (zero where unknown)."
    ),
    # The Args every multi-label function shares, after its hyperparameters.
    "multihot_args": (
        "weight: Per-element weight, broadcastable to the logits (``BCEWithLogitsLoss``'s ``weight``), or None.\n"
        "mean_over: What ``reduction='mean'`` divides by: ``'elements'`` (the known elements, the default, as\n"
        "    ``BCEWithLogitsLoss``) or ``'samples'`` (the mean over samples of the sum over classes).\n"
        "**options: ``reduction``, ``ignore_index`` (the target value that means *unknown*), ``label_smoothing``\n"
        "    (binary: :math:`t(1-\\varepsilon) + \\varepsilon/2`), ``validate_args``: :ref:`call-options`."
    ),
    # The last Args of a multi-label module form: what 'mean' averages, and the call options.
    "multihot_module_options": (
        "mean_over: ``'elements'`` (default) or ``'samples'``, as for the function.\n"
        "**options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``, as for the function."
    ),
    # The call options of a module form, after its Args.
    "module_options": (
        "**options: ``reduction``, ``ignore_index``, ``label_smoothing``, ``validate_args``, as for the function."
    ),
    # The Args the two linear losses share (put the placeholder at the indentation of the Args entries).
    "linear_args": (
        "features: Inputs :math:`x` of the linear classifier.\n"
        "weight: Its weight :math:`W`, one row per class.\n"
        "target: Class indices in ``[0, C)``, or ``ignore_index``.\n"
        "class_counts: Training samples per class :math:`n_c`, all ``> 0``.\n"
        "bias: Its bias :math:`b`, or None."
    ),
    # The Args after the hyperparameters of the two linear losses (same indentation as "linear_args").
    "linear_options": (
        "class_weights: Per-class loss weights :math:`v_c \\ge 0`, one for each of the C classes (all of them also\n"
        "    when sharded), as ``F.cross_entropy``'s ``weight``; None (the default) for ones.\n"
        "weight_decay: :math:`\\lambda \\ge 0` of the penalty :math:`\\frac{\\lambda}{2}\\lVert W\\rVert^2`. "
        "Default: ``0``.\n"
        "chunk_size: Classes per block; None (the default) picks about :math:`2^{16} / N`.\n"
        "process_group: Shard the classes over this ``torch.distributed`` group (see the sharded form of\n"
        "    :func:`~longtail_losses.functional.linear_balanced_softmax_loss`). Default: ``None``.\n"
        "**options: ``reduction``, ``ignore_index``, ``label_smoothing`` :math:`\\varepsilon`, ``validate_args``:\n"
        "    :ref:`call-options`."
    ),
    # Shape and Raises of the two linear losses (sections: put the placeholder at the docstring's indentation).
    "linear_sections": (
        "Shape:\n"
        "    features: :math:`(N, D)`.\n"
        "    weight: :math:`(C, D)` (this rank's :math:`(C_r, D)` when sharded).\n"
        "    target: :math:`(N)`.\n"
        "    class_counts: :math:`(C)`.\n"
        "    bias: :math:`(C)` (:math:`(C_r)` when sharded).\n"
        "    class_weights: :math:`(C)`, also when sharded.\n"
        "    output: a scalar, or :math:`(N)` if ``reduction='none'`` (zero for ignored samples).\n"
        "\n"
        "Raises:\n"
        "    TypeError: If an argument has the wrong type or dtype.\n"
        "    ValueError: If the shapes disagree, a count, label or class weight is invalid, or a hyperparameter is\n"
        "        out of range."
    ),
}


def fill(obj: T) -> T:
    """Put the :data:`FRAGMENTS` named by the placeholder lines of ``obj``'s docstring in place; return ``obj``.

    Raises:
        KeyError: If a placeholder names no fragment.
    """
    doc = obj.__doc__
    if doc is None:
        return obj
    lines = []
    for line in doc.splitlines():
        name = line.strip()
        if name.startswith("{") and name.endswith("}") and name[1:-1].isidentifier():
            indent = line[: len(line) - len(line.lstrip())]
            lines += [indent + part if part else part for part in FRAGMENTS[name[1:-1]].splitlines()]
        else:
            lines.append(line)
    obj.__doc__ = "\n".join(lines) + ("\n" if doc.endswith("\n") else "")
    return obj
