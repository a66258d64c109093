"""State as an artifact: learning from a text after training, kept in a memory file (`nlc learn`).

`Learner` streams a text through a trained model with the outer level frozen, while the levels that
learn in context keep learning at their clocks: in-context memories inside the forward pass, CMS
members at the end of each of their windows with the window-summed gradient — the nested loop of
`nlc train` (`NestedLoop`, whose segmenting and window logic it reuses) with the outer optimizer
disabled. What it learns is kept in a *memory file* instead of new weights:

- the parameters of every CMS member that learns under `state persist` (with its optimizer's state
  and the gradient of its open window, so that learning more later continues exactly),
- the carried state of every memory level under `state persist` (one stream, batch 1),
- and, in the safetensors header (metadata key `nlc_memory`), a JSON manifest: the model's name and
  spec sha256 (a memory fits only the spec it was made for), the checkpoint step and a fingerprint of
  the frozen weights it was learned over, the stream position, and the texts learned so far.

Levels that do not persist (CMS chains and memories under `state reset per sequence`) stay as trained
and are not stored: what they would learn is, by their spec, forgotten at the next sequence. A memory
file is applied with `apply_memory`, which sets the CMS members and returns the state to start from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import EOS, ByteTokenizer, bits_per_byte
from .generate import Run, RunError
from .memory import MemoryState
from .train.loop import NestedLoop, StepResult, _detach
from .train.levels import memory_lifetime

FORMAT = "nlc-memory"
VERSION = 1
METADATA_KEY = "nlc_memory"


class MemoryFileError(RunError):
    """A memory file that cannot be used with this run (another spec, a damaged file, ...)."""


# ------------------------------------------------------------------------------------------ the file


@dataclass
class Memory:
    """The contents of a memory file."""

    manifest: dict
    cms: dict = field(default_factory=dict)  # model parameter name -> value
    optimizers: dict = field(default_factory=dict)  # CMS level -> optimizer state_dict
    grads: dict = field(default_factory=dict)  # model parameter name -> gradient of the open window
    states: dict = field(default_factory=dict)  # state key -> MemoryState (batch 1)

    @property
    def position(self) -> int:
        return int(self.manifest.get("position", 0))


def weights_fingerprint(run: Run, exclude: set) -> str:
    """A sha256 over the frozen weights (every parameter and buffer not in `exclude`)."""
    h = hashlib.sha256()
    for name, value in sorted(run.model.state_dict().items()):
        if name in exclude:
            continue
        h.update(name.encode())
        h.update(value.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()


def _persistent_cms(run: Run) -> list:
    from .train.levels import ownership

    return [lv for lv in ownership(run.model, run.info).cms if lv.lifetime == "persist" and lv.params]


def _persistent_memories(run: Run) -> list[str]:
    return [m["name"] for m in run.info["memories"] if m["lifetime"] == "persist"]


def persistent_levels(run: Run) -> dict:
    """{'cms': [level names], 'memories': [memory names]}: what a memory file of this run holds."""
    return {"cms": [lv.name for lv in _persistent_cms(run)], "memories": _persistent_memories(run)}


def write_memory(path: Union[str, Path], memory: Memory) -> Path:
    """Write a memory file (atomically: a crash leaves any earlier file intact)."""
    from safetensors.torch import save_file

    from .train.checkpoint import _split_optimizer

    tensors: dict[str, Tensor] = {}
    for name, value in memory.cms.items():
        tensors[f"cms.{name}"] = value.detach().clone().contiguous()
    for name, value in memory.grads.items():
        tensors[f"grad.{name}"] = value.detach().clone().contiguous()
    optimizers = {level: _split_optimizer(f"optim.{level}", sd, tensors) for level, sd in memory.optimizers.items()}
    for key, state in memory.states.items():
        for k, v in state.to_tensors().items():
            tensors[f"state.{key}.{k}"] = v.detach().clone().contiguous()
    manifest = {**memory.manifest, "format": FORMAT, "version": VERSION, "optimizers": optimizers,
                "states": sorted(memory.states)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(manifest, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_memory(path: Union[str, Path], run: Optional[Run] = None) -> Memory:
    """Read a memory file; with `run`, refuse (MemoryFileError) one made for another spec."""
    from safetensors import SafetensorError, safe_open

    from .train.checkpoint import _join_optimizer

    path = Path(path)
    if not path.is_file():
        raise MemoryFileError(f"no memory file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise MemoryFileError(f"{path} is not a memory file (it does not read as safetensors: {e})") from None
    try:
        manifest = json.loads(meta[METADATA_KEY])
        if manifest.get("format") != FORMAT:
            raise KeyError("format")
    except (KeyError, ValueError):
        raise MemoryFileError(f"{path} is a safetensors file but not an nlc memory file "
                              f"(it has no `{METADATA_KEY}` manifest)") from None
    if manifest.get("version", 0) > VERSION:
        raise MemoryFileError(f"{path} is a memory file of format version {manifest['version']}; this nlc reads "
                              f"version {VERSION} (upgrade nlc)")
    if run is not None and manifest.get("spec_sha256") != run.spec_sha256:
        raise MemoryFileError(
            f"{path} was learned by model `{manifest.get('model')}` (spec sha256 "
            f"{str(manifest.get('spec_sha256'))[:12]}), but {run.path} holds model `{run.manifest.get('model')}` "
            f"(spec sha256 {run.spec_sha256[:12]}): a memory file fits only the spec it was made for")
    cms = {k[len("cms."):]: v for k, v in tensors.items() if k.startswith("cms.")}
    grads = {k[len("grad."):]: v for k, v in tensors.items() if k.startswith("grad.")}
    optimizers = {level: _join_optimizer(js, tensors) for level, js in manifest.pop("optimizers", {}).items()}
    states = {}
    for key in manifest.pop("states", []):
        prefix = f"state.{key}."
        states[key] = MemoryState.from_tensors({k[len(prefix):]: v for k, v in tensors.items()
                                                if k.startswith(prefix)})
    return Memory(manifest, cms, optimizers, grads, states)


def memory_warnings(memory: Memory, run: Run) -> list[str]:
    """Reasons to doubt a memory fits this run although its spec does (other frozen weights)."""
    levels = persistent_levels(run)
    exclude = {n for lv in _persistent_cms(run) for n, _ in lv.params}
    out = []
    if memory.manifest.get("weights_sha256") != weights_fingerprint(run, exclude):
        out.append(f"the memory was learned over other weights (checkpoint step {memory.manifest.get('step')}; "
                   f"this run is at step {run.step}): what it holds may not fit them")
    missing = set(levels["cms"]) - set(memory.manifest.get("levels", {}).get("cms", []))
    if missing:
        out.append(f"the memory holds no state for {', '.join(sorted(missing))}")
    return out


def apply_memory(run: Run, memory: Memory) -> dict:
    """Set the CMS members of `run.model` from `memory`; returns the model state to start from (batch 1)."""
    params = dict(run.model.named_parameters())
    with torch.no_grad():
        for name, value in memory.cms.items():
            if name not in params or params[name].shape != value.shape:
                raise MemoryFileError(f"the memory's CMS parameter {name} does not fit the model")
            params[name].copy_(value.to(params[name]))
    device, dtype = params[next(iter(params))].device, params[next(iter(params))].dtype
    return {key: _to(state, device, dtype) for key, state in memory.states.items()}


def _to(state: MemoryState, device, dtype) -> MemoryState:
    return MemoryState.from_tensors({k: (v.to(device) if k == "position" else v.to(device, dtype))
                                     for k, v in state.to_tensors().items()})


def expand_state(state: Optional[dict], batch: int) -> Optional[dict]:
    """A batch-1 model state (from a memory file) repeated for `batch` rows, each row one copy of it."""
    if not state:
        return None
    out = {}
    for key, value in state.items():
        if isinstance(value, MemoryState):
            grow = {k: (v if k == "position" else v.expand(batch, *v.shape[1:]))
                    for k, v in value.to_tensors().items()}
            out[key] = MemoryState.from_tensors(grow)
        elif isinstance(value, Tensor):
            out[key] = value.expand(batch, *value.shape[1:])
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------ learning


class FrozenOuterLoop(NestedLoop):
    """The nested loop with the outer level frozen: only in-context levels and persistent CMS members learn."""

    def __init__(self, model, info, make_optimizer):
        super().__init__(model, info, make_optimizer)
        for lv in self.own.cms:
            if lv.lifetime != "persist":  # what they learned would be dropped at the next sequence
                lv.params = []
        self.cms_opts = {name: opt for name, opt in self.cms_opts.items()
                         if any(lv.name == name and lv.params for lv in self.own.cms)}
        learning = {id(p) for lv in self.own.cms for _, p in lv.params}
        for p in model.parameters():
            p.requires_grad_(id(p) in learning)

    def _outer_step(self, *args, **kwargs) -> bool:  # the outer level is frozen: it never steps
        self.accumulated = 0
        return False

    def step(self, batch: Tensor) -> StepResult:
        if self.cms_opts:
            return super().step(batch)
        with torch.no_grad():  # nothing learns by gradient: in-context memories only
            x, y = batch[:, :-1], batch[:, 1:]
            self.step_count += 1
            logits, state = self.model(x, dict(self.carried))
            loss = float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                         reduction="sum"))
            self._memory_stats(state, x.shape[1])
            self.carried = {k: v for k, v in _detach(state).items()
                            if memory_lifetime(k, self.own.memories) == "persist"}
            self.stream_position += x.shape[1]
            return StepResult(loss / max(y.numel(), 1), y.numel())


@dataclass
class LearnReport:
    tokens: int  # tokens learned in this call (all passes)
    pass_losses: list  # mean next-token loss (nats) of each pass, measured while learning (prequential)
    pass_tokens: list  # tokens of each pass
    updates: dict  # level -> updates in this call
    position: int  # tokens in the memory after this call


class Learner:
    """Streams texts through a run's model, learning in context, and keeps the result as a Memory."""

    def __init__(self, run: Run, memory: Optional[Memory] = None, seq: Optional[int] = None):
        from .optim import make_optimizer
        from .train.checkpoint import CHECKPOINT, _join_optimizer

        self.run, self.seq = run, int(seq or run.context)
        if self.seq < 1:
            raise ValueError("seq must be at least 1")
        levels = persistent_levels(run)
        if not levels["cms"] and not levels["memories"]:
            raise RunError(f"the model of {run.path} has no persistent level (no CMS member with a token clock "
                           f"under `state persist`, no memory under `state persist`): nothing it learns in "
                           f"context outlives a sequence, so there is nothing to keep in a memory file")
        self.loop = FrozenOuterLoop(run.model, run.info, make_optimizer)
        self.exclude = {n for lv in self.loop.own.cms for n, _ in lv.params}
        self.sources: list = []
        if memory is not None:
            apply_memory(run, memory)
            params = dict(run.model.named_parameters())
            for name, g in memory.grads.items():
                if name in params:
                    params[name].grad = g.to(params[name])
            for name, opt in self.loop.cms_opts.items():
                if name in memory.optimizers:
                    opt.load_state_dict(memory.optimizers[name])
            device, dtype = params[next(iter(params))].device, params[next(iter(params))].dtype
            self.loop.carried = {k: _to(s, device, dtype) for k, s in memory.states.items()}
            self.loop.stream_position = memory.position
            self.sources = list(memory.manifest.get("sources", []))
        else:  # the CMS optimizers go on from their state at the end of training
            checkpoint = run.path / CHECKPOINT
            if checkpoint.is_file() and self.loop.cms_opts:
                from safetensors.torch import load_file

                doc = json.loads(checkpoint.read_text())
                tensors = load_file(str(run.path / doc["weights"]))
                for name, opt in self.loop.cms_opts.items():
                    if name in doc.get("optimizers", {}):
                        opt.load_state_dict(_join_optimizer(doc["optimizers"][name], tensors))
        self.fingerprint = (memory.manifest.get("weights_sha256") if memory is not None
                            else weights_fingerprint(run, self.exclude))

    def learn(self, tokens: list[int], passes: int = 1, name: str = "text") -> LearnReport:
        """Read `tokens` (followed by a separator) `passes` times, learning as the clocks say."""
        if passes < 1:
            raise ValueError("passes must be at least 1")
        device = next(self.run.model.parameters()).device
        stream = torch.tensor(list(tokens) + [EOS], dtype=torch.long, device=device)
        if stream.numel() < 2:
            raise ValueError("nothing to learn: the text is empty")
        before = {k: v.updates for k, v in self.loop.stats.items()}
        losses, total = [], 0
        for _ in range(passes):
            nats, count = 0.0, 0
            for start in range(0, stream.numel() - 1, self.seq):
                window = stream[start:start + self.seq + 1].unsqueeze(0)
                result = self.loop.step(window)
                nats += result.loss * result.tokens
                count += result.tokens
            losses.append(nats / count)
            total += count
        digest = hashlib.sha256(bytes(tokens)).hexdigest() if all(0 <= t < 256 for t in tokens) else None
        self.sources.append({"name": name, "tokens": len(tokens), "passes": passes, "sha256": digest})
        updates = {k: v.updates - before.get(k, 0) for k, v in self.loop.stats.items()
                   if k != self.run.info["outer"]["name"]}
        return LearnReport(total, losses, [total // passes] * passes, updates, self.loop.stream_position)

    def learn_text(self, text: str, passes: int = 1, name: str = "text") -> LearnReport:
        return self.learn(ByteTokenizer().encode(text), passes, name)

    def memory(self) -> Memory:
        """The memory learned so far."""
        params = dict(self.run.model.named_parameters())
        cms = {n: params[n].detach().clone() for n in sorted(self.exclude)}
        grads = {n: params[n].grad.detach().clone() for n in sorted(self.exclude) if params[n].grad is not None}
        optimizers = {name: opt.state_dict() for name, opt in self.loop.cms_opts.items()}
        states = {k: s for k, s in self.loop.carried.items() if isinstance(s, MemoryState)}
        from nldsl import __version__

        manifest = {
            "model": self.run.manifest.get("model"), "spec_sha256": self.run.spec_sha256, "nlc": __version__,
            "step": self.run.step, "weights_sha256": self.fingerprint, "dtype": str(next(iter(params.values())).dtype),
            "position": self.loop.stream_position, "seq": self.seq, "sources": self.sources,
            "levels": {"cms": [lv.name for lv in self.loop.own.cms if lv.params],
                       "memories": _persistent_memories(self.run)},
        }
        return Memory(manifest, cms, optimizers, grads, states)

    def save(self, path: Union[str, Path]) -> Path:
        return write_memory(path, self.memory())


def learn_file(run: Run, data: Union[str, Path], memory_path: Union[str, Path], *, seq: Optional[int] = None,
               passes: int = 1) -> tuple[LearnReport, Memory]:
    """`nlc learn`: load (or start) the memory file, learn every document of `data`, save it back."""
    from .data import load_documents

    memory_path = Path(memory_path)
    memory = read_memory(memory_path, run) if memory_path.exists() else None
    learner = Learner(run, memory, seq)
    report = None
    for name, text in load_documents(data):
        r = learner.learn_text(text, passes, name)
        if report is None:
            report = r
        else:
            counts = [a + b for a, b in zip(report.pass_tokens, r.pass_tokens)]
            losses = [(la * a + lb * b) / n for la, a, lb, b, n in
                      zip(report.pass_losses, report.pass_tokens, r.pass_losses, r.pass_tokens, counts)]
            report = LearnReport(report.tokens + r.tokens, losses, counts,
                                 {k: report.updates.get(k, 0) + v for k, v in r.updates.items()}, r.position)
    memory = learner.memory()
    write_memory(memory_path, memory)
    return report, memory


def describe(report: LearnReport) -> list[str]:
    """Lines summarising a learn call, for the command line."""
    lines = [f"learned {report.tokens} tokens; memory position {report.position}"]
    for i, loss in enumerate(report.pass_losses, 1):
        if math.isfinite(loss):
            lines.append(f"  pass {i}: {loss:.4f} nats/token ({bits_per_byte(loss):.3f} bits/byte) while learning")
    for level, n in report.updates.items():
        lines.append(f"  {level}: {n} updates")
    return lines


def open_run(run_dir: Union[str, Path], memory_path: Optional[Union[str, Path]] = None, *, device: str = "cpu",
             dtype: Optional[str] = None, backend: str = "chunked",
             compile: bool = False) -> tuple[Run, Optional[dict], list[str]]:
    """A run's model on `backend` (`compile`: see load_run) with a memory file applied: (run, the state to
    start from or None, warnings)."""
    from .generate import load_run

    run = load_run(run_dir, device=device, dtype=dtype, backend=backend, compile=compile)
    if memory_path is None:
        return run, None, []
    memory = read_memory(memory_path, run)
    state = apply_memory(run, memory)
    return run, state or None, memory_warnings(memory, run)
