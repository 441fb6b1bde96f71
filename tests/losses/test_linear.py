"""Chunked linear losses: equal to the plain losses on ``features @ weight.T + bias``, values and gradients."""

from __future__ import annotations

import copy
import io
import math
import pickle
from typing import Any, Callable, Optional

import pytest
import torch
import torch.nn.functional as F

import longtail_losses as ltl
from longtail_losses import functional as LF
from longtail_losses.losses.linear import shard_range

REDUCTIONS = ["none", "mean", "sum"]
# (alpha, gamma): balanced softmax only, the paper's mixture, a non-integer gamma, focal only with gamma = 0 (BCE)
MIXTURES = [(0.0, 1.0), (0.1, 1.0), (0.4, 0.5), (1.0, 0.0), (0.6, 2.0)]


def _problem(
    dtype: torch.dtype = torch.float64, n: int = 9, d: int = 5, c: int = 23, seed: int = 0, bias: bool = True
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=gen) * 2).to(dtype).requires_grad_()
    w = torch.randn(c, d, generator=gen).to(dtype).requires_grad_()
    b = torch.randn(c, generator=gen).to(dtype).requires_grad_() if bias else None
    y = torch.randint(0, c, (n,), generator=gen)
    y[1] = -100  # one ignored sample
    counts = torch.randint(1, 200, (c,), generator=gen)
    return x, w, b, y, counts


def _plain(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], y: torch.Tensor, counts: torch.Tensor,
           *, alpha: float, gamma: float, weight_decay: float = 0.0, **kwargs: Any) -> torch.Tensor:  # fmt: skip
    """The same loss computed plainly, on the (N, C) logits, by the library's reference losses."""
    z = F.linear(x, w, b)
    if weight_decay > 0:
        return LF.bwlm_loss(z, y, counts, w, alpha=alpha, gamma=gamma, weight_decay=weight_decay, **kwargs)
    if alpha == 0.0:
        kwargs.pop("beta", None)
        return LF.balanced_softmax_loss(z, y, counts, **kwargs)
    return LF.bfs_loss(z, y, counts, alpha=alpha, gamma=gamma, **kwargs)


def _chunked(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], y: torch.Tensor, counts: torch.Tensor,
             *, alpha: float, gamma: float, **kwargs: Any) -> torch.Tensor:  # fmt: skip
    if alpha == 0.0:
        kwargs.pop("beta", None)
        return LF.linear_balanced_softmax_loss(x, w, y, counts, b, **kwargs)
    return LF.linear_bfs_loss(x, w, y, counts, b, alpha=alpha, gamma=gamma, **kwargs)


def _value_and_grads(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    loss = fn()
    gen = torch.Generator().manual_seed(seed)
    grad_output = torch.randn(loss.shape, generator=gen, dtype=loss.dtype)  # per-sample weights for 'none'
    return [loss.detach(), *torch.autograd.grad(loss, inputs, grad_output)]


class TestMatchesPlain:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize(("alpha", "gamma"), MIXTURES)
    @pytest.mark.parametrize("weight_decay", [0.0, 0.05])
    def test_float64(self, reduction: str, alpha: float, gamma: float, weight_decay: float) -> None:
        x, w, b, y, counts = _problem()
        assert b is not None
        kwargs = {"alpha": alpha, "gamma": gamma, "beta": 0.99, "reduction": reduction, "weight_decay": weight_decay}
        got = _value_and_grads(lambda: _chunked(x, w, b, y, counts, chunk_size=4, **kwargs), [x, w, b])
        want = _value_and_grads(lambda: _plain(x, w, b, y, counts, **kwargs), [x, w, b])
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)  # float64: equal up to summation order

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize(("alpha", "gamma"), MIXTURES)
    def test_float32(self, reduction: str, alpha: float, gamma: float) -> None:
        x, w, b, y, counts = _problem(torch.float32, n=16, c=300)
        assert b is not None
        kwargs = {"alpha": alpha, "gamma": gamma, "reduction": reduction}
        got = _value_and_grads(lambda: _chunked(x, w, b, y, counts, chunk_size=64, **kwargs), [x, w, b])
        want = _value_and_grads(lambda: _plain(x, w, b, y, counts, **kwargs), [x, w, b])
        for g, e in zip(got, want):
            # float32: both sides sum 300 classes of O(1) terms in different orders (gradients up to ~10)
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-4)

    @pytest.mark.parametrize("chunk_size", [1, 3, 23, 1000, None])
    def test_any_chunk_size(self, chunk_size: Optional[int]) -> None:
        x, w, b, y, counts = _problem()
        assert b is not None
        kwargs = {"alpha": 0.3, "gamma": 1.5, "beta": 0.999}
        got = _value_and_grads(lambda: _chunked(x, w, b, y, counts, chunk_size=chunk_size, **kwargs), [x, w, b])
        want = _value_and_grads(lambda: _plain(x, w, b, y, counts, **kwargs), [x, w, b])
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)  # float64: equal up to summation order

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_without_bias_and_ignore_index(self, reduction: str) -> None:
        x, w, _, y, counts = _problem(bias=False)
        y[y == 7] = 8
        y[1], y[4] = 7, 7  # label 7 is the ignored one
        kwargs = {"alpha": 0.1, "gamma": 1.0, "reduction": reduction, "ignore_index": 7}
        got = _value_and_grads(lambda: _chunked(x, w, None, y, counts, chunk_size=5, **kwargs), [x, w])
        want = _value_and_grads(lambda: _plain(x, w, None, y, counts, **kwargs), [x, w])
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)  # float64
        if reduction == "none":
            assert bool((got[0][y == 7] == 0).all())

    def test_extreme_logits_finite_and_equal(self) -> None:
        x, w, b, y, counts = _problem()
        assert b is not None
        with torch.no_grad():
            w.mul_(2000.0)  # logits of order 1e4
        kwargs = {"alpha": 0.5, "gamma": 2.0, "reduction": "sum"}
        got = _value_and_grads(lambda: _chunked(x, w, b, y, counts, chunk_size=4, **kwargs), [x, w, b])
        want = _value_and_grads(lambda: _plain(x, w, b, y, counts, **kwargs), [x, w, b])
        for g, e in zip(got, want):
            assert bool(torch.isfinite(g).all())
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-8)  # float64, values up to 1e6

    def test_only_weight_requires_grad(self) -> None:
        x, w, b, y, counts = _problem()
        x = x.detach()  # a frozen backbone (stage 2 of the two-stage method)
        loss = LF.linear_bfs_loss(x, w, y, counts, b, chunk_size=4)
        (grad_w,) = torch.autograd.grad(loss, [w])
        (want,) = torch.autograd.grad(_plain(x, w, b, y, counts, alpha=0.1, gamma=1.0), [w])
        torch.testing.assert_close(grad_w, want, rtol=1e-12, atol=1e-12)  # float64

    def test_grad_output_scales_and_second_backward_recomputes(self) -> None:
        x, w, b, y, counts = _problem()
        assert b is not None
        loss = LF.linear_bfs_loss(x, w, y, counts, b, chunk_size=4, weight_decay=0.01)
        first = torch.autograd.grad(3.0 * loss, [x, w, b], retain_graph=True)  # scaled buffers from forward
        second = torch.autograd.grad(loss, [x, w, b])  # recomputed in backward
        for a, c in zip(first, second):
            torch.testing.assert_close(a, 3.0 * c, rtol=1e-12, atol=1e-12)  # float64

    def test_no_grad_gives_the_value(self) -> None:
        x, w, b, y, counts = _problem()
        want = _plain(x, w, b, y, counts, alpha=0.1, gamma=1.0)
        with torch.no_grad():
            got = LF.linear_bfs_loss(x, w, y, counts, b, chunk_size=4)
        assert got.grad_fn is None
        torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)  # float64

    def test_all_ignored_mean_is_nan_and_empty_batch(self) -> None:
        x, w, b, _, counts = _problem()
        y = torch.full((x.shape[0],), -100)
        loss = LF.linear_bfs_loss(x, w, y, counts, b)
        assert torch.isnan(loss)
        loss.backward()
        assert x.grad is not None
        assert bool((x.grad == 0).all())
        empty = LF.linear_balanced_softmax_loss(x[:0], w, y[:0], counts, b, reduction="none")
        assert empty.shape == (0,)

    def test_bfloat16_computed_in_float32(self) -> None:
        x, w, b, y, counts = _problem(torch.bfloat16)
        loss = LF.linear_bfs_loss(x, w, y, counts, b)
        assert loss.dtype == torch.float32
        loss.backward()
        assert x.grad is not None
        assert x.grad.dtype == torch.bfloat16
        assert w.grad is not None
        assert w.grad.dtype == torch.bfloat16
        with torch.no_grad():
            want = _plain(x.float(), w.float(), b.float() if b is not None else None, y, counts, alpha=0.1, gamma=1.0)
        torch.testing.assert_close(loss.detach(), want)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    @pytest.mark.parametrize(("alpha", "gamma"), [(0.0, 1.0), (0.3, 1.5)])
    def test_gradcheck(self, reduction: str, alpha: float, gamma: float) -> None:
        x, w, b, y, counts = _problem(n=4, d=3, c=7)

        def f(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return _chunked(x, w, b, y, counts, alpha=alpha, gamma=gamma, reduction=reduction, chunk_size=3,
                            weight_decay=0.1)  # fmt: skip

        assert torch.autograd.gradcheck(f, (x, w, b), fast_mode=True)


def assert_shape(cls: type, reduction: str, shape: tuple[int, ...]) -> None:
    """The module ``cls`` returns a loss of ``shape`` with ``reduction``."""
    head = cls([5, 4, 3], in_features=2, reduction=reduction)
    assert head(torch.randn(6, 2), torch.randint(0, 3, (6,))).shape == shape


class TestLinearBalancedSoftmax:
    @pytest.mark.parametrize(("reduction", "shape"), [("none", (6,)), ("mean", ()), ("sum", ())])
    def test_shapes(self, reduction: str, shape: tuple[int, ...]) -> None:
        assert_shape(ltl.LinearBalancedSoftmax, reduction, shape)

    def test_known_values(self) -> None:
        head = ltl.LinearBalancedSoftmax([90, 10], in_features=2, bias=False)
        with torch.no_grad():
            head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        # -log(90 e^2 / (90 e^2 + 10)) and -log(10 e / (90 + 10 e)), averaged
        value = head(torch.eye(2), torch.tensor([0, 1]))
        torch.testing.assert_close(value, torch.tensor(0.7380), atol=1e-4, rtol=0)  # 4 printed digits

    def test_module_equals_functional(self) -> None:
        head = ltl.LinearBalancedSoftmax([5, 4, 3, 2, 1], in_features=3, weight_decay=0.1, chunk_size=2)
        x, y = torch.randn(4, 3), torch.tensor([0, 4, 2, -100])
        want = LF.linear_balanced_softmax_loss(x, head.weight, y, [5, 4, 3, 2, 1], head.bias, weight_decay=0.1)
        torch.testing.assert_close(head(x, y), want)

    def test_logits_iter_logits_topk(self) -> None:
        head = ltl.LinearBalancedSoftmax(torch.arange(1, 12), in_features=3)
        x = torch.randn(5, 3)
        plain = F.linear(x, head.weight, head.bias)
        torch.testing.assert_close(head.logits(x), plain)
        blocks = list(head.iter_logits(x, chunk_size=4))
        assert [start for start, _ in blocks] == [0, 4, 8]
        torch.testing.assert_close(torch.cat([z for _, z in blocks], dim=1), plain)
        values, indices = head.topk(x, k=3, chunk_size=2)
        want = plain.topk(3, dim=1)
        torch.testing.assert_close(values, want.values)
        assert torch.equal(indices, want.indices)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="Expected `in_features` to be >= 1, but got 0"):
            ltl.LinearBalancedSoftmax([1, 2], in_features=0)
        with pytest.raises(ValueError, match="Expected `chunk_size` to be None or an int >= 1, but got 0"):
            ltl.LinearBalancedSoftmax([1, 2], in_features=2, chunk_size=0)
        with pytest.raises(ValueError, match="Expected every entry of `class_counts` to be > 0"):
            ltl.LinearBalancedSoftmax([0, 2], in_features=2)
        with pytest.raises(ValueError, match="Expected `reduction` to be one of"):
            ltl.LinearBalancedSoftmax([1, 2], in_features=2, reduction="avg")

    def test_state_dict_pickle_roundtrip(self) -> None:
        head = ltl.LinearBalancedSoftmax([5, 4, 3], in_features=2, weight_decay=0.1)
        assert set(head.state_dict()) == {"class_counts", "weight", "bias"}
        other = ltl.LinearBalancedSoftmax([1, 1, 1], in_features=2)
        other.load_state_dict(head.state_dict())
        assert torch.equal(other.class_counts, head.class_counts)
        assert torch.equal(other.weight, head.weight)
        buffer = io.BytesIO()
        torch.save(head, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        clone = pickle.loads(pickle.dumps(head))
        x, y = torch.randn(3, 2), torch.tensor([0, 1, 2])
        for copy_ in (loaded, clone, copy.deepcopy(head)):
            torch.testing.assert_close(copy_(x, y), head(x, y))

    def test_to_moves_buffers_and_half_cannot_round_counts(self) -> None:
        head = ltl.LinearBalancedSoftmax([3000, 2049, 1], in_features=2).half()
        assert head.class_counts.dtype == torch.int64
        assert head.class_counts.tolist() == [3000, 2049, 1]
        assert head.weight.dtype == torch.float16
        assert head(torch.randn(3, 2, dtype=torch.float16), torch.tensor([0, 1, 2])).dtype == torch.float32

    @pytest.mark.slow
    def test_compile(self) -> None:
        head = ltl.LinearBalancedSoftmax([5, 4, 3], in_features=2)
        x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
        compiled = torch.compile(head, backend="eager")
        torch.testing.assert_close(compiled(x, y), head(x, y))


class TestLinearBFS:
    @pytest.mark.parametrize(("reduction", "shape"), [("none", (6,)), ("mean", ()), ("sum", ())])
    def test_shapes(self, reduction: str, shape: tuple[int, ...]) -> None:
        assert_shape(ltl.LinearBFS, reduction, shape)

    def test_known_values(self) -> None:
        head = ltl.LinearBFS([90, 10], in_features=2, bias=False, beta=0.99, weight_decay=0.1)
        with torch.no_grad():
            head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        # bfs_loss's documented 0.7064 on these logits, plus 0.1 / 2 * (4 + 1)
        torch.testing.assert_close(head(torch.eye(2), torch.tensor([0, 1])), torch.tensor(0.9564), atol=1e-4, rtol=0)

    def test_degenerate_settings(self) -> None:
        x, w, b, y, counts = _problem()
        bs = LF.linear_balanced_softmax_loss(x, w, y, counts, b, chunk_size=4)
        torch.testing.assert_close(LF.linear_bfs_loss(x, w, y, counts, b, alpha=0.0, chunk_size=4), bs)
        focal = LF.class_balanced_focal_loss(F.linear(x, w, b), y, counts, beta=0.9, gamma=0.0)
        torch.testing.assert_close(LF.linear_bfs_loss(x, w, y, counts, b, alpha=1.0, beta=0.9, gamma=0.0), focal)

    def test_module_equals_functional(self) -> None:
        head = ltl.LinearBFS([5, 4, 3, 2, 1], in_features=3, alpha=0.2, beta=0.9, gamma=0.5, chunk_size=2)
        x, y = torch.randn(4, 3), torch.tensor([0, 4, 2, -100])
        want = LF.linear_bfs_loss(x, head.weight, y, [5, 4, 3, 2, 1], head.bias, alpha=0.2, beta=0.9, gamma=0.5)
        torch.testing.assert_close(head(x, y), want)

    def test_module_matches_plain_bwlm_and_trains(self) -> None:
        counts = [50, 20, 5, 1]
        head = ltl.LinearBFS(counts, in_features=3, weight_decay=0.01, dtype=torch.float64)
        x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 4, (8,))
        got = _value_and_grads(lambda: head(x, y), [head.weight, head.bias])  # type: ignore[list-item]
        want = _value_and_grads(
            lambda: LF.bwlm_loss(head.logits(x), y, counts, head.weight, weight_decay=0.01),
            [head.weight, head.bias],  # type: ignore[list-item]
        )
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)  # float64

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="Expected `alpha` to be in"):
            ltl.LinearBFS([1, 2], in_features=2, alpha=2.0)
        with pytest.raises(ValueError, match="Expected `gamma` to be a finite number >= 0"):
            ltl.LinearBFS([1, 2], in_features=2, gamma=-1.0)
        with pytest.raises(ValueError, match="Expected `weight_decay` to be a finite number >= 0"):
            ltl.LinearBFS([1, 2], in_features=2, weight_decay=-1.0)

    def test_state_dict_pickle_roundtrip(self) -> None:
        head = ltl.LinearBFS([5, 4, 3], in_features=2, alpha=0.3)
        clone = pickle.loads(pickle.dumps(head))
        assert clone.alpha == 0.3
        x, y = torch.randn(3, 2), torch.tensor([0, 1, 2])
        torch.testing.assert_close(clone(x, y), head(x, y))

    def test_to_moves_buffers(self) -> None:
        head = ltl.LinearBFS([5, 4, 3], in_features=2).to(torch.float64)
        assert head.class_counts.dtype == torch.int64
        assert head.weight.dtype == torch.float64

    @pytest.mark.slow
    def test_compile(self) -> None:
        head = ltl.LinearBFS([5, 4, 3], in_features=2)
        x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
        torch.testing.assert_close(torch.compile(head, backend="eager")(x, y), head(x, y))


class TestFunctionalExceptions:
    def _args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        return torch.randn(3, 2), torch.randn(4, 2), torch.tensor([0, 1, 3]), [1, 2, 3, 4]

    def test_unknown_option_is_a_type_error(self) -> None:
        x, w, y, counts = self._args()
        with pytest.raises(TypeError, match=r"keyword argument 'alpha'"):
            LF.linear_balanced_softmax_loss(x, w, y, counts, alpha=0.5)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"keyword argument 'chunk'"):
            LF.linear_bfs_loss(x, w, y, counts, chunk=2)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"keyword argument 'gamma'"):
            ltl.LinearBalancedSoftmax(counts, 2, gamma=1.0)  # type: ignore[call-arg]

    def test_types_and_shapes(self) -> None:
        x, w, y, counts = self._args()
        f = LF.linear_bfs_loss
        with pytest.raises(TypeError, match=r"Expected `features` to be a torch\.Tensor, but got list"):
            f([[1.0]], w, y, counts)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Expected `features` to be a floating-point tensor, but got dtype"):
            f(x.long(), w, y, counts)
        with pytest.raises(ValueError, match=r"Expected `features` to have shape \(N, D\), but got shape \(3,\)"):
            f(x[:, 0], w, y, counts)
        with pytest.raises(ValueError, match=r"Expected `weight` to have shape \(C, D\) with D = 2"):
            f(x, w[:, :1], y, counts)
        with pytest.raises(ValueError, match=r"Expected `weight` to have C = 4 rows"):
            f(x, w[:3], y, counts)
        with pytest.raises(ValueError, match=r"Expected `bias` to have shape \(C,\) = \(4,\)"):
            f(x, w, y, counts, torch.zeros(3))
        with pytest.raises(TypeError, match=r"Expected `bias` to be None or a torch\.Tensor, but got list"):
            f(x, w, y, counts, [0.0] * 4)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Expected `weight` to have the dtype and device of `features`"):
            f(x, w.double(), y, counts)
        with pytest.raises(TypeError, match="Expected `target` to hold integer class indices"):
            f(x, w, y.float(), counts)
        with pytest.raises(ValueError, match=r"Expected `target` to have shape \(N,\) = \(3,\)"):
            f(x, w, y[:2], counts)
        with pytest.raises(TypeError, match=r"Expected `chunk_size` to be None or an int, but got 2\.0"):
            f(x, w, y, counts, chunk_size=2.0)  # type: ignore[arg-type]

    def test_values(self) -> None:
        x, w, y, counts = self._args()
        with pytest.raises(ValueError, match=r"Expected every `target` label to be in \[0, 4\)"):
            LF.linear_balanced_softmax_loss(x, w, torch.tensor([0, 4, 1]), counts)
        with pytest.raises(ValueError, match="Expected `beta` to be in"):
            LF.linear_bfs_loss(x, w, y, counts, beta=1.0)
        with pytest.raises(ValueError, match="Expected `reduction` to be one of"):
            LF.linear_bfs_loss(x, w, y, counts, reduction="avg")
        with pytest.raises(TypeError, match="Expected `ignore_index` to be an int"):
            LF.linear_bfs_loss(x, w, y, counts, ignore_index=1.5)  # type: ignore[arg-type]


def test_shard_range_covers_the_classes() -> None:
    for c in (1, 7, 10):
        for world in (1, 2, 3, 4):
            ranges = [shard_range(c, r, world) for r in range(world)]
            assert ranges[0][0] == 0
            assert ranges[-1][1] == c
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


@pytest.mark.parametrize("loss", [LF.linear_balanced_softmax_loss, LF.linear_bfs_loss])
def test_narrow_labels_and_unchecked_bad_labels(loss: Callable[..., torch.Tensor]) -> None:
    # The engine's drop-in guarantees hold here too: labels are cast to int64 before any comparison, and an
    # unchecked label out of range gives its sample nan instead of another class's loss.
    gen = torch.Generator().manual_seed(7)
    x, w = torch.randn(4, 3, generator=gen), torch.randn(200, 3, generator=gen)
    counts = torch.arange(1, 201)
    labels = torch.tensor([0, 1, 156, 0])
    torch.testing.assert_close(
        loss(x, w, labels.to(torch.uint8), counts, reduction="none"), loss(x, w, labels, counts, reduction="none")
    )
    bad = torch.tensor([0, -1, 5, 0])
    out = loss(x, w, bad, counts, reduction="none", validate_args=False)
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2, 3]]).all()  # noqa: PT018
    assert torch.isnan(loss(x, w, bad, counts, validate_args=False))
    with pytest.raises(ValueError, match=r"got -1 at position 1"):
        loss(x, w, bad, counts)


@pytest.mark.parametrize("module", [ltl.LinearBalancedSoftmax, ltl.LinearBFS])
def test_validate_args_must_be_a_bool(module: type) -> None:
    with pytest.raises(TypeError, match=r"`validate_args` to be a bool, but got 'no'"):
        module([3, 2], 4, validate_args="no")


@pytest.mark.parametrize("module", [ltl.LinearBalancedSoftmax, ltl.LinearBFS])
def test_load_state_dict_checks_the_counts_as_the_other_losses(module: Callable[..., Any]) -> None:
    head = module([4, 5, 1], in_features=2)
    for bad, match in [
        ([0, 5, 1], r"every entry of `state_dict\['class_counts'\]` to be > 0"),
        ([2.7, 5.0, 1.0], r"`state_dict\['class_counts'\]` to hold finite whole numbers, but got 2.7"),
    ]:
        state = head.state_dict()
        state["class_counts"] = torch.tensor(bad)
        with pytest.raises(ValueError, match=match):
            head.load_state_dict(state)
    assert head.class_counts.tolist() == [4, 5, 1]


def test_penalty_survives_reduction_none_when_every_label_is_ignored() -> None:
    x, w = torch.randn(3, 2), torch.ones(4, 2, requires_grad=True)
    target = torch.full((3,), -100)
    args = (x, w, target, [5, 4, 3, 2])
    none = LF.linear_bfs_loss(*args, weight_decay=1.0, reduction="none")
    total = LF.linear_bfs_loss(*args, weight_decay=1.0, reduction="sum")
    torch.testing.assert_close(none.sum(), total)
    torch.testing.assert_close(total, torch.tensor(4.0))  # 1/2 * 1.0 * ||W||^2 = 4
    (g_none,) = torch.autograd.grad(none.sum(), w)
    torch.testing.assert_close(g_none, w.detach())


@pytest.mark.parametrize("logit", [30.0, 1e4])
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_large_logits_keep_the_loss_non_negative_and_relatively_accurate(logit: float, alpha: float) -> None:
    x, w, y, counts = torch.tensor([[1.0]]), torch.tensor([[logit], [0.0]]), torch.tensor([0]), [10**6, 1]
    loss = LF.linear_bfs_loss(x, w, y, counts, alpha=alpha, beta=0.99, reduction="none")
    # Independent reference: log(1 + n_1 e^{z_1} / (n_0 e^{z_0})) = log1p(exp(-(logit + log 1e6))) in float64,
    # plus the focal term of the float64 dense loss.
    margin = torch.tensor(logit + math.log(1e6), dtype=torch.float64)
    softmax = torch.log1p(torch.exp(-margin))
    focal = LF.class_balanced_focal_loss((x @ w.T).double(), y, counts, beta=0.99, reduction="none")
    expected = (1 - alpha) * softmax + alpha * focal
    assert (loss >= 0).all()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=0.0)
