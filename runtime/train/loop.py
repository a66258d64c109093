"""The nested training loop (semantics.md §5): outer steps, CMS windows, in-context memories.

Per outer step each batch is cut at the union of the CMS window ends. Every segment runs forward (the
in-context memories update inside it and carry their state to the next segment), computes the summed
next-token loss and runs backward; each CMS level whose window closes then steps its optimizer with the
window-summed gradient of the loss. The outer level's gradients (averaged over the step's tokens)
accumulate until its clock ticks. Under `bptt truncated` the carried states are detached at segment
boundaries. Every level counts its updates and records the norm of each; a non-finite update stops the
run with `Diverged` naming the level and the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .levels import Ownership, memory_lifetime, ownership, window_ends


class Diverged(RuntimeError):
    def __init__(self, level: str, step: int, what: str):
        super().__init__(f"non-finite {what} in level `{level}` at step {step}")
        self.level, self.step, self.what = level, step, what


@dataclass
class LevelStats:
    updates: int = 0
    last_norm: float = 0.0


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


def _finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@dataclass
class StepResult:
    loss: float  # mean next-token loss (nats) over the step's tokens
    tokens: int
    cms_steps: list = field(default_factory=list)  # names of CMS levels that stepped
    outer_stepped: bool = False


class NestedLoop:
    def __init__(self, model: nn.Module, info: dict, make_optimizer, *, reduce_grads=None):
        self.model, self.info = model, info
        self.own: Ownership = ownership(model, info)
        outer = info["outer"]
        if outer["bptt"] != "truncated":
            raise NotImplementedError("`bptt full` is not supported by the runtime yet; use `bptt truncated`")
        self.outer_opt = make_optimizer(outer["optimizer"]["kind"], [p for _, p in self.own.outer],
                                        **outer["optimizer"]["args"])
        self.cms_opts = {lv.name: make_optimizer(lv.optimizer["kind"], [p for _, p in lv.params], **lv.optimizer["args"])
                         for lv in self.own.cms if lv.params}
        self.stats = {name: LevelStats() for name in self._level_names()}
        self.step_count = 0
        self.accumulated = 0
        self.stream_position = 0  # tokens seen per row (for windows counted along the stream)
        self.carried: dict = {}  # persistent memory states
        self.reduce_grads = reduce_grads  # all-reduce hook for data parallelism (None: one process)

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

    def step(self, batch: torch.Tensor) -> StepResult:
        """One outer step on a (B, T+1) batch of token ids (inputs and shifted targets)."""
        x, y = batch[:, :-1], batch[:, 1:]
        length = x.shape[1]
        state = {k: v for k, v in self.carried.items()}
        total, tokens, cms_steps = 0.0, 0, []
        self.step_count += 1
        for start, end in self._cuts(length):
            logits, state = self.model(x[:, start:end], state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y[:, start:end].reshape(-1),
                                   reduction="sum")
            if not math.isfinite(loss.item()):
                raise Diverged(self.info["outer"]["name"], self.step_count, "loss")
            loss.backward()
            total += loss.item()
            tokens += y[:, start:end].numel()
            state = _detach(state)
            for lv in self._closing(end, length):
                self._cms_step(lv)
                cms_steps.append(lv.name)
        self._memory_stats(state, length)
        self.carried = {k: v for k, v in state.items() if memory_lifetime(k, self.own.memories) == "persist"}
        self.stream_position += length
        self.accumulated += 1
        stepped = self._outer_step(tokens)
        return StepResult(total / max(tokens, 1), tokens, cms_steps, stepped)

    def _apply(self, name: str, opt, params):
        if self.reduce_grads is not None:
            self.reduce_grads(params)
        measured = hasattr(opt, "last_update_norm")  # nlc's optimizers measure their own update
        before = None if measured else [p.detach().clone() for p in params]
        opt.step()
        opt.zero_grad(set_to_none=True)
        if not _finite(p.detach() for p in params):
            raise Diverged(name, self.step_count, "parameters after the update")
        norm = float(opt.last_update_norm) if measured else math.sqrt(
            sum(float((p.detach() - b).pow(2).sum()) for p, b in zip(params, before)))
        if not math.isfinite(norm):
            raise Diverged(name, self.step_count, "update")
        st = self.stats[name]
        st.updates += 1
        st.last_norm = norm

    def _cms_step(self, lv):
        params = [p for _, p in lv.params]
        for p in params:
            if p.grad is not None and lv.lr != 1.0:
                p.grad.mul_(lv.lr)
        self._apply(lv.name, self.cms_opts[lv.name], params)

    def _outer_step(self, tokens: int) -> bool:
        outer = self.info["outer"]
        params = [p for _, p in self.own.outer]
        for p in params:
            if p.grad is not None:
                p.grad.div_(max(tokens, 1))
        if self.accumulated < outer["every_steps"]:
            return False
        if self.accumulated > 1:
            for p in params:
                if p.grad is not None:
                    p.grad.div_(self.accumulated)
        if outer.get("clip"):
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], outer["clip"])
        self._apply(outer["name"], self.outer_opt, params)
        self.accumulated = 0
        return True

    def _memory_stats(self, state: dict, length: int):
        for m in self.info["memories"]:
            keys = [k for k in state if k == m["name"] or k.endswith("." + m["name"])]
            st = self.stats[m["name"]]
            st.updates += length
            norms = []
            for k in keys:
                s = state[k]
                if hasattr(s, "params"):
                    tensors = list(s.params.values())
                    if not _finite(tensors):
                        raise Diverged(m["name"], self.step_count, "memory state")
                    norms.append(math.sqrt(sum(float(t.pow(2).sum()) for t in tensors) / max(1, tensors[0].shape[0])))
            st.last_norm = sum(norms) / len(norms) if norms else 0.0
        for a in self.info.get("attention", []):
            self.stats[a["name"]].updates += length

    # ---------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self, batches) -> float:
        """Mean next-token loss (nats) on validation batches, each from a fresh state."""
        total, tokens = 0.0, 0
        for batch in batches:
            x, y = batch[:, :-1], batch[:, 1:]
            logits, _ = self.model(x, None)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum"))
            tokens += y.numel()
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
