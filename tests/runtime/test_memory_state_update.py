"""The hand-written backward of a tile's state update (state_update.py) against autograd's, the
hand-written gradient of the in-tile gate products (scan.segment_products), and a forward without
gradients, which runs the written-out operations without their autograd nodes."""
from __future__ import annotations

import pytest
import torch

from memory_testkit import make_inputs, random_state
from nldsl.runtime.memory import MemoryConfig, Rule, chunked, functional, standard_objective, tape
from nldsl.runtime.memory.scan import segment_products
from nldsl.runtime.memory.state_update import _StateUpdate, state_update


@pytest.mark.parametrize('momentum', [False, True])
@pytest.mark.parametrize('expanded', [False, True])
def test_state_update_gradcheck(momentum, expanded):
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    # expanded: the learned initial state (3, 4, 5), broadcast over the batch as the first tile sees it
    args = [rand(3, 4, 5) if expanded else rand(2, 3, 4, 5), rand(2, 3), rand(2, 3, 6, 4), rand(2, 3, 6, 5)]
    if momentum:
        args += [rand(2, 3, 4, 5), rand(2, 3)]

    def update(start, *rest):
        return state_update(start.expand(2, 3, 4, 5), *rest)
    assert torch.autograd.gradcheck(update, args)
    args[0] = args[0].expand(2, 3, 4, 5)
    expected = args[1][..., None, None] * args[0] + args[2].transpose(-1, -2) @ args[3]
    if momentum:
        expected = expected + args[5][..., None, None] * args[4]
    torch.testing.assert_close(state_update(*args), expected)


def test_state_keeps_its_dtype_under_autocast():
    """bf16 columns and inputs (autocast products) accumulate into a float32 state in float32; each
    gradient comes back in its input's dtype."""
    gen = torch.Generator().manual_seed(1)
    start, scale = torch.randn(2, 3, 4, 5, generator=gen), torch.rand(2, 3, generator=gen)
    columns = torch.randn(2, 3, 6, 4, generator=gen).bfloat16()
    x = torch.randn(2, 3, 6, 5, generator=gen).bfloat16()
    leaves = [t.requires_grad_() for t in (start, scale, columns, x)]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = state_update(*leaves)
    assert out.dtype == torch.float32
    expected = scale[..., None, None] * start + columns.float().transpose(-1, -2) @ x.float()
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    assert [g.dtype for g in grads] == [t.dtype for t in leaves]


@pytest.mark.parametrize('zeros', [False, True])
def test_segment_products_gradients(zeros):
    """The in-tile products of the gates and their hand-written gradient (also with gates that are 0),
    to second order."""
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(2, 3, 6, generator=gen, dtype=torch.float64)
    if zeros:
        a[0, 1, 2] = a[1, 0, 0] = a[1, 2, 5] = 0.0
    g = segment_products(a)
    for t in range(7):
        for i in range(7):
            expected = a[..., i:t].prod(-1) if i <= t else torch.zeros_like(a[..., 0])
            torch.testing.assert_close(g[..., t, i], expected)
    a.requires_grad_()
    assert torch.autograd.gradcheck(segment_products, (a,))
    assert torch.autograd.gradgradcheck(segment_products, (a,))


FORWARD_ALONE = {
    # the dual form's lean loop, its general loop with a delta transition, the wy form, an MLP whose
    # backward takes the fused activation slope, and HOPE's self-target dgd memory with momentum off
    'linear gd': (MemoryConfig('linear', 4, 3, rules=(Rule('gd'),), chunk=4), 'l2'),
    'linear retain momentum': (MemoryConfig('linear', 4, 3, rules=(Rule('retain'), Rule('momentum')), chunk=3,
                                            read='before'), 'sq'),
    'linear delta': (MemoryConfig('linear', 4, 3, rules=(Rule('retain'), Rule('delta'), Rule('gd')), chunk=3),
                     'huber'),
    'wy': (MemoryConfig('linear', 4, 3, rules=(Rule('retain'), Rule('gd', at='current'))), 'l2'),
    'mlp titans': (MemoryConfig(dk=4, dv=4, family='mlp', depth=2, hidden=96, act='silu', residual=True,
                                rules=(Rule('retain'), Rule('momentum')), chunk=4, read='after'), 'mse'),
    'mlp dgd self target': (MemoryConfig(dk=4, dv=4, family='mlp', depth=2, hidden=6, act='gelu', residual=True,
                                         rules=(Rule('dgd'),), chunk=4, read='anchor', self_target=True), 'l2'),
}


@pytest.mark.parametrize('name', FORWARD_ALONE)
def test_a_forward_alone_records_no_autograd_node_and_computes_the_same(name, monkeypatch):
    """Without gradients (evaluation, decoding) the written-out operations (state updates, products,
    the fused activation slope) run as plain arithmetic, bit for bit what their autograd nodes compute."""
    cfg, objective_name = FORWARD_ALONE[name]
    objective = standard_objective(objective_name)
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=11, seed=3)
    state = random_state(cfg, 2, 2, position=5, seed=4)
    args = (cfg, objective, inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0, state)
    y_graph, state_graph = chunked(*args)
    assert y_graph.requires_grad

    def refuse(*_args, **_kwargs):
        raise AssertionError('an autograd node in a forward without gradients')

    for node in (_StateUpdate, tape._Product, functional._ActBackward):
        monkeypatch.setattr(node, 'apply', refuse)
    with torch.no_grad():
        y, final = chunked(*args)
    assert torch.equal(y, y_graph)
    for part in ('params', 'anchor'):
        for key, value in getattr(final, part).items():
            assert torch.equal(value, getattr(state_graph, part)[key]), (part, key)
    if final.momentum is not None:
        for key, value in final.momentum.items():
            assert torch.equal(value, state_graph.momentum[key]), ('momentum', key)


def test_a_forward_alone_runs_a_tiles_passes_at_the_anchor_as_one(monkeypatch):
    """A tile of a memory with a self-generated target read at its anchor runs the memory at the anchor
    on its keys, values and queries: stacked as one pass in a forward alone (1.07-1.2x HOPE's memory's
    forward), three passes when gradients follow (slicing the stacked pass cost training more than it
    saved); the numbers are the same (the test above)."""
    cfg, objective_name = FORWARD_ALONE['mlp dgd self target']
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=11, seed=3)
    args = (cfg, standard_objective(objective_name), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0,
            random_state(cfg, 2, 2, position=5, seed=4))
    passes = []
    real = functional.forward
    monkeypatch.setattr(functional, 'forward', lambda *a, **kw: passes.append(a[2].shape[-2]) or real(*a, **kw))
    chunked(*args)
    with_graph = list(passes)
    passes.clear()
    with torch.no_grad():
        chunked(*args)
    assert with_graph == [3, 3, 3, 4, 4, 4, 4, 4, 4]       # tiles of 3, 4 and 4 tokens: keys, values, queries
    assert passes == [9, 12, 12]
