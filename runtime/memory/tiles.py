"""Cutting a call's tokens into tiles, tiles of equal length into groups that run batched, and a group's
per-tile quantities back into tiles."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor


@dataclass(frozen=True)
class TileGroup:
    """`count` consecutive tiles of `length` tokens starting at token `offset` of the call."""

    offset: int
    count: int
    length: int

    @property
    def tokens(self) -> int:
        return self.count * self.length

    def split(self, x: Tensor) -> Tensor:
        """(B, H, T, ...) -> this group's tokens as (B, H, count, length, ...)."""
        piece = x[:, :, self.offset:self.offset + self.tokens]
        return piece.reshape(x.shape[0], x.shape[1], self.count, self.length, *x.shape[3:])

    def split_gates(self, gates: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: self.split(gate) for name, gate in gates.items()}


def tile_groups(position: int, tokens: int, size: int, aligned: bool) -> list[TileGroup]:
    """Tiles of `size` tokens. Aligned tiles end where the absolute position (position + tokens done) is
    a multiple of size, so a call that starts mid-chunk begins with a short tile; the last tile may be
    short. Consecutive tiles of equal length form one group."""
    lengths, done = [], 0
    while done < tokens:
        length = size - (position + done) % size if aligned else size
        lengths.append(min(length, tokens - done))
        done += lengths[-1]
    groups: list[TileGroup] = []
    offset = 0
    for length in lengths:
        if groups and groups[-1].length == length:
            last = groups[-1]
            groups[-1] = TileGroup(last.offset, last.count + 1, length)
        else:
            groups.append(TileGroup(offset, 1, length))
        offset += length
    return groups


def map_tensors(tree: Any, fn: Callable[[Tensor], Any]) -> Any:
    """The same structure with every tensor replaced by fn(tensor)."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {key: map_tensors(value, fn) for key, value in tree.items()}
    if isinstance(tree, tuple):
        return tuple(map_tensors(value, fn) for value in tree)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return type(tree)(**{f.name: map_tensors(getattr(tree, f.name), fn)
                             for f in dataclasses.fields(tree) if f.init})
    return tree


def tensors_of(tree: Any) -> list[Tensor]:
    found: list[Tensor] = []
    map_tensors(tree, found.append)
    return found


def with_tensors(tree: Any, tensors: list[Tensor]) -> Any:
    """`tree` with its tensors replaced, in the order `tensors_of` lists them."""
    supply = iter(tensors)
    return map_tensors(tree, lambda _: next(supply))


def unbind_tiles(tree: Any, count: int) -> list[Any]:
    """The tiles of a structure of (B, H, count, ...) tensors, one structure per tile. Each tensor is
    unbound once, so autograd has one node for all the tiles; indexing tile by tile instead makes its
    backward build a zero gradient of the whole group for every tile and add them all up."""
    if count == 1:
        return [map_tensors(tree, lambda t: t.squeeze(2))]
    pieces = [t.unbind(2) for t in tensors_of(tree)]
    return [with_tensors(tree, [piece[i] for piece in pieces]) for i in range(count)]


def join_groups(outputs: list[Tensor]) -> Tensor:
    """The groups' outputs (B, H, tokens, ...) of a call side by side along the tokens; one group is
    returned as it is (a copy of a whole call's output is a fresh allocation of its size)."""
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
