"""The carried state of a memory level (semantics §2.5): theta_t, the anchor, the momentum and t.

Splitting a sequence anywhere and carrying this state reproduces the unsplit run. The anchor stored is
the one the next token uses: theta at position C*floor(t/C) (equal to theta_t when t is on a chunk
boundary).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .config import MemoryConfig
from .functional import Params, param_shapes


@dataclass(frozen=True, eq=False)
class MemoryState:
    """Per-batch-row tensors shaped (B, H, ...) plus the number of tokens seen so far."""

    params: Params
    anchor: Params
    momentum: Optional[Params]
    position: int

    def to_tensors(self) -> dict[str, Tensor]:
        """A flat name -> tensor dict (e.g. for safetensors); the position is an int64 scalar tensor."""
        flat: dict[str, Tensor] = {}
        for group, values in (('params', self.params), ('anchor', self.anchor), ('momentum', self.momentum)):
            for name, value in (values or {}).items():
                flat[f'{group}.{name}'] = value
        flat['position'] = torch.tensor(self.position, dtype=torch.int64)
        return flat

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> 'MemoryState':
        if 'position' not in tensors:
            raise ValueError("a saved memory state needs a 'position' entry")
        groups: dict[str, Params] = {'params': {}, 'anchor': {}, 'momentum': {}}
        for key, value in tensors.items():
            if key == 'position':
                continue
            group, _, name = key.partition('.')
            if group not in groups or not name:
                raise ValueError(f"unexpected entry {key!r} in a saved memory state")
            groups[group][name] = value
        if set(groups['params']) != set(groups['anchor']):
            raise ValueError("a saved memory state needs the same entries under params. and anchor.")
        return cls(groups['params'], groups['anchor'], groups['momentum'] or None,
                   int(tensors['position'].item()))

    def detach(self) -> 'MemoryState':
        """The same state cut from the autograd graph (for truncated backpropagation through time)."""
        def cut(values: Optional[Params]) -> Optional[Params]:
            return None if values is None else {n: t.detach() for n, t in values.items()}
        return MemoryState(cut(self.params), cut(self.anchor), cut(self.momentum), self.position)


def initial_state(cfg: MemoryConfig, params0: Params, batch: int) -> MemoryState:
    """theta_0 (shaped (H, ...)) broadcast over the batch; zero momentum; position 0."""
    shapes = param_shapes(cfg)
    if set(params0) != set(shapes):
        raise ValueError(f"initial parameters must be {sorted(shapes)}, got {sorted(params0)}")
    params = {}
    for name, shape in shapes.items():
        value = params0[name]
        if tuple(value.shape[1:]) != shape:
            raise ValueError(f"initial parameter {name} must be (heads, {', '.join(map(str, shape))}), "
                             f"got {tuple(value.shape)}")
        params[name] = value.unsqueeze(0).expand(batch, *value.shape)
    momentum = {n: torch.zeros_like(p) for n, p in params.items()} if cfg.has_momentum else None
    return MemoryState(params, dict(params), momentum, 0)


def check_state(cfg: MemoryConfig, state: MemoryState, batch: int, heads: int) -> None:
    shapes = param_shapes(cfg)
    for group, values in (('params', state.params), ('anchor', state.anchor)):
        if set(values) != set(shapes):
            raise ValueError(f"state {group} must be {sorted(shapes)}, got {sorted(values)}")
        for name, shape in shapes.items():
            if tuple(values[name].shape) != (batch, heads, *shape):
                raise ValueError(f"state {group}.{name} must be {(batch, heads, *shape)}, "
                                 f"got {tuple(values[name].shape)}")
    if cfg.has_momentum and (state.momentum is None or set(state.momentum) != set(shapes)):
        raise ValueError("a momentum rule needs the momentum of every parameter in the state")
    if state.position < 0:
        raise ValueError(f"state position must be >= 0, got {state.position}")
