"""`MemoryStack`: sibling memory levels that share their configuration and their inputs, run as one.

HOPE's self-modifying group has four memories (M_k, M_v, M_eta, M_alpha) with one configuration, fed
the same query, keys, values and gates; only their states differ. The code generator (codegen/forward.py)
runs such siblings as a stack: their heads side by side, member by member, so every read and every
update of the group is one call of the memory path instead of one per member. Each head's recurrence
is independent of the others (semantics §2), so a stack computes exactly what its members would
compute one by one; what changes is the number of operators a step dispatches (a quarter, for HOPE's
group) and, on a GPU, the number of kernel launches and the programs each one has.

The members stay separate modules: their parameters, state-dict keys and carried states are their own.
A stack only lives for one forward call: `stack_state` puts the members' carried states side by side
when the group starts, `split_state` hands each member its own when it ends.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from .memory import MemoryState, initial_state
from .memory.objectives import Objective
from .memory import functional as F
from .memory_level import Gate, MemoryLevel


class one_by_one:
    """Within this context every MemoryStack runs its members one after the other, each on its own state,
    exactly as the generated code ran them before stacking (the same results): what
    benchmarks/train_speed.py measures stacking against."""

    active = False

    def __enter__(self) -> None:
        self.before, one_by_one.active = one_by_one.active, True

    def __exit__(self, *exc) -> None:
        one_by_one.active = self.before


class _Apart(tuple):
    """The members' own states, while a stack runs them one by one."""

    @property
    def position(self) -> int:
        return next((s.position for s in self if s is not None), 0)


class MemoryStack:
    """Memory levels with equal configurations, objectives and head counts, run with their heads stacked
    (member 0's heads first) on the backend of the first (members set to different backends by hand run
    one by one, as do all members inside `one_by_one()`). Not a module: it holds no parameters of its own,
    and it keeps the members' initial states side by side once made, so it lives for one forward call
    (generated code builds one per call)."""

    def __init__(self, *levels: MemoryLevel):
        if len(levels) < 2:
            raise ValueError("a memory stack needs at least two levels")
        first = levels[0]
        for level in levels[1:]:
            if (level.cfg, level.heads) != (first.cfg, first.heads) or not _same(level.objective, first.objective):
                raise ValueError(f"memory levels {first.level_name} and {level.level_name} differ in configuration, "
                                 "objective or heads: they cannot be stacked")
        self.levels = levels
        self._params0: Optional[dict] = None

    @property
    def lead(self) -> MemoryLevel:
        """The member whose backend (and, on 'triton', whose generated kernels) the stack runs."""
        return self.levels[0]

    def params0(self) -> dict:
        """The members' learned initial states side by side: (members x heads, ...)."""
        if self._params0 is None:
            members = [level.params0() for level in self.levels]
            self._params0 = {name: torch.cat([m[name] for m in members], dim=0) for name in members[0]}
        return self._params0

    # ------------------------------------------------------------ states

    def stack_state(self, states: Sequence[Optional[MemoryState]], like: Tensor) -> Optional[MemoryState]:
        """The members' carried states as one (None when none has a state yet); `like` (B, T, ...) gives
        the batch size of a member that has none."""
        if len(states) != len(self.levels):
            raise ValueError(f"a stack of {len(self.levels)} levels needs as many states, got {len(states)}")
        if all(s is None for s in states):
            return None
        if self._apart():
            return _Apart(states)
        full = [s if s is not None else initial_state(lv.cfg, lv.params0(), like.shape[0])
                for lv, s in zip(self.levels, states)]
        positions = {s.position for s in full}
        if len(positions) > 1:
            raise ValueError(f"the members of a memory stack must have seen as many tokens; got {sorted(positions)}")

        def cat(group: str) -> Optional[dict]:
            values = [getattr(s, group) for s in full]
            if values[0] is None:
                return None
            return {name: torch.cat([v[name] for v in values], dim=1) for name in values[0]}

        params = cat("params")
        shared = all(s.anchor[n] is s.params[n] for s in full for n in s.params)
        return MemoryState(params, dict(params) if shared else cat("anchor"), cat("momentum"), positions.pop())

    def split_state(self, state: Optional[MemoryState]) -> tuple[Optional[MemoryState], ...]:
        """Each member's own part of a stacked state (views of it)."""
        if state is None:
            return (None,) * len(self.levels)
        if isinstance(state, _Apart):
            return tuple(state)
        heads = self.lead.heads

        def split(values: Optional[dict]) -> list:
            if values is None:
                return [None] * len(self.levels)
            parts = {name: torch.split(t, heads, dim=1) for name, t in values.items()}
            return [{name: p[i] for name, p in parts.items()} for i in range(len(self.levels))]

        params = split(state.params)
        anchors = [dict(p) for p in params] if all(state.anchor[n] is state.params[n] for n in state.params) \
            else split(state.anchor)
        return tuple(MemoryState(p, a, m, state.position)
                     for p, a, m in zip(params, anchors, split(state.momentum)))

    # ------------------------------------------------------------ calls

    def _repeat(self, t: Tensor) -> Tensor:
        """(B, heads, ...) the same for every member -> (B, members x heads, ...)."""
        return t.repeat(1, len(self.levels), *([1] * (t.dim() - 2)))

    def _outputs(self, y: Tensor) -> tuple[Tensor, ...]:
        return tuple(level._merge(part) for level, part in zip(self.levels, torch.split(y, self.lead.heads, dim=1)))

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, gates: Mapping[str, Gate],
                 state: Optional[MemoryState] = None) -> tuple[tuple[Tensor, ...], MemoryState]:
        """Every member's `forward` on the same q, k, v and gates: (each member's output, the stacked state)."""
        if self._apart(state):
            outs, states = zip(*(level(q, k, v, gates, s) for level, s in zip(self.levels, self.split_state(state))))
            return outs, _Apart(states)
        y, new_state = self._run(q, k, v, gates, state)
        return self._outputs(y), new_state

    def write(self, q: Tensor, k: Tensor, v: Tensor, gates: Mapping[str, Gate],
              state: Optional[MemoryState] = None) -> MemoryState:
        """Every member's `write`: the stacked state after the call, no outputs."""
        if self._apart(state):
            return _Apart(level.write(q, k, v, gates, s) for level, s in zip(self.levels, self.split_state(state)))
        return self._run(q, k, v, gates, state)[1]

    def _apart(self, state: Optional[MemoryState] = None) -> bool:
        """Whether the members run one by one: a state they already hold apart, inside `one_by_one()`, or
        members set to different backends by hand."""
        if isinstance(state, _Apart):
            return True
        return one_by_one.active or len({level.backend for level in self.levels}) > 1

    def _run(self, q, k, v, gates, state) -> tuple[Tensor, MemoryState]:
        lead = self.lead
        qh, kh, vh = lead.split_inputs(q, k, v)
        heads_gates = {name: self._repeat(g) for name, g in lead._gates(gates, kh).items()}
        return lead.run(self._repeat(qh), self._repeat(kh), self._repeat(vh), heads_gates, self.params0(), state,
                        tuple(level.level_name for level in self.levels))

    def read_anchor(self, q: Tensor, state: Optional[MemoryState]) -> tuple[Tensor, ...]:
        """Every member's `read_anchor` of the same q."""
        if self._apart(state):
            return tuple(level.read_anchor(q, s) for level, s in zip(self.levels, self.split_state(state)))
        return self._outputs(F.apply(self.lead.cfg, self._state(state, q).anchor, self._query(q)))

    def read_current(self, q: Tensor, state: Optional[MemoryState]) -> tuple[Tensor, ...]:
        """Every member's `read_current` of the same q."""
        if self._apart(state):
            return tuple(level.read_current(q, s) for level, s in zip(self.levels, self.split_state(state)))
        return self._outputs(F.apply(self.lead.cfg, self._state(state, q).params, self._query(q)))

    def _query(self, q: Tensor) -> Tensor:
        return self._repeat(self.lead._split(q, self.lead.cfg.dk))

    def _state(self, state: Optional[MemoryState], q: Tensor) -> MemoryState:
        return state if state is not None else initial_state(self.lead.cfg, self.params0(), q.shape[0])


def _same(a, b) -> bool:
    """Two objectives compute alike: standard ones of one name and parameters, or one custom function."""
    if isinstance(a, Objective) and isinstance(b, Objective):
        return (a.name, a.params) == (b.name, b.params)
    return a is b
