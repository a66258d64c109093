"""The chunk-parallel path: exact, differentiable, with a Python loop only across tiles.

Three forms (`chunk_form` names the one a config gets, with the reason, for the compiler's diagnostic):

- 'dual' (C > 1, every gradient at the anchor): one tile per chunk, cut at absolute positions that are
  multiples of C (a state carried in mid-chunk starts with a short tile). All gradients of a tile are
  taken at once at the anchor; retention, momentum and delta/dgd transitions are solved by scan.py;
  reads at in-chunk states go through the dual form (no per-token weights). For a linear memory with
  no transition, whole chunks run leaner (dual_linear.py): what does not depend on the start state
  is computed for all chunks at once, and with an affine gradient small chunks run as affine maps of
  their start states, one product per chunk in the loop.
- 'wy' (C = 1, linear memory, no momentum, gradient affine in W or no gradient): gradients at the
  previous or the current state are linear in W, so each token is W_{t-1}(a I + p k^T) + w k^T and tiles
  of any size (`tile`) are exact.
- 'sequential': C = 1 with momentum, with an MLP memory, with a non-affine objective or with `clip`: no exact
  chunk-parallel form is implemented, so the reference recurrence runs token by token.

No formula divides by a gate, so retention alpha = 0 is handled. In the 'dual' form with large states
the backward pass recomputes each tile from the state saved at its start (recompute.py), so a long
sequence keeps one state per chunk rather than every tile's intermediates; small memories (and the
'wy' form) use plain autograd, which is faster when memory is not the limit.
"""
from __future__ import annotations

from typing import Mapping, Optional

from torch import Tensor

from .config import MemoryConfig
from .dual import run_dual
from .functional import Params
from .inputs import check_inputs, start_state
from .objectives import GradFn, standard_objective
from .reference import reference
from .state import MemoryState
from .wy import run_wy

def chunk_form(cfg: MemoryConfig, objective: object = None) -> tuple[str, str]:
    """('dual' | 'wy' | 'sequential', reason) for this config and objective.

    `objective` is an Objective, a standard objective's name, or None for an unknown (custom) objective,
    which is treated as non-affine."""
    if isinstance(objective, str):
        objective = standard_objective(objective)
    if cfg.chunk > 1:
        return 'dual', (f"chunk size {cfg.chunk}: gradients at the chunk anchor are computed in parallel "
                        "(dual form); retention, momentum and delta/dgd transitions are solved per chunk")
    if cfg.has_momentum:
        return 'sequential', ("chunk size 1 with momentum: no chunk-parallel template for the coupled "
                              "(W, s) recurrence; running token by token")
    if cfg.family != 'linear':
        return 'sequential', ("chunk size 1 with an MLP memory: the gradient is not linear in the state; "
                              "running token by token")
    if cfg.clip is not None:
        return 'sequential', ("chunk 1 with clip: the clipped gradient is not affine in W; "
                              "running token by token")
    if cfg.has_gradient and cfg.affine(objective) is None:
        name = getattr(objective, 'name', 'a custom objective')
        return 'sequential', (f"chunk size 1 with {name}: the gradient is not affine in W; "
                              "running token by token")
    return 'wy', "chunk size 1, linear memory, affine gradient: WY/UT form over tiles of free size"


def chunked(cfg: MemoryConfig, objective: GradFn, q: Tensor, k: Tensor, v: Tensor,
            gates: Mapping[str, Tensor], params0: Optional[Params], state: Optional[MemoryState] = None,
            tile: int = 32, compile: bool = False) -> tuple[Tensor, MemoryState]:
    """Same contract and results as `reference`, computed chunk-parallel where an exact form exists.

    `tile` is the tile size of the 'wy' form; the 'dual' form's tiles are the chunks themselves; the
    'sequential' form is the reference recurrence (see `chunk_form`). `compile`: the loops over tiles
    compiled by torch.compile (compiled.py): the 'dual' form's tile step, or its lean loop for a
    linear memory, and the 'wy' form's walk."""
    check_inputs(cfg, q, k, v, gates)
    if tile < 1:
        raise ValueError(f"tile size must be >= 1, got {tile}")
    form, _ = chunk_form(cfg, objective)
    if form == 'sequential' or k.shape[2] == 0:
        return reference(cfg, objective, q, k, v, gates, params0, state)
    start = start_state(cfg, params0, state, k)
    if form == 'wy':
        return run_wy(cfg, objective, q, k, v, gates, start, tile, compile)
    return run_dual(cfg, objective, q, k, v, gates, start, compile)
