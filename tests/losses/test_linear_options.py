"""The linear heads' options of ``F.linear_cross_entropy``: ``label_smoothing`` and ``class_weights``.

Each equals the dense loss on ``features @ weight.T + bias`` with the same option (values and the gradients of
features, weight and bias), over several class blocks (``chunk_size=3`` with C = 10). No dense BFS takes class
weights, so weighted BFS is compared with the float64 re-derivation of ``tests/reference.py``, expected over the
(smoothed) target.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import longtail_losses as ltl
from longtail_losses import functional as LF
from tests import reference as ref
from tests.inputs import REDUCTIONS
from tests.losses.test_linear import _problem, _value_and_grads

C = 10
BETA = 0.99
# A zero weight (allowed: >= 0), every other one different.
WEIGHTS = torch.tensor([0.5, 1.0, 0.0, 2.0, 1.5, 0.25, 3.0, 1.0, 0.75, 2.5], dtype=torch.float64)
LOSSES = [(0.0, 1.0), (0.3, 1.5)]  # (alpha, gamma): balanced softmax, BFS with a non-integer gamma


def problem(ignore_index: int = -100, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``_problem`` with C = 10 and samples 1 and 5 ignored by ``ignore_index`` (a class, or -100)."""
    x, w, b, y, counts = _problem(c=C, **kwargs)
    assert b is not None
    y[y == ignore_index] = (ignore_index + 1) % C
    y[1], y[5] = ignore_index, ignore_index
    return x, w, b, y, counts


def chunked(x: Tensor, w: Tensor, b: Optional[Tensor], y: Tensor, counts: Tensor, *, alpha: float, gamma: float,
            **options: Any) -> Tensor:  # fmt: skip
    if alpha == 0.0:
        return LF.linear_balanced_softmax_loss(x, w, y, counts, b, chunk_size=3, **options)
    return LF.linear_bfs_loss(x, w, y, counts, b, alpha=alpha, beta=BETA, gamma=gamma, chunk_size=3, **options)


def dense(x: Tensor, w: Tensor, b: Optional[Tensor], y: Tensor, counts: Tensor, *, alpha: float, gamma: float,
          class_weights: Optional[Tensor] = None, **options: Any) -> Tensor:  # fmt: skip
    """The dense loss with the same options: the library's where one takes them, else the float64 reference."""
    z = F.linear(x, w, b)
    if class_weights is None and alpha == 0.0:
        return LF.balanced_softmax_loss(z, y, counts, **options)
    if class_weights is None:
        return LF.bfs_loss(z, y, counts, alpha=alpha, beta=BETA, gamma=gamma, **options)
    if alpha == 0.0:  # LDAM without margins on z + log n: cross-entropy with weight and label smoothing
        kwargs = {"max_margin": 0.0, "scale": 1.0, "class_weights": class_weights}
        return LF.ldam_loss(z + counts.double().log(), y, counts, **kwargs, **options)
    rows, dist, keep, labels, _ = ref.form_rows(z, y, options.get("label_smoothing", 0.0), options["ignore_index"])
    assert labels is not None

    def bfs(z: Tensor, k: Tensor, n: Tensor) -> Tensor:
        return ref.bfs(z, k, n, alpha, BETA, gamma)

    # sum_k t_k v_k bfs(z, k); 'mean' divides by the kept labels' weights
    per_row = ref.expected_over_classes(bfs, rows, dist * class_weights, counts)
    return ref.reduce_kept(per_row, keep, options["reduction"], class_weights[labels])


def assert_equal(got: list[Tensor], want: list[Tensor], **tolerance: float) -> None:
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, **tolerance)


class TestMatchesDense:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("ignore_index", [-100, 3])
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
    @pytest.mark.parametrize("weighted", [False, True])
    @pytest.mark.parametrize(("alpha", "gamma"), LOSSES)
    def test_float64(
        self, reduction: str, ignore_index: int, label_smoothing: float, weighted: bool, alpha: float, gamma: float
    ) -> None:
        x, w, b, y, counts = problem(ignore_index)
        options = {"reduction": reduction, "ignore_index": ignore_index, "label_smoothing": label_smoothing}
        options["class_weights"] = WEIGHTS if weighted else None
        got = _value_and_grads(lambda: chunked(x, w, b, y, counts, alpha=alpha, gamma=gamma, **options), [x, w, b])
        want = _value_and_grads(lambda: dense(x, w, b, y, counts, alpha=alpha, gamma=gamma, **options), [x, w, b])
        if weighted and alpha > 0.0:
            # the textbook reference (explicit sigmoid, log(1 - p)) loses digits at logits ~10: default tolerance
            assert_equal(got, want)
        elif weighted:
            # float64: the dense LDAM path itself differs from F.cross_entropy by up to 6e-12 on gradients of ~10
            # here (TestAgainstTorch holds the chunked loss to 1e-12 of F.cross_entropy)
            assert_equal(got, want, rtol=1e-10, atol=1e-10)
        else:
            assert_equal(got, want, rtol=1e-12, atol=1e-12)  # float64: equal up to summation order

    @pytest.mark.parametrize(("alpha", "gamma"), LOSSES)
    def test_uniform_target(self, alpha: float, gamma: float) -> None:
        # label_smoothing = 1: the label's own loss has weight 0, only the smoothed part remains
        x, w, b, y, counts = problem()
        options = {"reduction": "sum", "ignore_index": -100, "label_smoothing": 1.0}
        got = _value_and_grads(lambda: chunked(x, w, b, y, counts, alpha=alpha, gamma=gamma, **options), [x, w, b])
        want = _value_and_grads(lambda: dense(x, w, b, y, counts, alpha=alpha, gamma=gamma, **options), [x, w, b])
        assert_equal(got, want, rtol=1e-12, atol=1e-12)  # float64: equal up to summation order

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize(("alpha", "gamma"), LOSSES)
    def test_float32(self, reduction: str, alpha: float, gamma: float) -> None:
        x, w, b, y, counts = _problem(torch.float32, n=16, c=300)
        assert b is not None
        options = {"reduction": reduction, "label_smoothing": 0.1}
        got = _value_and_grads(lambda: chunked(x, w, b, y, counts, alpha=alpha, gamma=gamma, **options), [x, w, b])
        want = _value_and_grads(lambda: dense(x, w, b, y, counts, alpha=alpha, gamma=gamma, **options), [x, w, b])
        # float32: both sides sum 300 classes of O(1) terms in different orders (gradients up to ~10)
        assert_equal(got, want, rtol=1e-5, atol=1e-4)

    @pytest.mark.parametrize(("alpha", "gamma"), LOSSES)
    def test_extreme_logits_finite_and_equal(self, alpha: float, gamma: float) -> None:
        x, w, b, y, counts = problem()
        with torch.no_grad():
            w.mul_(2000.0)  # logits of order 1e4
        options = {"reduction": "sum", "ignore_index": -100, "label_smoothing": 0.1}
        options["class_weights"] = WEIGHTS if alpha == 0.0 else None  # dense losses only: the reference overflows
        got = _value_and_grads(lambda: chunked(x, w, b, y, counts, alpha=alpha, gamma=gamma, **options), [x, w, b])
        want = _value_and_grads(lambda: dense(x, w, b, y, counts, alpha=alpha, gamma=gamma, **options), [x, w, b])
        for g in got:
            assert bool(torch.isfinite(g).all())
        assert_equal(got, want, rtol=1e-10, atol=1e-8)  # float64, values up to 1e6

    def test_penalty_is_added_once(self) -> None:
        x, w, b, y, counts = problem()
        options = {"alpha": 0.3, "gamma": 1.5, "label_smoothing": 0.2, "class_weights": WEIGHTS}

        def value_and_grads(**decay: float) -> list[Tensor]:
            loss = chunked(x, w, b, y, counts, **options, **decay)
            return [loss.detach(), *torch.autograd.grad(loss, [x, w, b])]

        plain, decayed = value_and_grads(), value_and_grads(weight_decay=0.1)
        penalty = 0.05 * w.detach().pow(2).sum()
        assert_equal(decayed, [plain[0] + penalty, plain[1], plain[2] + 0.1 * w.detach(), plain[3]])

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    @pytest.mark.parametrize(("alpha", "gamma"), LOSSES)
    def test_gradcheck(self, reduction: str, alpha: float, gamma: float) -> None:
        x, w, b, y, counts = _problem(n=4, d=3, c=7)
        options = {"reduction": reduction, "label_smoothing": 0.2, "class_weights": WEIGHTS[:7]}

        def f(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
            return chunked(x, w, b, y, counts, alpha=alpha, gamma=gamma, **options)

        assert torch.autograd.gradcheck(f, (x, w, b), fast_mode=True)

    def test_weights_of_zero_for_every_kept_label_give_nan_mean(self) -> None:
        x, w, b, y, counts = problem()
        zero = torch.ones(C, dtype=torch.float64)
        zero[y[y != -100]] = 0.0
        loss = LF.linear_balanced_softmax_loss(x, w, y, counts, b, class_weights=zero)
        want = F.cross_entropy(F.linear(x, w, b) + counts.double().log(), y, weight=zero)
        assert torch.isnan(loss) and torch.isnan(want)  # noqa: PT018
        loss.backward()
        assert x.grad is not None
        assert bool((x.grad == 0).all())


class TestAgainstTorch:
    """Balanced softmax with class weights is cross-entropy with ``weight`` of the logits shifted by log n."""

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("ignore_index", [-100, 3])
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
    def test_cross_entropy(self, reduction: str, ignore_index: int, label_smoothing: float) -> None:
        x, w, b, y, counts = problem(ignore_index)
        options = {"reduction": reduction, "ignore_index": ignore_index, "label_smoothing": label_smoothing}
        got = _value_and_grads(
            lambda: LF.linear_balanced_softmax_loss(x, w, y, counts, b, class_weights=WEIGHTS, chunk_size=3, **options),
            [x, w, b],
        )
        want = _value_and_grads(
            lambda: F.cross_entropy(F.linear(x, w, b) + counts.double().log(), y, weight=WEIGHTS, **options), [x, w, b]
        )
        assert_equal(got, want, rtol=1e-12, atol=1e-12)  # float64: equal up to summation order

    @pytest.mark.skipif(not hasattr(F, "linear_cross_entropy"), reason="torch has no F.linear_cross_entropy")
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
    def test_linear_cross_entropy(self, reduction: str, label_smoothing: float) -> None:
        x, w, b, y, counts = problem()
        options = {"reduction": reduction, "ignore_index": -100, "label_smoothing": label_smoothing}
        got = _value_and_grads(
            lambda: LF.linear_balanced_softmax_loss(x, w, y, counts, b, class_weights=WEIGHTS, chunk_size=3, **options),
            [x, w, b],
        )
        want = _value_and_grads(
            lambda: F.linear_cross_entropy(x, w, y, linear_bias=b + counts.double().log(), weight=WEIGHTS, **options),
            [x, w, b],
        )
        assert_equal(got, want, rtol=1e-12, atol=1e-12)  # float64: equal up to summation order


MODULES: list[tuple[Callable[..., Any], dict[str, Any]]] = [
    (ltl.LinearBalancedSoftmax, {}),
    (ltl.LinearBFS, {"alpha": 0.3, "beta": BETA, "gamma": 1.5}),
]


@pytest.mark.parametrize(("module", "hyper"), MODULES)
class TestModules:
    def test_module_equals_functional(self, module: Callable[..., Any], hyper: dict[str, Any]) -> None:
        x, _, _, y, counts = problem()
        options = {"class_weights": WEIGHTS, "label_smoothing": 0.2, "reduction": "none"}
        head = module(counts, 5, chunk_size=3, dtype=torch.float64, **hyper, **options)
        alpha, gamma = hyper.get("alpha", 0.0), hyper.get("gamma", 1.0)
        want = chunked(x, head.weight, head.bias, y, counts, alpha=alpha, gamma=gamma, **options)
        torch.testing.assert_close(head(x, y), want)

    def test_repr_and_buffer(self, module: Callable[..., Any], hyper: dict[str, Any]) -> None:
        head = module([5, 4, 3], 2, class_weights=[1.0, 2.0, 0.5], label_smoothing=0.1, **hyper).half()
        assert "weighted=True" in repr(head)
        assert "label_smoothing=0.1" in repr(head)
        assert head.class_weights.dtype == torch.float64  # kept under .half(), as LDAMLoss's
        assert "class_weights" in head.state_dict()
        assert "weighted=False" in repr(module([5, 4, 3], 2, **hyper))

    def test_checkpoints_with_or_without_weights(self, module: Callable[..., Any], hyper: dict[str, Any]) -> None:
        x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
        weighted = module([5, 4, 3], 2, class_weights=[1.0, 2.0, 0.5], **hyper)
        plain = module([5, 4, 3], 2, **hyper)
        plain.load_state_dict(weighted.state_dict())  # a weighted checkpoint: weights after
        assert plain.weighted
        torch.testing.assert_close(plain(x, y), weighted(x, y))
        weighted.load_state_dict(module([5, 4, 3], 2, **hyper).state_dict())  # an unweighted one: none after
        assert weighted.class_weights is None
        state = plain.state_dict()
        state["class_weights"] = torch.ones(4, dtype=torch.float64)
        with pytest.raises(ValueError, match=r"`state_dict\['class_weights'\]` to have shape \(3,\)"):
            plain.load_state_dict(state)

    def test_reassigned_weights_are_used(self, module: Callable[..., Any], hyper: dict[str, Any]) -> None:
        head = module([50, 5, 1], 2, **hyper)
        head.class_weights = ltl.drw_weights([50, 5, 1], epoch=3, start_epoch=2, dtype=torch.float64)
        x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
        alpha, gamma = hyper.get("alpha", 0.0), hyper.get("gamma", 1.0)
        options = {"class_weights": head.class_weights}
        torch.testing.assert_close(head(x, y), chunked(x, head.weight, head.bias, y, [50, 5, 1], alpha=alpha,
                                                       gamma=gamma, **options))  # fmt: skip


@pytest.mark.parametrize(
    "make",
    [
        lambda weights: LF.linear_balanced_softmax_loss(*problem()[:2], problem()[3], [1] * C, class_weights=weights),
        lambda weights: LF.linear_bfs_loss(*problem()[:2], problem()[3], [1] * C, class_weights=weights),
        lambda weights: ltl.LinearBalancedSoftmax([1] * C, 5, class_weights=weights),
        lambda weights: ltl.LinearBFS([1] * C, 5, class_weights=weights),
    ],
    ids=["linear_balanced_softmax_loss", "linear_bfs_loss", "LinearBalancedSoftmax", "LinearBFS"],
)
def test_bad_class_weights_are_refused_as_ldams(make: Callable[[Any], Any]) -> None:
    with pytest.raises(ValueError, match=r"Expected `class_weights` to have shape \(10,\), but got \(3,\)"):
        make(torch.ones(3))
    with pytest.raises(ValueError, match=r"Expected `class_weights` to hold finite numbers >= 0, but got -1.0 for"):
        make([-1.0] + [1.0] * (C - 1))
    with pytest.raises(ValueError, match=r"Expected `class_weights` to hold finite numbers >= 0, but got nan for"):
        make([float("nan")] + [1.0] * (C - 1))
    with pytest.raises(TypeError, match=r"Expected `class_weights` to be a sequence, NumPy array or tensor"):
        make("heavy")
    with pytest.raises(ValueError, match=r"Expected `class_weights` to be 1-D"):
        make(torch.ones(2, C))


def test_label_smoothing_out_of_range_is_refused() -> None:
    x, w, _, y, counts = problem()
    with pytest.raises(ValueError, match="Expected `label_smoothing` to be in"):
        LF.linear_bfs_loss(x, w, y, counts, label_smoothing=1.5)
    with pytest.raises(ValueError, match="Expected `label_smoothing` to be in"):
        ltl.LinearBalancedSoftmax(counts, 5, label_smoothing=-0.1)
