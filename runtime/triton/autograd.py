"""autograd.Functions around the generated kernels.

`ChunkFunction` runs `<level>_fwd`. Its backward is the generated `<level>_bwd` kernel when the level
has one (it re-reads the start state of every tile, stored by the forward, and recomputes the tile);
otherwise it recomputes the call with the chunked PyTorch path and differentiates that (exact, but
the work of the backward is not fused). `StepFunction` runs the token-by-token `<level>_step` kernel
(decoding, and levels with no chunk-parallel form); its backward always recomputes with the chunked
path. Inputs are contiguous (q, k, v float32, bf16 or fp16, the rest float32; launch.py prepares
them), outputs float32; `prec` is tl.dot's input precision of the forward kernels (and the wy form's
backward walk), chosen from the dtype of the caller's tensors (launch.LevelKernels.precision).
"""

from __future__ import annotations

import torch

from ..memory import MemoryState, chunked
from .backend import OutOfResources, without_backward_kernel

GATES = ("eta", "alpha", "beta")


def recompute_grads(cfg, objective, position: int, inputs, grad_outputs):
    """Gradients of (y, theta, anchor, momentum) w.r.t. the nine inputs, by the chunked path."""
    dy, dtheta1, danchor1, dmom1 = grad_outputs
    with torch.enable_grad():
        leaves = [t.detach().float().requires_grad_(True) for t in inputs]  # q, k, v may be bf16 / fp16
        q, k, v, eta, alpha, beta, theta0, anchor0, mom0 = leaves
        required = cfg.required_gates()
        gates = {n: g for n, g in zip(GATES, (eta, alpha, beta)) if n in required}
        state = MemoryState({"W": theta0}, {"W": anchor0}, {"W": mom0} if cfg.has_momentum else None, position)
        y, end = chunked(cfg, objective, q, k, v, gates, None, state)
        outs = [y, end.params["W"], end.anchor["W"]]
        grads = [dy, dtheta1, danchor1]
        if cfg.has_momentum:
            outs.append(end.momentum["W"])
            grads.append(dmom1)
        pairs = [(o, g) for o, g in zip(outs, grads) if o.requires_grad]
        if not pairs:
            return (None,) * len(leaves)
        return torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True)


def only_needed(ctx, grads, first: int):
    """The gradients of the inputs from `first` on (q, k, v, the three gates, the state), None where
    autograd needs none."""
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad[first:]))


class ChunkFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels, cfg, objective, position, prec, q, k, v, eta, alpha, beta, theta0, anchor0, mom0):
        store = kernels.bwd is not None and any(ctx.needs_input_grad[5:])
        y, theta1, anchor1, mom1, kept = kernels.launch_fwd(
            position, q, k, v, eta, alpha, beta, theta0, anchor0, mom0, store=store, prec=prec)
        ctx.kernels, ctx.cfg, ctx.objective, ctx.position, ctx.prec = kernels, cfg, objective, position, prec
        ctx.save_for_backward(q, k, v, eta, alpha, beta, theta0, anchor0, mom0, *kept)
        return y, theta1, anchor1, mom1

    @staticmethod
    def backward(ctx, dy, dtheta1, danchor1, dmom1):
        saved = ctx.saved_tensors
        kernels = ctx.kernels
        grads = None
        if kernels.bwd is not None:
            try:
                grads = kernels.launch_bwd(ctx.position, saved, dy, dtheta1, danchor1, dmom1, prec=ctx.prec)
            except OutOfResources as error:
                without_backward_kernel(kernels, error)
        if grads is None:
            kernels.launches["recompute"] += 1
            grads = recompute_grads(ctx.cfg, ctx.objective, ctx.position, saved[:9], (dy, dtheta1, danchor1, dmom1))
        return (None,) * 5 + only_needed(ctx, grads, 5)


class StepFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels, cfg, objective, position, prec, q, k, v, eta, alpha, beta, theta0, anchor0, mom0):
        y, theta1, anchor1, mom1 = kernels.launch_step(position, q, k, v, eta, alpha, beta, theta0, anchor0, mom0)
        ctx.kernels, ctx.cfg, ctx.objective, ctx.position = kernels, cfg, objective, position
        ctx.save_for_backward(q, k, v, eta, alpha, beta, theta0, anchor0, mom0)
        return y, theta1, anchor1, mom1

    @staticmethod
    def backward(ctx, dy, dtheta1, danchor1, dmom1):
        ctx.kernels.launches["recompute"] += 1
        grads = recompute_grads(ctx.cfg, ctx.objective, ctx.position, ctx.saved_tensors, (dy, dtheta1, danchor1, dmom1))
        return (None,) * 5 + only_needed(ctx, grads, 5)
