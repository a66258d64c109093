"""The dual form's affine chunk maps (runtime/memory/dual_affine.py) and its loop over chunks (dual.py)
both equal the reference, for every linear configuration the maps take; which one runs is a matter of
size only."""
from __future__ import annotations

import pytest
import torch

from memory_testkit import assert_close, assert_states_close, gradients, make_inputs, probe_loss, \
    random_state, state_leaves
from nldsl.runtime.memory import MemoryConfig, Rule, chunked, dual_affine, reference, standard_objective
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


def run(cfg, objective, tokens, position, seed, use_maps, monkeypatch):
    limit = float('inf') if use_maps else -1
    monkeypatch.setattr(dual_affine, 'MAX_WORK', limit)
    monkeypatch.setattr(dual_affine, 'MAX_WORK_WITH_BACKWARD', limit)
    calls = []
    real = dual_affine.run_affine
    monkeypatch.setattr(dual_affine, 'run_affine', lambda *a: calls.append(1) or real(*a))
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=tokens, seed=seed)
    state = None if position is None else random_state(cfg, 2, 2, position, seed + 1)
    leaves = {**inputs.leaves(), **(state_leaves(state) if state is not None else {})}
    args = (cfg, standard_objective(objective), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0, state)
    y_ref, end_ref = reference(*args)
    y, end = chunked(*args)
    assert bool(calls) == use_maps
    assert_close(y_ref, y, 'outputs')
    assert_states_close(end_ref, end, 'final state')
    want, got = gradients(probe_loss(y_ref, end_ref, seed), leaves), gradients(probe_loss(y, end, seed), leaves)
    for name in leaves:
        assert_close(want[name], got[name], f'd/d{name}')


@pytest.mark.parametrize('use_maps', [True, False], ids=['maps', 'loop'])
@pytest.mark.parametrize('name', list(CONFIGS))
@pytest.mark.parametrize('position', [None, 8], ids=['fresh', 'carried'])
def test_both_forms_equal_the_reference(name, position, use_maps, monkeypatch):
    cfg, objective = CONFIGS[name]
    run(cfg, objective, 5 * cfg.chunk, position, 11, use_maps, monkeypatch)


def test_a_call_that_starts_and_ends_mid_chunk(monkeypatch):
    """A first short chunk (the loop), then whole chunks (the maps), then a short last one (the loop)."""
    cfg, objective = CONFIGS["Titans' rules, sq, read before"]
    run(cfg, objective, 4 * cfg.chunk + 2, 2 * cfg.chunk + 1, 5, True, monkeypatch)


def test_what_the_maps_take():
    k = torch.zeros(2, 2, 3, 4, 3)
    gates = {'eta': torch.rand(2, 2, 3, 4), 'alpha': torch.rand(2, 2, 3, 4), 'beta': torch.rand(2, 2, 3, 4)}

    def takes(cfg, objective='l2', shared=True, k=k):
        co = dual_coefficients(cfg.rules, gates, (k * k).sum(-1), lambda rule: True)
        affine = standard_objective(objective).affine
        return dual_affine.eligible(cfg, affine(cfg.dv) if affine else None, co, k, shared)

    titans = MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('momentum')), chunk=4)
    assert takes(titans)
    assert not takes(titans, shared=False)                            # an anchor apart from the state
    assert not takes(titans, objective='huber')                       # a gradient not affine in W
    assert not takes(MemoryConfig('linear', 3, 3, rules=(Rule('delta'),), chunk=4))     # a transition
    assert not takes(MemoryConfig('linear', 3, 3, rules=(Rule('retain'),), chunk=4))     # no gradient
    assert not takes(MemoryConfig('linear', 3, 3, rules=(Rule('gd'),), chunk=8))         # not whole chunks
    assert not takes(titans, k=k[:, :, :1])                           # a single chunk
    wide = MemoryConfig('linear', 128, 128, rules=(Rule('gd'),), chunk=64)
    big = torch.zeros(2, 4, 3, 64, 128)
    assert not takes(wide, k=big)                                     # 8.4 M: the loop is faster
    mid = torch.zeros(2, 4, 3, 64, 64)
    square = MemoryConfig('linear', 64, 64, rules=(Rule('gd'),), chunk=64)
    assert takes(square, k=mid)                                       # 2.1 M with a backward to follow
    with torch.no_grad():
        assert not takes(square, k=mid)                               # ... and not for a forward alone
