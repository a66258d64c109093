"""Checkpoints: safetensors for every tensor, JSON for everything else; never pickle.

A checkpoint is `weights-<step>.safetensors` plus `checkpoint.json` naming it. Both are written to a
temporary file and renamed, the JSON last, so a run killed at any moment leaves the previous complete
checkpoint in place; older weight files are removed only after the new JSON is in place.

Under data parallelism every process takes part (the tensors are gathered) and only rank 0 writes.
A checkpoint always holds the full state as one process would: unsharded parameters and optimizer
states, the carried memory states of all rows, and the gradients of open windows and clock periods in
their global value; `load` lays them out for the current processes, so a run resumes under any
number of them.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nldsl.runtime.memory import MemoryState

CHECKPOINT = "checkpoint.json"


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _split_optimizer(prefix: str, sd: dict, tensors: dict, full=lambda t: t) -> dict:
    """An optimizer state_dict with its (full) tensors moved into `tensors`; returns the JSON part."""
    state = {}
    for idx, slots in sd["state"].items():
        entry = {}
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                name = f"{prefix}.{idx}.{key}"
                tensors[name] = full(value.detach()).clone().contiguous()
                entry[key] = {"tensor": name}
            else:
                entry[key] = value
        state[str(idx)] = entry
    return {"state": state, "param_groups": sd["param_groups"]}


def _join_optimizer(js: dict, tensors: dict) -> dict:
    state = {}
    for idx, slots in js["state"].items():
        state[int(idx)] = {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                           for k, v in slots.items()}
    groups = []
    for g in js["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save(run: Path, model, loop, extra: dict) -> Path | None:
    """Write a checkpoint of the model, the loop (optimizers, clocks, carried states) and `extra`.

    Every process must call it; rank 0 writes and returns the path, the others return None."""
    comm = loop.comm
    tensors = {f"model.{k}": comm.full(v.detach()).clone().contiguous() for k, v in model.state_dict().items()}
    optim = {"outer": _split_optimizer("optim.outer", loop.outer_opt.state_dict(), tensors, comm.full)}
    for name, opt in loop.cms_opts.items():
        optim[name] = _split_optimizer(f"optim.{name}", opt.state_dict(), tensors, comm.full)
    carried = []
    for key, st in loop.carried.items():
        if isinstance(st, MemoryState):
            carried.append(key)
            for k, v in st.to_tensors().items():  # (B, ...) per-row tensors: every process's rows
                tensors[f"carried.{key}.{k}"] = comm.gather_rows(v.detach()).clone().contiguous()
    # gradients accumulated over an open window or clock period, as one process would hold them
    for name, g in comm.global_grads(model.named_parameters(), loop.reductions()).items():
        tensors[f"grad.{name}"] = g.clone().contiguous()
    if not comm.is_main:
        return None
    run.mkdir(parents=True, exist_ok=True)
    tensors["rng.torch"] = torch.get_rng_state()
    step = loop.step_count
    weights = run / f"weights-{step:08d}.safetensors"
    _atomic(weights, lambda tmp: save_file(tensors, tmp))
    doc = {
        "step": step, "weights": weights.name, "optimizers": optim, "carried": carried,
        "loop": {"accumulated": loop.accumulated, "stream_position": loop.stream_position,
                 "stats": {k: [v.updates, v.last_norm, v.resets] for k, v in loop.stats.items()}},
        "python_random": _jsonable(random.getstate()), **extra,
    }
    path = run / CHECKPOINT
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1)))
    for old in run.glob("weights-*.safetensors"):
        if old.name != weights.name:
            old.unlink()
    return path


def _jsonable(x):
    if isinstance(x, tuple):
        return [_jsonable(v) for v in x]
    return x


def _tuples(x):
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def load(run: Path, model, loop) -> dict:
    """Restore model, loop and RNG from RUN/checkpoint.json; returns the JSON document."""
    comm = loop.comm
    doc = json.loads((run / CHECKPOINT).read_text())
    tensors = load_file(str(run / doc["weights"]))
    comm.load_model(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    loop.outer_opt.load_state_dict(comm.optimizer_state(loop.outer_opt,
                                                        _join_optimizer(doc["optimizers"]["outer"], tensors)))
    for name, opt in loop.cms_opts.items():
        opt.load_state_dict(comm.optimizer_state(opt, _join_optimizer(doc["optimizers"][name], tensors)))
    loop.carried = {}
    for key in doc["carried"]:
        prefix = f"carried.{key}."
        loop.carried[key] = MemoryState.from_tensors({
            k[len(prefix):]: (comm.rows(v) if v.dim() else v).to(comm.device)  # this process's rows
            for k, v in tensors.items() if k.startswith(prefix)})
    kinds = loop.reductions()
    for name, p in model.named_parameters():
        saved = tensors.get(f"grad.{name}")
        p.grad = None if saved is None else comm.local_grad(p, saved, kinds[name])
    torch.set_rng_state(tensors["rng.torch"])
    random.setstate(_tuples(doc["python_random"]))
    loop.step_count = doc["step"]
    loop.accumulated = doc["loop"]["accumulated"]
    loop.stream_position = doc["loop"]["stream_position"]
    for k, (updates, norm, *resets) in doc["loop"]["stats"].items():
        if k in loop.stats:
            loop.stats[k].updates, loop.stats[k].last_norm = updates, norm
            loop.stats[k].resets = resets[0] if resets else 0
    return doc
