"""Products with the weights, kept from a tile's forward pass for its recomputation in backward.

A recomputed group of tiles (recompute.py) runs every tile twice: once without a graph, and again in
backward to rebuild the tile's graph from its saved start state. The second run would redo every matmul
of the memory with the weights (the memory applied to the tile's keys and queries, the deltas sent back
through a layer): about a sixth of the work of a Titans layer's forward and backward. Instead, the first
run records the result of each such product on the tile's tape, in call order; the second run takes the
same products from the tape, in the same order, and only their backward runs. The values are the ones
recomputation would give bit for bit (same inputs, same operation); a tape holds a few token-sized
tensors per tile, a small fraction of one weight.

Outside a recording or a replay the two products below are plain matmuls, except that for a large
weight their backward is written out (`_Product`) so that the weight's gradient comes out row-major:
autograd's own gradient for W in x W^T is a transposed view, and every weight-sized operation after it
(the sums with the weight's other gradients, the gate products) walks memory with a stride. Small
weights keep autograd's matmul, where the count of operations is what costs.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import Tensor


# Weights of at least this many values go through _Product outside a tape too: measured on the CPU,
# HOPE's 64 -> 256 -> 64 memory ran 13% faster forward + backward, a Titans layer of 256 -> 1024 -> 256
# 2%, and hope.nl's 32 -> 128 -> 32 memories (4,096 values) are left as they were.
LARGE_WEIGHT = 1 << 13


def needs_graph(*tensors: Optional[Tensor]) -> bool:
    """Whether an operation on these tensors must record an autograd node: a forward alone (evaluation,
    decoding, a benchmark's forward) runs the written-out operations here as plain arithmetic, without
    the Python cost of a node per call."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def forward_alone(*tensors: Optional[Tensor]) -> bool:
    """Whether no backward will follow through these tensors: no graph needed now (needs_graph), nor
    rebuilt later (no tape records this run's products for a recomputation in backward, recompute.py)."""
    return not needs_graph(*tensors) and Tape.current is None


def _rows(weight: Tensor, x: Tensor) -> Tensor:
    return torch.matmul(x, weight.transpose(-1, -2))


def _back(delta: Tensor, weight: Tensor) -> Tensor:
    return torch.matmul(delta, weight)


def weight_rows(weight: Tensor, x: Tensor) -> Tensor:
    """x W^T: weight (..., out, in), x (..., N, in) -> (..., N, out)."""
    return _product('rows', weight, x)


def weight_back(delta: Tensor, weight: Tensor) -> Tensor:
    """delta W: delta (..., N, out), weight (..., out, in) -> (..., N, in)."""
    return _product('back', weight, delta)


def gram(a: Tensor, b: Tensor) -> Tensor:
    """a b^T over the last two dimensions, (..., L, n), (..., M, n) -> (..., L, M), with the written-out
    backward: both gradients come out row-major (autograd's hands b a transposed view, which then meets
    b's other gradients in mixed-layout sums). Never recorded on a tape."""
    return _Product.apply('rows', b, a, None) if needs_graph(a, b) else _rows(b, a)


def plus_product(y: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """y + a b for (B, H, ...) matrices, in one batched multiply-add (never recorded on a tape)."""
    return torch.baddbmm(y.flatten(0, 1), a.flatten(0, 1), b.flatten(0, 1)).view(y.shape)


_PRODUCTS = {'rows': _rows, 'back': lambda weight, delta: _back(delta, weight)}


class Tape:
    """The products of one tile's run, in call order (see the module docstring)."""

    current: ClassVar[Optional['Tape']] = None

    def __init__(self) -> None:
        self.values: list[Tensor] = []
        self.cursor: Optional[int] = None       # None while recording; the next value while replaying

    def recording(self) -> '_Using':
        return _Using(self, None)

    def replaying(self) -> '_Using':
        return _Using(self, 0)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.values)

    def product(self, kind: str, weight: Tensor, x: Tensor) -> Tensor:
        if self.cursor is None:
            value = _PRODUCTS[kind](weight, x)
            self.values.append(value.detach())
            return value
        if self.cursor >= len(self.values):
            raise RuntimeError("tape: the recomputed tile makes more weight products than its first run")
        value = self.values[self.cursor]
        self.cursor += 1
        batch = torch.broadcast_shapes(weight.shape[:-2], x.shape[:-2])
        rows = weight.shape[-2] if kind == 'rows' else weight.shape[-1]
        if value.shape != (*batch, x.shape[-2], rows):
            raise RuntimeError(f"tape: a recomputed product of shape {tuple(value.shape)} does not match "
                               "its first run (the tile's products came in another order)")
        return _Product.apply(kind, weight, x, value)


class _Using:
    def __init__(self, tape: Tape, cursor: Optional[int]) -> None:
        self.tape, self.cursor = tape, cursor

    def __enter__(self) -> Tape:
        self.before, Tape.current = Tape.current, self.tape
        self.tape.cursor = self.cursor
        return self.tape

    def __exit__(self, *exc) -> None:
        Tape.current = self.before


def _product(kind: str, weight: Tensor, x: Tensor) -> Tensor:
    tape = Tape.current
    if tape is not None:
        return tape.product(kind, weight, x)
    if weight.shape[-1] * weight.shape[-2] >= LARGE_WEIGHT and needs_graph(weight, x):
        return _Product.apply(kind, weight, x, None)
    return _PRODUCTS[kind](weight, x)


class _Product(torch.autograd.Function):
    """A product with its backward written out; its value computed, or taken from the tape."""

    @staticmethod
    def forward(ctx, kind: str, weight: Tensor, x: Tensor, value: Tensor) -> Tensor:
        ctx.kind = kind
        ctx.save_for_backward(weight, x)
        return _PRODUCTS[kind](weight, x) if value is None else value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved_weight, saved_x = ctx.saved_tensors
        need_weight, need_x = ctx.needs_input_grad[1:3]
        # the operands as the forward multiplied them (in autocast's dtype when it was on, which the
        # incoming gradient has); the gradients go back in each input's own dtype
        weight, x = saved_weight.to(grad.dtype), saved_x.to(grad.dtype)
        if ctx.kind == 'rows':      # z = x W^T
            g_weight = torch.matmul(grad.transpose(-1, -2), x) if need_weight else None
            g_x = torch.matmul(grad, weight) if need_x else None
        else:                       # d = x W with x the deltas
            g_weight = torch.matmul(x.transpose(-1, -2), grad) if need_weight else None
            g_x = torch.matmul(grad, weight.transpose(-1, -2)) if need_x else None
        if g_weight is not None:
            g_weight = g_weight.sum_to_size(weight.shape).to(saved_weight.dtype)
        if g_x is not None:
            g_x = g_x.sum_to_size(x.shape).to(saved_x.dtype)
        return None, g_weight, g_x, None
