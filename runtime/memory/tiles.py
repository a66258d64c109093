"""Cutting a call's tokens into tiles, and tiles of equal length into groups that run batched."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

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
