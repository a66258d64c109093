"""A tile's weight-sized work: the end state scale * P_0 (+ scale' * S_0) + columns^T x, with a backward
written by hand, and the mode in which a recomputed tile builds that update's graph without values.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .tape import needs_graph


def state_update(start: Tensor, scale: Tensor, columns: Optional[Tensor], x: Tensor,
                 other: Optional[Tensor] = None, other_scale: Optional[Tensor] = None) -> Tensor:
    """scale * start (+ other_scale * other) + columns^T x, for start and other (..., out, in), scales
    (...), columns (..., L, out) or None for no columns, x (..., L, in): the weight-sized work of a tile.

    Its backward is written by hand: it keeps references to the inputs only and makes one pass over
    the weights per gradient (autograd's version multiplies and then sums for every gate, and makes
    several weight-sized temporaries per tile). Where no input needs a gradient (a forward alone, the
    reads of evaluation and decoding), the same arithmetic runs without the autograd node."""
    inputs = (start, scale, columns, x, other, other_scale)
    return _StateUpdate.apply(*inputs) if needs_graph(*inputs) else _update(*inputs)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """sum over the last two dimensions of a * b (broadcasting the leading ones).

    One reduction per matrix (torch.linalg.vecdot over the flattened matrices); a batched matmul of a
    (1, n) row with an (n, 1) column does the same sum several times slower on the CPU."""
    lead = torch.broadcast_shapes(a.shape, b.shape)[:-2]
    flat_a = a.expand(*lead, *a.shape[-2:]).reshape(*lead, -1)
    flat_b = b.expand(*lead, *b.shape[-2:]).reshape(*lead, -1)
    return torch.linalg.vecdot(flat_a, flat_b)


def _times(t: Tensor, scale: Tensor) -> Tensor:
    return t * scale[..., None, None]


def _update(start: Tensor, scale: Tensor, columns: Optional[Tensor], x: Tensor, other: Optional[Tensor],
            other_scale: Optional[Tensor]) -> Tensor:
    with torch.autocast(start.device.type, enabled=False):
        base = _times(start, scale)
        if other is not None:
            base.addcmul_(other, other_scale[..., None, None])
        if columns is None:
            return base
        rows, length, width = base.shape[-2], x.shape[-2], x.shape[-1]
        base.view(-1, rows, width).baddbmm_(columns.to(base.dtype).reshape(-1, length, rows).transpose(1, 2),
                                            x.to(base.dtype).reshape(-1, length, width))
    return base


class graph_only:
    """Within this context state updates build their autograd nodes but skip computing their values
    (uninitialised tensors of the right shape): for recomputing a chunk in backward, where the end
    state is already saved and only its graph is needed."""

    active = False

    def __enter__(self) -> None:
        self.before, graph_only.active = graph_only.active, True

    def __exit__(self, *exc) -> None:
        graph_only.active = self.before


class _StateUpdate(torch.autograd.Function):
    """The state keeps its own dtype: under autocast the columns and inputs of a tile (bf16 products)
    are accumulated into a float32 state in float32, as a fused kernel keeps its state."""

    @staticmethod
    def forward(ctx, start, scale, columns, x, other, other_scale):
        ctx.save_for_backward(start, scale, columns, x, other, other_scale)
        if graph_only.active:
            shape = torch.broadcast_shapes(start.shape, scale.shape + (1, 1))
            return start.new_empty(shape)
        return _update(start, scale, columns, x, other, other_scale)

    @staticmethod
    def backward(ctx, grad):
        start, scale, columns, x, other, other_scale = ctx.saved_tensors
        need = ctx.needs_input_grad
        with torch.autocast(grad.device.type, enabled=False):   # gradients come back in each input's dtype
            return (_times(grad, scale) if need[0] else None,
                    _dot(grad, start) if need[1] else None,
                    x.to(grad.dtype) @ grad.transpose(-1, -2) if need[2] else None,
                    columns.to(grad.dtype) @ grad if need[3] and columns is not None else None,
                    _times(grad, other_scale) if need[4] else None,
                    _dot(grad, other) if need[5] else None)
