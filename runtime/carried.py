"""The state a compiled model's forward starts from (`model(tokens, state)`).

None is a fresh start. Otherwise the state is a mapping from level keys (`layer.0.mix.m`) to what the
model returned for them, whose tensors hold one row per sequence of the batch: a state carried from a
batch of another size is refused here, naming the level, before any level reads it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from torch import Tensor


def _tensors(value):
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name))


def carried_in(state, tokens: Tensor) -> dict:
    """A copy of `state` that the forward fills in ({} for None), checked against the batch of `tokens`."""
    if state is None:
        return {}
    if not isinstance(state, Mapping):
        raise TypeError(f"a model's state is the mapping a previous call returned (or None); got a "
                        f"{type(state).__name__}")
    batch = tokens.shape[0]
    for key, value in state.items():
        rows = next((t.shape[0] for t in _tensors(value) if t.dim() and t.shape[0] != batch), None)
        if rows is not None:
            raise ValueError(f"the carried state of `{key}` holds {rows} sequences, the tokens {batch}: a "
                             f"state continues the batch it came from")
    return dict(state)
