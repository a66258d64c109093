"""Memory and attention levels: from a declaration (kind template + instance overrides) to IR.

`level_proto` gathers every field that does not depend on widths (clock, rules, objective, read,
lifetime, flows as dataflow values); `finish` builds the frozen IR once dimension inference has fixed
dk and dv.
"""

from __future__ import annotations

import dataclasses
import math

from . import ast, ir, phrases, schema
from .consts import Fail, import_prefix, library_constants, suggest
from .diagnostics import Label, error
from .dims import Unknowns
from .levels import call_args, guarded, heads_of, merged_props, type_call
from .values import ValueBuilder

FLOW_ROLES = ("key", "value", "query", "context", "lr", "retain", "log_retain", "momentum")


def _template(el, decl: ast.Decl):
    """(template decl or None, the decl giving the type): `memory a : selfmod` names a kind."""
    if decl.type is not None and len(decl.type.words) == 1 and isinstance(decl.type.words[0], ast.Name):
        name = decl.type.words[0].id
        if name in el.templates:
            tmpl = el.templates[name]
            if tmpl.kind != decl.kind:
                article = "an" if tmpl.kind[0] in "aeiou" else "a"
                raise Fail(error("NL0108", f"`{name}` is {article} {tmpl.kind} kind, not a {decl.kind} kind",
                                 decl.type.span, f"{article} {tmpl.kind}",
                                 labels=[Label(next((i.span for i in tmpl.names if i.name == name.split(".")[-1]),
                                                tmpl.span), f"`{name}` is declared here")],
                                 help=f"declare it with `{decl.kind} {name} : ...`, or use a {decl.kind} kind"))
            return tmpl, name
    return None, ""


def level_proto(el, decl: ast.Decl, ident: ast.Ident, block: str, builder) -> dict | None:
    sink = el.sink
    try:
        tmpl, tname = _template(el, decl)
    except Fail as f:
        sink.add(f.diag)
        return None
    typed = tmpl if tmpl is not None else decl
    # a kind from a library imported `as L` (`L.lmm`) reads the library's own constants bare
    library = library_constants(el.env, import_prefix(tname))
    env = {**el.env, **library}
    kind = decl.kind
    key_kind = "memory" if kind == "memory" else "attention"
    props = merged_props(tmpl.body if tmpl else None, decl.body, key_kind, sink)
    name = f"{block}.{ident.name}"
    try:
        tname_word, call, rest, head = type_call(typed.type, kind, ident.span)
        if tname_word not in schema.DECL_TYPES[kind]:
            known = list(schema.DECL_TYPES[kind]) + [n for n, t in el.templates.items() if t.kind == kind]
            raise Fail(error("NL0206", f"unknown {kind} type `{tname_word}`", head.span,
                             help=suggest(tname_word or "", known) or " | ".join(schema.DECL_TYPES[kind])))
        heads = heads_of(rest, env, typed.type.span)
        if kind == "memory" and tname_word == "mlp":
            targs = call_args(call, schema.MLP_MEMORY_ARGS, env, "`mlp`")
        elif call is not None:
            raise Fail(error("NL0107", f"`{tname_word}` takes no arguments", call.span))
        else:
            targs = {}
    except Fail as f:
        if f.diag is not None:
            sink.add(f.diag)
        return None
    flows, failed = {}, False
    own = {s.key for s in decl.body or () if isinstance(s, ast.Prop)}
    in_library = ValueBuilder(dataclasses.replace(builder.scope, consts={**builder.scope.consts, **library})) \
        if library else builder
    for role in FLOW_ROLES:
        if role in props:
            expr = guarded(sink, phrases.one_expr, props[role])
            v = None
            if expr is not None:
                label = f"{ident.name}_{role}"
                by = in_library if role not in own else builder  # a flow of the kind, or of this declaration
                v = el._value(by, expr, label, allow_self=(role == "value" and kind == "memory"))
            if v is not None:
                flows[role] = v
            else:
                failed = True
    proto = {"name": name, "block": block, "kind": kind, "template": tname, "ident": ident, "decl": typed,
             "props": props, "env": env, "flows": flows, "failed": failed, "heads": heads, "family": tname_word, "targs": targs,
             "unknowns": Unknowns(heads, residual=bool(targs.get("residual", False)))}
    for role in ("key", "value"):
        if role not in flows and role not in props:
            proto["failed"] = True  # its widths cannot be inferred: that is a consequence
            sink.add(error("NL0104", f"`{name}` has no `{role}`", ident.span,
                           help=f"add `{role} <expression>` to the {kind} or its kind"))
    return proto


def finish(el, protos: dict):
    memories, attentions = [], []
    for name, p in protos.items():
        u = p["unknowns"]
        if u.dk is None or u.dv is None:
            if p["failed"] or u.reported:
                continue  # the flow or width that failed has its own diagnostic
            el.sink.add(error("NL0204", f"cannot infer the widths of `{name}`", p["ident"].span,
                              help="give its key a known width, e.g. `key linear(x, dim)`"))
            continue
        builder = _memory if p["kind"] == "memory" else _attention
        level = builder(el, p, u)
        if level is not None:
            (memories if p["kind"] == "memory" else attentions).append(level)
    return memories, attentions


def _attention(el, p, u) -> ir.Attention | None:
    props, sink = p["props"], el.sink
    window = None
    if "window" in props:
        window = guarded(sink, lambda: phrases.positive_int(phrases.one_expr(props["window"]), p["env"], "a window"))
    scale = None
    if "scale" in props:
        scale = guarded(sink, lambda: phrases.number(phrases.one_expr(props["scale"]), p["env"], "scale"))
    segment = None
    if "segment" in props:
        segment = guarded(sink, lambda: phrases.positive_int(phrases.one_expr(props["segment"]), p["env"], "a segment"))
    persistent = 0
    if "persistent" in props:
        persistent = guarded(sink, lambda: phrases.positive_int(phrases.one_expr(props["persistent"]), p["env"],
                                                                 "a number of persistent tokens"), default=0)
    clock = ir.Clock("tokens", 1, p["ident"].span)
    if "clock" in props:
        clock = guarded(sink, phrases.clock, props["clock"], p["env"]) or clock
        if clock.unit != "tokens" or clock.period != 1:
            sink.add(error("NL0301", "attention's state grows every token", clock.span, "expected `every 1 token`"))
    return ir.Attention(p["name"], p["block"], p["heads"], u.dk, u.dv, window, scale, clock,
                        tuple(p["flows"].items()), p["ident"].span, segment=segment, persistent=persistent or 0)


def _memory(el, p, u) -> ir.Memory | None:
    props, sink, env = p["props"], el.sink, p["env"]
    name = p["name"]
    clock = ir.Clock("tokens", 1, p["ident"].span)
    if "clock" in props:
        clock = guarded(sink, phrases.clock, props["clock"], env) or clock
        if clock.unit == "steps":
            sink.add(error("NL0301", "an in-context memory ticks in tokens", clock.span,
                           "expected `every N tokens` or `never`"))
    chunk = 1
    if "chunk" in props:
        chunk = guarded(sink, lambda: phrases.positive_int(phrases.one_expr(props["chunk"]), env, "a chunk size"), default=1)
    if "update" not in props:
        sink.add(error("NL0104", f"`{name}` has no update rule", p["ident"].span,
                       help="add `update gd`, `update retain, momentum`, `update dgd`, ..."))
        return None
    rules = guarded(sink, phrases.rules, props["update"])
    objective = ir.Objective("l2", (), None, p["ident"].span)
    if "objective" in props:
        objective = guarded(sink, phrases.objective, props["objective"], env) or objective
    read = guarded(sink, phrases.read_mode, props["read"], default="after") if "read" in props else "after"
    clip = guarded(sink, _clip, props["clip"], env) if "clip" in props else None
    lifetime = guarded(sink, phrases.lifetime, props["state"], default="reset") if "state" in props else "reset"
    init_by = el.outer_name
    if "init" in props:
        init_by = guarded(sink, phrases.by_level, props["init"], True, default=el.outer_name)
        if init_by is not None and init_by != el.outer_name:
            sink.add(error("NL0101", f"unknown level `{init_by}` in `init by`", props["init"].values[0].words[-1].span,
                           "not the outer level",
                           help=f"the initial state is learned by the outer level `{el.outer_name}`, or use `init zero`"))
    if rules is None:
        return None
    if clip is not None and not any(r.kind in schema.GRADIENT_RULES for r in rules):
        sink.add(error("NL0502", "`clip` bounds the inner gradient, and no rule of the update takes one",
                       props["clip"].span, "nothing to clip",
                       help="remove `clip`, or add a rule that takes a gradient: `gd`, `momentum` or `dgd`"))
        return None
    t = p["targs"]
    family = p["family"]
    depth = int(t.get("depth", 1)) if family == "mlp" else 1
    hidden = t.get("hidden") if family == "mlp" else 0
    if family == "mlp":
        if hidden is None:
            hidden = 4 * u.dk
        for key, val in (("depth", depth), ("hidden", hidden)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                sink.add(error("NL0203", f"the `{key}` of an mlp memory must be a positive integer",
                               p["decl"].type.span if p["decl"].type else p["ident"].span, f"{key} = {val!r}"))
                return None
        if t.get("act") not in schema.ACTIVATIONS:
            call = p["decl"].type.words[0] if p["decl"].type is not None else None
            span = next((kw.value.span for kw in getattr(call, "kwargs", ()) if kw.name == "act"), p["ident"].span)
            sink.add(error("NL0206", f"unknown activation `{t.get('act')}`", span, "unknown activation",
                           help=suggest(str(t.get("act")), schema.ACTIVATIONS) or ", ".join(schema.ACTIVATIONS)))
            return None
    value = p["flows"].get("value")
    self_target = isinstance(value, ir.Op) and value.fn == "self"
    return ir.Memory(name, p["block"], p["template"], family, depth, hidden or 0, t.get("act", "identity"),
                     bool(t.get("residual", False)), bool(t.get("bias", False)), p["heads"], u.dk, u.dv, chunk,
                     clock, rules, objective, read, self_target, lifetime, init_by, tuple(p["flows"].items()),
                     p["ident"].span, clip=clip)


def _clip(prop: ast.Prop, env) -> float:
    """`clip c`: a positive number, the bound on each token's inner gradient norm."""
    expr = phrases.one_expr(prop)
    c = phrases.number(expr, env, "a gradient-norm bound")
    if not (c > 0 and math.isfinite(c)):
        raise Fail(error("NL0205", "`clip` needs a positive bound", expr.span, f"this is {c:g}",
                         help="e.g. `clip 1.0`: every token's gradient is scaled to a norm of at most 1"))
    return float(c)
