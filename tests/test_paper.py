"""The paper's rows: each row's loss against an independent float64 re-derivation of its equation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import longtail_losses as ltl
from longtail_losses import paper
from tests import reference as ref
from tests.inputs import COUNTS


def test_rows_are_the_papers_table_2() -> None:
    # Table 2 of Fan et al. (2024), in its order.
    assert list(paper.ROWS) == ["naive", "+CE", "+CB", "+BS", "+BFS", "+CEW", "+CBW", "+BSW", "+BWLM"]
    assert tuple(list(paper.ROWS)[1:]) == paper.STAGE2_ROWS
    assert not paper.ROWS["naive"].two_stage
    assert paper.ROWS["naive"].counts == "full"
    for name in paper.STAGE2_ROWS:
        r = paper.ROWS[name]
        assert r.two_stage
        assert r.counts == "stage2"
        assert r.penalty == (name.endswith("W") or name == "+BWLM")
        assert r.short == name[1:]


def test_recipe_is_section_4_2() -> None:
    r = paper.RECIPE
    assert (r.batch_size, r.lr, r.momentum, r.alpha, r.weight_decay) == (64, 0.01, 0.9, 0.1, 5e-3)


@pytest.mark.parametrize("name", ["BWLM", "+BWLM"])
def test_row_accepts_the_name_with_or_without_plus(name: str) -> None:
    assert paper.row(name) is paper.ROWS["+BWLM"]
    assert paper.row(paper.ROWS["+CB"]) is paper.ROWS["+CB"]


@pytest.mark.parametrize("bad", ["bwlm", "+naive", "", 3])
def test_unknown_row_names_the_choices(bad: object) -> None:
    with pytest.raises(ValueError, match=r"Expected `row` to be one of \['naive', '\+CE'.*but got"):
        paper.row(bad)  # type: ignore[arg-type]


def _expected(name: str, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The row's loss from the equations: eq. (8)-(11) for the losses, eq. (14) with lambda/2 for the penalty."""
    r = paper.row(name)
    z, n = logits.double(), torch.tensor(COUNTS)
    per_sample = {
        "ce": lambda: -torch.log_softmax(z, 1).gather(1, target[:, None]).squeeze(1),
        "cb": lambda: ref.cb_focal(z, target, n, 0.9999, 1.0),
        "bs": lambda: ref.balanced_softmax(z, target, n),
        "bfs": lambda: ref.bfs(z, target, n, 0.1, 0.9999, 1.0),
        "bwlm": lambda: ref.bfs(z, target, n, 0.1, 0.9999, 1.0),
    }[r.loss]()
    loss = per_sample.mean()
    if r.penalty:
        loss = loss + 5e-3 / 2 * weight.double().pow(2).sum()
    return loss


@pytest.mark.parametrize("name", list(paper.ROWS))
def test_criterion_of_every_row_matches_its_equation(name: str) -> None:
    torch.manual_seed(0)
    fc = nn.Linear(6, 5)
    x, target = torch.randn(12, 6), torch.randint(0, 5, (12,))
    criterion = paper.criterion(name, COUNTS, fc)
    loss = criterion(fc(x), target)
    expected = _expected(name, fc(x).detach(), target, fc.weight.detach())
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    # The penalty's gradient reaches the classifier weight: d/dW of lambda/2 |W|^2 is lambda * W.
    (grad,) = torch.autograd.grad(loss, fc.weight)
    fc_plain = nn.Linear(6, 5)
    fc_plain.load_state_dict(fc.state_dict())
    plain = paper.criterion(name.replace("W", "").replace("+BLM", "+BFS"), COUNTS, fc_plain)
    (grad_plain,) = torch.autograd.grad(plain(fc_plain(x), target), fc_plain.weight)
    extra = 5e-3 * fc.weight.detach() if paper.row(name).penalty else torch.zeros_like(grad)
    torch.testing.assert_close(grad, grad_plain + extra, rtol=1e-5, atol=1e-7)


def test_the_w_rows_penalise_only_the_given_classifier() -> None:
    fc = nn.Linear(4, 5)
    criterion = paper.criterion("+CEW", COUNTS, fc, weight_decay=0.1)
    assert isinstance(criterion, ltl.BWLM)  # the one penalised loss: +CEW is BWLM with alpha 0 and equal counts
    assert "weight" not in criterion.state_dict()  # referenced, not owned: a checkpoint of the loss holds no copy
    z, target = torch.randn(3, 5), torch.tensor([0, 1, 4])
    expected = F.cross_entropy(z, target) + 0.05 * fc.weight.pow(2).sum()
    torch.testing.assert_close(criterion(z, target), expected)


def test_rows_without_w_ignore_weight_decay() -> None:
    fc = nn.Linear(4, 5)
    z, target = torch.randn(3, 5), torch.tensor([0, 1, 4])
    a = paper.criterion("+BS", COUNTS, fc, weight_decay=0.0)(z, target)
    b = paper.criterion("+BS", COUNTS, fc, weight_decay=1.0)(z, target)
    assert torch.equal(a, b)


def test_criterion_needs_a_classifier_with_a_weight_matrix() -> None:
    with pytest.raises(TypeError, match="classifier"):
        paper.criterion("+CEW", COUNTS, nn.ReLU())
