"""The runtime's building blocks: shapes, split-run equality (semantics §2.5), oracles, CMS chains."""
from __future__ import annotations

import math

import pytest
import torch

from nldsl.runtime.layers import (
    CausalAttention, CmsChain, CmsMLP, KVCache, LayerNorm, RMSNorm, ShortConv, activation, l2norm,
    window_positions,
)

B, T = 2, 9
F64 = torch.float64


def rand(*shape, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64).requires_grad_(grad)


def run_in_pieces(step, inputs, cuts):
    """Run `step(*slices, cache)` over the pieces of the time axis cut at `cuts`; concatenate outputs."""
    bounds = [0, *cuts, inputs[0].shape[1]]
    outs, cache = [], None
    for lo, hi in zip(bounds, bounds[1:]):
        out, cache = step(*(x[:, lo:hi] for x in inputs), cache)
        outs.append(out)
    return torch.cat(outs, dim=1), cache


SPLITS = {
    'one then rest': [1],
    'middle': [4],
    'last token alone': [T - 1],
    'three pieces': [2, 7],
    'token by token': list(range(1, T)),
}


# --- ShortConv ------------------------------------------------------------------------------------

def naive_conv(x, weight, bias=None):
    window = weight.shape[1]
    y = torch.zeros_like(x)
    for t in range(x.shape[1]):
        for j in range(window):
            src = t - (window - 1) + j
            if src >= 0:
                y[:, t] += weight[:, j] * x[:, src]
    return y if bias is None else y + bias


@pytest.mark.parametrize('window', [1, 2, 4])
def test_short_conv_matches_naive_loop(window):
    conv = ShortConv(3, window, bias=True).to(F64)
    with torch.no_grad():
        conv.bias.copy_(rand(3, seed=5))
    x = rand(B, T, 3)
    y, cache = conv(x)
    assert y.shape == (B, T, 3) and cache.shape == (B, window - 1, 3)
    torch.testing.assert_close(y, naive_conv(x, conv.weight, conv.bias), rtol=0, atol=1e-14)
    assert torch.equal(cache, x[:, T - (window - 1):])


@pytest.mark.parametrize('window', [1, 3, 4, T + 2])
@pytest.mark.parametrize('split', list(SPLITS))
def test_short_conv_split_run_is_exact(window, split):
    conv = ShortConv(5, window).to(F64)
    x = rand(B, T, 5)
    full, full_cache = conv(x)
    pieces, cache = run_in_pieces(conv, [x], SPLITS[split])
    assert torch.equal(pieces, full) and torch.equal(cache, full_cache)


def test_short_conv_parameters_and_gradients():
    conv = ShortConv(4, 4).to(F64)
    assert dict(conv.named_parameters()).keys() == {'weight'}
    assert conv.weight.shape == (4, 4)
    x = rand(B, T, 4, grad=True)
    y, _ = conv(x)
    y.square().sum().backward()
    assert x.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0


# --- CausalAttention ------------------------------------------------------------------------------

def naive_attention(q, k, v, heads, window, scale):
    """A float64 loop: per row, head and query, softmax over the visible keys."""
    dk, dv = q.shape[-1] // heads, v.shape[-1] // heads
    out = torch.zeros(q.shape[0], q.shape[1], heads * dv, dtype=F64)
    for b in range(q.shape[0]):
        for h in range(heads):
            qs, ks = q[b, :, h * dk:(h + 1) * dk], k[b, :, h * dk:(h + 1) * dk]
            vs = v[b, :, h * dv:(h + 1) * dv]
            for t in range(q.shape[1]):
                lo = 0 if window is None else max(0, t - window + 1)
                scores = [float(qs[t] @ ks[j]) * scale for j in range(lo, t + 1)]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                out[b, t, h * dv:(h + 1) * dv] = sum(w / total * vs[j] for w, j in zip(weights, range(lo, t + 1)))
    return out


def qkv(heads=3, dk=4, dv=2, seed=0, grad=False):
    return (rand(B, T, heads * dk, seed=seed, grad=grad), rand(B, T, heads * dk, seed=seed + 1, grad=grad),
            rand(B, T, heads * dv, seed=seed + 2, grad=grad))


@pytest.mark.parametrize('window', [None, 1, 3, T + 2])
@pytest.mark.parametrize('scale', [None, 0.7])
def test_attention_matches_naive_softmax_loop(window, scale):
    attn = CausalAttention(3, 4, 2, window=window, scale=scale)
    q, k, v = qkv()
    o, cache = attn(q, k, v)
    assert o.shape == (B, T, 6)
    expected = naive_attention(q, k, v, 3, window, 4 ** -0.5 if scale is None else scale)
    torch.testing.assert_close(o, expected, rtol=0, atol=1e-12)
    kept = T if window is None else min(window - 1, T)
    assert cache.k.shape == (B, 3, kept, 4) and cache.v.shape == (B, 3, kept, 2) and cache.position == T


@pytest.mark.parametrize('window', [None, 1, 2, 4, T + 2])
@pytest.mark.parametrize('split', list(SPLITS))
def test_attention_split_run_equals_full_pass(window, split):
    attn = CausalAttention(3, 4, 2, window=window)
    q, k, v = qkv(seed=3)
    full, full_cache = attn(q, k, v)
    pieces, cache = run_in_pieces(attn, [q, k, v], SPLITS[split])
    torch.testing.assert_close(pieces, full, rtol=0, atol=1e-13)
    torch.testing.assert_close(cache.k, full_cache.k, rtol=0, atol=0)
    torch.testing.assert_close(cache.v, full_cache.v, rtol=0, atol=0)
    assert cache.position == full_cache.position == T


@pytest.mark.parametrize('window', [None, 3])
def test_attention_gradients_flow_through_the_cache(window):
    attn = CausalAttention(2, 3, 3, window=window)
    grads = []
    for cuts in ([], [2, 5]):
        q, k, v = qkv(heads=2, dk=3, dv=3, seed=7, grad=True)
        o, _ = run_in_pieces(attn, [q, k, v], cuts)
        (o * rand(*o.shape, seed=11)).sum().backward()
        grads.append([q.grad, k.grad, v.grad])
    for split_grad, full_grad in zip(grads[1], grads[0]):
        assert full_grad.abs().sum() > 0
        torch.testing.assert_close(split_grad, full_grad, rtol=0, atol=1e-13)


def test_attention_window_cache_stays_bounded_and_detaches():
    attn = CausalAttention(1, 2, 2, window=3)
    q, k, v = qkv(heads=1, dk=2, dv=2, grad=True)
    cache = None
    for t in range(T):
        _, cache = attn(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], cache)
        assert cache.k.shape[2] == min(2, t + 1)
    assert isinstance(cache, KVCache) and cache.k.requires_grad
    cut = cache.detach()
    assert not cut.k.requires_grad and not cut.v.requires_grad and cut.position == T


def test_attention_rejects_empty_window():
    with pytest.raises(ValueError):
        CausalAttention(1, 2, 2, window=0)


# --- norms, activations, l2norm --------------------------------------------------------------------

def test_rms_norm():
    norm = RMSNorm(6, eps=1e-6).to(F64)
    assert dict(norm.named_parameters()).keys() == {'weight'}
    x = rand(B, T, 6)
    y = norm(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(B, T, dtype=F64), rtol=0, atol=1e-5)
    with torch.no_grad():
        norm.weight.fill_(2.0)
    torch.testing.assert_close(norm(x), 2 * y)


def test_layer_norm():
    norm = LayerNorm(6).to(F64)
    assert dict(norm.named_parameters()).keys() == {'weight', 'bias'}
    with torch.no_grad():
        norm.bias.fill_(0.5)
    y = norm(rand(B, T, 6)) - 0.5
    torch.testing.assert_close(y.mean(-1), torch.zeros(B, T, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(B, T, dtype=F64), rtol=0, atol=1e-4)
    assert dict(LayerNorm(6, bias=False).named_parameters()).keys() == {'weight'}


@pytest.mark.parametrize('name, expected', [
    ('silu', lambda x: x * torch.sigmoid(x)),
    ('gelu', lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
    ('relu', lambda x: x.clamp(min=0)),
    ('tanh', lambda x: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1)),
    ('sigmoid', lambda x: 1 / (1 + torch.exp(-x))),
    ('softplus', lambda x: torch.log1p(torch.exp(x))),
    ('identity', lambda x: x),
])
def test_activations(name, expected):
    x = torch.linspace(-3, 3, 13, dtype=F64)
    torch.testing.assert_close(activation(name)(x), expected(x))


def test_unknown_activation_is_an_error():
    with pytest.raises(ValueError, match='swishy'):
        activation('swishy')


def test_l2norm_normalises_each_head():
    x = rand(B, T, 3 * 4)
    heads = x.unflatten(-1, (3, 4))
    norms = l2norm(x, 3, eps=1e-12).unflatten(-1, (3, 4)).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(B, T, 3, dtype=F64), rtol=0, atol=1e-10)
    with_eps = heads / torch.sqrt(heads.pow(2).sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(l2norm(x, 3), with_eps.flatten(-2), rtol=0, atol=1e-14)
    assert torch.isfinite(l2norm(torch.zeros(1, 1, 4, dtype=F64), 2)).all()
    with pytest.raises(ValueError):
        l2norm(x, 5)


# --- CMS ------------------------------------------------------------------------------------------

def test_cms_mlp_formula_names_and_init():
    mlp = CmsMLP(4, 8, act='silu').to(F64)
    shapes = {n: tuple(p.shape) for n, p in mlp.named_parameters()}
    assert shapes == {'w_in': (8, 4), 'b_in': (8,), 'w_out': (4, 8), 'b_out': (4,)}
    with torch.no_grad():
        for p in (mlp.b_in, mlp.b_out):
            p.copy_(rand(*p.shape, seed=9))
    x = rand(B, T, 4)
    hidden = torch.nn.functional.silu(x @ mlp.w_in.T + mlp.b_in)
    torch.testing.assert_close(mlp(x), hidden @ mlp.w_out.T + mlp.b_out)
    fresh = CmsMLP(4, 8).to(F64)
    assert fresh(x).abs().max() < 0.1 * x.abs().max()
    assert {n for n, _ in CmsMLP(4, 8, bias=False).named_parameters()} == {'w_in', 'w_out'}


def members(k=3, width=4, seed=0):
    torch.manual_seed(seed)
    return [(name, CmsMLP(width, 6, act='tanh', out_scale=1.0).to(F64)) for name in ['fast', 'mid', 'slow'][:k]]


@pytest.mark.parametrize('variant', ['sequential', 'nested'])
def test_cms_chain_applies_members_in_order_residually(variant):
    chain = CmsChain(members(), variant=variant)
    assert {n.split('.')[0] for n in chain.state_dict()} == {'fast', 'mid', 'slow'}
    assert 'fast.w_in' in chain.state_dict()
    x = rand(B, T, 4)
    y = x
    for name in ('fast', 'mid', 'slow'):
        y = y + getattr(chain, name)(y)
    torch.testing.assert_close(chain(x), y)


@pytest.mark.parametrize('agg', ['weighted_sum', 'sum', 'mean'])
def test_cms_chain_independent_aggregations(agg):
    chain = CmsChain(members(), variant='independent', agg=agg)
    x = rand(B, T, 4)
    outs = torch.stack([chain.fast(x), chain.mid(x), chain.slow(x)])
    if agg == 'weighted_sum':
        assert chain.agg.shape == (3,)
        with torch.no_grad():
            chain.agg.copy_(torch.tensor([0.3, -1.0, 2.0]))
        w = torch.softmax(torch.tensor([0.3, -1.0, 2.0], dtype=F64), 0)
        expected = w[0] * outs[0] + w[1] * outs[1] + w[2] * outs[2]
    else:
        assert 'agg' not in chain.state_dict()
        expected = outs.sum(0) if agg == 'sum' else outs.mean(0)
    torch.testing.assert_close(chain(x), expected)


def test_cms_chain_gradients_reach_every_parameter():
    chain = CmsChain(members(), variant='independent')
    x = rand(B, T, 4, grad=True)
    chain(x).square().sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in chain.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_untrained_sequential_chain_starts_near_identity():
    torch.manual_seed(0)
    chain = CmsChain([(n, CmsMLP(8, 16).to(F64)) for n in ('a', 'b')])
    x = rand(B, T, 8)
    assert (chain(x) - x).abs().max() < 0.05 * x.abs().max()


@pytest.mark.parametrize('names, variant, agg', [
    ([], 'sequential', 'sum'),
    (['fast'], 'parallel', 'sum'),
    (['fast'], 'independent', 'max'),
    (['fast', 'fast'], 'sequential', 'sum'),
    (['agg'], 'independent', 'weighted_sum'),
    (['not a name'], 'sequential', 'sum'),
])
def test_cms_chain_rejects_bad_configurations(names, variant, agg):
    with pytest.raises(ValueError):
        CmsChain([(n, CmsMLP(2, 2)) for n in names], variant=variant, agg=agg)


@pytest.mark.parametrize('position, length, period, expected', [
    (0, 10, 4, [4, 8]),
    (3, 6, 4, [1, 5]),
    (4, 4, 4, [4]),
    (5, 2, 4, []),
    (0, 3, 1, [1, 2, 3]),
    (7, 0, 2, []),
])
def test_window_positions(position, length, period, expected):
    assert window_positions(position, length, period) == expected


def test_window_positions_agree_with_a_token_count():
    for position in range(9):
        for length in range(7):
            for period in range(1, 6):
                closes = [r for r in range(1, length + 1) if (position + r) % period == 0]
                assert window_positions(position, length, period) == closes
    with pytest.raises(ValueError):
        window_positions(0, 4, 0)
