"""Whether a compiled model can be built here, asked before it is: its parameters, as its level graph
counts them (for training also their gradients and the optimizers' states), against the memory of this
machine and of the device it goes to. A model that cannot fit is refused with a message, where building
it would end in an allocation error, or with the process killed by the operating system before Python
could say anything. For training, once the model is built, the activations one segment keeps for its
backward are measured too (`check_training_fits`): they depend on the batch and the segment's length."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

import torch


class ModelTooLarge(MemoryError):
    """The parameters of a model need more memory than there is; the message gives both sizes."""


def _levels(package: Path) -> list:
    return json.loads((Path(package) / "levels.json").read_text(encoding="utf-8"))["levels"]


def parameter_count(package: Path) -> int:
    """The learnable parameters of the compiled package's model (the sum over its levels)."""
    return sum(int(level.get("params") or 0) for level in _levels(package))


def training_count(package: Path) -> int:
    """The values training holds besides activations: every parameter, its gradient, and the state of
    every optimizer level (moments, momentum buffers) as the level graph counts it."""
    from nldsl.stats import training_values

    return training_values((lv["kind"], lv.get("params"), lv.get("state_size")) for lv in _levels(package))


def host_memory() -> Optional[int]:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def peak_memory_mb(device) -> Optional[float]:
    """The most memory training has held so far, in MB: on a CUDA device the peak that torch allocated
    there, else the process's peak resident memory (its whole footprint, libraries included); None where
    the system does not say."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 1e6
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak / 1e3  # bytes on macOS, kilobytes on Linux


def check_fits(package: Path, dtype: torch.dtype = torch.float32, device: str = "cpu", training: bool = False) -> None:
    """Raise ModelTooLarge when the parameters alone exceed the host's memory (a model is built on the
    host, in torch's default dtype, before it moves) or the device's; with `training`, when they do with
    their gradients and optimizer states on the device that trains (the host for "cpu")."""
    count = parameter_count(package)
    values = training_count(package) if training else count
    what = (f"the model's {count:,} parameters with their gradients and optimizer states ({values:,} values)"
            if training else f"the model's {count:,} parameters alone")
    size = torch.tensor([], dtype=dtype).element_size()
    built = count * torch.tensor([], dtype=torch.get_default_dtype()).element_size()
    on_cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
    needs = [(built, host_memory(), "this machine has", f"the model's {count:,} parameters alone")]
    if not on_cuda and training:
        needs.append((values * size, host_memory(), "this machine has", what))
    if on_cuda:
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        needs.append((values * size, total, f"{device} has", what))
    for need, available, where, text in needs:
        if available is not None and need > available:
            raise ModelTooLarge(f"{text} need {_size(need)}; {where} {_size(available)}")


def saved_bytes(model: torch.nn.Module, batch: int, tokens: int) -> int:
    """The bytes of every tensor autograd keeps for the backward of the model's forward and next-token
    loss on a (batch, tokens) input from fresh states, beyond the parameters themselves (a tensor kept
    by a backward that stores it otherwise is not seen, so this is at least what a segment keeps)."""
    import torch.nn.functional as F

    device = next(model.parameters()).device
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() and storage.data_ptr() not in params:
            kept[storage.data_ptr()] = max(kept.get(storage.data_ptr(), 0), storage.nbytes())
        # not `t` itself: a saved output would then hold its own grad_fn, a cycle that keeps the whole
        # graph (and its parameters' AccumulateGrad nodes, which break a later CUDA graph capture) alive
        return t.detach()

    x = torch.zeros(batch, tokens, dtype=torch.long, device=device)
    devices = [device] if device.type == "cuda" else []
    # eagerly: a model whose tile steps are compiled would compile them again for these shapes (torch
    # before 2.6 has no stance to set, and compiles them)
    stance = getattr(torch.compiler, "set_stance", None)
    eager = stance("force_eager") if stance is not None else contextlib.nullcontext()
    with torch.random.fork_rng(devices=devices), eager, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, _ = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x.reshape(-1), reduction="sum")
    del loss, logits  # the graph, and what it kept, go
    return sum(kept.values())


def activation_bytes(model: torch.nn.Module, batch: int, tokens: int) -> int:
    """What a training segment of `tokens` tokens keeps for its backward at `batch` rows, at least:
    measured there up to three rows, else at two and three and extended linearly (from two rows on, each
    row adds its own; one row can keep less, where a state broadcast over the batch stays a view)."""
    if batch <= 3:
        return saved_bytes(model, batch, tokens)
    two, three = saved_bytes(model, 2, tokens), saved_bytes(model, 3, tokens)
    return three + max(three - two, 0) * (batch - 3)


def check_training_fits(package: Path, model: torch.nn.Module, device, batch: int, tokens: int) -> None:
    """Raise ModelTooLarge when the parameters with their gradients and optimizer states, and the
    activations that a segment of `tokens` tokens at `batch` rows keeps for its backward, exceed the
    memory of the device that trains (the host for a CPU)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        available, where = torch.cuda.get_device_properties(device).total_memory, f"{device} has"
    else:
        available, where = host_memory(), "this machine has"
    if available is None:
        return
    size = next(model.parameters()).element_size()
    values = training_count(package)
    state = values * size
    if state >= available:  # check_fits has said it; nothing left to measure
        return
    kept = activation_bytes(model, batch, tokens)
    if state + kept > available:
        raise ModelTooLarge(
            f"training needs at least {_size(state + kept)}: the model's parameters with their gradients and "
            f"optimizer states ({values:,} values, {_size(state)}) and the activations a segment of {tokens} "
            f"tokens keeps for its backward at batch {batch} ({_size(kept)}); {where} {_size(available)}")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
