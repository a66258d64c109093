"""Invalid configurations and inputs are refused with clear messages; objectives have their formulas."""
from __future__ import annotations

import pytest
import torch

from memory_testkit import DTYPE, make_inputs
from nldsl.runtime.memory.functional import ACTIVATION_FNS, times_slope
from nldsl.runtime.memory import (MemoryConfig, Rule, affine_coefficients, chunk_form, chunked, init_params,
                                  param_shapes, reference, standard_objective)


@pytest.mark.parametrize('build, message', [
    (lambda: MemoryConfig('linear', 4, 4, rules=(Rule('gd', at='current'),), chunk=2), 'chunk size 1'),
    (lambda: MemoryConfig('linear', 4, 4, rules=(Rule('retain'), Rule('dgd'))), 'twice'),
    (lambda: MemoryConfig('mlp', 4, 3, depth=2, hidden=8, residual=True), 'dk == dv'),
    (lambda: MemoryConfig('linear', 4, 3, self_target=True), 'dk == dv'),
    (lambda: MemoryConfig('linear', 4, 4, rules=(Rule('momentum'), Rule('momentum'))), 'one momentum'),
    (lambda: MemoryConfig('mlp', 4, 4, depth=2), 'hidden'),
    (lambda: MemoryConfig('mlp', 4, 4, act='swish'), 'activation'),
    (lambda: MemoryConfig('linear', 4, 4, bias=True), "family 'mlp'"),
    (lambda: MemoryConfig('conv', 4, 4), 'family'),
    (lambda: MemoryConfig('linear', 4, 4, read='later'), 'read mode'),
    (lambda: MemoryConfig('linear', 4, 4, chunk=0), 'chunk size'),
    (lambda: MemoryConfig('linear', 4, 4, rules=()), 'at least one'),
    (lambda: Rule('sgd'), 'unknown update rule'),
    (lambda: Rule('gd', at='later'), "'anchor' or 'current'"),
    (lambda: Rule('gd', per_layer=True), 'per_layer'),
])
def test_invalid_configs_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize('runner', [reference, chunked])
@pytest.mark.parametrize('rules, missing', [
    ((Rule('retain'), Rule('gd')), 'alpha'),
    ((Rule('momentum'),), 'beta'),
    ((Rule('delta'),), 'eta'),
])
def test_missing_gate_raises(runner, rules, missing):
    cfg = MemoryConfig('linear', 3, 3, rules=rules, chunk=2)
    inputs = make_inputs(cfg, 1, 1, 4, seed=0, grad=False)
    gates = {n: g for n, g in inputs.gates.items() if n != missing}
    with pytest.raises(ValueError, match=f"needs the gate '{missing}'"):
        runner(cfg, standard_objective('l2'), inputs.q, inputs.k, inputs.v, gates, inputs.params0)


@pytest.mark.parametrize('runner', [reference, chunked])
def test_bad_shapes_raise(runner):
    cfg = MemoryConfig('linear', 3, 3, chunk=2)
    inputs = make_inputs(cfg, 1, 1, 4, seed=0, grad=False)
    objective = standard_objective('l2')
    with pytest.raises(ValueError, match='v must be'):
        runner(cfg, objective, inputs.q, inputs.k, inputs.v[..., :2], inputs.gates, inputs.params0)
    with pytest.raises(ValueError, match='gate eta'):
        runner(cfg, objective, inputs.q, inputs.k, inputs.v, {'eta': inputs.gates['eta'][..., :2]},
               inputs.params0)
    with pytest.raises(ValueError, match='initial parameters'):
        runner(cfg, objective, inputs.q, inputs.k, inputs.v, inputs.gates, {'W1': inputs.params0['W']})


def test_init_params_shapes_and_values():
    mlp = MemoryConfig('mlp', 4, 4, depth=3, hidden=8, bias=True)
    params = init_params(mlp, heads=2, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    assert {n: tuple(p.shape[1:]) for n, p in params.items()} == param_shapes(mlp)
    assert param_shapes(mlp) == {'W1': (8, 4), 'b1': (8,), 'W2': (8, 8), 'b2': (8,), 'W3': (4, 8), 'b3': (4,)}
    assert all(p.dtype == DTYPE and p.shape[0] == 2 for p in params.values())
    assert params['W1'].abs().sum() > 0 and params['b1'].abs().sum() == 0
    linear = init_params(MemoryConfig('linear', 4, 5), heads=3)
    assert tuple(linear['W'].shape) == (3, 5, 4) and linear['W'].abs().sum() == 0


LOSSES = {
    'l2': (lambda r: 0.5 * (r ** 2).sum(-1), {}),
    'sq': (lambda r: (r ** 2).sum(-1), {}),
    'mse': (lambda r: (r ** 2).mean(-1), {}),
    'l1': (lambda r: r.abs().sum(-1), {}),
    'huber': (lambda r: torch.where(r.abs() <= 0.7, 0.5 * r ** 2, 0.7 * (r.abs() - 0.35)).sum(-1),
              {'delta': 0.7}),
    'lp': (lambda r: (r.abs() ** 2.5).sum(-1), {'p': 2.5}),
}


@pytest.mark.parametrize('name', list(LOSSES))
def test_objective_gradient_is_the_derivative_of_its_loss(name):
    loss, params = LOSSES[name]
    y = torch.randn(3, 5, dtype=DTYPE, requires_grad=True)
    v = torch.randn(3, 5, dtype=DTYPE)
    expected, = torch.autograd.grad(loss(y - v).sum(), y)
    got = standard_objective(name, **params)(y, v)
    assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize('name', sorted(ACTIVATION_FNS))
def test_activation_slope_and_its_derivative(name):
    """The memory backward's act'(z) is autograd's derivative of act, and so is its own derivative
    (the closed-form second derivatives that the chunk-parallel path differentiates through)."""
    act, slope = ACTIVATION_FNS[name]
    z = (3 * torch.randn(40, dtype=DTYPE)).requires_grad_()
    first, = torch.autograd.grad(act(z).sum(), z, create_graph=True)
    assert torch.allclose(slope(z), first, atol=1e-12)
    second = torch.autograd.grad(first.sum(), z, allow_unused=True)[0] if first.requires_grad else None
    if not slope(z).requires_grad:  # relu and identity: act' is piecewise constant
        assert second is None or not second.any()
        return
    got, = torch.autograd.grad(slope(z).sum(), z)
    assert torch.allclose(got, second, atol=1e-12)
    assert torch.autograd.gradgradcheck(slope, (z,))


@pytest.mark.parametrize('name', sorted(ACTIVATION_FNS))
def test_the_fused_slope_equals_the_closed_form_to_third_order(name):
    """The chunked path's back * act'(z) (ATen's activation backward where there is one) is the
    reference's closed form, and so are its gradients w.r.t. back and z, and theirs (gradgradcheck)."""
    back = torch.randn(6, 5, dtype=DTYPE).requires_grad_()
    z = (3 * torch.randn(6, 5, dtype=DTYPE)).requires_grad_()
    fused, closed = times_slope(name, back, z, fused=True), times_slope(name, back, z)
    assert torch.allclose(fused, closed, atol=1e-12)
    if not fused.requires_grad:
        return
    weight = torch.randn(6, 5, dtype=DTYPE)
    got = torch.autograd.grad((fused * weight).sum(), (back, z), create_graph=True, allow_unused=True)
    expected = torch.autograd.grad((closed * weight).sum(), (back, z), create_graph=True, allow_unused=True)
    for g, e in zip(got, expected):
        assert (g is None and e is None) or torch.allclose(g, e, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda b, x: times_slope(name, b, x, fused=True), (back, z))


def test_dot_objective_and_affine_coefficients():
    y, v = torch.randn(2, 4, dtype=DTYPE, requires_grad=True), torch.randn(2, 4, dtype=DTYPE)
    expected, = torch.autograd.grad(-(y * v).sum(), y)
    assert torch.allclose(standard_objective('dot')(y, v), expected)
    assert affine_coefficients(standard_objective('mse'), 4) == (0.5, 0.5)
    assert affine_coefficients(standard_objective('dot'), 4) == (0.0, 1.0)
    assert affine_coefficients(standard_objective('huber'), 4) is None
    assert affine_coefficients(lambda y, v: y - v, 4) is None


def test_unknown_objectives_and_parameters_raise():
    with pytest.raises(ValueError, match='unknown objective'):
        standard_objective('cosine')
    with pytest.raises(ValueError, match='p >= 1'):
        standard_objective('lp', p=0.5)
    with pytest.raises(ValueError, match='delta > 0'):
        standard_objective('huber', delta=0.0)
    with pytest.raises(ValueError, match='unexpected parameter'):
        standard_objective('l2', delta=1.0)


def test_clip_needs_a_positive_bound_and_a_gradient():
    for bad in (0.0, -1.0, float('inf'), float('nan')):
        with pytest.raises(ValueError, match='clip must be a positive number'):
            MemoryConfig('linear', 2, 2, clip=bad)
    with pytest.raises(ValueError, match='no update rule takes one'):
        MemoryConfig('linear', 2, 2, rules=(Rule('retain'), Rule('delta')), clip=1.0)
    cfg = MemoryConfig('linear', 2, 2, clip=1.0)
    assert cfg.affine(standard_objective('l2')) is None  # a clipped gradient is never affine
    assert MemoryConfig('linear', 2, 2).affine(standard_objective('l2')) == (1.0, 1.0)
    assert chunk_form(cfg, 'l2')[0] == 'sequential' and 'clip' in chunk_form(cfg, 'l2')[1]
    assert chunk_form(MemoryConfig('linear', 2, 2, clip=1.0, chunk=4), 'l2')[0] == 'dual'
