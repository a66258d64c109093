"""The nested training loop (semantics.md §5): outer steps, CMS windows, in-context memories.

Per outer step each batch is cut at the union of the CMS window ends. Every segment runs forward (the
in-context memories update inside it and carry their state to the next segment), computes the summed
next-token loss and runs backward; each CMS level whose window closes then steps its optimizer with the
window-summed gradient of the loss. The outer level's gradients (averaged over each step's tokens)
accumulate until its clock ticks and are averaged over the steps of the period. Under `bptt truncated`
the carried states are detached at segment boundaries; under `bptt full` the step's graph is kept across
them (full_bptt.py). With `graphs` (a capture such as graphs.CudaGraphs) each segment whose key recurs
is replayed as a CUDA graph (graphs.py), with the same result. With several processes (`comm`, see
distributed.py) each rank runs the same loop on its rows; gradients are reduced before every step
and reported numbers are global. Every level counts its updates and records the norm of each; a
non-finite loss, update or memory state stops the run with `Diverged` naming the level and the step.
What a step checks stays on the device until its end, where it is read at once (`_Checks`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import Single
from .full_bptt import LiveWeights
from .graphs import SegmentGraphs
from .levels import Ownership, memory_lifetime, ownership, window_ends


class Diverged(RuntimeError):
    def __init__(self, level: str, step: int, what: str):
        super().__init__(f"non-finite {what} in level `{level}` at step {step}")
        self.level, self.step, self.what = level, step, what


@dataclass
class LevelStats:
    updates: int = 0
    last_norm: float = 0.0
    resets: int = 0  # CMS members: returns to the learned initial state


def _detach(state):
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {k: _detach(v) for k, v in state.items()}
    if hasattr(state, "detach"):
        return state.detach()
    if hasattr(state, "to_tensors") and hasattr(type(state), "from_tensors"):
        return type(state).from_tensors({k: v.detach() for k, v in state.to_tensors().items()})
    return state


def _non_finite(tensors) -> torch.Tensor:
    """1.0 where an element of a tensor is not finite, else 0.0, as a device scalar (no synchronisation):
    the largest magnitude of every tensor at once (a multi-tensor kernel on a GPU; NaN and inf carry
    through a maximum, and a maximum cannot overflow as a sum of squares can)."""
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return torch.zeros((), dtype=torch.float64)
    peaks = torch._foreach_norm(tensors, float("inf"))
    if len({p.dtype for p in peaks}) > 1:
        peaks = [p.double() for p in peaks]
    return (~torch.isfinite(torch.stack(peaks))).any().double()


class _Checks:
    """What a step checks and reports, kept on the device as it goes and read at the step's end in one
    synchronisation (and, with several processes, one collective): each segment's loss, each level's
    update (its parameters finite, its norm), each memory state's norm. On a GPU every read waits for
    the device, and a step of hope.nl read it 119 times (32 segments, 43 CMS steps). The first problem
    in the order the step met them stops the run, as if each had been read at once.

    An entry is (kind, level, values, reduced): `reduced` of its values are summed over processes."""

    def __init__(self):
        self.entries: list = []

    def add(self, kind: str, level: str, *values, reduced: int):
        self.entries.append((kind, level, values, reduced))

    def read(self, comm) -> list:
        """The entries with their values as numbers, the reduced ones summed over processes."""
        flat = [v for _, _, values, _ in self.entries for v in values]
        tensors = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]
        if tensors:
            device = _plain(flat[tensors[0]]).device
            stacked = torch.stack([_plain(flat[i]).detach().to(device, torch.float64).reshape(()) for i in tensors])
            for i, value in zip(tensors, stacked.tolist()):
                flat[i] = value
        starts, reduce, start = [], [], 0
        for _, _, values, reduced in self.entries:
            starts.append(start)
            reduce.extend(range(start, start + reduced))
            start += len(values)
        for i, value in zip(reduce, comm.sum([flat[i] for i in reduce])):
            flat[i] = value
        return [(kind, level, flat[start:start + len(values)])
                for (kind, level, values, _), start in zip(self.entries, starts)]


def _plain(t):
    """A tensor of this process (a sharded one gathered)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """A tensor to sum over (logits for the loss, a state for its norm): at least float32 (float64 stays
    float64)."""
    return x if x.dtype == torch.float64 else x.float()


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly sharded) tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The summed next-token loss of a segment (a target of -100, the aligned layout's padding, counts
    for nothing: cross_entropy's default ignore_index)."""
    return F.cross_entropy(_upcast(logits.reshape(-1, logits.shape[-1])), y.reshape(-1), reduction="sum")


def train_segment(model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: dict) -> tuple:
    """One segment run eagerly: forward from `state`, the summed loss, backward (the gradients accumulate
    into .grad); (the loss, detached; the states out, detached)."""
    logits, state = model(x, state)
    loss = _loss(logits, y)
    loss.backward()
    return loss.detach(), _detach(state)


@dataclass
class StepResult:
    loss: float  # mean next-token loss (nats) over the step's tokens
    tokens: int  # over all processes
    cms_steps: list = field(default_factory=list)  # names of CMS levels that stepped
    outer_stepped: bool = False


class NestedLoop:
    def __init__(self, model: nn.Module, info: dict, make_optimizer, *, comm=None, graphs=None):
        self.model, self.info = model, info
        self.own: Ownership = ownership(model, info)
        outer = info["outer"]
        self.full_bptt = outer["bptt"] == "full"
        self.outer_opt = make_optimizer(outer["optimizer"]["kind"], [p for _, p in self.own.outer],
                                        **outer["optimizer"]["args"])
        self.cms_opts = {lv.name: make_optimizer(lv.optimizer["kind"], [p for _, p in lv.params], **lv.optimizer["args"])
                         for lv in self.own.cms if lv.params}
        self.stats = {name: LevelStats() for name in self._level_names()}
        self.step_count = 0
        self.accumulated = 0
        self.stream_position = 0  # tokens seen per row (for windows counted along the stream)
        self.carried: dict = {}  # persistent memory states
        # data parallelism: reduce_grads(params, kind) before every step, global sums (Single: one process)
        self.comm = comm if comm is not None else Single()
        # CUDA graphs of the segments (truncated BPTT only: under `bptt full` a step is one graph of autograd)
        self.graphs = None
        if graphs is not None and self.full_bptt:
            warnings.warn("CUDA graphs: under `bptt full` a step is one autograd graph across its segments, so "
                          "they run eagerly", RuntimeWarning, stacklevel=2)
        elif graphs is not None:
            self.graphs = SegmentGraphs(self.run_segment, [p for p in model.parameters() if p.requires_grad], graphs)

    def reductions(self) -> dict:
        """How each parameter's gradient combines over processes: 'sum' (CMS windows) or 'mean' (outer)."""
        out = {name: "mean" for name, _ in self.own.outer}
        out.update({name: "sum" for lv in self.own.cms for name, _ in lv.params})
        return out

    def _level_names(self):
        names = [m["name"] for m in self.info["memories"]] + [a["name"] for a in self.info.get("attention", [])]
        names += [lv.name for lv in self.own.cms] + [self.info["outer"]["name"]]
        return names

    # ---------------------------------------------------------------- segments

    def _cuts(self, length: int) -> list[tuple[int, int]]:
        ends = {length}
        for lv in self.own.cms:
            start = 0 if lv.lifetime == "reset" else self.stream_position
            ends.update(window_ends(start, length, lv.period))
        bounds = sorted(ends)
        out, start = [], 0
        for end in bounds:
            if end > start:
                out.append((start, end))
                start = end
        return out

    def _closing(self, end: int, length: int) -> list:
        out = []
        for lv in self.own.cms:
            if not lv.params:
                continue
            origin = 0 if lv.lifetime == "reset" else self.stream_position
            closes = (origin + end) % lv.period == 0
            flush = lv.lifetime == "reset" and end == length and not closes and lv.flush == "partial"
            if closes or flush:
                out.append(lv)
        return out

    # ---------------------------------------------------------------- one step

    def step(self, batch: torch.Tensor, targets: Optional[int] = None) -> StepResult:
        """One outer step on a (B, T+1) batch of token ids (inputs and shifted targets). A padded batch
        (the aligned layout, runtime/data/aligned.py) holds IGNORE where a row has ended: those inputs
        read token 0, those targets count for nothing, and `targets` is how many do count in the global
        batch (over all processes), the outer gradient's divisor."""
        x, y = batch[:, :-1], batch[:, 1:]
        if targets is not None:
            x = x.clamp_min(0)
        length = x.shape[1]
        state = {k: v for k, v in self.carried.items()}
        checks, cms_steps = _Checks(), []
        self.step_count += 1
        earlier = self._set_aside_outer_grads()
        live = LiveWeights(self.model, self.own.cms) if self.full_bptt else None
        segment = self.graphs or self.run_segment
        for start, end in self._cuts(length):
            if live is None:  # forward, loss, backward; the states out detached
                loss, state = segment(x[:, start:end], y[:, start:end], state)
            else:
                logits, state = live(x[:, start:end], state)
                loss = _loss(logits, y[:, start:end])
                live.losses.append(loss)
            # (a copy of a replay's loss: the graph's next replay overwrites it)
            counted = y[:, start:end].numel() if targets is None else (y[:, start:end] >= 0).sum()
            checks.add("loss", self.info["outer"]["name"], loss.detach() if self.graphs is None else loss.clone(),
                       counted, reduced=2)
            closing = self._closing(end, length)
            if live is not None:
                live.close_windows(closing)
            for lv in closing:
                self._cms_step(lv, checks)
                cms_steps.append(lv.name)
            stepped_now = {lv.name for lv in closing}
            reset = [lv for lv in self.own.cms if lv.initial_learner in stepped_now]
            for lv in reset:  # a nested chain's member goes back to what the previous one learned
                self._reset(lv)
            if live is not None:
                live.refresh(closing + reset)
        if live is not None:
            live.finish([p for _, p in self.own.outer if p.requires_grad])
            state = _detach(state)
        self._memory_checks(checks, state)
        self.carried = {k: v for k, v in state.items() if memory_lifetime(k, self.own.memories) == "persist"}
        self.stream_position += length
        self.accumulated += 1
        share = y.numel() if targets is None else targets / self.comm.world  # a process's mean share
        stepped = self._outer_step(share, earlier, checks)
        for lv in self.own.cms:  # the next sequences start from the learned initial states
            if lv.lifetime == "reset" and lv.initial:
                self._reset(lv)
        total, tokens = self._resolve(checks, length)
        return StepResult(total / max(tokens, 1), tokens, cms_steps, stepped)

    def run_segment(self, x: torch.Tensor, y: torch.Tensor, state: dict) -> tuple:
        return train_segment(self.model, x, y, state)

    def _reset(self, lv) -> None:
        """Put a CMS member back to its learned initial state: its weights, the gradient of its open window
        (a window cut short by the reset is dropped) and its optimizer's state."""
        opt = self.cms_opts.get(lv.name)
        with torch.no_grad():
            for p, p0 in lv.initial:
                p.copy_(p0)
                p.grad = None
                if opt is not None:
                    opt.state.pop(p, None)
        self.stats[lv.name].resets += 1

    def _apply(self, name: str, opt, params, checks: _Checks):
        measured = hasattr(opt, "update_square")  # nlc's optimizers measure their own (global) update
        before = None if measured else [_local(p.detach()).clone() for p in params]
        try:
            opt.step()
        except RuntimeError as e:  # a step size beyond float32 (lr / (1 - beta1) of an absurd lr, say)
            if "without overflow" not in str(e):
                raise
            raise Diverged(name, self.step_count, "step size (it overflows float32)") from e
        opt.zero_grad(set_to_none=True)
        bad = _non_finite(_local(p.detach()) for p in params)
        if measured:
            square = opt.update_square()
        else:
            square = sum((_local(p.detach()) - b).pow(2).sum() for p, b in zip(params, before))
        # a sharded parameter's square of this process's part is summed over processes
        checks.add("update", name, bad, square, reduced=2 if self.comm.sharded and not measured else 1)
        self.stats[name].updates += 1

    def _cms_step(self, lv, checks: _Checks):
        params = [p for _, p in lv.params]
        self.comm.reduce_grads(params, "sum")  # the window's gradient summed over every row of every process
        for p in params:
            if p.grad is not None and lv.lr != 1.0:
                p.grad.mul_(lv.lr)
        self._apply(lv.name, self.cms_opts[lv.name], params, checks)

    def _set_aside_outer_grads(self) -> dict:
        """The outer gradients accumulated by earlier steps of the clock period (already per-token means)."""
        earlier = {}
        if self.accumulated:
            for _, p in self.own.outer:
                if p.grad is not None:  # (a graph's gradient tensor is zeroed by its next replay: a copy)
                    earlier[p] = p.grad if self.graphs is None else p.grad.clone()
                    p.grad = None
        return earlier

    def _outer_step(self, tokens: float, earlier: dict, checks: _Checks) -> bool:
        """`tokens`: this process's tokens of the step (with padding, the global count over the number of
        processes, so that the mean over processes divides the summed gradient by the global count);
        `earlier`: what `_set_aside_outer_grads` took."""
        outer = self.info["outer"]
        params = [p for _, p in self.own.outer]
        for p in params:  # this step's gradient as a mean over its tokens, added to the earlier steps'
            if p.grad is not None:
                p.grad.div_(max(tokens, 1))
            if p in earlier:
                if p.grad is None:
                    p.grad = earlier[p]
                else:
                    p.grad.add_(earlier[p])
        if self.accumulated < outer["every_steps"]:
            return False
        self.comm.reduce_grads(params, "mean")  # each process divided by the same number of tokens
        if self.accumulated > 1:
            for p in params:
                if p.grad is not None:
                    p.grad.div_(self.accumulated)
        if outer.get("clip"):
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], outer["clip"])
        self._apply(outer["name"], self.outer_opt, params, checks)
        self.accumulated = 0
        return True

    def _memory_checks(self, checks: _Checks, state: dict) -> None:
        """Each memory state's sum of squares and rows (summed over processes: a sum of squares is
        non-finite exactly when an element is, or when it overflows as per-tensor sums would)."""
        for m in self.info["memories"]:
            for k in [k for k in state if k == m["name"] or k.endswith("." + m["name"])]:
                s = state[k]
                if hasattr(s, "params"):
                    tensors = list(s.params.values())
                    square = sum(_upcast(t.detach()).pow(2).sum() for t in tensors)
                    checks.add("memory", m["name"], square, tensors[0].shape[0], reduced=2)

    def _resolve(self, checks: _Checks, length: int) -> tuple[float, int]:
        """Read a step's checks: `Diverged` at the first problem; else the step's summed loss and tokens
        (over all processes), with every level's statistics brought up to date."""
        total, tokens, norms = 0.0, 0, {}
        for kind, level, values in checks.read(self.comm):
            if kind == "loss":
                value, count = values
                if not math.isfinite(value):
                    raise Diverged(level, self.step_count, "loss")
                total += value
                tokens += int(count)
            elif kind == "update":
                bad, square = values
                if bad:
                    raise Diverged(level, self.step_count, "parameters after the update")
                if not math.isfinite(square):
                    raise Diverged(level, self.step_count, "update")
                self.stats[level].last_norm = math.sqrt(square)
            else:
                square, rows = values
                if not math.isfinite(square):
                    raise Diverged(level, self.step_count, "memory state")
                norms.setdefault(level, []).append(math.sqrt(square / max(1.0, rows)))
        for m in self.info["memories"]:
            st = self.stats[m["name"]]
            st.updates += length
            got = norms.get(m["name"], [])
            st.last_norm = sum(got) / len(got) if got else 0.0
        for a in self.info.get("attention", []):
            self.stats[a["name"]].updates += length
        return total, tokens

    def _memory_stats(self, state: dict, length: int) -> None:
        """The memory states' checks and statistics alone (a step that runs no segments)."""
        checks = _Checks()
        self._memory_checks(checks, state)
        self._resolve(checks, length)

    # ---------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self, batches) -> float:
        """Mean next-token loss (nats) on validation batches, each from a fresh state (padding, IGNORE, read
        as token 0 and not counted)."""
        total, tokens = 0.0, 0
        for batch in batches:
            x, y = batch[:, :-1].clamp_min(0), batch[:, 1:]
            logits, _ = self.model(x, None)
            total += float(_loss(logits, y))
            tokens += int((y >= 0).sum())
        total, tokens = self.comm.sum([total, tokens])
        return total / max(tokens, 1)

    def expected_updates(self, steps: int, length: int) -> dict:
        """What the clocks imply after `steps` steps of `length` tokens (for tests and `nlc plan`)."""
        out = {m["name"]: steps * length for m in self.info["memories"]}
        for lv in self.own.cms:
            if lv.lifetime == "reset":
                per = length // lv.period + (1 if length % lv.period and lv.flush == "partial" else 0)
                out[lv.name] = steps * per
            else:
                out[lv.name] = (steps * length) // lv.period
        out[self.info["outer"]["name"]] = steps // self.info["outer"]["every_steps"]
        return out
