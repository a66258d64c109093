"""Shape and gate checks shared by both execution paths."""
from __future__ import annotations

from typing import Mapping, Optional

from torch import Tensor

from .config import GATES_OF_RULE, MemoryConfig
from .state import MemoryState, check_state, initial_state
from .functional import Params

GATE_NAMES = ('eta', 'alpha', 'beta')


def check_inputs(cfg: MemoryConfig, q: Tensor, k: Tensor, v: Tensor, gates: Mapping[str, Tensor]) -> None:
    """Raise ValueError unless q, k (B, H, T, dk), v (B, H, T, dv) and every gate the rules read
    (B, H, T) are present and consistent."""
    if k.dim() != 4 or q.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k and v must be (batch, heads, tokens, width)")
    batch, heads, tokens, _ = k.shape
    if tuple(k.shape) != (batch, heads, tokens, cfg.dk) or tuple(q.shape) != tuple(k.shape):
        raise ValueError(f"q and k must be (B, H, T, dk={cfg.dk}), got {tuple(q.shape)} and {tuple(k.shape)}")
    if tuple(v.shape) != (batch, heads, tokens, cfg.dv):
        raise ValueError(f"v must be (B, H, T, dv={cfg.dv}), got {tuple(v.shape)}")
    for name in gates:
        if name not in GATE_NAMES:
            raise ValueError(f"unknown gate {name!r}; gates are eta, alpha and beta")
    for name in cfg.required_gates():
        if name not in gates or gates[name] is None:
            users = [r.kind for r in cfg.rules if name in GATES_OF_RULE[r.kind]]
            raise ValueError(f"rule {users[0]} needs the gate {name!r}, which is missing")
        if tuple(gates[name].shape) != (batch, heads, tokens):
            raise ValueError(f"gate {name} must be (B, H, T) = {(batch, heads, tokens)}, "
                             f"got {tuple(gates[name].shape)}")


def start_state(cfg: MemoryConfig, params0: Params, state: Optional[MemoryState], k: Tensor) -> MemoryState:
    """The carried-in state, or theta_0 broadcast over the batch when there is none."""
    batch, heads = k.shape[0], k.shape[1]
    start = initial_state(cfg, params0, batch) if state is None else state
    check_state(cfg, start, batch, heads)
    return start
