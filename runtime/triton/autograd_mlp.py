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
from .backend import OutOfResources, without_backward_kernel

GATES = ("eta", "alpha", "beta")
WEIGHTS = ("W1", "W2")


def _pair(a, b) -> dict:
    return {"W1": a, "W2": b}


class MlpChunkFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels, cfg, objective, position, prec, q, k, v, eta, alpha, beta, w1, w2, a1, a2, s1, s2):
        store = any(ctx.needs_input_grad[5:])
        streamed = kernels.streams(k)
        outs, (starts, mstarts) = kernels.launch_fwd(position, q, k, v, eta, alpha, beta, w1, w2, a1, a2, s1, s2,
                                                     store=store, prec=prec, streamed=streamed)
        ctx.kernels, ctx.cfg, ctx.objective, ctx.position = kernels, cfg, objective, position
        ctx.streamed = streamed
        ctx.save_for_backward(q, k, v, eta, alpha, beta, w1, w2, a1, a2, s1, s2, *starts, *mstarts)
        return outs

    @staticmethod
    def backward(ctx, dy, dw1, dw2, da1, da2, ds1, ds2):
        grads = None
        if (ctx.kernels.bwd_streamed if ctx.streamed else ctx.kernels.bwd) is not None:
            try:
                grads = ctx.kernels.launch_bwd(ctx.position, ctx.saved_tensors, dy, dw1, dw2, da1, da2, ds1, ds2,
                                               streamed=ctx.streamed)
            except OutOfResources as error:
                without_backward_kernel(ctx.kernels, error, streamed=ctx.streamed)
        if grads is None:
            grads = _tile_walk(ctx, dy, dw1, dw2, da1, da2, ds1, ds2)
        needed = ctx.needs_input_grad[5:]
        return (None,) * 5 + tuple(g if need else None for g, need in zip(grads, needed))


def _tile_walk(ctx, dy, dw1, dw2, da1, da2, ds1, ds2):
    """The backward in PyTorch: every chunk recomputed by the chunked path, in reverse."""
    saved = ctx.saved_tensors
    q, k, v, eta, alpha, beta, w1, w2, a1, a2, s1, s2 = saved[:12]
    starts, mstarts = saved[12:14], saved[14:16]
    cfg, kernels = ctx.cfg, ctx.kernels
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
    d_theta, d_anchor = _pair(dw1, dw2), _pair(da1, da2)
    d_mom = _pair(ds1, ds2) if cfg.has_momentum else None
    d_start = None
    for j, end_tile in reversed(list(zip(heads, ends))):
        lo, hi = max(0, j * kernels.tile_tokens - offset), min(tokens, end_tile * kernels.tile_tokens - offset)
        with torch.enable_grad():
            xs = [t[:, :, lo:hi].detach().float().requires_grad_(True) for t in (q, k, v)]  # may be bf16
            gates = {n: gate_inputs[n][:, :, lo:hi].detach().requires_grad_(True) for n in required}
            if j == 0:
                theta = {w: t.detach().requires_grad_(True) for w, t in zip(WEIGHTS, (w1, w2))}
                anchor = {w: t.detach().requires_grad_(True) for w, t in zip(WEIGHTS, (a1, a2))}
                mom = ({w: t.detach().requires_grad_(True) for w, t in zip(WEIGHTS, (s1, s2))}
                       if cfg.has_momentum else None)
            else:
                theta = {w: st[:, :, j].detach().requires_grad_(True) for w, st in zip(WEIGHTS, starts)}
                anchor = theta
                mom = ({w: ms[:, :, j].detach().requires_grad_(True) for w, ms in zip(WEIGHTS, mstarts)}
                       if cfg.has_momentum else None)
            y, end = chunked(cfg, ctx.objective, *xs, gates, None,
                             MemoryState(theta, anchor, mom, ctx.position + lo))
            outputs, grads = [y], [dy[:, :, lo:hi]]
            for w in WEIGHTS:
                outputs += [end.params[w], end.anchor[w]]
                grads += [d_theta[w], d_anchor[w]]
                if mom is not None:
                    outputs.append(end.momentum[w])
                    grads.append(d_mom[w])
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
        d_theta, rest = _pair(*rest[:2]), rest[2:]
        d_anchor = _pair(torch.zeros_like(d_theta["W1"]), torch.zeros_like(d_theta["W2"]))
        if j == 0:
            d_start, rest = _pair(*rest[:2]), rest[2:]
        if mom is not None:
            d_mom = _pair(*rest[:2])
    return (dq, dk, dv, dgates["eta"], dgates["alpha"], dgates["beta"], d_theta["W1"], d_theta["W2"],
            d_start["W1"], d_start["W2"],
            d_mom["W1"] if d_mom is not None else None, d_mom["W2"] if d_mom is not None else None)
