"""A tile step compiled by torch.compile, when asked for (`chunked(..., compile=True)`,
`set_backend(model, 'chunked', compile=True)`, `nlc train --compile`).

The chunked path's loop runs one step per tile, and a step of an MLP memory is a few dozen operations
(the memory at the anchor, its hand-written backward, the solves, the dual-form reads, the end
states). Compiled, its elementwise work fuses and its operations stop paying dispatch one by one.
Measured on a 2-core CPU (B = 2, T = 2048, 4 heads of 64, MLPs 64 -> 256 -> 64, in one process against
the eager step): Titans' MLP 1.3x forward and 1.5x forward + backward, HOPE's dgd memory 1.4x and 1.8x.
A small memory's step is too short to gain: hope.nl (heads of 32, chunks of 8) trained 0.74x as fast,
the compiled call's own cost outweighing what it saves. Each configuration and tile length compiles
at its first call (seconds to tens of seconds on a CPU).

Results equal the eager step's up to rounding (fusion reorders sums). Compiling needs what inductor
needs (a C++ compiler on a CPU); where it fails, the step runs eagerly from then on, with one
`CompileFallbackWarning`.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch


class CompileFallbackWarning(RuntimeWarning):
    """A tile step asked to run compiled runs eagerly: torch.compile failed on it."""


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
