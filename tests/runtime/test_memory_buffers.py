"""The tile-start buffers of recomputed tiles are reused across calls (runtime/memory/buffers.py) without
changing any result."""
from __future__ import annotations

import pytest
import torch

from memory_testkit import assert_close, gradients, make_inputs, probe_loss
from nldsl.runtime.memory import MemoryConfig, Rule, buffers, chunked, dual, standard_objective

CFG = MemoryConfig('mlp', 3, 3, depth=2, hidden=5, residual=True, rules=(Rule('retain'), Rule('momentum')),
                   chunk=4)


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    monkeypatch.setattr(dual, 'RECOMPUTE_MIN_BYTES', 0)
    monkeypatch.delenv('NLC_REUSE_BUFFERS', raising=False)
    buffers.release()
    yield
    buffers.release()


def call(seed: int, backward: bool = True):
    inputs = make_inputs(CFG, batch=2, heads=2, tokens=5 * CFG.chunk - 1, seed=seed)
    y, end = chunked(CFG, standard_objective('mse'), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0)
    if not backward:
        return y, end, None
    return y, end, gradients(probe_loss(y, end, seed=5), inputs.leaves())


def test_a_buffer_handed_back_is_taken_again():
    first = buffers.take((4, 3), torch.float32, torch.device('cpu'))
    buffers.give(first)
    assert buffers.held_bytes() == 4 * 3 * 4
    assert buffers.take((4, 3), torch.float32, torch.device('cpu')) is first
    assert buffers.take((4, 3), torch.float32, torch.device('cpu')) is not first   # the pool is empty again
    buffers.give(first)
    assert buffers.take((4, 3), torch.float64, torch.device('cpu')) is not first   # another dtype
    buffers.release()
    assert buffers.held_bytes() == 0


def test_only_cpu_buffers_are_kept(monkeypatch):
    buffers.give(torch.empty(4, 3, device='meta'))     # a device with an allocator of its own
    assert buffers.held_bytes() == 0
    monkeypatch.setenv('NLC_REUSE_BUFFERS', '0')
    buffers.give(torch.empty(4, 3))
    assert buffers.held_bytes() == 0


def test_backward_hands_its_buffers_back_and_the_next_call_reuses_them():
    y0, end0, g0 = call(seed=1)
    held = buffers.held_bytes()
    # W1, W2 and their momenta (15 values each) of 2 x 2 heads in float64, for each recomputed tile
    per_tile = 4 * 2 * 2 * 15 * 8
    assert held > 0 and held % per_tile == 0
    for free in buffers._free.values():
        for buffer in free:
            buffer.fill_(float('nan'))          # what a reused buffer holds must not matter
    y1, end1, g1 = call(seed=1)
    assert buffers.held_bytes() == held          # taken and given back, none allocated beside them
    assert_close(y0, y1, 'output', rtol=0)
    for key in g0:
        assert_close(g0[key], g1[key], f'gradient of {key}', rtol=0)


def test_a_call_without_backward_neither_leaks_nor_disturbs_the_next():
    _, _, g0 = call(seed=2)
    held = buffers.held_bytes()
    call(seed=7, backward=False)                 # takes the buffers, never gives them back
    assert buffers.held_bytes() == 0
    _, _, g1 = call(seed=2)
    assert buffers.held_bytes() == held
    for key in g0:
        assert_close(g0[key], g1[key], f'gradient of {key}', rtol=0)
