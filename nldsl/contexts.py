"""Checks of attention prefixes: segments, persistent tokens and per-segment contexts (semantics.md §4.1).

An attention with `persistent N`, `segment L` or `context VALUE` runs over a prefix of tokens that pass
through its own key and value flows, so those flows must be token-wise functions of the block input; a
context is prepended per segment and its memory reads read the memory at the segment's start.
"""

from __future__ import annotations

from . import ir
from .diagnostics import Diagnostic, Label, error, warning

TOKENWISE = ("linear", "rmsnorm", "layernorm", "l2norm", "silu", "gelu", "relu", "tanh", "sigmoid",
             "softplus", "exp", "log", "abs", "sqrt", "min", "max")


def _bindings(model: ir.ModelIR, block: str) -> dict:
    return next((dict(b.bindings) for b in model.blocks if b.name == block), {})


def context_reads(value) -> list:
    """The reads written directly in a context (not inside another read's query)."""
    return [x for x in ir.walk(value, queries=False) if isinstance(x, ir.Read)]


def _not_tokenwise(value, bindings, seen=()):
    """The first node of a flow that is not a token-wise function of the block input, or None."""
    if isinstance(value, (ir.Input, ir.Const)):
        return None
    if isinstance(value, ir.Ref):
        if value.name in seen or value.name not in bindings:
            return None
        return _not_tokenwise(bindings[value.name], bindings, seen + (value.name,))
    if isinstance(value, ir.Bin):
        return _not_tokenwise(value.left, bindings, seen) or _not_tokenwise(value.right, bindings, seen)
    if isinstance(value, ir.Op) and value.fn in TOKENWISE:
        return next((bad for a in value.args if (bad := _not_tokenwise(a, bindings, seen)) is not None), None)
    return value


def attention_checks(model: ir.ModelIR, att: ir.Attention, w) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    context = att.flow("context")
    if att.segment is not None and att.window is not None:
        out.append(error("NL0406", f"`{att.name}` has both a segment and a window", att.span,
                         help="a segment already bounds what a query sees: drop `window`"))
    if context is not None and att.segment is None:
        out.append(error("NL0406", f"the context of `{att.name}` is prepended per segment, but it has no `segment`",
                         context.span, "needs a segment", help="add `segment N`, e.g. the chunk of the memory it reads"))
    if att.segment is not None and att.segment >= model.context:
        out.append(warning("NL0304", f"the segment of `{att.name}` ({att.segment}) covers the whole context",
                           att.span, help="a shorter segment lets the context carry what the attention cannot see"))
    if not att.has_prefix:
        return out
    bindings = _bindings(model, att.block)
    for role in ("key", "value"):
        flow = att.flow(role)
        bad = _not_tokenwise(flow, bindings) if flow is not None else None
        if bad is not None:
            out.append(error("NL0406", f"the {role} of `{att.name}` is not a token-wise function of the block input",
                             flow.span, f"its {role}", labels=[Label(bad.span, "this depends on other tokens or levels")],
                             help="persistent and context tokens pass through the attention's key and value flows: "
                                  "build them from the input with linear, norms and activations only"))
    if context is not None:
        out.extend(_context_checks(model, att, context, w))
    return out


def _context_checks(model: ir.ModelIR, att: ir.Attention, context, w) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    reads = context_reads(context)
    if not reads:
        out.append(error("NL0406", f"the context of `{att.name}` reads no memory", context.span,
                         help="write the read in the context itself, e.g. `context mem(q)`: a read there is "
                              "taken at the segment start"))
    for r in reads:
        lv = model.level(r.level)
        if isinstance(lv, ir.Attention):
            out.append(error("NL0108", f"`{att.name}` takes its context from `{lv.name}`, an attention level",
                             r.span, "not a memory", labels=[Label(lv.span, "declared here")],
                             help="a context reads an in-context memory at the segment start"))
        elif isinstance(lv, ir.Memory) and att.segment is not None and att.segment != lv.chunk:
            out.append(error("NL0304", f"the segment of `{att.name}` ({att.segment} tokens) is not the chunk of "
                             f"`{lv.name}` ({lv.chunk})", r.span, "read at every segment start",
                             labels=[Label(lv.span, f"chunk {lv.chunk}")],
                             help=f"a context reads the memory at its chunk anchor, so the segment is its chunk "
                                  f"([T] §4.1): `segment {lv.chunk}`"))
    w.block = att.block
    have, want = w.of(context), w.of(ir.Input("", context.span))
    if have is not None and want is not None and have != want:
        out.append(error("NL0204", f"the context of `{att.name}` is {have} wide, its tokens are {want} wide",
                         context.span, f"width {have}",
                         help=f"context tokens share the attention's projections with the input: project the "
                              f"read to {want}, e.g. `linear(mem(q), {want})`"))
    return out
