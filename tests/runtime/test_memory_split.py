"""Splitting a sequence anywhere and carrying the state reproduces the unsplit run (semantics §2.5)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load, save

from memory_testkit import assert_close, assert_states_close, make_inputs
from nldsl.runtime.memory import MemoryConfig, MemoryState, Rule, chunked, reference, standard_objective

RUNNERS = {'reference': reference, 'chunked': chunked}
CONFIGS = {
    'ttt linear C=4': (MemoryConfig('linear', 3, 3, rules=(Rule('gd'),), chunk=4), 'l2'),
    'gated deltanet C=1': (MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('gd', at='current'))), 'l2'),
    'titans mlp C=4': (MemoryConfig('mlp', 3, 3, depth=2, hidden=4, bias=True,
                                    rules=(Rule('retain'), Rule('momentum')), chunk=4, read='before'), 'sq'),
    'hope mlp C=3': (MemoryConfig('mlp', 3, 3, depth=2, hidden=4, residual=True, rules=(Rule('dgd'),),
                                  chunk=3, read='anchor', self_target=True), 'l2'),
}
T = 11


def run(runner, cfg, objective, inputs, state=None):
    return RUNNERS[runner](cfg, standard_objective(objective), inputs.q, inputs.k, inputs.v, inputs.gates,
                           inputs.params0, state)


@pytest.mark.parametrize('runner', list(RUNNERS))
@pytest.mark.parametrize('name', list(CONFIGS))
@pytest.mark.parametrize('where', ['inside a chunk', 'at a chunk end'])
def test_split_run_equals_unsplit(runner, name, where):
    cfg, objective = CONFIGS[name]
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=T, seed=21, grad=False)
    split = 2 * cfg.chunk + (cfg.chunk // 2 if where == 'inside a chunk' else 0)
    if cfg.chunk == 1:
        split = 5 if where == 'inside a chunk' else 6
    y_full, state_full = run(runner, cfg, objective, inputs)
    y_a, state_a = run(runner, cfg, objective, inputs.window(0, split))
    y_b, state_b = run(runner, cfg, objective, inputs.window(split, T), state_a)
    assert state_a.position == split
    assert_close(y_full, torch.cat([y_a, y_b], dim=2), f"{name} outputs split at {split}")
    assert_states_close(state_full, state_b, f"{name} state split at {split}")


@pytest.mark.parametrize('runner', list(RUNNERS))
def test_decoding_one_token_at_a_time(runner):
    cfg, objective = CONFIGS['titans mlp C=4']
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=T, seed=22, grad=False)
    y_full, state_full = run(runner, cfg, objective, inputs)
    state, pieces = None, []
    for t in range(T):
        y, state = run(runner, cfg, objective, inputs.window(t, t + 1), state)
        pieces.append(y)
    assert_close(y_full, torch.cat(pieces, dim=2), 'decoded outputs')
    assert_states_close(state_full, state, 'decoded state')


def test_state_survives_safetensors_and_resumes_identically():
    cfg, objective = CONFIGS['titans mlp C=4']
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=T, seed=23, grad=False)
    y_full, _ = run('chunked', cfg, objective, inputs)
    _, state = run('chunked', cfg, objective, inputs.window(0, 6))
    tensors = {n: t.detach().contiguous() for n, t in state.to_tensors().items()}
    restored = MemoryState.from_tensors(load(save(tensors)))
    assert restored.position == 6 and restored.momentum is not None
    assert sorted(restored.to_tensors()) == sorted(tensors)
    y_rest, _ = run('chunked', cfg, objective, inputs.window(6, T), restored)
    assert_close(y_full[:, :, 6:], y_rest, 'outputs after restoring the state')


def test_state_from_tensors_rejects_bad_entries():
    with pytest.raises(ValueError, match='position'):
        MemoryState.from_tensors({'params.W': torch.zeros(1)})
    with pytest.raises(ValueError, match='unexpected'):
        MemoryState.from_tensors({'position': torch.tensor(0), 'weights.W': torch.zeros(1)})


def test_detach_cuts_the_graph_and_keeps_values():
    cfg, objective = CONFIGS['titans mlp C=4']
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=5, seed=24)
    _, state = run('chunked', cfg, objective, inputs)
    cut = state.detach()
    assert cut.position == state.position
    for key, value in cut.to_tensors().items():
        assert not value.requires_grad
        assert torch.equal(value, state.to_tensors()[key].detach())
