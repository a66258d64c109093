"""The tape of weight products (runtime/memory/tape.py): a replayed product has the recorded value and
the matmul's gradients, and a replay that does not follow the recording is refused."""
from __future__ import annotations

import pytest
import torch

from nldsl.runtime.memory import tape as tape_module
from nldsl.runtime.memory.tape import Tape, weight_back, weight_rows


def tile(weight, x, delta):
    """A tile-like mix of both products, with the weight broadcast over the batch as a learned initial
    state is."""
    z = weight_rows(weight, x)
    back = weight_back(delta, weight)
    return (torch.tanh(z) * 1.5).sum() + (back * x).sum()


def leaves(seed):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()
    return rand(3, 5, 4), rand(2, 3, 6, 4), rand(2, 3, 6, 5)     # W (H, out, in), x, delta


def test_replayed_products_give_the_plain_values_and_gradients():
    weight, x, delta = leaves(0)
    expected = torch.autograd.grad(tile(weight, x, delta), (weight, x, delta))
    tape = Tape()
    with torch.no_grad(), tape.recording():
        recorded = tile(weight, x, delta)
    assert len(tape.values) == 2 and tape.nbytes() == (2 * 3 * 6 * 5 + 2 * 3 * 6 * 4) * 8
    tape.values = [v + 0 for v in tape.values]      # replayed values are the tape's, not recomputed ones
    with tape.replaying():
        replayed = tile(weight, x, delta)
    assert torch.equal(replayed, recorded)
    got = torch.autograd.grad(replayed, (weight, x, delta))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_replay_uses_the_tape_values():
    weight, x, delta = leaves(1)
    tape = Tape()
    with torch.no_grad(), tape.recording():
        tile(weight, x, delta)
    tape.values[0] = torch.zeros_like(tape.values[0])
    with tape.replaying():
        assert torch.equal(weight_rows(weight, x), torch.zeros(2, 3, 6, 5, dtype=torch.float64))


def test_a_replay_out_of_order_is_refused():
    weight, x, delta = leaves(2)
    tape = Tape()
    with torch.no_grad(), tape.recording():
        weight_rows(weight, x)
    with tape.replaying(), pytest.raises(RuntimeError, match="another order"):
        weight_back(delta, weight)
    with tape.replaying(), pytest.raises(RuntimeError, match="more weight products"):
        weight_rows(weight, x)
        weight_rows(weight, x)


@pytest.mark.parametrize('large', [False, True])
def test_products_outside_a_tape_are_plain_matmuls(large, monkeypatch):
    """Plain and written-out products give the same values; a large weight's gradient is row-major."""
    monkeypatch.setattr(tape_module, 'LARGE_WEIGHT', 1 if large else 1 << 30)
    weight, x, delta = leaves(3)
    assert Tape.current is None
    torch.testing.assert_close(weight_rows(weight, x), x @ weight.transpose(-1, -2))
    torch.testing.assert_close(weight_back(delta, weight), delta @ weight)
    g, = torch.autograd.grad(weight_rows(weight.expand(2, 3, 5, 4), x).sum(), weight)
    torch.testing.assert_close(g, (torch.ones(2, 3, 6, 5, dtype=x.dtype).transpose(-1, -2) @ x).sum(0))
    if large:
        assert weight_rows(weight, x).is_contiguous() and g.is_contiguous()


@pytest.mark.parametrize('kind', ['rows', 'back'])
def test_large_weight_products_have_second_order_gradients(kind, monkeypatch):
    """The written-out backward of a large weight's product is itself differentiable (a memory level
    under plain autograd supports higher-order gradients)."""
    monkeypatch.setattr(tape_module, 'LARGE_WEIGHT', 1)
    weight, x, delta = leaves(4)
    fn = (lambda w, t: weight_rows(w.expand(2, 3, 5, 4), t)) if kind == 'rows' else \
        (lambda w, t: weight_back(t, w.expand(2, 3, 5, 4)))
    inputs = (weight, x if kind == 'rows' else delta)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)
