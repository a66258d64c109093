"""The dual form of a linear memory (runtime/memory/dual_linear.py): its affine chunk maps, its lean loop
over chunks and the general loop of dual.py all equal the reference, for every linear configuration the
maps take; the lean loop also for objectives whose gradient is not affine. Which form runs is a matter
of the configuration and of size only."""
from __future__ import annotations

import pytest
import torch

from memory_testkit import assert_close, assert_states_close, gradients, make_inputs, probe_loss, \
    random_state, state_leaves
from nldsl.runtime.memory import MemoryConfig, Rule, chunked, dual_linear, reference, standard_objective
from nldsl.runtime.memory.coeffs import dual_coefficients

CONFIGS = {
    'TTT-linear: gd, l2, read after': (MemoryConfig('linear', 3, 4, rules=(Rule('gd'),), chunk=4), 'l2'),
    "Titans' rules, sq, read before": (
        MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('momentum')), chunk=3, read='before'), 'sq'),
    'gd then momentum, mse': (
        MemoryConfig('linear', 4, 3, rules=(Rule('gd'), Rule('momentum'), Rule('retain')), chunk=4), 'mse'),
    'momentum, retain, read at anchor': (
        MemoryConfig('linear', 3, 3, rules=(Rule('momentum'), Rule('retain')), chunk=3, read='anchor'), 'l2'),
    'self-generated target, retain + gd': (
        MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('gd')), chunk=4, self_target=True), 'l2'),
    'dot objective': (MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('gd')), chunk=2), 'dot'),
}


FORMS = ('maps', 'loop', 'general')


def run(cfg, objective, tokens, position, seed, use, monkeypatch):
    """Run chunked with whole chunks forced into one form (`use`) and compare it with the reference:
    outputs, final state and the gradients of every input."""
    limit = float('inf') if use == 'maps' else -1
    monkeypatch.setattr(dual_linear, 'MAX_STATE', limit)
    monkeypatch.setattr(dual_linear, 'MAX_STATE_WITH_BACKWARD', limit)
    calls = []
    real_form = dual_linear.form
    monkeypatch.setattr(dual_linear, 'form', lambda *a: None if use == 'general' else real_form(*a))
    for name in ('run_maps', 'run_loop'):
        real = getattr(dual_linear, name)
        monkeypatch.setattr(dual_linear, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=tokens, seed=seed)
    state = None if position is None else random_state(cfg, 2, 2, position, seed + 1)
    leaves = {**inputs.leaves(), **(state_leaves(state) if state is not None else {})}
    args = (cfg, standard_objective(objective), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0, state)
    y_ref, end_ref = reference(*args)
    y, end = chunked(*args)
    assert set(calls) == ({f'run_{use}'} if use != 'general' else set())
    assert_close(y_ref, y, 'outputs')
    assert_states_close(end_ref, end, 'final state')
    want, got = gradients(probe_loss(y_ref, end_ref, seed), leaves), gradients(probe_loss(y, end, seed), leaves)
    for name in leaves:
        assert_close(want[name], got[name], f'd/d{name}')


@pytest.mark.parametrize('use', FORMS)
@pytest.mark.parametrize('name', list(CONFIGS))
@pytest.mark.parametrize('position', [None, 8], ids=['fresh', 'carried'])
def test_every_form_equals_the_reference(name, position, use, monkeypatch):
    cfg, objective = CONFIGS[name]
    run(cfg, objective, 5 * cfg.chunk, position, 11, use, monkeypatch)


NOT_AFFINE = {
    'huber, Titans\' rules, read before': (
        MemoryConfig('linear', 3, 4, rules=(Rule('retain'), Rule('momentum')), chunk=3, read='before'),
        'huber'),
    'l1, gd then retain': (MemoryConfig('linear', 4, 3, rules=(Rule('gd'), Rule('retain')), chunk=4), 'l1'),
    'lp, self-generated target, momentum': (
        MemoryConfig('linear', 3, 3, rules=(Rule('momentum'),), chunk=4, self_target=True), 'lp'),
    'huber, read at anchor': (
        MemoryConfig('linear', 3, 3, rules=(Rule('gd'), Rule('retain')), chunk=2, read='anchor'), 'huber'),
}


@pytest.mark.parametrize('use', ['loop', 'general'])
@pytest.mark.parametrize('name', list(NOT_AFFINE))
@pytest.mark.parametrize('position', [None, 5], ids=['fresh', 'carried'])
def test_the_lean_loop_takes_any_elementwise_objective(name, position, use, monkeypatch):
    cfg, objective = NOT_AFFINE[name]
    run(cfg, objective, 4 * cfg.chunk + 1, position, 3, use, monkeypatch)


def test_a_call_that_starts_and_ends_mid_chunk(monkeypatch):
    """A first short chunk (the general loop), then whole chunks (the maps), then a short last one."""
    cfg, objective = CONFIGS["Titans' rules, sq, read before"]
    run(cfg, objective, 4 * cfg.chunk + 2, 2 * cfg.chunk + 1, 5, 'maps', monkeypatch)


def test_which_form_runs():
    k = torch.zeros(2, 2, 3, 4, 3)
    gates = {'eta': torch.rand(2, 2, 3, 4), 'alpha': torch.rand(2, 2, 3, 4), 'beta': torch.rand(2, 2, 3, 4)}

    def form(cfg, objective='l2', shared=True, k=k):
        co = dual_coefficients(cfg.rules, gates, (k * k).sum(-1), lambda rule: True)
        affine = standard_objective(objective).affine
        return dual_linear.form(cfg, affine(cfg.dv) if affine else None, co, k, shared)

    titans = MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('momentum')), chunk=4)
    assert form(titans) == 'maps'
    assert form(titans, objective='huber') == 'loop'                  # a gradient not affine in W
    assert form(titans, k=k[:, :, :1]) == 'loop'                      # a single chunk
    assert form(titans, shared=False) is None                         # an anchor apart from the state
    assert form(MemoryConfig('linear', 3, 3, rules=(Rule('delta'),), chunk=4)) is None     # a transition
    assert form(MemoryConfig('linear', 3, 3, rules=(Rule('retain'),), chunk=4)) is None     # no gradient
    assert form(MemoryConfig('linear', 3, 3, rules=(Rule('gd'),), chunk=8)) is None         # not whole chunks
    mlp = MemoryConfig(family='mlp', dk=3, dv=3, depth=2, hidden=4, rules=(Rule('gd'),), chunk=4)
    assert form(mlp) is None
    square = MemoryConfig('linear', 64, 64, rules=(Rule('gd'),), chunk=16)
    many = torch.zeros(2, 4, 3, 16, 64)
    assert form(square, k=many) == 'loop'                             # 32 K values of state: the loop
    few = torch.zeros(1, 4, 3, 16, 64)
    assert form(square, k=few) == 'maps'                              # 16 K with a backward to follow
    with torch.no_grad():
        assert form(square, k=few) == 'loop'                          # ... and not for a forward alone
        assert form(square, k=few[:, :2]) == 'maps'                   # 8 K
