"""The autograd.Function around the generated MLP-memory kernels.

Forward: the fused kernel (launch_mlp.py), which also stores every tile's start state (theta and
momentum; tiles are aligned to the chunks, a chunk one or more tiles, and the anchor of a chunk that
opens inside the call is the start state of its first tile) when a gradient is needed. Backward: the
generated `<level>_bwd` kernel, which walks the tiles in reverse and recomputes each from its stored
start state (`<level>_bwd_streamed` after the streamed forward). Without one (`bwd` None) a walk over
the chunks runs in PyTorch: each chunk recomputed with the chunked path (the same dual form) from the
start state of its first tile and differentiated by autograd, the gradient of its start state handed to
the chunk before (one chunk's graph at a time).
"""

from __future__ import annotations

import torch

from ..memory import MemoryState, chunked
from .autograd import GATES, only_needed
from .backend import OutOfResources, without_backward_kernel


def names_of(bias: bool) -> tuple[tuple[str, str], ...]:
    """The pairs of parameters of the flat state, in order: the weights, then the biases."""
    return (("W1", "W2"), ("b1", "b2")) if bias else (("W1", "W2"),)


def named(flat, bias: bool) -> tuple[dict, dict, dict]:
    """(theta, anchor, momentum) of a flat state (w1, w2, a1, a2, s1, s2[, b1, b2, ab1, ab2, sb1, sb2])."""
    theta, anchor, mom = {}, {}, {}
    for i, (one, two) in enumerate(names_of(bias)):
        t1, t2, a1, a2, s1, s2 = flat[6 * i:6 * i + 6]
        theta.update({one: t1, two: t2})
        anchor.update({one: a1, two: a2})
        mom.update({one: s1, two: s2})
    return theta, anchor, mom


def flat_of(theta: dict, anchor: dict, mom: dict, bias: bool) -> list:
    """The inverse of `named`."""
    out = []
    for one, two in names_of(bias):
        out += [theta[one], theta[two], anchor[one], anchor[two], mom[one], mom[two]]
    return out


class MlpChunkFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels, cfg, objective, position, prec, streamed, q, k, v, eta, alpha, beta, *state):
        store = any(ctx.needs_input_grad[6:])
        outs, stored = kernels.launch_fwd(position, q, k, v, eta, alpha, beta, *state, store=store, prec=prec,
                                          streamed=streamed)
        ctx.kernels, ctx.cfg, ctx.objective, ctx.position = kernels, cfg, objective, position
        ctx.streamed = streamed
        ctx.save_for_backward(q, k, v, eta, alpha, beta, *state, *stored)
        return outs

    @staticmethod
    def backward(ctx, dy, *dstate):
        grads = None
        if (ctx.kernels.backward_kernel_streamed(dy) if ctx.streamed else ctx.kernels.bwd is not None):
            try:
                grads = ctx.kernels.launch_bwd(ctx.position, ctx.saved_tensors, dy, *dstate, streamed=ctx.streamed)
            except OutOfResources as error:
                without_backward_kernel(ctx.kernels, error, streamed=ctx.streamed)
        if grads is None:
            grads = _tile_walk(ctx, dy, dstate)
        return (None,) * 6 + only_needed(ctx, grads, 6)


def _tile_walk(ctx, dy, dstate):
    """The backward in PyTorch: every chunk recomputed by the chunked path, in reverse."""
    cfg, kernels = ctx.cfg, ctx.kernels
    bias = kernels.bias
    saved = ctx.saved_tensors
    q, k, v, eta, alpha, beta = saved[:6]
    state = saved[6:6 + len(dstate)]
    stored = saved[6 + len(dstate):]     # per pair of parameters: their tile starts, then their momenta's
    names = [n for pair in names_of(bias) for n in pair]
    starts = {n: stored[4 * i + j] for i, pair in enumerate(names_of(bias)) for j, n in enumerate(pair)}
    mstarts = {n: stored[4 * i + 2 + j] for i, pair in enumerate(names_of(bias)) for j, n in enumerate(pair)}
    tokens = k.shape[2]
    offset, sub0, n_tiles = kernels.tiles(ctx.position, tokens)
    # chunk by chunk: the tiles that open a chunk (and tile 0), whose start states the forward stored
    n_sub = kernels.chunk // kernels.tile_tokens
    heads = [j for j in range(n_tiles) if j == 0 or (j + sub0) % n_sub == 0]
    ends = heads[1:] + [n_tiles]
    gate_inputs = dict(zip(GATES, (eta, alpha, beta)))
    required = cfg.required_gates()
    dq, dk, dv = (torch.zeros_like(t, dtype=torch.float32) for t in (q, k, v))
    dgates = {n: torch.zeros_like(g) for n, g in gate_inputs.items()}
    d_theta, d_anchor, d_mom = named(dstate, bias)
    d_mom = d_mom if cfg.has_momentum else None
    start_theta, start_anchor, start_mom = named(state, bias)
    d_start = None
    for j, end_tile in reversed(list(zip(heads, ends))):
        lo, hi = max(0, j * kernels.tile_tokens - offset), min(tokens, end_tile * kernels.tile_tokens - offset)
        with torch.enable_grad():
            xs = [t[:, :, lo:hi].detach().float().requires_grad_(True) for t in (q, k, v)]  # may be bf16
            gates = {n: gate_inputs[n][:, :, lo:hi].detach().requires_grad_(True) for n in required}
            if j == 0:
                theta = {n: start_theta[n].detach().requires_grad_(True) for n in names}
                anchor = {n: start_anchor[n].detach().requires_grad_(True) for n in names}
                mom = ({n: start_mom[n].detach().requires_grad_(True) for n in names}
                       if cfg.has_momentum else None)
            else:
                theta = {n: starts[n][:, :, j].detach().requires_grad_(True) for n in names}
                anchor = theta
                mom = ({n: mstarts[n][:, :, j].detach().requires_grad_(True) for n in names}
                       if cfg.has_momentum else None)
            y, end = chunked(cfg, ctx.objective, *xs, gates, None,
                             MemoryState(theta, anchor, mom, ctx.position + lo))
            outputs, grads = [y], [dy[:, :, lo:hi]]
            for n in names:
                outputs += [end.params[n], end.anchor[n]]
                grads += [d_theta[n], d_anchor[n]]
                if mom is not None:
                    outputs.append(end.momentum[n])
                    grads.append(d_mom[n])
            leaves = xs + list(gates.values()) + list(theta.values())
            if j == 0:
                leaves += list(anchor.values())
            if mom is not None:
                leaves += list(mom.values())
            got = torch.autograd.grad(outputs, leaves, grads, allow_unused=True)
        kernels.launches["bwd_tiles"] += 1
        got = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(got, leaves)]
        for acc, g in zip((dq, dk, dv), got[:3]):
            acc[:, :, lo:hi] = g
        for n, g in zip(gates, got[3:3 + len(gates)]):
            dgates[n][:, :, lo:hi] = g
        rest = got[3 + len(gates):]
        d_theta, rest = dict(zip(names, rest[:len(names)])), rest[len(names):]
        d_anchor = {n: torch.zeros_like(d_theta[n]) for n in names}
        if j == 0:
            d_start, rest = dict(zip(names, rest[:len(names)])), rest[len(names):]
        if mom is not None:
            d_mom = dict(zip(names, rest[:len(names)]))
    none = {n: None for n in names}
    return (dq, dk, dv, dgates["eta"], dgates["alpha"], dgates["beta"],
            *flat_of(d_theta, d_start, d_mom if d_mom is not None else none, bias))
