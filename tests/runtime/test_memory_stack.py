"""A MemoryStack computes what its members compute one by one: outputs, carried states, gradients."""
from __future__ import annotations

import pytest
import torch

from memory_testkit import DTYPE, assert_close, assert_states_close, random_state
from nldsl.runtime import MemoryLevel, MemoryStack, standard_objective
from nldsl.runtime.memory import MemoryConfig, Rule

CONFIGS = {
    'hope mlp C=3': (MemoryConfig('mlp', 3, 3, depth=2, hidden=4, residual=True, rules=(Rule('dgd'),),
                                  chunk=3, read='anchor', self_target=True), 'l2'),
    'titans mlp C=4': (MemoryConfig('mlp', 3, 3, depth=2, hidden=4, bias=True,
                                    rules=(Rule('retain'), Rule('momentum')), chunk=4, read='before'), 'sq'),
    'gated deltanet C=1': (MemoryConfig('linear', 3, 3, rules=(Rule('retain'), Rule('gd', at='current'))), 'l2'),
}
HEADS, BATCH, T = 2, 2, 11


def members(cfg, objective, count=3, backend='chunked'):
    torch.manual_seed(0)
    levels = [MemoryLevel(cfg, standard_objective(objective), HEADS, name=f'blk.m{i}').to(DTYPE) for i in range(count)]
    with torch.no_grad():
        for level in levels:
            for p in level.parameters():
                p.add_(0.3 * torch.randn_like(p))
            level.backend = backend
    return levels


def inputs(cfg, seed=1):
    gen = torch.Generator().manual_seed(seed)

    def rand(width, scale=1.0):
        return (scale * torch.randn(BATCH, T, HEADS * width, generator=gen, dtype=DTYPE)).requires_grad_()

    q, k = rand(cfg.dk, cfg.dk ** -0.5), rand(cfg.dk, cfg.dk ** -0.5)
    v = rand(cfg.dk if cfg.self_target else cfg.dv)
    gates = {'lr': (0.3 * torch.rand(BATCH, T, HEADS, generator=gen, dtype=DTYPE)).requires_grad_(),
             'retain': (0.6 + 0.4 * torch.rand(BATCH, T, HEADS, generator=gen, dtype=DTYPE)).requires_grad_(),
             'momentum': 0.5}
    if not cfg.has_momentum:
        del gates['momentum']
    return q, k, v, gates


def probe(outputs, states, seed=5):
    gen = torch.Generator().manual_seed(seed)
    total = sum((y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum() for y in outputs)
    for state in states:
        for key, value in sorted(state.to_tensors().items()):
            if key != 'position':
                total = total + (value * torch.randn(value.shape, generator=gen, dtype=value.dtype)).sum()
    return total


def leaves(levels, q, k, v, gates, states):
    out = [q, k, v, *(g for g in gates.values() if isinstance(g, torch.Tensor))]
    out += [p for level in levels for p in level.parameters()]
    for state in states:
        if state is not None:
            out += [t for key, t in state.to_tensors().items() if key != 'position' and t.requires_grad]
    return out


@pytest.mark.parametrize('backend', ['chunked', 'reference'])
@pytest.mark.parametrize('carried', [False, True], ids=['fresh', 'carried-in'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_stack_equals_its_members_one_by_one(name, carried, backend):
    cfg, objective = CONFIGS[name]
    levels = members(cfg, objective, backend=backend)
    q, k, v, gates = inputs(cfg)
    position = 5 if carried else 0
    states = [random_state(cfg, BATCH, HEADS, position, seed=10 + i) if carried else None for i in range(3)]

    expected = [level(q, k, v, gates, s) for level, s in zip(levels, states)]
    stack = MemoryStack(*levels)
    outputs, stacked = stack(q, k, v, gates, stack.stack_state(states, q))
    mine = stack.split_state(stacked)
    written = stack.split_state(stack.write(q, k, v, gates, stack.stack_state(states, q)))
    for i, ((y, s), y_stack, s_stack, s_written) in enumerate(zip(expected, outputs, mine, written)):
        assert_states_close(s, s_written, f'member {i} state, written')
        assert_states_close(s, levels[i].write(q, k, v, gates, states[i]), f'member {i} state, written alone')
        assert_close(y, y_stack, f'member {i} output', rtol=1e-12)
        assert_states_close(s, s_stack, f'member {i} state')

    wanted = leaves(levels, q, k, v, gates, states)
    grads = torch.autograd.grad(probe([y for y, _ in expected], [s for _, s in expected]), wanted,
                                allow_unused=True)
    grads_stack = torch.autograd.grad(probe(outputs, mine), wanted, allow_unused=True)
    for i, (g, g_stack) in enumerate(zip(grads, grads_stack)):
        assert (g is None) == (g_stack is None), f'gradient of leaf {i}: reached by one run only'
        if g is not None:   # theta_0 is not used when a state is carried in
            assert_close(g, g_stack, f'gradient of leaf {i}', rtol=1e-11)


@pytest.mark.parametrize('name', list(CONFIGS))
def test_stack_reads_what_each_member_reads(name):
    cfg, objective = CONFIGS[name]
    levels = members(cfg, objective)
    q, k, v, gates = inputs(cfg)
    stack = MemoryStack(*levels)
    for states in ([None] * 3, [random_state(cfg, BATCH, HEADS, 7, seed=i) for i in range(3)]):
        stacked = stack.stack_state(states, q)
        for method in ('read_anchor', 'read_current'):
            for i, (level, state, y) in enumerate(zip(levels, states, getattr(stack, method)(q, stacked))):
                assert_close(getattr(level, method)(q, state), y, f'{method} of member {i}', rtol=1e-12)


def test_members_set_to_different_backends_run_one_by_one():
    cfg, objective = CONFIGS['hope mlp C=3']
    levels = members(cfg, objective)
    levels[1].backend = 'reference'
    q, k, v, gates = inputs(cfg)
    stack = MemoryStack(*levels)
    outputs, stacked = stack(q, k, v, gates, None)
    for level, y, s in zip(levels, outputs, stack.split_state(stacked)):
        y_alone, s_alone = level(q, k, v, gates, None)
        assert_close(y_alone, y, f'{level.level_name} output', rtol=1e-12)
        assert_states_close(s_alone, s, f'{level.level_name} state')


def test_states_split_back_as_they_were_stacked():
    cfg, objective = CONFIGS['titans mlp C=4']
    stack = MemoryStack(*members(cfg, objective, count=2))
    q = inputs(cfg)[0]
    on_boundary = [random_state(cfg, BATCH, HEADS, 8, seed=i) for i in range(2)]
    mid_chunk = [random_state(cfg, BATCH, HEADS, 6, seed=i) for i in range(2)]
    for states in (on_boundary, mid_chunk):
        stacked = stack.stack_state(states, q)
        assert stacked.params['W1'].shape == (BATCH, 2 * HEADS, *states[0].params['W1'].shape[2:])
        shared = states[0].anchor['W1'] is states[0].params['W1']
        assert (stacked.anchor['W1'] is stacked.params['W1']) == shared
        for before, after in zip(states, stack.split_state(stacked)):
            assert_states_close(before, after, 'round trip')
            assert (after.anchor['W1'] is after.params['W1']) == shared
    # a member that has no state yet starts from its own theta_0
    fresh = stack.split_state(stack.stack_state([random_state(cfg, BATCH, HEADS, 0, seed=0), None], q))[1]
    assert fresh.position == 0
    assert torch.equal(fresh.params['W1'][1], stack.levels[1].W1)
    assert stack.stack_state([None, None], q) is None


def test_members_must_agree():
    cfg, objective = CONFIGS['hope mlp C=3']
    other = MemoryLevel(MemoryConfig('mlp', 3, 3, depth=2, hidden=4, residual=True, rules=(Rule('dgd'),),
                                     chunk=4, read='anchor', self_target=True), standard_objective('l2'), HEADS)
    with pytest.raises(ValueError, match='cannot be stacked'):
        MemoryStack(members(cfg, objective, count=1)[0], other)
    with pytest.raises(ValueError, match='at least two'):
        MemoryStack(other)
    stack = MemoryStack(*members(cfg, objective, count=2))
    q = inputs(cfg)[0]
    with pytest.raises(ValueError, match='as many tokens'):
        stack.stack_state([random_state(cfg, BATCH, HEADS, 3, seed=0), random_state(cfg, BATCH, HEADS, 6, seed=1)], q)
