"""Titans MAC (examples/titans_mac.nl) and persistent tokens (MAG), against hand-written float64 oracles.

The MAC oracle is docs/semantics.md §4.1 written as loops over segments and tokens, independent of the
code generator and of the runtime's memory library and attention: per segment, the memory tokens
h_j = M_{start}(q_j) (the memory at the segment start), a softmax over [p] ‖ h_{≤t} ‖ S_{≤t} for every
token t, the Titans memory written token by token with the gradient at the segment start (retain, then
momentum, `mse` objective, a depth-2 residual SiLU MLP per head, its gradients by hand), and the output
y ⊗ M_t(y) read after each token's write. Only the weights are taken from the compiled block.
"""
from __future__ import annotations

import math

import pytest
import torch

from compile_testkit import DTYPE, assert_close, build, set_backend

B, T = 2, 37  # two whole 16-token segments and a partial one
SEG = 16


@pytest.fixture(scope="module")
def mac_model(tmp_path_factory):
    return build("examples/titans_mac.nl", tmp_path_factory.mktemp("titans_mac"))


@pytest.fixture(scope="module")
def mag_model(tmp_path_factory):
    return build("examples/titans_mag.nl", tmp_path_factory.mktemp("titans_mag"))


def block_input(seed: int, width: int = 128) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, width, generator=gen, dtype=DTYPE)


# ------------------------------------------------------------------ token-level pieces, by hand


def sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


def silu(x):
    return x * sigmoid(x)


def silu_grad(x):
    s = sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def unit(x, eps=1e-6):
    return x / torch.sqrt((x * x).sum() + eps)


def rms(x, weight, eps):
    return x / torch.sqrt((x * x).mean() + eps) * weight


def conv(xs, weight):
    """Causal depthwise convolution of a (T, width) sequence, weight (width, window), zeros before 0."""
    window = weight.shape[1]
    out = torch.zeros_like(xs)
    for t in range(xs.shape[0]):
        for j in range(window):
            src = t - (window - 1) + j
            if src >= 0:
                out[t] = out[t] + weight[:, j] * xs[src]
    return out


def softmax_read(q, keys, values, scale):
    logits = torch.stack([scale * (q * k).sum() for k in keys])
    w = torch.exp(logits - logits.max())
    w = w / w.sum()
    return sum(wi * v for wi, v in zip(w, values))


def mlp(W1, W2, x):
    """A residual depth-2 SiLU memory: M(x) = x + W2 silu(W1 x)."""
    return x + W2 @ silu(W1 @ x)


def mse_gradient(W1, W2, k, v):
    """∇ of mean((M(k) − v)²) with respect to W1 and W2."""
    h = W1 @ k
    a = silu(h)
    delta = 2.0 * (k + W2 @ a - v) / v.numel()
    return torch.outer((W2.T @ delta) * silu_grad(h), k), torch.outer(delta, a)


# ------------------------------------------------------------------ the MAC oracle


def mac_oracle(blk, x):
    """The MAC block's output for x (B, T, dim), a fresh state, by loops over segments and tokens."""
    heads, dk = 4, 32
    lin = lambda module, z: z @ module.weight.T  # noqa: E731 - the bias-free projections of the block
    mem, core = blk.mem, blk.core
    scale = dk ** -0.5
    out = torch.zeros_like(x)
    for b in range(B):
        xs = x[b]
        qa, ka, va = lin(blk.qa, xs), lin(blk.ka, xs), lin(blk.va, xs)
        qm_raw = silu(conv(lin(blk.qm, xs), blk.qm_conv.weight))
        theta = 0.1 * sigmoid(lin(blk.theta, xs))
        alpha = 1 - 0.1 * sigmoid(lin(blk.alpha, xs))
        beta = 0.9 * sigmoid(lin(blk.beta, xs))
        p = core.persistent
        pk, pv = lin(blk.ka, p), lin(blk.va, p)
        W1 = [mem.W1[h].clone() for h in range(heads)]
        W2 = [mem.W2[h].clone() for h in range(heads)]
        S1 = [torch.zeros_like(w) for w in W1]
        S2 = [torch.zeros_like(w) for w in W2]
        y_all = torch.zeros(T, 128, dtype=DTYPE)
        k_in, v_in, yq = None, None, None
        for start in range(0, T, SEG):
            end = min(T, start + SEG)
            A1, A2 = [w.clone() for w in W1], [w.clone() for w in W2]  # the memory at the segment start
            hk, hv = [], []
            for t in range(start, end):
                h_t = torch.cat([mlp(A1[h], A2[h], unit(qm_raw[t, h * dk:(h + 1) * dk])) for h in range(heads)])
                hk.append(lin(blk.ka, h_t))
                hv.append(lin(blk.va, h_t))
                o_t = []
                for h in range(heads):
                    sl = slice(h * dk, (h + 1) * dk)
                    keys = [pk[i, sl] for i in range(p.shape[0])] + [hk[j - start][sl] for j in range(start, t + 1)] \
                        + [ka[j, sl] for j in range(start, t + 1)]
                    values = [pv[i, sl] for i in range(p.shape[0])] + [hv[j - start][sl] for j in range(start, t + 1)] \
                        + [va[j, sl] for j in range(start, t + 1)]
                    o_t.append(softmax_read(qa[t, sl], keys, values, scale))
                y_all[t] = lin(blk.y_, torch.cat(o_t))
            # the memory's flows from y (the convolutions run over the whole sequence so far)
            k_in = silu(conv(lin(blk.k, y_all[:end]), blk.k_conv.weight))
            v_in = silu(conv(lin(blk.v, y_all[:end]), blk.v_conv.weight))
            yq = lin(blk.m, y_all[:end])
            for t in range(start, end):
                reads = []
                for h in range(heads):
                    sl = slice(h * dk, (h + 1) * dk)
                    g1, g2 = mse_gradient(A1[h], A2[h], unit(k_in[t, sl]), v_in[t, sl])
                    S1[h] = beta[t, h] * S1[h] - theta[t, h] * g1
                    S2[h] = beta[t, h] * S2[h] - theta[t, h] * g2
                    W1[h] = alpha[t, h] * W1[h] + S1[h]
                    W2[h] = alpha[t, h] * W2[h] + S2[h]
                    reads.append(mlp(W1[h], W2[h], unit(yq[t, sl])))
                m = rms(lin(blk.m2, torch.cat(reads)), blk.m_rmsnorm.weight, blk.m_rmsnorm.eps)
                out[b, t] = lin(blk.out, y_all[t] * sigmoid(m))
    return out


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_compiled_mac_block_matches_the_hand_written_oracle(mac_model, backend):
    blk = set_backend(mac_model, backend).layer[0].mac
    x = block_input(7)
    with torch.no_grad():
        expected = mac_oracle(blk, x)
        actual = blk(x, {})
    assert_close(expected, actual, f"MAC block output ({backend})")


def test_mac_backends_agree_and_persistent_tokens_learn(mac_model):
    x = torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(3))
    runs = {}
    for backend in ("reference", "chunked"):
        mac_model.zero_grad()
        logits, _ = set_backend(mac_model, backend)(x)
        logits.pow(2).mean().backward()
        grad = mac_model.layer[0].mac.core.persistent.grad
        runs[backend] = (logits.detach(), grad.clone())
    assert_close(runs["reference"][0], runs["chunked"][0], "logits")
    assert_close(runs["reference"][1], runs["chunked"][1], "d/d persistent tokens")
    assert runs["chunked"][1].abs().max() > 0


def test_a_later_token_never_changes_an_earlier_output(mac_model):
    """h_j carries x_j, so token t sees the memory tokens of positions ≤ t only: causal within a segment."""
    blk = set_backend(mac_model, "chunked").layer[0].mac
    x = block_input(9)
    changed = x.clone()
    changed[:, 20] += 1.0  # inside the second segment
    with torch.no_grad():
        a, b = blk(x, {}), blk(changed, {})
    assert_close(a[:, :20], b[:, :20], "outputs before the changed token")
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-6


# ------------------------------------------------------------------ MAG's persistent tokens


def test_mag_attention_sees_its_persistent_tokens(mag_model):
    """The compiled sliding-window attention of titans_mag.nl: every query sees the persistent tokens
    (projected by the attention's own key and value maps) and its window, by a token loop."""
    blk = set_backend(mag_model, "chunked").layer[0].mag
    seen = {}
    hook = blk.swa.register_forward_hook(lambda module, args, output: seen.update(args=args, out=output[0]))
    x = block_input(11)
    try:
        with torch.no_grad():
            blk(x, {})
    finally:
        hook.remove()
    q, k, v = seen["args"][:3]
    p = blk.swa.persistent
    assert p.shape[0] == 4
    pk, pv = p @ blk.ka.weight.T, p @ blk.va.weight.T
    window, dk = blk.swa.window, 32
    expected = torch.zeros_like(seen["out"])
    for b in range(B):
        for t in range(T):
            for h in range(4):
                sl = slice(h * dk, (h + 1) * dk)
                js = range(max(0, t - window + 1), t + 1)
                keys = [pk[i, sl] for i in range(4)] + [k[b, j, sl] for j in js]
                values = [pv[i, sl] for i in range(4)] + [v[b, j, sl] for j in js]
                expected[b, t, sl] = softmax_read(q[b, t, sl], keys, values, dk ** -0.5)
    assert_close(expected, seen["out"], "MAG attention with persistent tokens")
    assert math.isclose(blk.swa.scale, dk ** -0.5)


# ------------------------------------------------------------------ the runtime piece alone


def attention_inputs(seed: int, length: int, heads: int = 2, d: int = 3, n_persistent: int = 2):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=DTYPE)  # noqa: E731
    return (r(B, length, heads * d), r(B, length, heads * d), r(B, length, heads * d),
            (r(B, n_persistent, heads * d), r(B, n_persistent, heads * d)),
            (r(B, length, heads * d), r(B, length, heads * d)))


def loop_attention(q, k, v, persistent, context, *, segment=None, window=None, heads=2, d=3):
    out = torch.zeros_like(q)
    for b in range(B):
        for t in range(q.shape[1]):
            first = (t // segment) * segment if segment else (max(0, t - window + 1) if window else 0)
            js = range(first, t + 1)
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                keys = [persistent[0][b, i, sl] for i in range(persistent[0].shape[1])] + [k[b, j, sl] for j in js]
                values = [persistent[1][b, i, sl] for i in range(persistent[1].shape[1])] + [v[b, j, sl] for j in js]
                if context is not None:
                    keys += [context[0][b, j, sl] for j in js]
                    values += [context[1][b, j, sl] for j in js]
                out[b, t, sl] = softmax_read(q[b, t, sl], keys, values, d ** -0.5)
    return out


@pytest.mark.parametrize("segment, window, with_context", [(4, None, True), (4, None, False), (None, 3, False),
                                                           (None, None, False)])
def test_segment_attention_against_a_token_loop_and_split_runs(segment, window, with_context):
    from nldsl.runtime.segment_attention import SegmentAttention

    att = SegmentAttention(2, 3, 3, width=6, segment=segment, window=window, persistent=2).double()
    q, k, v, persistent, context = attention_inputs(5, 11)
    context = context if with_context else None
    whole, cache = att(q, k, v, None, persistent=persistent, context=context)
    assert_close(loop_attention(q, k, v, persistent, context, segment=segment, window=window), whole, "whole run")
    for a in (1, 4, 6, 9):
        cut = lambda pair, s: None if pair is None else (pair[0][:, s], pair[1][:, s])  # noqa: E731
        first, c = att(q[:, :a], k[:, :a], v[:, :a], None, persistent=persistent, context=cut(context, slice(0, a)))
        second, c = att(q[:, a:], k[:, a:], v[:, a:], c, persistent=persistent, context=cut(context, slice(a, None)))
        assert_close(whole, torch.cat([first, second], dim=1), f"split at {a}")
        assert c.position == cache.position == 11
        assert_close(cache.k, c.k, f"carried keys, split at {a}")
        assert_close(cache.v, c.v, f"carried values, split at {a}")
