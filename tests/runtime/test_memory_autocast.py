"""The chunked path under autocast (bf16 on the CPU) with a memory layer's inputs in float32: forward and
backward run (the hand-written backwards multiply in the dtype the forward multiplied in), the states
stay float32, and outputs, states and gradients stay within docs/semantics.md §6's bf16 ratios of the
float64 reference. Every form: the general dual loop, a linear memory's lean loop (which autocast
chooses over the affine maps, whose products would carry the state through bf16), the wy form, MLP
memories with small and with large weights (tape.py's written-out products)."""
from __future__ import annotations

import pytest
import torch

from memory_testkit import ANCHOR_RATIO, GATE_RATIO, OUTPUT_RATIO, gradients, make_inputs, ratio
from nldsl.runtime.memory import MemoryConfig, MemoryState, Rule, chunk_form, chunked, reference, \
    standard_objective

TITANS = (Rule('retain'), Rule('momentum'))
MLP = dict(family='mlp', depth=2, act='silu', residual=True)

CONFIGS = {
    'TTT-linear, huber (lean loop)': (MemoryConfig('linear', 16, 16, rules=(Rule('gd'),), chunk=8), 'huber'),
    "Titans' rules, sq (the loop, not the maps)": (MemoryConfig('linear', 16, 16, rules=TITANS, chunk=8), 'sq'),
    'DeltaNet with retention (wy)': (
        MemoryConfig('linear', 16, 16, rules=(Rule('retain'), Rule('gd', at='current'))), 'l2'),
    'delta transition (general loop)': (MemoryConfig('linear', 16, 16, rules=(Rule('delta'), Rule('gd')), chunk=8),
                                        'l2'),
    'Titans MLP, read after': (MemoryConfig(dk=16, dv=16, hidden=32, rules=TITANS, chunk=8, **MLP), 'mse'),
    'dgd MLP read at anchor, large weights': (
        MemoryConfig(dk=64, dv=64, hidden=128, rules=(Rule('dgd'),), chunk=8, read='anchor', **MLP), 'l2'),
    'dgd MLP, self-generated target': (
        MemoryConfig(dk=16, dv=16, hidden=32, rules=(Rule('dgd'),), chunk=8, read='anchor', self_target=True,
                     **MLP), 'l2'),
}


@pytest.mark.parametrize('name', list(CONFIGS))
def test_chunked_under_bf16_autocast_keeps_to_the_contract(name):
    cfg, objective_name = CONFIGS[name]
    objective = standard_objective(objective_name)
    assert chunk_form(cfg, objective)[0] in ('dual', 'wy')
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=37, seed=5, eta_max=0.1)
    # retention near 1, so that the states stay of order 1 over the call (the ratios are relative)
    exact = {**inputs.leaves(), 'gate.alpha': (0.9 + 0.1 * inputs.gates['alpha'].detach()).requires_grad_(True)}
    names = list(exact)
    single = {n: t.detach().float().requires_grad_(True) for n, t in exact.items()}

    def run(leaves, autocast: bool):
        gates = {n.removeprefix('gate.'): t for n, t in leaves.items() if n.startswith('gate.')}
        params0 = {n.removeprefix('theta0.'): t for n, t in leaves.items() if n.startswith('theta0.')}
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            y, state = (chunked if autocast else reference)(cfg, objective, leaves['q'], leaves['k'], leaves['v'],
                                                             gates, params0)
        return y, state

    y_ref, end_ref = run(exact, autocast=False)
    y, end = run(single, autocast=True)
    assert all(t.dtype == torch.float32 for t in _tensors(end).values())
    assert ratio(y_ref, y) <= OUTPUT_RATIO, f'y ratio {ratio(y_ref, y):.2e}'
    for key, value in _tensors(end_ref).items():
        assert ratio(value, _tensors(end)[key]) <= OUTPUT_RATIO, key
    gen = torch.Generator().manual_seed(1)
    probes = {key: torch.randn(value.shape, generator=gen, dtype=torch.float64)
              for key, value in {'y': y_ref, **_tensors(end_ref)}.items()}
    want = gradients(_probe(probes, y_ref, end_ref), exact)
    got = gradients(_probe(probes, y, end), single)
    for leaf in names:
        bound = GATE_RATIO if leaf.startswith('gate.') else ANCHOR_RATIO
        assert ratio(want[leaf], got[leaf]) <= bound, f'd/d{leaf} ratio {ratio(want[leaf], got[leaf]):.2e}'


def _tensors(state: MemoryState) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.to_tensors().items() if key != 'position'}


def _probe(probes: dict[str, torch.Tensor], y: torch.Tensor, state: MemoryState) -> torch.Tensor:
    """A fixed random linear functional of the outputs and the final state, in float64."""
    values = {'y': y, **_tensors(state)}
    return sum((probes[key] * value.double()).sum() for key, value in values.items())
