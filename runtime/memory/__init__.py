"""In-context memory levels: the float64 token-by-token reference and the chunk-parallel PyTorch path.

Generated modules call `chunked` (production) and tests compare it with `reference` (ground truth);
both implement docs/semantics.md §2 for a `MemoryConfig`, an objective gradient dl/dy, gates
(eta, alpha, beta: (B, H, T)), inputs q, k (B, H, T, dk), v (B, H, T, dv), the learned initial state
theta_0 (`init_params`) and an optional carried `MemoryState`.
"""
from .chunked import chunk_form, chunked
from .config import MemoryConfig, Rule
from .functional import init_params, param_shapes
from .objectives import Objective, affine_coefficients, standard_objective
from .reference import reference
from .state import MemoryState, initial_state

__all__ = [
    'MemoryConfig', 'MemoryState', 'Objective', 'Rule', 'affine_coefficients', 'chunk_form', 'chunked',
    'init_params', 'initial_state', 'param_shapes', 'reference', 'standard_objective',
]
