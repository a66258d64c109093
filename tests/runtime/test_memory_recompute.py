"""Recomputing tiles in backward (runtime/memory/recompute.py) gives exactly what plain autograd gives,
and keeps only tile-start states."""
from __future__ import annotations

import pytest
import torch

from memory_testkit import assert_close, assert_states_close, gradients, make_inputs, probe_loss, \
    random_state, state_leaves
from nldsl.runtime.memory import MemoryConfig, MemoryState, Rule, chunked, standard_objective
from nldsl.runtime.memory import dual

MLP = dict(family='mlp', depth=2, hidden=5, dk=3, dv=3)
CONFIGS = {
    'titans mlp, retain + momentum, read after': (
        MemoryConfig(**MLP, bias=True, rules=(Rule('retain'), Rule('momentum')), chunk=4), 'sq'),
    'titans mlp, read at anchor, residual': (
        MemoryConfig(**MLP, residual=True, rules=(Rule('retain'), Rule('momentum')), chunk=4, read='anchor'), 'mse'),
    'hope dgd, self target': (
        MemoryConfig(**MLP, residual=True, rules=(Rule('dgd'),), chunk=3, read='anchor', self_target=True), 'l2'),
    'mlp delta + gd, read before': (
        MemoryConfig(**MLP, rules=(Rule('delta'), Rule('gd')), chunk=4, read='before'), 'huber'),
    'titans mlp with clip and biases': (
        MemoryConfig(**MLP, bias=True, rules=(Rule('retain'), Rule('momentum')), chunk=4, clip=0.3), 'sq'),
    'linear retain + gd + momentum': (
        MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('gd'), Rule('momentum')), chunk=4), 'l2'),
}


def run(cfg, objective, inputs, state, recompute, monkeypatch):
    monkeypatch.setattr(dual, 'RECOMPUTE_MIN_BYTES', 0 if recompute else float('inf'))
    obj = standard_objective(objective) if objective != 'huber' else standard_objective('huber', delta=0.5)
    return chunked(cfg, obj, inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0, state)


@pytest.mark.parametrize('name', list(CONFIGS))
@pytest.mark.parametrize('start', ['fresh', 'carried at a boundary', 'carried mid-chunk', 'anchor copy'])
def test_recomputed_tiles_equal_plain_autograd(name, start, monkeypatch):
    cfg, objective = CONFIGS[name]
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=6 * cfg.chunk - 1, seed=3)
    state = None
    if start != 'fresh':
        position = 2 * cfg.chunk + (1 if start == 'carried mid-chunk' else 0)
        state = random_state(cfg, 2, 2, position, seed=4)
        if start == 'anchor copy':  # equal values, distinct tensors (as after loading a memory file)
            state = MemoryState(state.params, {n: t.detach().clone().requires_grad_() for n, t in
                                               state.params.items()}, state.momentum, state.position)
    leaves = {**inputs.leaves(), **(state_leaves(state) if state is not None else {})}
    results = {}
    for recompute in (False, True):
        y, end = run(cfg, objective, inputs, state, recompute, monkeypatch)
        results[recompute] = (y, end, gradients(probe_loss(y, end, seed=5), leaves))
    (y0, end0, g0), (y1, end1, g1) = results[False], results[True]
    assert_close(y0, y1, 'output', rtol=1e-12)
    assert_states_close(end0, end1, 'final state')
    for key in leaves:
        assert_close(g0[key], g1[key], f'gradient of {key}', rtol=1e-11)
    assert any(g.abs().sum() > 0 for g in g1.values())


def test_only_tile_start_states_are_kept(monkeypatch):
    """Autograd's saved tensors shrink to the few that do not depend on the tile count."""
    cfg = MemoryConfig('mlp', 8, 8, depth=2, hidden=32, rules=(Rule('retain'), Rule('momentum')), chunk=4,
                       read='anchor')

    def saved_bytes(recompute: bool, tokens: int) -> int:
        monkeypatch.setattr(dual, 'RECOMPUTE_MIN_BYTES', 0 if recompute else float('inf'))
        inputs = make_inputs(cfg, batch=1, heads=2, tokens=tokens, seed=0)
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            chunked(cfg, standard_objective('l2'), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0)
        return sum(storages.values())

    plain = saved_bytes(False, 64), saved_bytes(False, 128)
    recomputed = saved_bytes(True, 64), saved_bytes(True, 128)
    weight_bytes = 2 * 2 * 32 * 8 * 8  # W1 and W2 of both heads, float64
    tiles = (128 - 64) // cfg.chunk
    # Plain autograd keeps several weight-sized tensors per tile; recomputation keeps the tiles' inputs
    # (q, k, v, gate products), a fraction of one weight per tile.
    assert plain[1] - plain[0] > 4 * tiles * weight_bytes
    assert recomputed[1] - recomputed[0] < tiles * weight_bytes
    assert recomputed[1] < plain[1] / 8


def test_higher_order_gradients_are_refused(monkeypatch):
    cfg, objective = CONFIGS['titans mlp, retain + momentum, read after']
    inputs = make_inputs(cfg, batch=1, heads=1, tokens=12, seed=1)
    y, end = run(cfg, objective, inputs, None, True, monkeypatch)
    (g,) = torch.autograd.grad(y.square().sum(), inputs.q, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), inputs.k)


def test_backward_replays_the_weight_products_of_the_forward(monkeypatch):
    """Recomputing a tile in backward multiplies nothing by the weights again: the products come from
    the tapes recorded by the forward (tape.py); only their backward runs."""
    from nldsl.runtime.memory import tape

    calls = {'rows': 0, 'back': 0}

    def counted(kind):
        plain = tape._PRODUCTS[kind]

        def product(*args):
            calls[kind] += 1
            return plain(*args)
        return product
    monkeypatch.setattr(tape, '_PRODUCTS', {kind: counted(kind) for kind in calls})
    cfg, objective = CONFIGS['titans mlp, read at anchor, residual']
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=5 * cfg.chunk, seed=2)
    y, end = run(cfg, objective, inputs, None, True, monkeypatch)
    # per tile: the memory on the keys and on the queries (2 layers each), the delta back through W2
    assert calls == {'rows': 5 * 4, 'back': 5 * 1}
    torch.autograd.grad(probe_loss(y, end, seed=1), list(inputs.leaves().values()), allow_unused=True)
    assert calls == {'rows': 5 * 4, 'back': 5 * 1}
