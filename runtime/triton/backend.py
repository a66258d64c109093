"""Choosing between the generated kernels and the chunked path for one call of a memory level: no
Triton, tensors the kernels cannot take, a level without kernels, (MLP memories) a head whose state
does not fit on chip where the streamed kernels are not the faster path (launch_mlp.py), or a kernel
that needs more shared memory than the device has fall back with one warning per level and reason. A
backward kernel that does not fit leaves the level's forward fused and its backward to PyTorch (the
tiles recomputed by the chunked path)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..memory import MemoryState, chunked
from ..memory.inputs import check_inputs, start_state


class TritonFallbackWarning(RuntimeWarning):
    """A memory level asked for the triton backend runs on the chunked PyTorch path instead."""


_WARNED: set = set()
_UNLAUNCHABLE: dict = {}   # id(kernels) -> why its forward kernel cannot launch on this device

try:
    from triton.runtime.errors import OutOfResources
except ImportError:  # pragma: no cover - no Triton: nothing launches, nothing to catch
    OutOfResources = ()


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def on_device(like: Tensor):
    """Triton launches on the current CUDA device: make it `like`'s for a forward (a model on cuda:1 in a
    process whose current device is cuda:0). Backward runs on autograd's thread for the device."""
    return torch.cuda.device(like.device) if like.is_cuda else contextlib.nullcontext()


def needs_grad(q: Tensor, k: Tensor, v: Tensor, gates: Mapping[str, Tensor], start: MemoryState) -> bool:
    """Whether a call on these inputs records a graph: grad mode, and an input or state that requires
    a gradient."""
    if not torch.is_grad_enabled():
        return False
    states = [start.params, start.anchor, start.momentum or {}]
    return any(t.requires_grad for t in [q, k, v, *gates.values(), *(t for d in states for t in d.values())]
               if t is not None)


def triton_unavailable(like: Tensor) -> Optional[str]:
    """Why the kernels cannot run on tensors like `like` (None when they can)."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if not like.is_cuda and not interpreting():
        return f"the tensors are on {like.device.type} and TRITON_INTERPRET=1 is not set"
    return None


def fall_back(level: str, reason: str) -> None:
    """One warning line per level and reason."""
    if (level, reason) in _WARNED:
        return
    _WARNED.add((level, reason))
    warnings.warn(f"memory level {level or '(unnamed)'}: triton backend falls back to the chunked path: {reason}",
                  TritonFallbackWarning, stacklevel=4)


def without_backward_kernel(kernels, error: Exception, streamed: bool = False) -> None:
    """The level's backward kernel (`streamed`: an MLP level's streamed one) does not fit the device: from
    now on that backward runs in PyTorch."""
    if streamed:
        kernels.bwd_streamed = None
    else:
        kernels.bwd = None
    fall_back(kernels.level, f"its backward kernel does not fit the device ({error}); the backward runs the "
                             "chunked PyTorch path")


def run_memory(level, q: Tensor, k: Tensor, v: Tensor, gates: Mapping[str, Tensor], params0,
               state: Optional[MemoryState] = None, names: Sequence[str] = ()) -> tuple[Tensor, MemoryState]:
    """What `MemoryLevel.forward` runs for backend 'triton' (q, k, v split into heads). `names`: the levels
    a fallback warning names (default: this level; a MemoryStack names all its members)."""
    from .registry import kernels_for

    cfg, objective, name = level.cfg, level.objective, level.level_name
    names = tuple(names) or (name,)
    reason = triton_unavailable(q)
    kernels = None
    if reason is None:
        kernels, reason = kernels_for(cfg, objective, name)
    if kernels is not None:
        check_inputs(cfg, q, k, v, gates)
        start = start_state(cfg, params0, state, k)
        if getattr(kernels, "unfit", None) is not None:
            reason = kernels.unfit(q, needs_grad(q, k, v, gates, start))
            kernels = None if reason else kernels
    if kernels is not None and id(kernels) in _UNLAUNCHABLE:
        kernels, reason = None, _UNLAUNCHABLE[id(kernels)]
    if kernels is None:
        for each in names:
            fall_back(each, reason)
        return chunked(cfg, objective, q, k, v, gates, params0, state)
    if k.shape[2] == 0:
        return chunked(cfg, objective, q, k, v, gates, params0, state)
    try:
        with on_device(q):
            return kernels.run(cfg, objective, q, k, v, gates, start)
    except OutOfResources as error:
        _UNLAUNCHABLE[id(kernels)] = f"its forward kernel does not fit the device ({error})"
        for each in names:
            fall_back(each, _UNLAUNCHABLE[id(kernels)])
        return chunked(cfg, objective, q, k, v, gates, params0, state)
