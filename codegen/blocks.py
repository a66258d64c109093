"""Lowering a block to Python: parameter construction and a forward pass in dependency order.

Statements are the block's bindings and one call per memory/attention level. A level's call runs once
its key, value, gates and query are known. Memories whose flows depend on their own reads (HOPE's
self-modifying memories) form a *lockstep group*: they advance together over segments that never cross
a chunk boundary, reading at their anchors, with the values they feed each other computed segment by
segment; every other level runs once over the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nldsl import ir
from nldsl.graph import widths

from .names import Names, camel, doc_text, literal, py

ACT = {"silu": "F.silu", "gelu": "F.gelu", "relu": "F.relu", "tanh": "torch.tanh", "sigmoid": "torch.sigmoid",
       "softplus": "F.softplus", "exp": "torch.exp", "log": "torch.log", "abs": "torch.abs", "sqrt": "torch.sqrt"}
GATE_ROLES = ("lr", "retain", "log_retain", "momentum")
# activations a ShortConv or a BoundedGate applies itself (runtime/layers.py), fused for backend 'triton'
LAYER_ACTS = ("silu", "gelu", "relu", "tanh", "sigmoid", "softplus")


def conv_chain(v):
    """(conv op, activation, l2norm heads or None) when `v` is act(conv(..)), l2norm(conv(..)) or
    l2norm(act(conv(..))): the chain one ShortConv call computes."""
    if not isinstance(v, ir.Op):
        return None
    inner, norm = (v.args[0], True) if v.fn == "l2norm" else (v, False)
    act = "identity"
    if isinstance(inner, ir.Op) and inner.fn in LAYER_ACTS:
        act, inner = inner.fn, inner.args[0]
    if isinstance(inner, ir.Op) and inner.fn == "conv" and (norm or act != "identity"):
        return inner, act, norm
    return None


def _affine(v):
    """(scale, shift, x) with v = shift + scale * x, for v = x, c * x, x * c, c + y, y + c, y - c or
    c - y (y = x or c * x, c a constant): one scale and one shift at most, so nothing is rounded anew."""
    if isinstance(v, ir.Bin) and v.op in "+-":
        if isinstance(v.left, ir.Const) and not isinstance(v.right, ir.Const):
            scale, x = _scaled(v.right)
            return (scale if v.op == "+" else -scale), float(v.left.value), x
        if isinstance(v.right, ir.Const) and not isinstance(v.left, ir.Const):
            scale, x = _scaled(v.left)
            return scale, (float(v.right.value) if v.op == "+" else -float(v.right.value)), x
    scale, x = _scaled(v)
    return scale, 0.0, x


def _scaled(v):
    if isinstance(v, ir.Bin) and v.op == "*":
        if isinstance(v.left, ir.Const) and not isinstance(v.right, ir.Const):
            return float(v.left.value), v.right
        if isinstance(v.right, ir.Const) and not isinstance(v.left, ir.Const):
            return float(v.right.value), v.left
    return 1.0, v


def bounded_gate(v):
    """(act, scale, shift, argument) when `v` is shift + scale * act(z) with a scale or a shift (a gate's
    bounding chain, e.g. `0.5 + 0.5 * sigmoid(z)` or `-softplus(z)`), else None."""
    if not isinstance(v, ir.Bin):
        return None
    scale, shift, x = _affine(v)
    if isinstance(x, ir.Op) and x.fn in LAYER_ACTS and x is not v:
        return x.fn, scale, shift, x.args[0]
    return None


class LoweringError(Exception):
    def __init__(self, message: str, span):
        super().__init__(message)
        self.span = span


@dataclass
class ClassCode:
    name: str
    doc: str
    init: list = field(default_factory=list)
    forward_args: str = "x, state"
    forward: list = field(default_factory=list)


def _refs(v) -> set:
    return {x.name for x in ir.walk(v) if isinstance(x, ir.Ref)}


def _direct_reads(v) -> list:
    """Reads in a value, not counting reads inside another read's query."""
    return [x for x in ir.walk(v, queries=False) if isinstance(x, ir.Read)]


class BlockLowering:
    def __init__(self, model: ir.ModelIR, block: ir.BlockDef):
        self.model, self.block = model, block
        self.bindings = dict(block.bindings)
        self.levels = [model.level(n) for n in block.levels if model.level(n) is not None]
        self.widths = widths(model)
        self.widths.block = block.name
        self.heads = model.constant("heads", 1)
        self.lines: list[str] = []
        self.rename: dict[str, str] = {}       # spec name -> local (the slices of a lockstep group)
        self.read_rename: dict[str, str] = {}  # level name -> local holding its read
        self.tmp = 0
        self.stacks: list[list[str]] = []      # memories run as one rt.MemoryStack (codegen/stacking.py)
        self.carried: dict[str, None] = {}     # the state keys the forward fills in, after `self.prefix`
        self.reads = self._read_sites()
        self.attrs = self._attributes()
        # locals of forward(): the spec's names first (py is one-to-one), then the generator's own
        self.locals = Names({"self", "state", "parts", "start", "end", "torch", "F", "nn", "rt", "sa",
                             "outputs", "seg_start", "seg_end"})
        for name in list(block.params) + list(self.bindings):
            self.locals.claim(("spec", name), py(name))

    # ------------------------------------------------------------ helpers

    def where(self, span) -> str:
        return doc_text(f"{span.file}:{span.line}")

    def _read_sites(self) -> dict:
        sites: dict[str, ir.Read] = {}
        for value in list(self.bindings.values()) + [self.block.output]:
            for r in self._all_reads(value):
                if r.level in sites and sites[r.level] != r:
                    raise LoweringError(f"`{r.level}` is read more than once in its block; read it once and "
                                        "name the result", r.span)
                sites[r.level] = r
        return sites

    def _all_reads(self, v):
        for r in _direct_reads(v):
            yield r
            if r.query is not None:
                yield from self._all_reads(r.query)

    def local(self, level_name: str) -> str:
        return level_name.split(".", 1)[1]

    def out_var(self, level_name: str) -> str:
        return self.locals.claim(("read", level_name), "y_" + py(self.local(level_name)))

    def _attributes(self) -> Names:
        """Attribute names of the block class: levels by their local names, then applied blocks and
        chains, then projections, convolutions and norms by their labels; never two alike (a label may
        equal a level's name or another label: each still gets its own module and state key)."""
        attrs = Names({"prefix", "carried"})
        for lv in self.levels:
            attrs.claim(("level", lv.name), py(self.local(lv.name)))
        values = self._values()
        for value in values:  # each application its own copy, as in the network (language.md §11)
            for node in self._applies(value):
                target = node.target.block if isinstance(node.target, ir.BlockCall) else node.target.cms
                attrs.claim(("apply", node), py(target))
        for value in values:
            for op in self._ops(value):
                if op.fn in ("linear", "conv", "rmsnorm", "layernorm"):
                    attrs.claim(("op", op), py(op.label))
        # an l2norm that no ShortConv applies is a module named after its binding
        named = [(py(name) + "_l2norm", value) for name, value in self.bindings.items()]
        for base, value in named + [("l2norm", value) for value in values]:
            for op in self._ops(value):
                if op.fn == "l2norm" and conv_chain(op) is None:
                    attrs.claim(("op", op), base)
        for name, value in self.bindings.items():
            if bounded_gate(value) is not None:
                attrs.claim(("gate", value), py(name) + "_gate")
        return attrs

    def _values(self) -> list:
        return list(self.bindings.values()) + [self.block.output] + [v for lv in self.levels for _, v in lv.flows]

    def attr(self, kind: str, key) -> str:
        return self.attrs.names[(kind, key)]

    def level_attr(self, level_name: str) -> str:
        return self.attr("level", level_name)

    # ------------------------------------------------------------ expressions

    def expr(self, v) -> str:
        if isinstance(v, (ir.Input, ir.Ref)):
            return self.rename.get(v.name, self.locals.names[("spec", v.name)])
        if isinstance(v, ir.Const):
            return literal(float(v.value))
        if isinstance(v, ir.Read):
            return self.read_rename.get(v.level, self.out_var(v.level))
        if isinstance(v, ir.Bin):
            if ("gate", v) in self.attrs.names:
                return f"self.{self.attr('gate', v)}({self.expr(bounded_gate(v)[3])})"
            return f"({self.expr(v.left)} {v.op} {self.expr(v.right)})"
        if isinstance(v, ir.Apply):
            call = "(" + self.expr(v.arg) + ", state)" if isinstance(v.target, ir.BlockCall) else "(" + self.expr(v.arg) + ")"
            return f"self.{self.attr('apply', v)}{call}"
        assert isinstance(v, ir.Op)
        chain = conv_chain(v)
        if chain is not None:
            conv, act, norm = chain
            extra = f", act={act!r}" if act != "identity" else ""
            if norm:
                extra += f", l2norm_heads={self._heads_for(v.args[0])}"
            return self._conv(conv, extra)
        args = [self.expr(a) for a in v.args]
        if v.fn in ("linear", "rmsnorm", "layernorm"):
            return f"self.{self.attr('op', v)}({args[0]})"
        if v.fn == "conv":
            return self._conv(v, "")
        if v.fn == "l2norm":
            return f"self.{self.attr('op', v)}({args[0]})"
        if v.fn in ("min", "max"):
            return f"torch.{'minimum' if v.fn == 'min' else 'maximum'}({args[0]}, {args[1]})"
        if v.fn == "self":
            raise LoweringError("`self(...)` is only meaningful as a memory's value", v.span)
        return f"{ACT[v.fn]}({args[0]})"

    def _conv(self, v: ir.Op, extra: str) -> str:
        """A ShortConv call as its own statement (it returns its cache); `extra`: its act / l2norm_heads."""
        arg = self.expr(v.args[0])
        self.tmp += 1
        name = self.locals.fresh(f"c{self.tmp}")
        attr = self.attr("op", v)
        key = self.state_key(attr)
        self.lines.append(f"{name}, state[{key}] = self.{attr}({arg}, state.get({key}){extra})")
        return name

    def expr_on(self, v, tokens: str) -> str:
        """`v` computed from other tokens: the block input replaced by `tokens`, bindings inlined (the
        prefix of an attention passes its key and value flows, which are token-wise; nldsl/contexts.py)."""
        if isinstance(v, ir.Input):
            return tokens
        if isinstance(v, ir.Ref):
            return self.expr_on(self.bindings[v.name], tokens)
        if isinstance(v, ir.Const):
            return literal(float(v.value))
        if isinstance(v, ir.Bin):
            return f"({self.expr_on(v.left, tokens)} {v.op} {self.expr_on(v.right, tokens)})"
        if not isinstance(v, ir.Op) or v.fn in ("conv", "self"):
            raise LoweringError("an attention prefix needs token-wise key and value flows", v.span)
        args = [self.expr_on(a, tokens) for a in v.args]
        if v.fn in ("linear", "rmsnorm", "layernorm"):
            return f"self.{self.attr('op', v)}({args[0]})"
        if v.fn == "l2norm":
            return f"rt.l2norm({args[0]}, heads={self._heads_for(v.args[0])})"
        if v.fn in ("min", "max"):
            return f"torch.{'minimum' if v.fn == 'min' else 'maximum'}({args[0]}, {args[1]})"
        return f"{ACT[v.fn]}({args[0]})"

    def _heads_for(self, v) -> int:
        w = self.widths.of(v)
        return self.heads if w and self.heads and w % self.heads == 0 else 1

    # ------------------------------------------------------------ construction

    def state_key(self, attr: str) -> str:
        """The expression of the state key of the module `attr` (a level or a convolution), noted in
        `carried`, which the block class lists (init_lines, after its forward is lowered)."""
        self.carried['.' + attr] = None
        return f"self.prefix + {literal('.' + attr)}"

    def carried_line(self) -> str:
        keys = [f"prefix + {literal(suffix)}" for suffix in self.carried]
        listed = f"{keys[0]}," if len(keys) == 1 else ", ".join(keys)
        return f"self.carried = ({listed})  # state keys"

    def init_lines(self) -> list[str]:
        out = ["self.prefix = prefix"]
        seen = set()
        values = self._values()
        for value in values:
            for op in self._ops(value):
                if op in seen or ("op", op) not in self.attrs.names:
                    continue
                seen.add(op)
                width = self.widths.of(op.args[0])
                attr = self.attr("op", op)
                if op.fn == "l2norm":
                    out.append(f"self.{attr} = rt.L2Norm(heads={self._heads_for(op.args[0])})  # {self.where(op.span)}")
                elif op.fn == "linear":
                    out.append(f"self.{attr} = nn.Linear({width}, {op.option('out')}, bias={op.option('bias')!r})"
                               f"  # {self.where(op.span)}")
                elif op.fn == "conv":
                    out.append(f"self.{attr} = rt.ShortConv({width}, window={op.option('window')})  # {self.where(op.span)}")
                else:
                    cls = "RMSNorm" if op.fn == "rmsnorm" else "LayerNorm"
                    out.append(f"self.{attr} = rt.{cls}({width})  # {self.where(op.span)}")
        for name, value in self.bindings.items():
            gate = bounded_gate(value)
            if gate is not None:
                act, scale, shift, _ = gate
                out.append(f"self.{self.attr('gate', value)} = rt.BoundedGate({act!r}, scale={literal(scale)}, "
                           f"shift={literal(shift)})  # {self.where(value.span)}")
        for lv in self.levels:
            out.append(f"self.{self.level_attr(lv.name)} = {self._level_ctor(lv)}  # {self.where(lv.span)}")
        for value in values:
            for node in self._applies(value):
                target = node.target.block if isinstance(node.target, ir.BlockCall) else node.target.cms
                if ("apply", node) in seen:
                    continue
                seen.add(("apply", node))
                attr = self.attr("apply", node)
                if isinstance(node.target, ir.BlockCall):
                    out.append(f"self.{attr} = {camel(target, 'Block')}(prefix + {literal('.' + attr)})")
                else:
                    out.append(f"self.{attr} = {camel(target, 'Cms')}()")
        return out

    def _ops(self, v):
        return (x for x in ir.walk(v) if isinstance(x, ir.Op))

    def _applies(self, v):
        return (x for x in ir.walk(v) if isinstance(x, ir.Apply))

    def _level_ctor(self, lv) -> str:
        if isinstance(lv, ir.Attention) and lv.has_prefix:
            return (f"sa.SegmentAttention({lv.heads}, {lv.dk}, {lv.dv}, width={self.widths.of(ir.Input('', lv.span))}, "
                    f"segment={literal(lv.segment)}, window={literal(lv.window)}, persistent={lv.persistent}, "
                    f"scale={literal(lv.scale)})")
        if isinstance(lv, ir.Attention):
            return (f"rt.CausalAttention({lv.heads}, {lv.dk}, {lv.dv}, window={literal(lv.window)}, "
                    f"scale={literal(lv.scale)})")
        return f"rt.MemoryLevel({self.memory_args(lv)}, name={literal(lv.name)})"

    def memory_args(self, lv: ir.Memory) -> str:
        """A memory level's constructor arguments but its name: levels with equal ones compute alike."""
        rules = ", ".join(f"rt.Rule({r.kind!r}" + (f", at={r.at!r}" if r.at == "current" else "")
                          + (", per_layer=True" if r.per_layer else "") + ")" for r in lv.rules)
        cfg = (f"rt.MemoryConfig(family={lv.family!r}, dk={lv.dk}, dv={lv.dv}, depth={lv.depth}, "
               f"hidden={lv.hidden}, act={lv.act!r}, residual={lv.residual!r}, bias={lv.bias!r}, "
               f"rules=({rules},), read={lv.read!r}, chunk={lv.chunk}, self_target={lv.self_target!r}"
               + (f", clip={literal(lv.clip)}" if lv.clip is not None else "") + ")")
        return f"{cfg}, {self._objective(lv)}, heads={lv.heads}, learn_init={lv.init_by is not None!r}"

    def _objective(self, lv: ir.Memory) -> str:
        o = lv.objective
        if o.name == "custom":
            return f"objective_{py(lv.name)}"
        params = "".join(f", {k}={literal(v)}" for k, v in o.params)
        return f"rt.standard_objective({o.name!r}{params})"
