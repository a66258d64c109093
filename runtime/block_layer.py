"""One block of a compiled spec, alone: a stateful sequence layer over features (`nldsl.load_block`).

A compiled model maps token ids to logits; its blocks map (batch, length, width) features to features
and carry their memories' states. `BLOCKS` in a compiled model.py lists them by spec name, and
`BlockLayer` runs one outside the network: on sensor readings, patch embeddings or the hidden states
of another model, with the memories learning in context exactly as inside the network.

    layer = nldsl.load_block("examples/titans.nl", "lmm_block")
    y, state = layer(x)            # x: (batch, length, layer.width_in), floating point
    y2, state = layer(x2, state)   # continues the same sequences: as one call on cat(x, x2)

The block is registered under its name in the spec (`py` of it, as inside the model), so the layer's
state_dict keys are the suffix of the model's (`lmm_block.q.weight` for the model's
`layer.0.lmm_block.q.weight`), and the state keys start with the block's name (`lmm_block.mem`).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .carried import carried_in, state_keys


@dataclass(frozen=True)
class BlockInfo:
    """A block as the generated code lists it: its class, the attribute it has in the model, its widths."""
    cls: type
    attribute: str
    width_in: int
    width_out: int


class BlockLayer(nn.Module):
    """`forward(x, state=None) -> (y, state)` for one block of a compiled spec."""

    def __init__(self, name: str, info: BlockInfo):
        super().__init__()
        self.block_name = name
        self.width_in = info.width_in
        self.width_out = info.width_out
        self._attribute = info.attribute
        self.add_module(info.attribute, info.cls(info.attribute))  # its prefix: the state keys' start
        self.state_keys = state_keys(self)

    def extra_repr(self) -> str:
        return f"block={self.block_name!r}, width_in={self.width_in}, width_out={self.width_out}"

    def forward(self, x: Tensor, state=None):
        self._check(x)
        state = carried_in(state, x, self.state_keys)
        return getattr(self, self._attribute)(x, state), state

    def _check(self, x) -> None:
        what = f"block `{self.block_name}`"
        if not isinstance(x, Tensor):
            raise TypeError(f"{what} takes a tensor (batch, length, {self.width_in}); got a {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.width_in:
            raise ValueError(f"{what} takes a tensor (batch, length, {self.width_in}); got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{what} takes features in floating point; got {x.dtype} (token ids go to "
                            f"nldsl.load's model, which embeds them)")
        weight = next(self.parameters(), None)
        if weight is not None and weight.dtype != x.dtype:
            raise TypeError(f"{what} holds {weight.dtype} parameters and got {x.dtype} features: convert one "
                            f"to the other (`layer.to({x.dtype})` or `x.to({weight.dtype})`)")
