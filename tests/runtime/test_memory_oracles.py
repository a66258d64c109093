"""Known architectures as points of the rule space (semantics §2.7) and the checked equalities of §2.2.

Each oracle is the architecture's own recurrence written out here per sequence and head, with explicit
matrices (S in R^{dv x dk}, o = S q, no scaling), independent of the library; both the reference and the
chunk-parallel path must reproduce it."""
from __future__ import annotations

import pytest
import torch

from memory_testkit import DTYPE, assert_close, make_inputs
from nldsl.runtime.memory import MemoryConfig, Rule, chunked, reference, standard_objective

B, H, T, D = 2, 2, 10, 3
RUNNERS = {'reference': reference, 'chunked': chunked}


def per_sequence(inputs, step):
    """Run `S = step(S, t, b, h)` over every token of every sequence and head; o_t = S_t q_t."""
    out = torch.zeros(B, H, T, D, dtype=DTYPE)
    for b in range(B):
        for h in range(H):
            S = inputs.params0['W'][h].detach().clone()
            for t in range(T):
                S = step(S, t, b, h)
                out[b, h, t] = S @ inputs.q[b, h, t].detach()
    return out


def gates_at(inputs, b, h, t):
    return {n: g[b, h, t].detach() for n, g in inputs.gates.items()}


def vectors_at(inputs, b, h, t):
    return inputs.k[b, h, t].detach(), inputs.v[b, h, t].detach()


def outer(x, y):
    return torch.outer(x, y)


def eye():
    return torch.eye(D, dtype=DTYPE)


def linear_attention(inputs, chunk):
    def step(S, t, b, h):
        k, v = vectors_at(inputs, b, h, t)
        return S + outer(v, k)
    return per_sequence(inputs, step)


def decayed(inputs, chunk):
    def step(S, t, b, h):
        k, v = vectors_at(inputs, b, h, t)
        return gates_at(inputs, b, h, t)['alpha'] * S + outer(v, k)
    return per_sequence(inputs, step)


def deltanet(inputs, chunk):
    def step(S, t, b, h):
        k, v = vectors_at(inputs, b, h, t)
        eta = gates_at(inputs, b, h, t)['eta']
        return S @ (eye() - eta * outer(k, k)) + eta * outer(v, k)
    return per_sequence(inputs, step)


def gated_deltanet(inputs, chunk):
    def step(S, t, b, h):
        k, v = vectors_at(inputs, b, h, t)
        g = gates_at(inputs, b, h, t)
        return g['alpha'] * S @ (eye() - g['eta'] * outer(k, k)) + g['eta'] * outer(v, k)
    return per_sequence(inputs, step)


def titans_without_momentum(inputs, chunk):
    """[retain, gd at anchor], l2, C = 1: W(alpha I - eta k k^T) + eta v k^T (not Gated DeltaNet)."""
    def step(S, t, b, h):
        k, v = vectors_at(inputs, b, h, t)
        g = gates_at(inputs, b, h, t)
        return S @ (g['alpha'] * eye() - g['eta'] * outer(k, k)) + g['eta'] * outer(v, k)
    return per_sequence(inputs, step)


def chunk_anchored(inputs, chunk, update, read):
    """Runs a recurrence that needs the chunk anchor W_{c(t)} (moved every `chunk` tokens) and carries
    an extra state (the momentum) through `update(S, extra, anchor, k, v, gates) -> (S, extra)`."""
    def run_sequence(b, h, out):
        S = inputs.params0['W'][h].detach().clone()
        anchor, extra = S, torch.zeros_like(S)
        for t in range(T):
            k, v = vectors_at(inputs, b, h, t)
            previous = S
            S, extra = update(S, extra, anchor, k, v, gates_at(inputs, b, h, t))
            out[b, h, t] = {'after': S, 'before': previous, 'anchor': anchor}[read] @ inputs.q[b, h, t].detach()
            if (t + 1) % chunk == 0:
                anchor = S
    out = torch.zeros(B, H, T, D, dtype=DTYPE)
    for b in range(B):
        for h in range(H):
            run_sequence(b, h, out)
    return out


def ttt_linear(inputs, chunk):
    # W_t = W_{c(t)} - sum_{j in t's chunk, j <= t} eta_j (W_{c(t)} k_j - v_j) k_j^T, written incrementally.
    def update(S, extra, anchor, k, v, g):
        return S - g['eta'] * outer(anchor @ k - v, k), extra
    return chunk_anchored(inputs, chunk, update, 'after')


def titans_linear(read):
    def oracle(inputs, chunk):
        def update(S, s, anchor, k, v, g):
            grad = 2.0 * outer(anchor @ k - v, k)          # gradient of ||M k - v||^2 at the anchor
            s = g['beta'] * s - g['eta'] * grad
            return g['alpha'] * S + s, s
        return chunk_anchored(inputs, chunk, update, read)
    return oracle


def hope_matrix(inputs, chunk):
    def update(S, extra, anchor, k, v, g):
        target = anchor @ v
        S = S @ (g['alpha'] * eye() - g['eta'] * outer(k, k)) - g['eta'] * outer(anchor @ k - target, k)
        return S, extra
    return chunk_anchored(inputs, chunk, update, 'anchor')


CASES = {
    'linear attention': (linear_attention, (Rule('gd'),), 'dot', {}, (1, 4)),
    'decayed': (decayed, (Rule('retain'), Rule('gd')), 'dot', {}, (1, 4)),
    'deltanet (gd at current)': (deltanet, (Rule('gd', at='current'),), 'l2', {}, (1,)),
    'deltanet (delta, gd dot)': (deltanet, (Rule('delta'), Rule('gd')), 'dot', {}, (1,)),
    'gated deltanet (gd at current)': (gated_deltanet, (Rule('retain'), Rule('gd', at='current')), 'l2',
                                       {}, (1,)),
    'gated deltanet (delta, gd dot)': (gated_deltanet, (Rule('retain'), Rule('delta'), Rule('gd')), 'dot',
                                       {}, (1,)),
    'retain + gd at anchor': (titans_without_momentum, (Rule('retain'), Rule('gd')), 'l2', {}, (1,)),
    'ttt-linear': (ttt_linear, (Rule('gd'),), 'l2', {}, (1, 4)),
    'titans linear, read after': (titans_linear('after'), (Rule('retain'), Rule('momentum')), 'sq',
                                  {}, (1, 4)),
    'titans linear, read before': (titans_linear('before'), (Rule('retain'), Rule('momentum')), 'sq',
                                   {'read': 'before'}, (1, 4)),
    'hope matrix': (hope_matrix, (Rule('dgd'),), 'l2', {'read': 'anchor', 'self_target': True}, (1, 4)),
}
PARAMS = [(name, chunk, runner) for name, case in CASES.items() for chunk in case[4] for runner in RUNNERS]


@pytest.mark.parametrize('name, chunk, runner', PARAMS)
def test_linear_oracles(name, chunk, runner):
    oracle, rules, objective, extra, _ = CASES[name]
    cfg = MemoryConfig('linear', D, D, rules=rules, chunk=chunk, **{'read': 'after', **extra})
    inputs = make_inputs(cfg, B, H, T, seed=11, grad=False)
    if objective == 'dot' and name in ('linear attention', 'decayed'):
        inputs.gates['eta'].fill_(1.0)                 # these models write v k^T with unit rate
    expected = oracle(inputs, chunk)
    y, _ = RUNNERS[runner](cfg, standard_objective(objective), inputs.q, inputs.k, inputs.v,
                           inputs.gates, inputs.params0)
    assert_close(expected, y, f"{name}, C={chunk}, {runner}")


def titans_mlp_oracle(inputs, chunk, create_graph, clip=None):
    """Titans with a 2-layer MLP memory M(k) = W2 silu(W1 k): the anchor gradient by torch.autograd
    (create_graph keeps it differentiable for the outer level), s = beta s - eta grad, M = alpha M + s.
    `clip` c: each token's gradient (both matrices together) scaled to a norm of at most c."""
    outs = []
    for b in range(B):
        for h in range(H):
            W1, W2 = inputs.params0['W1'][h], inputs.params0['W2'][h]
            S = [W1, W2]
            anchor, s = [W1, W2], [torch.zeros_like(W1), torch.zeros_like(W2)]
            seq = []
            for t in range(T):
                k, v, q = inputs.k[b, h, t], inputs.v[b, h, t], inputs.q[b, h, t]
                g = {n: x[b, h, t] for n, x in inputs.gates.items()}
                loss = ((anchor[1] @ torch.nn.functional.silu(anchor[0] @ k) - v) ** 2).sum()
                grads = torch.autograd.grad(loss, anchor, create_graph=create_graph)
                if clip is not None:
                    norm = torch.sqrt(sum((gi * gi).sum() for gi in grads))
                    grads = [gi * (clip / norm) for gi in grads] if norm > clip else grads
                s = [g['beta'] * si - g['eta'] * gi for si, gi in zip(s, grads)]
                S = [g['alpha'] * Si + si for Si, si in zip(S, s)]
                seq.append(S[1] @ torch.nn.functional.silu(S[0] @ q))
                if (t + 1) % chunk == 0:
                    anchor = S
            outs.append(torch.stack(seq))
    return torch.stack(outs).reshape(B, H, T, D)


@pytest.mark.parametrize('chunk, clip', [(1, None), (4, None), (1, 0.5), (4, 0.5)])
def test_titans_mlp_oracle_outputs_and_outer_gradients(chunk, clip):
    cfg = MemoryConfig('mlp', D, D, depth=2, hidden=4, act='silu', rules=(Rule('retain'), Rule('momentum')),
                       chunk=chunk, read='after', clip=clip)
    inputs = make_inputs(cfg, B, H, T, seed=5)
    expected = titans_mlp_oracle(inputs, chunk, create_graph=True, clip=clip)
    if clip is not None:  # the bound matters: some tokens are clipped, so the run differs from an unclipped one
        assert not torch.allclose(expected, titans_mlp_oracle(inputs, chunk, create_graph=False))
    leaves = inputs.leaves()
    probe = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    expected_grads = torch.autograd.grad((expected * probe).sum(), list(leaves.values()))
    for runner in RUNNERS.values():
        y, _ = runner(cfg, standard_objective('sq'), inputs.q, inputs.k, inputs.v, inputs.gates,
                      inputs.params0)
        assert_close(expected, y, f"titans mlp {runner.__name__}")
        grads = torch.autograd.grad((y * probe).sum(), list(leaves.values()))
        for name, want, got in zip(leaves, expected_grads, grads):
            assert_close(want, got, f"titans mlp {runner.__name__} d/d{name}")


@pytest.mark.parametrize('runner', list(RUNNERS))
def test_gated_deltanet_two_spellings_agree(runner):
    """[retain, gd at current] with l2 is [retain, delta, gd] with dot (C = 1), states included."""
    at_current = MemoryConfig('linear', D, D, rules=(Rule('retain'), Rule('gd', at='current')))
    via_delta = MemoryConfig('linear', D, D, rules=(Rule('retain'), Rule('delta'), Rule('gd')))
    inputs = make_inputs(at_current, B, H, T, seed=2, grad=False)
    args = (inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0)
    y1, s1 = RUNNERS[runner](at_current, standard_objective('l2'), *args)
    y2, s2 = RUNNERS[runner](via_delta, standard_objective('dot'), *args)
    assert_close(y1, y2, 'outputs')
    assert_close(s1.params['W'], s2.params['W'], 'final W')


@pytest.mark.parametrize('runner', list(RUNNERS))
@pytest.mark.parametrize('chunk', [1, 4])
def test_rule_order_is_meaning(runner, chunk):
    """[momentum, retain] is a different model from Titans' [retain, momentum]."""
    titans = MemoryConfig('linear', D, D, rules=(Rule('retain'), Rule('momentum')), chunk=chunk)
    swapped = MemoryConfig('linear', D, D, rules=(Rule('momentum'), Rule('retain')), chunk=chunk)
    inputs = make_inputs(titans, B, H, T, seed=3, grad=False)
    args = (standard_objective('l2'), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0)
    y1, _ = RUNNERS[runner](titans, *args)
    y2, _ = RUNNERS[runner](swapped, *args)
    assert (y1 - y2).abs().max() > 1e-3


@pytest.mark.parametrize('runner', list(RUNNERS))
def test_gradient_point_is_meaning(runner):
    """gd at the anchor and gd at the current state differ after a retain (C = 1)."""
    anchor = MemoryConfig('linear', D, D, rules=(Rule('retain'), Rule('gd')))
    current = MemoryConfig('linear', D, D, rules=(Rule('retain'), Rule('gd', at='current')))
    inputs = make_inputs(anchor, B, H, T, seed=4, grad=False)
    args = (standard_objective('l2'), inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0)
    assert (RUNNERS[runner](anchor, *args)[0] - RUNNERS[runner](current, *args)[0]).abs().max() > 1e-3
