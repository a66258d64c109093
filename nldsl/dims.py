"""Dimension inference: the per-head key and value widths of every memory and attention level.

Widths flow from the block input (the model's `dim`), `linear(x, out)` and reads (heads × dv). Each
level adds equations: width(key) = heads·dk, width(value) = heads·dv, width(query of a read) =
heads·dk, width(e in self(e)) = heads·dk, and dk = dv for a residual memory. They are solved by
propagation to a fixed point; a residual of inconsistent equations is a dimension mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ir
from .diagnostics import Label, Sink, error


@dataclass
class Unknowns:
    heads: int
    dk: int | None = None
    dv: int | None = None
    residual: bool = False
    spans: dict = field(default_factory=dict)  # which span fixed dk / dv (for messages)
    via_residual: set = field(default_factory=set)  # widths fixed by dk = dv of a residual memory
    reported: bool = False  # a width error of this level was reported: later ones are consequences


class Widths:
    def __init__(self, dim: int, bindings: dict, unknowns: dict):
        self.dim = dim
        self.bindings = bindings  # (block, name) → Value
        self.unknowns = unknowns  # level → Unknowns
        self.block = ""

    def of(self, v, seen=()) -> int | None:
        if isinstance(v, ir.Input):
            return self.dim
        if isinstance(v, ir.Const):
            return None
        if isinstance(v, ir.Ref):
            key = (self.block, v.name)
            if key in seen or key not in self.bindings:
                return None
            return self.of(self.bindings[key], seen + (key,))
        if isinstance(v, ir.Op):
            if v.fn == "linear":
                return v.option("out")
            if v.fn == "self":
                return None
            return joint_width([self.of(a, seen) for a in v.args])
        if isinstance(v, ir.Bin):
            return joint_width([self.of(v.left, seen)] if v.op == "**" else [self.of(v.left, seen), self.of(v.right, seen)])
        if isinstance(v, ir.Read):
            u = self.unknowns.get(v.level)
            return u.heads * u.dv if u is not None and u.dv is not None else None
        if isinstance(v, ir.Apply):
            return self.dim
        return None


def joint_width(widths: list) -> int | None:
    """The width of an elementwise result: its operands' common width, where a width of 1 broadcasts and
    None (a number, or unknown) adapts; None where the operands disagree (check_elementwise reports it)."""
    known = {w for w in widths if w is not None}
    if len(known) > 1:
        known.discard(1)
    return known.pop() if len(known) == 1 else None


def _report(u: Unknowns, sink: Sink, diag) -> None:
    if not u.reported:
        sink.add(diag)
        u.reported = not isinstance(sink, _Quiet)


def _set(u: Unknowns, which: str, total: int | None, span, level: str, sink: Sink) -> bool:
    """Record heads·d = total; returns True when it taught something new."""
    if total is None:
        return False
    if total % u.heads:
        _report(u, sink, error("NL0204", f"width {total} does not split into {u.heads} heads for `{level}`", span,
                               f"width {total}", help=f"make it a multiple of {u.heads}"))
        return False
    d = total // u.heads
    cur = getattr(u, which)
    if cur is None:
        setattr(u, which, d)
        u.spans[which] = span
        if u.residual:
            other = "dv" if which == "dk" else "dk"
            if getattr(u, other) is None:
                setattr(u, other, d)
                u.spans[other] = span
                u.via_residual.add(other)
        return True
    if cur != d:
        first = u.spans.get(which)
        other = "dv" if which == "dk" else "dk"
        if which in u.via_residual:
            _report(u, sink, error(
                "NL0204", f"`{level}` is residual, so its key and value widths must agree: {other} is {cur} "
                f"per head, this gives {which} = {d}", span, f"{total} = {u.heads} × {d}",
                labels=[Label(first, f"{other} = {cur} from here")] if first is not None and first != span else [],
                help="M(k) = k + mlp(k) needs dk = dv; drop `residual = true` or change a width"))
        else:
            _report(u, sink, error(
                "NL0204", f"dimension mismatch for `{level}`: {which} is {cur} per head, this flow gives {d}",
                span, f"{total} = {u.heads} × {d}",
                labels=[Label(first, f"{which} = {cur} from here")] if first is not None and first != span else [],
                help="a flow into a level must have the level's width"))
    return False


def infer(levels: dict, width: Widths, sink: Sink) -> None:
    """levels: name → (block, Unknowns, flows dict role → Value, reads list[(block, Read)])."""
    for _ in range(8):
        changed = False
        for name, (block, u, flows, reads) in levels.items():
            width.block = block
            key = flows.get("key")
            if key is not None:
                changed |= _set(u, "dk", width.of(key), key.span, name, _Quiet())
            value = flows.get("value")
            if isinstance(value, ir.Op) and value.fn == "self":
                changed |= _set(u, "dk", width.of(value.args[0]), value.span, name, _Quiet())
            elif value is not None:
                changed |= _set(u, "dv", width.of(value), value.span, name, _Quiet())
            for rblock, read in reads:
                width.block = rblock
                if read.query is not None:
                    changed |= _set(u, "dk", width.of(read.query), read.query.span, name, _Quiet())
        if not changed:
            break
    # a final pass reports every inconsistency with spans
    for name, (block, u, flows, reads) in levels.items():
        if u.dv is None and u.dk is not None and isinstance(flows.get("value"), ir.Op):
            u.dv = u.dk  # a self-generated target of unknown width returns the key width
        width.block = block
        for role in ("key",):
            if flows.get(role) is not None:
                _set(u, "dk", width.of(flows[role]), flows[role].span, name, sink)
        value = flows.get("value")
        if isinstance(value, ir.Op) and value.fn == "self":
            _set(u, "dk", width.of(value.args[0]), value.span, name, sink)
        elif value is not None:
            _set(u, "dv", width.of(value), value.span, name, sink)
        for rblock, read in reads:
            width.block = rblock
            if read.query is not None:
                _set(u, "dk", width.of(read.query), read.query.span, name, sink)
        if u.residual and u.dk is not None and u.dv is not None and u.dk != u.dv and not u.reported:
            sink.add(error("NL0204", f"`{name}` is residual, so its key and value widths must agree",
                           u.spans.get("dv") or u.spans.get("dk"), f"dk = {u.dk}, dv = {u.dv}",
                           help="M(k) = k + mlp(k) needs dk = dv; drop `residual` or change a width"))


def check_elementwise(blocks, width: Widths, sink: Sink) -> None:
    """Elementwise `+ - * /`, `min` and `max` take operands of one width, or a number, or a width of 1
    (which broadcasts); anything else would fail only when the model runs. Each binding and output of
    the blocks is walked once, without following references (their values are walked themselves)."""
    for block in blocks:
        width.block = block.name
        for value in [v for _, v in block.bindings] + [block.output]:
            _walk_elementwise(value, width, sink)


def _walk_elementwise(v, width: Widths, sink: Sink) -> None:
    pairs = []
    if isinstance(v, ir.Bin):
        pairs = [(v.op, v.left, v.right)] if v.op != "**" else []
        children = (v.left, v.right)
    elif isinstance(v, ir.Op):
        pairs = [(v.fn, v.args[0], v.args[1])] if v.fn in ("min", "max") and len(v.args) == 2 else []
        children = v.args
    else:
        return
    for op, left, right in pairs:
        a, b = width.of(left), width.of(right)
        if a is not None and b is not None and joint_width([a, b]) is None:
            shown_op = f"`{op}`" if op in ("min", "max") else f"elementwise `{op}`"
            sink.add(error("NL0204", f"{shown_op} needs operands of the same width: {a} and {b}", v.span,
                           f"width {a} {op} width {b}" if op not in ("min", "max") else f"widths {a} and {b}",
                           help="project one side with `linear(..., width)`, or use a number or a width of 1"))
    for child in children:
        _walk_elementwise(child, width, sink)


class _Quiet(Sink):
    """Swallows diagnostics during propagation; the final pass reports them once."""

    def add(self, diag):
        pass
