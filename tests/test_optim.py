"""ClassNormDecay (Alshammari et al. 2022): the optimizer step post-hook that shrinks classifier rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import longtail_losses as ltl


def _step_with_zero_grad(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()


class TestClassNormDecay:
    def test_rows_scaled_by_one_minus_lr_wd_and_bias_untouched(self) -> None:
        fc = nn.Linear(4, 3)
        opt = torch.optim.SGD(fc.parameters(), lr=0.2)
        ltl.ClassNormDecay(fc, weight_decay=0.5).attach(opt)
        w0, b0 = fc.weight.detach().clone(), fc.bias.detach().clone()
        _step_with_zero_grad(opt, [fc.weight, fc.bias])
        torch.testing.assert_close(fc.weight.detach(), w0 * (1 - 0.2 * 0.5))
        torch.testing.assert_close(fc.bias.detach(), b0)

    def test_applied_after_the_optimizer_update(self) -> None:
        fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        opt = torch.optim.SGD(fc.parameters(), lr=0.1)
        ltl.ClassNormDecay(fc, weight_decay=1.0).attach(opt)
        fc.weight.grad = torch.ones(2, 2)
        opt.step()
        # SGD first: w - 0.1 * 1, then decay by (1 - 0.1 * 1.0).
        expected = (torch.tensor([[1.0, 2.0], [3.0, 4.0]]) - 0.1) * 0.9
        torch.testing.assert_close(fc.weight.detach(), expected)

    def test_per_class_factors(self) -> None:
        fc = nn.Linear(2, 3, bias=False)
        opt = torch.optim.SGD(fc.parameters(), lr=0.1)
        w0 = fc.weight.detach().clone()
        ltl.ClassNormDecay(fc, weight_decay=1.0, per_class=[0.0, 1.0, 2.0]).attach(opt)
        _step_with_zero_grad(opt, [fc.weight])
        torch.testing.assert_close(fc.weight.detach(), w0 * torch.tensor([[1.0], [0.9], [0.8]]))

    def test_max_norm_caps_rows(self) -> None:
        fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            fc.weight.copy_(torch.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]]))
        opt = torch.optim.SGD(fc.parameters(), lr=0.1)
        ltl.ClassNormDecay(fc, weight_decay=0.0, max_norm=1.0).attach(opt)
        _step_with_zero_grad(opt, [fc.weight])
        norms = fc.weight.detach().norm(dim=1)
        torch.testing.assert_close(norms, torch.tensor([1.0, 0.5, 1.0]), atol=1e-6, rtol=0)
        # direction kept
        torch.testing.assert_close(fc.weight[0].detach(), torch.tensor([0.6, 0.8]), atol=1e-6, rtol=0)

    def test_uses_lr_of_the_weights_param_group_and_follows_scheduler(self) -> None:
        backbone, fc = nn.Linear(3, 3), nn.Linear(3, 2)
        opt = torch.optim.AdamW(
            [{"params": backbone.parameters(), "lr": 1.0}, {"params": fc.parameters(), "lr": 0.1}], weight_decay=0.0
        )
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        decay = ltl.ClassNormDecay(fc.weight, weight_decay=1.0)
        decay.attach(opt)
        w0 = fc.weight.detach().clone()
        opt.step()  # no grads anywhere: AdamW skips, the hook still runs with lr 0.1
        torch.testing.assert_close(fc.weight.detach(), w0 * 0.9)
        sched.step()  # lr 0.05
        opt.step()
        torch.testing.assert_close(fc.weight.detach(), w0 * 0.9 * 0.95)

    def test_remove_detaches(self) -> None:
        fc = nn.Linear(2, 2)
        opt = torch.optim.SGD(fc.parameters(), lr=0.1)
        handle = ltl.ClassNormDecay(fc, weight_decay=1.0).attach(opt)
        handle.remove()
        w0 = fc.weight.detach().clone()
        _step_with_zero_grad(opt, [fc.weight, fc.bias])
        torch.testing.assert_close(fc.weight.detach(), w0)

    def test_plain_sgd_equals_bwlm_penalty(self) -> None:
        # Without momentum, decoupled decay by (1 - lr * wd) equals adding wd * theta to the gradient.
        torch.manual_seed(0)
        x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
        counts = [50, 10, 2]
        a = nn.Linear(4, 3).double()
        b = nn.Linear(4, 3).double()
        b.load_state_dict(a.state_dict())
        opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
        ltl.ClassNormDecay(a, weight_decay=0.05).attach(opt_a)
        opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
        bwlm = ltl.BWLM(counts, classifier=b, weight_decay=0.05)
        # one step: decoupled decay acts on the updated weight, the penalty on the old one; compare per step
        opt_a.zero_grad()
        ltl.BFS(counts)(a(x), y).backward()
        w_before = a.weight.detach().clone()
        g = a.weight.grad.clone()
        opt_a.step()
        torch.testing.assert_close(a.weight.detach(), (w_before - 0.1 * g) * (1 - 0.1 * 0.05))
        opt_b.zero_grad()
        bwlm(b(x), y).backward()
        opt_b.step()
        torch.testing.assert_close(b.weight.detach(), w_before - 0.1 * (g + 0.05 * w_before))

    def test_repr(self) -> None:
        assert repr(ltl.ClassNormDecay(nn.Linear(2, 3), 0.1, max_norm=2.0)) == (
            "ClassNormDecay(num_classes=3, weight_decay=0.1, max_norm=2.0, per_class=None)"
        )

    def test_exceptions(self) -> None:
        fc = nn.Linear(2, 3)
        with pytest.raises(ValueError, match=r"`weight_decay` to be a finite number >= 0, but got -0.1"):
            ltl.ClassNormDecay(fc, weight_decay=-0.1)
        with pytest.raises(ValueError, match=r"`max_norm` to be None or a finite number > 0, but got 0"):
            ltl.ClassNormDecay(fc, weight_decay=0.1, max_norm=0)
        with pytest.raises(ValueError, match=r"`per_class` to have shape \(3,\).*got \(2,\)"):
            ltl.ClassNormDecay(fc, weight_decay=0.1, per_class=[1.0, 2.0])
        with pytest.raises(ValueError, match=r"`per_class` to hold finite numbers >= 0"):
            ltl.ClassNormDecay(fc, weight_decay=0.1, per_class=[1.0, -2.0, 0.0])
        with pytest.raises(TypeError, match=r"`classifier` to have a `.weight`"):
            ltl.ClassNormDecay(nn.ReLU(), weight_decay=0.1)
        with pytest.raises(ValueError, match=r"`classifier` weight to be at least 2-D"):
            ltl.ClassNormDecay(torch.ones(3), weight_decay=0.1)
        other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
        with pytest.raises(ValueError, match=r"`optimizer` to hold the classifier weight"):
            ltl.ClassNormDecay(fc, weight_decay=0.1).attach(other)

    def test_refuses_a_step_that_flips_signs(self) -> None:
        fc = nn.Linear(3, 5)
        before = fc.weight.detach().clone()
        hook = ltl.ClassNormDecay(fc, weight_decay=5.0, per_class=[1, 1, 1, 1, 3])
        with pytest.raises(ValueError, match=r"`lr \* weight_decay \* per_class` to be <= 1.*0.1 \* 5.0 \* 3.0 = 1.5"):
            hook.apply(0.1)
        torch.testing.assert_close(fc.weight.detach(), before)
        hook.apply(0.05)  # 0.75 <= 1 is fine: the rows shrink
        assert bool((fc.weight.sign() == before.sign()).all())

    def test_conv_1x1_classifier(self) -> None:
        head = nn.Conv2d(3, 5, kernel_size=1)
        before = head.weight.detach().clone()
        ltl.ClassNormDecay(head, weight_decay=0.5, per_class=[1, 2, 0, 1, 1], max_norm=0.3).apply(0.1)
        factors = torch.tensor([0.95, 0.9, 1.0, 0.95, 0.95]).view(5, 1, 1, 1)
        expected = torch.renorm(before * factors, p=2, dim=0, maxnorm=0.3)
        torch.testing.assert_close(head.weight.detach(), expected)

    def test_type_checks(self) -> None:
        fc = nn.Linear(3, 5)
        with pytest.raises(TypeError, match=r"`per_class` to be a sequence, NumPy array or tensor of real numbers"):
            ltl.ClassNormDecay(fc, weight_decay=0.1, per_class=object())
        with pytest.raises(TypeError, match=r"`per_class` to hold real numbers, but got dtype torch.bool"):
            ltl.ClassNormDecay(fc, weight_decay=0.1, per_class=[True] * 5)
        hook = ltl.ClassNormDecay(fc, weight_decay=0.1)
        with pytest.raises(TypeError, match=r"`optimizer` to be a torch.optim.Optimizer, but got list"):
            hook.attach([fc.weight])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"`lr` to be a real number, but got '0.1'"):
            hook.apply("0.1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"`lr` to be a finite number >= 0, but got -1"):
            hook.apply(-1)
