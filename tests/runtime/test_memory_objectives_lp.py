"""lp(p) with 1 < p < 2 at an exactly zero residual: finite gradients, first and second order."""

import torch

from nldsl.runtime.memory import standard_objective


def test_lp_below_two_is_differentiable_at_a_zero_residual():
    obj = standard_objective("lp", p=1.5)
    y = torch.tensor([0.0, 0.5, -2.0], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    g = obj(y, v)
    expected = torch.tensor([0.0, 1.5 * 0.5 ** 0.5, -1.5 * 2.0 ** 0.5], dtype=torch.float64)
    assert torch.allclose(g, expected)
    (second,) = torch.autograd.grad(g.sum(), y)
    assert torch.isfinite(second).all()
    assert second[0] == 0.0
    assert torch.allclose(second[1:], 1.5 * 0.5 * torch.tensor([0.5, 2.0], dtype=torch.float64) ** -0.5)
