"""The chunked path's loops compiled by torch.compile, when asked for (`chunked(..., compile=True)`,
`set_backend(model, 'chunked', compile=True)`, `nlc train --compile`).

The chunked path's loop runs one step per tile. A step of an MLP memory (or of a linear one with a
delta/dgd transition, in the general loop of dual.py) is a few dozen operations: the memory at the
anchor, its hand-written backward, the solves, the dual-form reads, the end states. Compiled, its
elementwise work fuses and its operations stop paying dispatch one by one. Measured on a 2-core CPU
(B = 2, T = 2048, 4 heads of 64, MLPs 64 -> 256 -> 64, in one process against the eager step): Titans'
MLP 1.3x forward and 1.5x forward + backward, HOPE's dgd memory 1.4x and 1.8x.

The lean loops of a linear memory (dual_linear.py's, and the wy form's walk) make three to five
operations a tile, too few for a compiled step to pay for its call; in a forward alone (evaluation,
generation) they compile `BLOCK` tiles at a time instead, unrolled (`run_in_blocks`). Measured the same
way, TTT-linear's forward 1.1-1.5x, Gated DeltaNet's 1.1-1.6x, Titans' linear memory 1.0-1.35x.

A small memory's step is too short to gain: hope.nl (heads of 32, chunks of 8) trained 0.74x as fast,
the compiled call's own cost outweighing what it saves. Each configuration and tile length (or block
of tiles) compiles at its first call (seconds to tens of seconds on a CPU).

Results equal the eager step's up to rounding (fusion reorders sums). Compiling needs what inductor
needs (a C++ compiler on a CPU); where it fails, the step runs eagerly from then on, with one
`CompileFallbackWarning`.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

from .tape import needs_graph


class CompileFallbackWarning(RuntimeWarning):
    """Memory levels asked to run compiled run eagerly: torch.compile failed on a tile step, or the
    backend (the reference) runs no chunked loops."""


# Tiles a compiled lean loop runs in one call: its unrolled graph, hence its compile time, grows with
# the count (32 tiles of TTT-linear took 45 s to compile on a 2-core CPU, blocks of 8 18 s) while a call
# of 8 runs as fast as one of 32.
BLOCK = 8

# Compiled variants a step may keep (dynamo's default, 8, is soon spent: a variant per configuration,
# tile length and grad mode).
RECOMPILE_LIMIT = 64


class CompiledStep:
    """`fn` compiled on its first call (dynamic=False: each configuration and tile length its own
    variant); eager after a failure to compile."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.compiled = None
        self.failed = False

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.fn(*args, **kwargs)
        if self.compiled is None:
            limits = torch._dynamo.config
            limits.recompile_limit = max(limits.recompile_limit, RECOMPILE_LIMIT)
            self.compiled = torch.compile(self.fn, dynamic=False)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - an error of the step itself raises again, eagerly
            result = self.fn(*args, **kwargs)
            self.failed = True
            warnings.warn(f"torch.compile failed on the tile step {self.fn.__name__} ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}); it runs eagerly",
                          CompileFallbackWarning, stacklevel=2)
            return result


def run_in_blocks(step: CompiledStep, static: tuple, tiles: tuple[Optional[Tensor], ...], carry: tuple,
                  compile: bool) -> tuple:
    """step(*static, tiles, *carry) -> (outputs, *carry) over tensors whose dimension 2 counts the tiles
    (None for an absent one). Eagerly in one call; with `compile`, in a forward alone, blocks of BLOCK
    tiles run compiled, the carry (the state) passed on from call to call and the outputs joined along
    dimension 2. Fewer tiles than a block and a short last block run eagerly: a compiled call of a few
    tiles does not pay for itself, nor for its own compilation. So does a forward that a backward will
    follow: compiled with its backward, the unrolled block gained 1.0-1.2x at B = 2, T = 2048 and 4
    heads of 64, and lost in training (gated_deltanet.nl, heads of 32, B = 8, T = 256: 0.89x, after
    40 s of compiling)."""
    count, block = next(t for t in tiles if t is not None).shape[2], BLOCK
    if not compile or count < block or needs_graph(*tiles, *carry):
        return step.fn(*static, tiles, *carry)
    outputs = []
    for first in range(0, count, block):
        part = tuple(None if t is None else t[:, :, first:first + block] for t in tiles)
        run = step if first + block <= count else step.fn
        y, *carry = run(*static, part, *carry)
        outputs.append(y)
    return (torch.cat(outputs, 2), *carry)
