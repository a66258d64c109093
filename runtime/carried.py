"""The state a compiled model's forward starts from (`model(tokens, state)`).

None is a fresh start. Otherwise the state is a mapping from level keys (`layer.0.mix.m`) to what the
model returned for them (all of them, or some: a memory file holds the persistent levels only), whose
tensors hold one row per sequence of the batch. A key the model does not make (a state of another model,
a mistyped key) and a state carried from a batch of another size are refused here, naming the key,
before any level reads it: a level whose key were mistyped would otherwise start afresh unnoticed.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from torch import Tensor
from torch.nn import Module


def _tensors(value):
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name))


def state_keys(model: Module) -> frozenset:
    """The state keys a compiled model fills in: those its blocks list (`carried`, in generated code)."""
    return frozenset(key for module in model.modules() for key in getattr(module, "carried", ()))


def carried_in(state, tokens: Tensor, keys: frozenset) -> dict:
    """A copy of `state` that the forward fills in ({} for None), checked against the model's state keys
    and the batch of `tokens`."""
    if state is None:
        return {}
    if not isinstance(state, Mapping):
        raise TypeError(f"a model's state is the mapping a previous call returned (or None); got a "
                        f"{type(state).__name__}")
    unknown = [key for key in state if key not in keys]
    if unknown:
        known = ", ".join(f"`{k}`" for k in sorted(keys)[:4]) + (", ..." if len(keys) > 4 else "")
        raise ValueError(f"the carried state has `{unknown[0]}`, which this model does not make (its keys: "
                         f"{known or 'none'}): a state continues the model it came from")
    batch = tokens.shape[0]
    for key, value in state.items():
        rows = next((t.shape[0] for t in _tensors(value) if t.dim() and t.shape[0] != batch), None)
        if rows is not None:
            raise ValueError(f"the carried state of `{key}` holds {rows} sequences, the tokens {batch}: a "
                             f"state continues the batch it came from")
    return dict(state)
