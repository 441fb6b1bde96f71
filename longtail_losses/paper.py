r"""The BWLM paper's experiment, defined once: its rows (Tables 2-4) and its recipe (section 4.2).

The examples (``examples/``), the evidence study (``benchmarks/``) and the docs build their losses and tables
from here, so that "+BSW" means the same thing everywhere.

The rows of the ablation (Table 2 of :cite:`fan2024bwlm`):

* ``naive``: one stage, cross-entropy on the whole long-tailed training set;
* ``+CE``, ``+CB``, ``+BS``, ``+BFS``: the frozen stage-1 backbone, a new classifier over all classes, trained on
  the data-balanced-review subset (:func:`~longtail_losses.twostage.data_balanced_review`) with cross-entropy,
  class-balanced focal loss, balanced softmax or their mixture BFS;
* ``+CEW``, ``+CBW``, ``+BSW``, ``+BWLM``: the same four losses plus the classifier-norm penalty
  :math:`\frac{\lambda}{2}\sum_j\lVert\theta_j\rVert^2` (:func:`~longtail_losses.functional.classifier_norm_penalty`,
  the "W"); ``+BWLM`` is BFS plus the penalty, i.e. :class:`~longtail_losses.BWLM`.

Counts used (a choice the paper leaves open; this library's, and the examples' default): every class-count
based loss of a two-stage row gets the class counts of the set its classifier trains on, the stage-2 subset
(``Row.counts == "stage2"``); the naive row trains on the whole set (``"full"``).

Example:
    >>> import torch
    >>> from longtail_losses import paper
    >>> [r.name for r in paper.ROWS.values()]
    ['naive', '+CE', '+CB', '+BS', '+BFS', '+CEW', '+CBW', '+BSW', '+BWLM']
    >>> paper.row("BSW")
    Row(name='+BSW', loss='bs', penalty=True, two_stage=True, counts='stage2')
    >>> fc = torch.nn.Linear(8, 3)
    >>> criterion = paper.criterion("+BSW", [50, 10, 2], fc)
    >>> criterion(fc(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).shape
    torch.Size([])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor, nn

from longtail_losses._validation import CountsLike
from longtail_losses.losses.balanced_softmax import BalancedSoftmax
from longtail_losses.losses.bwlm import BFS, BWLM
from longtail_losses.losses.class_balanced import ClassBalancedFocal

__all__ = ["LOSSES", "RECIPE", "ROWS", "STAGE2_ROWS", "Recipe", "Row", "criterion", "row"]

#: The losses of the rows' last stage (cross-entropy, class-balanced focal, balanced softmax, BFS, BWLM).
LOSSES = ("ce", "cb", "bs", "bfs", "bwlm")


@dataclass(frozen=True)
class Recipe:
    """The paper's training recipe (section 4.2; its lambda is that of Alshammari et al. 2022).

    ``beta`` and ``gamma`` are not stated in the paper; they are the defaults of Cui et al. (2019).
    The learning rate decays with a cosine schedule to 0, per step.
    """

    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    epochs: int = 320
    alpha: float = 0.1
    beta: float = 0.9999
    gamma: float = 1.0
    weight_decay: float = 5e-3
    stage1_weight_decay: float = 5e-3


#: The recipe of the paper.
RECIPE = Recipe()


@dataclass(frozen=True)
class Row:
    """One row of the paper's tables.

    Attributes:
        name: As the paper prints it: ``"naive"``, ``"+CE"``, ..., ``"+BWLM"``.
        loss: The loss of the row's last stage, one of :data:`LOSSES`.
        penalty: Whether the classifier-norm penalty is added (the "W" rows).
        two_stage: ``False`` for the naive row only.
        counts: The class counts the loss is built from: ``"stage2"`` (the reviewed subset the new classifier
            trains on) or ``"full"`` (the whole training set).
    """

    name: str
    loss: str
    penalty: bool
    two_stage: bool = True
    counts: str = "stage2"

    @property
    def short(self) -> str:
        """The name without the ``+`` (a command-line value): ``"BWLM"``."""
        return self.name.lstrip("+")


#: Every row, in the paper's order, by name.
ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        Row("naive", "ce", penalty=False, two_stage=False, counts="full"),
        Row("+CE", "ce", penalty=False),
        Row("+CB", "cb", penalty=False),
        Row("+BS", "bs", penalty=False),
        Row("+BFS", "bfs", penalty=False),
        Row("+CEW", "ce", penalty=True),
        Row("+CBW", "cb", penalty=True),
        Row("+BSW", "bs", penalty=True),
        Row("+BWLM", "bwlm", penalty=True),
    )
}

#: The names of the two-stage rows.
STAGE2_ROWS = tuple(name for name, r in ROWS.items() if r.two_stage)


def row(name: Union[str, Row]) -> Row:
    """The row called ``name``, with or without its ``+`` (``"BWLM"`` or ``"+BWLM"``).

    Raises:
        ValueError: If there is no such row.
    """
    if isinstance(name, Row):
        return name
    if isinstance(name, str):
        for key in (name, "+" + name):
            if key in ROWS:
                return ROWS[key]
    raise ValueError(f"Expected `row` to be one of {list(ROWS)} (the '+' may be left out), but got {name!r}")


def criterion(
    name: Union[str, Row], class_counts: CountsLike, classifier: nn.Module, *,
    alpha: float = RECIPE.alpha, beta: float = RECIPE.beta, gamma: float = RECIPE.gamma,
    weight_decay: float = RECIPE.weight_decay, validate_args: bool = True,
) -> nn.Module:  # fmt: skip
    r"""The loss of the row ``name``, for ``classifier``, built from ``class_counts``.

    Every "W" row is a :class:`~longtail_losses.BWLM`, the one penalised loss: ``+BWLM`` with ``alpha``, ``+CBW``
    with ``alpha=1`` (class-balanced focal), ``+BSW`` with ``alpha=0`` (balanced softmax) and ``+CEW`` with
    ``alpha=0`` and equal counts (cross-entropy); so all four regularise the classifier identically. The rows
    without "W" ignore ``weight_decay``; cross-entropy is :class:`torch.nn.CrossEntropyLoss` and ignores
    ``class_counts``.

    Args:
        name: A row of :data:`ROWS`, e.g. ``"+BWLM"`` or ``"BWLM"``.
        class_counts: Counts of the set the classifier trains on (see ``Row.counts``); the loss is moved to
            their device if they are a tensor.
        classifier: The classifier the "W" rows penalise.
        alpha: BFS/BWLM weight of the class-balanced focal term (paper: 0.1).
        beta: Effective-number :math:`\beta` of the class-balanced term.
        gamma: Focal :math:`\gamma`.
        weight_decay: :math:`\lambda` of the penalty (paper: 5e-3).
        validate_args: Passed to the library's losses.

    Returns:
        The criterion, ``criterion(logits, target) -> scalar``.
    """
    r = row(name)
    losses: dict[str, Any] = {
        "ce": lambda: nn.CrossEntropyLoss(),
        "cb": lambda: ClassBalancedFocal(class_counts, beta=beta, gamma=gamma, validate_args=validate_args),
        "bs": lambda: BalancedSoftmax(class_counts, validate_args=validate_args),
        "bfs": lambda: BFS(class_counts, alpha=alpha, beta=beta, gamma=gamma, validate_args=validate_args),
    }
    loss: nn.Module
    if r.penalty:  # every "W" row is a BWLM: CB is alpha = 1, BS alpha = 0, CE alpha = 0 with equal counts
        alpha_of = {"ce": 0.0, "cb": 1.0, "bs": 0.0, "bfs": alpha, "bwlm": alpha}
        counts = torch.ones(len(class_counts), dtype=torch.int64) if r.loss == "ce" else class_counts
        loss = BWLM(
            counts,
            classifier=classifier,
            alpha=alpha_of[r.loss],
            beta=beta,
            gamma=gamma,
            weight_decay=weight_decay,
            validate_args=validate_args,
        )
    else:
        loss = losses[r.loss]()
    if isinstance(class_counts, Tensor):
        loss = loss.to(class_counts.device)
    return loss
