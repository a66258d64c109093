"""A group of tiles whose insides are recomputed in backward, so that only tile-start states are kept.

Plain autograd through the dual form keeps several weight-sized tensors per tile (the state, the
momentum, the products with the gates), and the many such tensors of a long sequence, interleaved
with the temporaries of the tiles, leave the process's heap fragmented: a Titans memory of
4 heads x (256 -> 1024 -> 256) at B = 2, T = 2048 needed 4.5 GB of resident memory for 2.2 GB of
saved tensors. Here the forward pass runs the tiles without a graph and writes the state at the
start of every tile into one buffer per parameter (one allocation each, so nothing interleaves);
backward walks the tiles in reverse and, for one tile at a time, rebuilds its graph from the saved
start state, takes the gradients of the tile's output and end state, and hands the start state's
gradient to the tile before. Each tile's forward runs twice, but its products with the weights
only once: the first run records them on the tile's tape (tape.py) and the second replays them;
the results are those of plain autograd (the same operations, in the same order).

The tile step is any function (tile inputs, q, k, v, theta, anchor, momentum) -> (y, theta,
momentum) whose output y does not depend on the values of its own end state: when a tile is
recomputed, its state updates (state_update.py) build their graph without computing values; tile
inputs are a structure of tensors (dataclasses, dicts, tuples; other values pass through) whose
tensors carry the tile index at dimension 2, like q, k and v (B, H, count, L, ...).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import buffers
from .functional import Params
from .state_update import graph_only
from .tape import Tape
from .tiles import tensors_of, with_tensors

TileStep = Callable[..., tuple[Tensor, Params, Optional[Params]]]

_graph_kept = contextvars.ContextVar("nlc_graph_kept", default=False)


@contextlib.contextmanager
def graph_kept():
    """While active, forward passes build graphs that may be backpropagated more than once (`bptt full`);
    a recomputed group frees what it recomputes from in its backward, so none is run."""
    token = _graph_kept.set(True)
    try:
        yield
    finally:
        _graph_kept.reset(token)


def may_recompute() -> bool:
    return not _graph_kept.get()


def run_recomputed(step: TileStep, inputs: Any, q: Tensor, k: Tensor, v: Tensor, theta: Params,
                   anchor: Params, momentum: Optional[Params]) -> tuple[Tensor, Params, Optional[Params]]:
    """Run the tiles of a group: y (B, H, count, L, dv) and the state after the last tile.

    Every tile after the first starts on a chunk boundary, so its anchor is its starting theta; the
    first tile's anchor is `anchor` (often theta itself)."""
    names = list(theta)
    mom_names = list(momentum) if momentum is not None else []
    shared_anchor = all(anchor[n] is theta[n] for n in names)
    flat_inputs = tensors_of(inputs)
    args = [*flat_inputs, q, k, v, *(theta[n] for n in names),
            *([] if shared_anchor else [anchor[n] for n in names]), *(momentum[n] for n in mom_names)]
    layout = _Layout(step, inputs, len(flat_inputs), names, mom_names, shared_anchor)
    outputs = _Recompute.apply(layout, *args)
    y, rest = outputs[0], outputs[1:]
    end_theta = dict(zip(names, rest[:len(names)]))
    end_momentum = dict(zip(mom_names, rest[len(names):])) if momentum is not None else None
    return y, end_theta, end_momentum


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How the flat argument list of the Function maps back to the step's arguments."""

    step: TileStep
    inputs: Any
    n_inputs: int
    names: list[str]
    mom_names: list[str]
    shared_anchor: bool

    def unpack(self, args: tuple) -> tuple[list, Tensor, Tensor, Tensor, Params, Params, Optional[Params]]:
        n = self.n_inputs
        flat, (q, k, v), rest = list(args[:n]), args[n:n + 3], list(args[n + 3:])
        theta = dict(zip(self.names, rest[:len(self.names)]))
        rest = rest[len(self.names):]
        anchor = theta if self.shared_anchor else dict(zip(self.names, rest[:len(self.names)]))
        rest = rest if self.shared_anchor else rest[len(self.names):]
        momentum = dict(zip(self.mom_names, rest)) if self.mom_names else None
        return flat, q, k, v, theta, anchor, momentum

    def tile(self, flat: list[Tensor], index: int, leaf: bool) -> Any:
        """The step's tile inputs of tile `index`; as fresh leaves that require grad when `leaf`."""
        def pick(t: Tensor) -> Tensor:
            piece = t[:, :, index]
            return piece.detach().requires_grad_(t.requires_grad) if leaf else piece
        return with_tensors(self.inputs, [pick(t) for t in flat])


class _Recompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, layout: _Layout, *args):
        ctx.set_materialize_grads(False)
        flat, q, k, v, theta, anchor, momentum = layout.unpack(args)
        first_anchor = [] if layout.shared_anchor else list(anchor.values())
        count = k.shape[2]
        starts = {n: buffers.take((count, *t.shape), t.dtype, t.device) for n, t in theta.items()}
        mom_starts = {n: buffers.take((count, *t.shape), t.dtype, t.device) for n, t in (momentum or {}).items()}
        outputs, tapes = [], []
        for i in range(count):
            for n, t in theta.items():
                starts[n][i].copy_(t)
            for n, t in (momentum or {}).items():
                mom_starts[n][i].copy_(t)
            tapes.append(Tape())
            with tapes[-1].recording():
                y, theta, momentum = layout.step(layout.tile(flat, i, False), q[:, :, i], k[:, :, i],
                                                 v[:, :, i], theta, anchor, momentum)
            anchor = theta
            outputs.append(y)
        ctx.layout, ctx.starts, ctx.mom_starts, ctx.tapes = layout, starts, mom_starts, tapes
        ctx.save_for_backward(*flat, q, k, v, *first_anchor)
        return (torch.stack(outputs, 2), *theta.values(), *(momentum or {}).values())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, *grad_state):
        layout: _Layout = ctx.layout
        saved = ctx.saved_tensors
        n = layout.n_inputs
        flat, (q, k, v) = list(saved[:n]), saved[n:n + 3]
        first_anchor = dict(zip(layout.names, saved[n + 3:]))
        names, mom_names = layout.names, layout.mom_names
        grad_theta = dict(zip(names, grad_state[:len(names)]))
        grad_mom = dict(zip(mom_names, grad_state[len(names):]))
        grad_flat = [torch.zeros_like(t) if t.requires_grad else None for t in flat]
        grad_q, grad_k, grad_v = (torch.zeros_like(t) if t.requires_grad else None for t in (q, k, v))
        grad_anchor: dict[str, Tensor] = {}
        for i in reversed(range(k.shape[2])):
            tile_inputs = layout.tile(flat, i, True)
            qi, ki, vi = (t[:, :, i].detach().requires_grad_(t.requires_grad) for t in (q, k, v))
            theta = {name: ctx.starts[name][i].detach().requires_grad_() for name in names}
            momentum = {name: ctx.mom_starts[name][i].detach().requires_grad_() for name in mom_names} or None
            own_anchor = i == 0 and not layout.shared_anchor
            anchor = {name: first_anchor[name].detach().requires_grad_() for name in names} if own_anchor \
                else theta
            # The end state is saved (only its graph is needed) and so are the tile's weight products.
            with torch.enable_grad(), graph_only(), ctx.tapes[i].replaying():
                y, end, end_mom = layout.step(tile_inputs, qi, ki, vi, theta, anchor, momentum)
            ctx.tapes[i] = None
            outs = [y, *end.values(), *(end_mom or {}).values()]
            grads = [grad_y[:, :, i], *(grad_theta[m] for m in names), *(grad_mom.get(m) for m in mom_names)]
            pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
            leaves_flat = tensors_of(tile_inputs)
            leaves = [*leaves_flat, qi, ki, vi, *theta.values(), *(momentum or {}).values(),
                      *(anchor.values() if own_anchor else [])]
            wanted = [t for t in leaves if t.requires_grad]
            got = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True) \
                if pairs and wanted else [None] * len(wanted)
            found = dict(zip(map(id, wanted), got))

            def grad_of(t: Tensor) -> Optional[Tensor]:
                return found.get(id(t))

            for j, leaf in enumerate(leaves_flat):
                if grad_flat[j] is not None and grad_of(leaf) is not None:
                    grad_flat[j][:, :, i] += grad_of(leaf)
            for total, leaf in ((grad_q, qi), (grad_k, ki), (grad_v, vi)):
                if total is not None and grad_of(leaf) is not None:
                    total[:, :, i] += grad_of(leaf)
            grad_theta = {name: grad_of(theta[name]) for name in names}
            grad_mom = {name: grad_of(momentum[name]) for name in mom_names}
            if own_anchor:
                grad_anchor = {name: grad_of(anchor[name]) for name in names}
            found.clear()
            del y, end, end_mom, outs, got
        for buffer in [*ctx.starts.values(), *ctx.mom_starts.values()]:
            buffers.give(buffer)
        ctx.starts = ctx.mom_starts = ctx.tapes = None
        return (None, *grad_flat, grad_q, grad_k, grad_v, *(grad_theta[m] for m in names),
                *([] if layout.shared_anchor else [grad_anchor.get(m) for m in names]),
                *(grad_mom[m] for m in mom_names))
