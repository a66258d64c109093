"""The checked intermediate representation: what a spec means, as frozen dataclasses.

Produced by `nldsl.elaborate` from the AST; consumed by the checks, the level graph and the code
generator. Every node keeps the span of the spec text it comes from, so that later passes can still
point at the source. Sizes here are per head unless a name says `total`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

from .ast import Span

# ---------------------------------------------------------------- clocks


@dataclass(frozen=True)
class Clock:
    unit: str  # 'tokens' | 'steps' | 'never'
    period: Optional[int]
    span: Span

    def in_tokens(self, context: int) -> float:
        """The period in tokens (a step is one sequence of `context` tokens); never is infinite."""
        if self.unit == "never" or self.period is None:
            return math.inf
        return self.period * (context if self.unit == "steps" else 1)

    @property
    def text(self) -> str:
        if self.unit == "never":
            return "never"
        unit = self.unit[:-1] if self.period == 1 else self.unit
        return f"every {self.period} {unit}"


# ---------------------------------------------------------------- dataflow inside blocks


@dataclass(frozen=True)
class Input:
    name: str
    span: Span


@dataclass(frozen=True)
class Const:
    value: float
    span: Span


@dataclass(frozen=True)
class Op:
    """A builtin function application: linear, conv, l2norm, sigmoid, rmsnorm, ..."""

    fn: str
    args: tuple["Value", ...]
    options: tuple[tuple[str, object], ...]
    span: Span
    label: str = ""  # a stable name for the parameters it owns, e.g. "q" for `q = linear(x, dim)`

    def option(self, name, default=None):
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class Bin:
    op: str
    left: "Value"
    right: "Value"
    span: Span


@dataclass(frozen=True)
class Read:
    """Reading a memory or attention level with a query."""

    level: str
    query: "Value"
    span: Span


@dataclass(frozen=True)
class Ref:
    """A use of a block-local binding (kept so generated code can name intermediate values)."""

    name: str
    span: Span


@dataclass(frozen=True)
class Apply:
    """Applying a network function (block, cms chain, norm) to a value inside a block."""

    target: "Net"
    arg: "Value"
    span: Span


Value = Union[Input, Const, Op, Bin, Read, Ref, Apply]


# ---------------------------------------------------------------- levels


@dataclass(frozen=True)
class Rule:
    kind: str  # retain | gd | momentum | delta | dgd
    at: str  # anchor | current | none (delta, retain)
    per_layer: bool
    span: Span


@dataclass(frozen=True)
class Objective:
    name: str  # l2 | sq | mse | dot | l1 | huber | lp | custom
    params: tuple[tuple[str, float], ...]
    expr: object  # the AST expression of a custom objective (in `r`), else None
    span: Span

    @property
    def text(self) -> str:
        if self.name == "custom":
            return "custom"
        if self.params:
            return f"{self.name}({', '.join(f'{v:g}' for _, v in self.params)})"
        return self.name


@dataclass(frozen=True)
class Optimizer:
    name: str  # level name of the optimizer node
    kind: str
    args: tuple[tuple[str, object], ...]
    span: Span
    declared: bool  # an `optimizer` declaration (True) or written inline (False)

    def arg(self, key, default=None):
        return dict(self.args).get(key, default)

    @property
    def text(self) -> str:
        inner = ", ".join(f"{k} = {_fmt(v)}" for k, v in self.args if v is not None)
        return f"{self.kind}({inner})"


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


@dataclass(frozen=True)
class Memory:
    name: str  # qualified: block.level
    block: str
    template: str  # the memory kind it was instantiated from ('' for a direct declaration)
    family: str  # linear | mlp
    depth: int
    hidden: int
    act: str
    residual: bool
    bias: bool
    heads: int
    dk: int
    dv: int
    chunk: int
    clock: Clock
    rules: tuple[Rule, ...]
    objective: Objective
    read: str  # before | after | anchor
    self_target: bool
    lifetime: str  # reset | persist
    init_by: Optional[str]  # level that learns θ_0, or None for a zero initial state
    flows: tuple[tuple[str, Value], ...]  # key, value, query, lr, retain, log_retain, momentum
    span: Span
    kind: str = "memory"
    clip: Optional[float] = None  # per-token gradient-norm bound, None: unclipped

    def flow(self, role):
        return dict(self.flows).get(role)

    @property
    def type_text(self) -> str:
        if self.family == "linear":
            return f"linear {self.dv}×{self.dk}"
        extra = ", residual" if self.residual else ""
        return f"mlp(depth={self.depth}, hidden={self.hidden}, act={self.act}{extra})"

    @property
    def layer_shapes(self) -> tuple[tuple[int, int], ...]:
        """(out, in) of each weight matrix of one head's memory."""
        if self.family == "linear" or self.depth == 1:
            return ((self.dv, self.dk),)
        dims = [self.dk] + [self.hidden] * (self.depth - 1) + [self.dv]
        return tuple((dims[i + 1], dims[i]) for i in range(self.depth))


@dataclass(frozen=True)
class Attention:
    name: str
    block: str
    heads: int
    dk: int
    dv: int
    window: Optional[int]
    scale: Optional[float]
    clock: Clock
    flows: tuple[tuple[str, Value], ...]
    span: Span
    kind: str = "attention"
    segment: Optional[int] = None  # attend within segments of this many tokens (semantics.md §4.1)
    persistent: int = 0  # learned tokens every query sees

    @property
    def has_prefix(self) -> bool:
        """Whether it runs as a SegmentAttention: persistent tokens, segments or a context."""
        return self.segment is not None or self.persistent > 0 or self.flow("context") is not None

    def flow(self, role):
        return dict(self.flows).get(role)

    @property
    def type_text(self) -> str:
        text = f"softmax, window {self.window}" if self.window else "softmax, causal"
        if self.segment:
            text = f"softmax, segments of {self.segment}"
        return text + (f", {self.persistent} persistent tokens" if self.persistent else "")


@dataclass(frozen=True)
class CmsMember:
    name: str  # chain.member
    chain: str
    hidden: int
    width: int
    act: str
    bias: bool
    clock: Clock
    optimizer: Optimizer
    lr: float
    span: Span
    kind: str = "cms"

    @property
    def type_text(self) -> str:
        return f"mlp {self.width}→{self.hidden}→{self.width}"


@dataclass(frozen=True)
class Cms:
    name: str
    variant: str  # sequential | independent | nested
    agg: str
    members: tuple[CmsMember, ...]
    taught_by: str
    lifetime: str  # persist | reset
    flush: str  # partial | drop
    width: int
    span: Span

    def initial_learner(self, member: CmsMember, outer: str) -> Optional[str]:
        """Who learns the initial state `member` is reset to (semantics §5), or None when it never resets.

        In a nested chain the previous member (when it ticks) learns it and resets `member` at the end
        of each of its windows; under `reset per sequence` the outer level learns the others, and every
        sequence starts from them. A frozen member (`clock never`) is the outer level's own weights."""
        if member.clock.unit == "never":
            return None
        index = self.members.index(member)
        if self.variant == "nested" and index > 0 and self.members[index - 1].clock.unit != "never":
            return self.members[index - 1].name
        return outer if self.lifetime == "reset" else None


@dataclass(frozen=True)
class Outer:
    name: str
    clock: Clock
    objective: str
    optimizer: Optimizer
    clip: Optional[float]
    bptt: str
    warmup: int
    schedule: str
    span: Span
    kind: str = "outer"

    @property
    def type_text(self) -> str:
        return f"outer, {self.objective}"


Level = Union[Memory, Attention, CmsMember, Outer]


# ---------------------------------------------------------------- network


@dataclass(frozen=True)
class Seq:
    stages: tuple["Net", ...]
    span: Span


@dataclass(frozen=True)
class Residual:
    inner: "Net"
    span: Span


@dataclass(frozen=True)
class Stack:
    inner: "Net"
    count: int
    span: Span
    name: str = "layer"  # the binding it repeats (`stack(layer, 4)`), used to name the modules


@dataclass(frozen=True)
class Embed:
    vocab: int
    dim: int
    span: Span


@dataclass(frozen=True)
class LMHead:
    tied: bool
    span: Span


@dataclass(frozen=True)
class Norm:
    kind: str  # rmsnorm | layernorm
    span: Span


@dataclass(frozen=True)
class BlockCall:
    block: str
    span: Span


@dataclass(frozen=True)
class CmsCall:
    cms: str
    span: Span


Net = Union[Seq, Residual, Stack, Embed, LMHead, Norm, BlockCall, CmsCall]


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[str, ...]
    bindings: tuple[tuple[str, Value], ...]
    output: Value
    levels: tuple[str, ...]  # memory and attention levels declared in it, qualified
    span: Span


@dataclass(frozen=True)
class ModelIR:
    name: str
    file: str
    constants: tuple[tuple[str, object], ...]
    vocab: int
    dim: int
    context: int
    outer: Outer
    memories: tuple[Memory, ...]
    attentions: tuple[Attention, ...]
    cms: tuple[Cms, ...]
    optimizers: tuple[Optimizer, ...]
    blocks: tuple[BlockDef, ...]
    network: Net
    replicas: tuple[tuple[str, int], ...] = field(default=())
    span: Optional[Span] = None

    def constant(self, name, default=None):
        return dict(self.constants).get(name, default)

    @property
    def levels(self) -> tuple:
        members = tuple(m for c in self.cms for m in c.members)
        return self.memories + self.attentions + members + (self.outer,)

    def level(self, name):
        for lv in self.levels:
            if lv.name == name:
                return lv
        return None

    def replica_count(self, name: str) -> int:
        return dict(self.replicas).get(name, 1)


# ---------------------------------------------------------------- traversal


def children(v) -> tuple:
    """The values a dataflow node reads directly."""
    if isinstance(v, Op):
        return v.args
    if isinstance(v, Bin):
        return (v.left, v.right)
    if isinstance(v, Read):
        return (v.query,) if v.query is not None else ()
    if isinstance(v, Apply):
        return (v.arg,)
    return ()


def walk(value, bindings: Optional[dict] = None, queries: bool = True):
    """Every node below `value`, pre-order, left to right.

    With `bindings` (a block's name → value), a `Ref` is followed into its binding (each once); with
    `queries=False` the query of a `Read` is not entered (the read itself is still yielded).
    """
    seen: set = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if v is None:
            continue
        yield v
        if isinstance(v, Ref) and bindings is not None and v.name in bindings and v.name not in seen:
            seen.add(v.name)
            stack.append(bindings[v.name])
        elif not (isinstance(v, Read) and not queries):
            stack.extend(reversed(children(v)))
