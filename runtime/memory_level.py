"""`MemoryLevel`: an in-context memory level as a torch module, the unit generated code instantiates.

It owns the learned initial state θ_0 (parameters named after the memory's weights: `W`, or `W1`, `W2`,
`b1`, ...; zero buffers instead with `learn_init=False`, the spec's `init zero`), splits (B, T, heads·d)
inputs into heads, maps the spec's gate names (lr, retain, log_retain, momentum) to the memory
library's (eta, alpha, beta), and runs the chosen backend:
`reference` (token by token, the ground truth), `chunked` (chunk-parallel, the CPU production path) or
`triton` (the generated kernels, nldsl.runtime.triton; it falls back to `chunked` with a warning where
they cannot run).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import torch
from torch import Tensor, nn

from .memory import MemoryConfig, MemoryState, chunked, init_params, initial_state, reference
from .memory import functional as F

BACKENDS = ("reference", "chunked", "triton")
GATE_NAMES = {"lr": "eta", "retain": "alpha", "momentum": "beta"}

Gate = Union[Tensor, float, int]


class MemoryLevel(nn.Module):
    def __init__(self, cfg: MemoryConfig, objective, heads: int, *, learn_init: bool = True, name: str = ""):
        super().__init__()
        self.cfg, self.objective, self.heads, self.level_name = cfg, objective, heads, name
        self.backend = "chunked"
        self.compile_steps = False      # the chunked path's tile steps compiled (memory/compiled.py)
        theta0 = init_params(cfg, heads)
        self.learn_init = learn_init
        for key, value in theta0.items():
            if learn_init:
                self.register_parameter(key, nn.Parameter(value))
            else:  # `init zero`: θ_0 = 0 for every family (init_params draws MLP weights at random)
                self.register_buffer(key, torch.zeros_like(value))
        self._keys = tuple(theta0)

    def params0(self) -> dict:
        return {k: getattr(self, k) for k in self._keys}

    def _split(self, x: Tensor, d: int) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, d).transpose(1, 2)

    def _merge(self, y: Tensor) -> Tensor:
        b, h, t, d = y.shape
        return y.transpose(1, 2).reshape(b, t, h * d)

    def _gates(self, gates: Mapping[str, Gate], like: Tensor) -> dict:
        b, _, t, _ = like.shape
        out = {}
        for name, value in gates.items():
            if name == "log_retain":
                name, value = "retain", (torch.exp(value) if isinstance(value, Tensor) else math.exp(value))
            key = GATE_NAMES[name]
            if isinstance(value, Tensor):
                if value.shape[-1] == 1:
                    value = value.expand(b, t, self.heads)
                out[key] = value.transpose(1, 2).to(like.dtype)
            else:
                out[key] = torch.full((b, self.heads, t), float(value), dtype=like.dtype, device=like.device)
        return out

    def forward(self, q: Tensor, k: Tensor, v: Tensor, gates: Mapping[str, Gate],
                state: Optional[MemoryState] = None) -> tuple[Tensor, MemoryState]:
        """q, k: (B, T, heads·dk); v: (B, T, heads·dv) (heads·dk for a self target); gates (B, T, heads) or numbers."""
        qh, kh, vh = self.split_inputs(q, k, v)
        y, new_state = self.run(qh, kh, vh, self._gates(gates, kh), self.params0(), state)
        return self._merge(y), new_state

    def write(self, q: Tensor, k: Tensor, v: Tensor, gates: Mapping[str, Gate],
              state: Optional[MemoryState] = None) -> MemoryState:
        """`forward` for a caller that keeps only the state (a self-modifying group writes what it read
        before): the output is not merged back from the heads."""
        qh, kh, vh = self.split_inputs(q, k, v)
        return self.run(qh, kh, vh, self._gates(gates, kh), self.params0(), state)[1]

    def split_inputs(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v split into heads: (B, heads, T, d)."""
        cfg = self.cfg
        return self._split(q, cfg.dk), self._split(k, cfg.dk), self._split(v, cfg.dk if cfg.self_target else cfg.dv)

    def run(self, qh: Tensor, kh: Tensor, vh: Tensor, gates: Mapping[str, Tensor], params0: dict,
            state: Optional[MemoryState], names: tuple = ()) -> tuple[Tensor, MemoryState]:
        """This level's backend on inputs split into heads (any number of heads: a MemoryStack runs the
        heads of several levels at once, and `names` them all in a fallback warning)."""
        kh, vh, gates = self._cut_unread(kh, vh, gates)
        if self.backend == "triton":
            from .triton import run_memory
            return run_memory(self, qh, kh, vh, gates, params0, state, names)
        if self.backend == "reference":
            return reference(self.cfg, self.objective, qh, kh, vh, gates, params0, state)
        return chunked(self.cfg, self.objective, qh, kh, vh, gates, params0, state, compile=self.compile_steps)

    def _cut_unread(self, kh: Tensor, vh: Tensor, gates: Mapping[str, Tensor]):
        """The inputs that no rule reads, out of the graph: a gate no rule reads (NL0509), the values of a
        memory with no rule that takes a gradient, and its keys too under `retain` alone (NL0510). So
        every backend leaves what computes them without a gradient (a kernel given them would return
        zeros, on which an optimizer's weight decay would act on that backend only)."""
        cfg = self.cfg
        read = cfg.required_gates()
        gates = {name: g if name in read or not isinstance(g, Tensor) else g.detach() for name, g in gates.items()}
        if not cfg.has_gradient:
            vh = vh.detach()
            if all(rule.kind == "retain" for rule in cfg.rules):
                kh = kh.detach()
        return kh, vh, gates

    def read_anchor(self, q: Tensor, state: Optional[MemoryState]) -> Tensor:
        """M_{θ_{c(t)}}(q) for tokens of the current chunk: what a `read at anchor` returns."""
        qh = self._split(q, self.cfg.dk)
        if state is None:
            state = initial_state(self.cfg, self.params0(), qh.shape[0])
        return self._merge(F.apply(self.cfg, state.anchor, qh))

    def read_current(self, q: Tensor, state: Optional[MemoryState]) -> Tensor:
        """M_{θ_t}(q): what a `read before write` returns for the next token."""
        qh = self._split(q, self.cfg.dk)
        if state is None:
            state = initial_state(self.cfg, self.params0(), qh.shape[0])
        return self._merge(F.apply(self.cfg, state.params, qh))


def segments(position: int, length: int, size: int) -> list[tuple[int, int]]:
    """[start, end) ranges of a call that cut at absolute positions that are multiples of `size`."""
    out, start = [], 0
    while start < length:
        end = min(length, start + size - (position + start) % size)
        out.append((start, end))
        start = end
    return out


def position_of(state: Optional[MemoryState]) -> int:
    """Tokens seen so far by a carried memory state (0 for a fresh sequence)."""
    return 0 if state is None else state.position
