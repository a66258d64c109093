"""Reuse of the large buffers that hold every tile's start state between a forward and its backward.

A layer's forward writes the state at the start of every tile into one buffer per parameter, and its
backward frees them: for a Titans memory of 4 heads x (256 -> 1024 -> 256) at B = 2, T = 2048 that
is 1 GB a step. On the CPU a block that large is mapped fresh from the kernel and unmapped when freed,
so every step faulted (and zeroed) all of its pages again: 0.5 s of system time a step, a tenth of
its wall time on two cores. The backward hands its buffers back here and the next forward of the
same shapes takes them, as CUDA's caching allocator already does for GPU tensors (which therefore
bypass the pool).

What the pool holds is at most what one training step had in flight at once. `release()` frees it;
setting NLC_REUSE_BUFFERS=0 turns reuse off.
"""
from __future__ import annotations

import os
from collections import defaultdict

import torch
from torch import Tensor

_free: dict[tuple, list[Tensor]] = defaultdict(list)


def _key(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> tuple:
    return tuple(shape), dtype, torch.device(device)


def _reusing(device: torch.device) -> bool:
    return torch.device(device).type == "cpu" and os.environ.get("NLC_REUSE_BUFFERS", "1") != "0"


def take(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised tensor of this shape: one handed back earlier, else a new one."""
    free = _free.get(_key(shape, dtype, device)) if _reusing(device) else None
    if free:
        return free.pop()
    return torch.empty(shape, dtype=dtype, device=device)


def give(buffer: Tensor) -> None:
    """Hand back a buffer from `take` that nothing reads any more (views of it included)."""
    if _reusing(buffer.device):
        _free[_key(buffer.shape, buffer.dtype, buffer.device)].append(buffer)


def held_bytes() -> int:
    """Bytes the pool holds for reuse."""
    return sum(t.numel() * t.element_size() for free in _free.values() for t in free)


def release() -> None:
    """Free every buffer the pool holds."""
    _free.clear()
