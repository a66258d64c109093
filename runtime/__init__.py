"""The runtime that compiled models import (``nldsl.runtime``).

Generated code uses only these names: memory levels (`MemoryLevel`, `MemoryConfig`, `Rule`,
`standard_objective`, and `MemoryStack`, which runs sibling levels of one configuration and one set of
inputs as one), layers (`ShortConv`, `CausalAttention`, `RMSNorm`, `LayerNorm`, `CmsMLP`, `CmsChain`,
`BoundedGate`, `L2Norm`, `l2norm`) and the segment helpers of self-modifying groups (`segments`,
`position_of`); `BlockInfo` lists a model's blocks, which `BlockLayer` runs alone.
"""

import warnings

from .block_layer import BlockInfo, BlockLayer
from .carried import carried_in, state_keys
from .layers import BoundedGate, CausalAttention, CmsChain, CmsMLP, Embedding, KVCache, L2Norm, LayerNorm, RMSNorm, ShortConv
from .layers import activation, l2norm
from .layers import window_positions
from .memory import MemoryConfig, MemoryState, Rule, standard_objective
from .memory.compiled import CompileFallbackWarning
from .memory_level import BACKENDS, MemoryLevel, position_of, segments
from .memory_stack import MemoryStack


def set_backend(model, backend: str, compile: bool = False):
    """Run every memory level of `model` on `backend` (one of BACKENDS: 'reference', 'chunked', 'triton'),
    and its prologue layers (short convolutions, bounded gates, L2 and RMS norms) fused for 'triton';
    `compile`: the chunked path's tile steps compiled by torch.compile (memory/compiled.py: faster for
    large MLP memories, slower for small ones). Returns the model."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if compile and backend == "reference" and any(isinstance(m, MemoryLevel) for m in model.modules()):
        warnings.warn("--compile (compile=True) has no effect on the reference backend: it compiles the chunked "
                      "path's loops, which the token-by-token reference does not run", CompileFallbackWarning,
                      stacklevel=2)
    for module in model.modules():
        if isinstance(module, (MemoryLevel, ShortConv, BoundedGate, L2Norm, RMSNorm)):
            module.backend = backend
        if isinstance(module, MemoryLevel):
            module.compile_steps = compile
    return model


__all__ = [
    "BACKENDS", "BlockInfo", "BlockLayer", "BoundedGate", "CausalAttention", "CmsChain", "CmsMLP", "Embedding", "KVCache", "L2Norm", "LayerNorm", "MemoryConfig", "MemoryLevel",
    "MemoryStack", "MemoryState", "RMSNorm", "Rule", "ShortConv", "activation", "carried_in", "l2norm", "position_of",
    "segments",
    "set_backend", "standard_objective", "state_keys", "window_positions",
]
