"""reference == chunked (float64): outputs, final states and every gradient, over random configs."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from memory_testkit import (assert_close, assert_states_close, gradients, make_inputs, probe_loss,
                            random_state, state_leaves)
from nldsl.runtime.memory import MemoryConfig, Rule, chunk_form, chunked, reference, standard_objective

OBJECTIVES = [('l2', {}), ('sq', {}), ('mse', {}), ('dot', {}), ('l1', {}), ('huber', {'delta': 0.5}),
              ('lp', {'p': 2.5})]


@st.composite
def rule_lists(draw, chunk: int, family: str) -> tuple[Rule, ...]:
    """1-3 rules in a random order, at most one momentum, never retain with dgd; 'current' only at C=1."""
    kinds = draw(st.lists(st.sampled_from(['retain', 'gd', 'momentum', 'delta', 'dgd']),
                          min_size=1, max_size=3))
    if kinds.count('momentum') > 1:
        kinds = [kd for kd in kinds if kd != 'momentum'] + ['momentum']
    if 'dgd' in kinds:
        kinds = [kd for kd in kinds if kd != 'retain'] or ['dgd']
    rules = []
    for kind in kinds:
        at = draw(st.sampled_from(['anchor', 'current'])) if chunk == 1 else 'anchor'
        per_layer = kind in ('delta', 'dgd') and family == 'mlp' and draw(st.booleans())
        rules.append(Rule(kind, at=at, per_layer=per_layer))
    return tuple(rules)


@st.composite
def cases(draw):
    family = draw(st.sampled_from(['linear', 'mlp']))
    chunk = draw(st.sampled_from([1, 1, 2, 3, 4]))
    dk = draw(st.integers(2, 4))
    self_target = draw(st.booleans())
    dv = dk if self_target else draw(st.integers(2, 4))
    extra = {}
    if family == 'mlp':
        depth = draw(st.integers(1, 3))
        residual = draw(st.booleans())
        dv = dk if residual else dv
        extra = dict(depth=depth, hidden=draw(st.integers(2, 4)) if depth > 1 else 0, residual=residual,
                     bias=draw(st.booleans()),
                     act=draw(st.sampled_from(['silu', 'gelu', 'relu', 'tanh', 'sigmoid', 'identity'])))
    rules = draw(rule_lists(chunk, family))
    # a bound small enough that some tokens' gradients are clipped and others are not
    clip = draw(st.sampled_from([None, None, 0.2, 1.0])) if any(r.uses_gradient for r in rules) else None
    cfg = MemoryConfig(family, dk, dv, rules=rules, chunk=chunk,
                       read=draw(st.sampled_from(['before', 'after', 'anchor'])), self_target=self_target,
                       clip=clip, **extra)
    name, params = draw(st.sampled_from(OBJECTIVES))
    tokens = draw(st.integers(1, 9))
    carried = draw(st.booleans())
    position = draw(st.integers(0, 7)) if carried else None
    tile = draw(st.integers(1, 5))
    return cfg, standard_objective(name, **params), tokens, position, tile, draw(st.integers(0, 2 ** 16))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_chunked_matches_reference(case):
    cfg, objective, tokens, position, tile, seed = case
    heads = 2
    inputs = make_inputs(cfg, batch=2, heads=heads, tokens=tokens, seed=seed)
    state = None if position is None else random_state(cfg, 2, heads, position, seed + 1)
    leaves = inputs.leaves()
    if state is not None:
        leaves.update(state_leaves(state))
    args = (cfg, objective, inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0, state)
    y_ref, state_ref = reference(*args)
    # Some draws (an lp objective with a large write rate) diverge; comparing infinities proves nothing.
    assume(all(t.detach().abs().max() < 1e6 for t in [y_ref, *state_ref.to_tensors().values()]))
    y_chk, state_chk = chunked(*args, tile=tile)
    form = chunk_form(cfg, objective)[0]
    assert_close(y_ref, y_chk, f"[{form}] outputs")
    assert_states_close(state_ref, state_chk, f"[{form}] final state")
    with torch.no_grad():       # a forward alone: no autograd nodes, and the forms chosen without backward
        y_free, state_free = chunked(*args, tile=tile)
    assert_close(y_ref, y_free, f"[{form}] outputs without gradients")
    assert_states_close(state_ref, state_free, f"[{form}] final state without gradients")
    grads_ref = gradients(probe_loss(y_ref, state_ref, seed), leaves)
    grads_chk = gradients(probe_loss(y_chk, state_chk, seed), leaves)
    for name in leaves:
        assert_close(grads_ref[name], grads_chk[name], f"[{form}] d/d{name}")


@pytest.mark.parametrize('rules, chunk, objective, form', [
    ((Rule('retain'), Rule('gd', at='current')), 1, 'l2', 'wy'),
    ((Rule('retain'), Rule('delta'), Rule('gd')), 1, 'dot', 'wy'),
    ((Rule('dgd'),), 1, 'mse', 'wy'),
    ((Rule('retain'), Rule('momentum')), 1, 'l2', 'sequential'),
    ((Rule('gd', at='current'),), 1, 'huber', 'sequential'),
    ((Rule('retain'), Rule('momentum')), 16, 'huber', 'dual'),
])
def test_chunk_form_names_the_path(rules, chunk, objective, form):
    cfg = MemoryConfig('linear', 4, 4, rules=rules, chunk=chunk)
    got, reason = chunk_form(cfg, standard_objective(objective))
    assert got == form and reason
    assert chunk_form(cfg, objective)[0] == form


def test_chunk_form_mlp_and_unknown_objective_fall_back_at_chunk_one():
    mlp = MemoryConfig('mlp', 4, 4, depth=2, hidden=8, rules=(Rule('gd'),))
    assert chunk_form(mlp, 'l2')[0] == 'sequential'
    linear = MemoryConfig('linear', 4, 4, rules=(Rule('gd'),))
    assert chunk_form(linear, None)[0] == 'sequential'
    assert chunk_form(linear, lambda y, v: y - v)[0] == 'sequential'
    no_gradient = MemoryConfig('linear', 4, 4, rules=(Rule('retain'), Rule('delta')))
    assert chunk_form(no_gradient, None)[0] == 'wy'


def test_wide_tiles_and_long_sequences_agree():
    """Tiles of 64 with several tiles per call, and chunk 16 with a partial last chunk."""
    objective = standard_objective('l2')
    for cfg in (MemoryConfig('linear', 8, 8, rules=(Rule('retain'), Rule('gd', at='current'))),
                MemoryConfig('mlp', 8, 8, depth=2, hidden=16, rules=(Rule('retain'), Rule('momentum')),
                             chunk=16, residual=True),
                MemoryConfig('mlp', 8, 8, depth=2, hidden=8, rules=(Rule('dgd'),), chunk=16,
                             read='anchor', self_target=True)):
        inputs = make_inputs(cfg, batch=2, heads=2, tokens=150, seed=7, eta_max=0.2, grad=False)
        args = (cfg, objective, inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0)
        y_ref, state_ref = reference(*args)
        y_chk, state_chk = chunked(*args, tile=64)
        assert_close(y_ref, y_chk, 'outputs')
        assert_states_close(state_ref, state_chk, 'final state')


@pytest.mark.parametrize('family', ['linear', 'mlp'])
@pytest.mark.parametrize('kinds', [
    ('momentum', 'delta', 'delta'),
    ('delta', 'momentum', 'dgd', 'gd'),
    ('momentum', 'dgd', 'delta'),
    ('gd', 'momentum', 'delta', 'retain'),
    ('retain', 'retain', 'delta', 'momentum', 'gd'),
])
def test_long_rule_orders_agree(family, kinds):
    """Several transitions around the momentum rule inside one token (C = 3, carried mid-chunk)."""
    extra = dict(depth=2, hidden=3, bias=True, act='tanh') if family == 'mlp' else {}
    rules = tuple(Rule(kind, per_layer=(family == 'mlp' and kind == 'dgd')) for kind in kinds)
    cfg = MemoryConfig(family, 3, 3, rules=rules, chunk=3, read='after', **extra)
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=8, seed=3)
    state = random_state(cfg, 2, 2, position=4, seed=4)
    leaves = {**inputs.leaves(), **state_leaves(state)}
    args = (cfg, standard_objective('l2'), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0, state)
    y_ref, state_ref = reference(*args)
    y_chk, state_chk = chunked(*args)
    assert_close(y_ref, y_chk, 'outputs')
    assert_states_close(state_ref, state_chk, 'final state')
    grads_ref = gradients(probe_loss(y_ref, state_ref, 0), leaves)
    grads_chk = gradients(probe_loss(y_chk, state_chk, 0), leaves)
    for name in leaves:
        assert_close(grads_ref[name], grads_chk[name], f"d/d{name}")


@pytest.mark.parametrize('cfg', [
    MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('gd', at='current'))),
    MemoryConfig('linear', 3, 3, rules=(Rule('dgd'),), chunk=3, self_target=True),
    MemoryConfig('mlp', 3, 3, depth=2, hidden=3, rules=(Rule('retain'), Rule('momentum')), chunk=4),
], ids=['wy', 'dual dgd', 'dual momentum'])
def test_zero_retention_and_momentum_gates(cfg):
    """No formula divides by a gate: alpha = 0 or beta = 0 on some tokens still agrees, gradients too."""
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=10, seed=1)
    with torch.no_grad():
        inputs.gates['alpha'][:, :, 3] = 0.0
        inputs.gates['alpha'][0, 1, 5] = 0.0
        inputs.gates['beta'][:, :, 2] = 0.0
    args = (cfg, standard_objective('l2'), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0)
    y_ref, state_ref = reference(*args)
    y_chk, state_chk = chunked(*args, tile=4)
    assert_close(y_ref, y_chk, 'outputs')
    assert_states_close(state_ref, state_chk, 'final state')
    leaves = inputs.leaves()
    grads_ref = gradients(probe_loss(y_ref, state_ref, 0), leaves)
    grads_chk = gradients(probe_loss(y_chk, state_chk, 0), leaves)
    for name in leaves:
        assert_close(grads_ref[name], grads_chk[name], f"d/d{name}")


def test_tile_must_be_positive():
    cfg = MemoryConfig('linear', 3, 3)
    inputs = make_inputs(cfg, 1, 1, 3, seed=0, grad=False)
    with pytest.raises(ValueError, match='tile'):
        chunked(cfg, standard_objective('l2'), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0,
                tile=0)


@pytest.mark.parametrize('cfg', [
    MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('gd', at='current'))),
    MemoryConfig('mlp', 3, 3, depth=2, hidden=3, rules=(Rule('retain'), Rule('momentum')), chunk=8),
], ids=['wy', 'dual momentum'])
def test_tiny_gates_stay_finite(cfg):
    """Gates near 0 make in-tile products underflow; values and gradients must stay finite and agree."""
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=16, seed=6)
    with torch.no_grad():
        inputs.gates['alpha'][:, :, 2:12] = 1e-25
        inputs.gates['beta'][:, :, 4:14] = 1e-30
    args = (cfg, standard_objective('l2'), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0)
    y_ref, state_ref = reference(*args)
    y_chk, state_chk = chunked(*args, tile=16)
    assert_close(y_ref, y_chk, 'outputs')
    leaves = inputs.leaves()
    grads_ref = gradients(probe_loss(y_ref, state_ref, 0), leaves)
    grads_chk = gradients(probe_loss(y_chk, state_chk, 0), leaves)
    for name in leaves:
        assert torch.isfinite(grads_chk[name]).all(), f"d/d{name} is not finite"
        assert_close(grads_ref[name], grads_chk[name], f"d/d{name}")
