"""Reading level declarations (memory, attention, cms, outer level, optimizer) into IR fields.

Each reader checks the declaration's keys against `schema.KEYS` (unknown keys get "did you mean",
repeated keys are reported) and returns plain fields; `elaborate` assembles them into IR nodes once
the block dataflow and the widths are known.
"""

from __future__ import annotations

from . import ast, ir, phrases, schema
from .consts import Fail, fold, suggest
from .diagnostics import Label, Sink, error


def props_of(body, kind: str, sink: Sink, *, allow_decls: tuple[str, ...] = ()) -> dict:
    """The properties of a declaration body by key; reports unknown and repeated keys."""
    keys = schema.KEYS[kind]
    out: dict[str, ast.Prop] = {}
    for stmt in body or ():
        if isinstance(stmt, ast.Prop):
            if stmt.key not in keys:
                alias = schema.KEY_ALIASES.get(stmt.key)
                hint = (suggest(stmt.key, keys) or (f"did you mean `{alias}`?" if alias in keys else "")
                        or f"accepted: {', '.join(keys)}")
                sink.add(error("NL0103", f"unknown key `{stmt.key}` for {_what(kind)}", stmt.key_span,
                               "unknown key", help=hint))
            elif stmt.key in out:
                sink.add(error("NL0109", f"`{stmt.key}` is given more than once", stmt.key_span, "again here",
                               labels=[Label(out[stmt.key].key_span, "first given here")],
                               help=f"keep one `{stmt.key}` line; a property is given once per declaration"))
            else:
                out[stmt.key] = stmt
        elif isinstance(stmt, ast.Decl) and stmt.kind in allow_decls:
            continue
        else:
            sink.add(error("NL0108", f"this statement does not belong in {_what(kind)}",
                           stmt.span, help="a declaration body holds `key value` properties"))
    return out


def _what(kind: str) -> str:
    return {"level": "the outer level", "cms_level": "a cms level", "attention": "an attention level",
            "optimizer": "an optimizer"}.get(kind, f"a {kind}")


def merged_props(template_body, instance_body, kind: str, sink: Sink) -> dict:
    base = props_of(template_body, kind, sink)
    base.update(props_of(instance_body, kind, sink))
    return base


def guarded(sink: Sink, fn, *args, default=None):
    """Run a reader; on Fail record its diagnostic and return `default`."""
    try:
        return fn(*args)
    except Fail as f:
        if f.diag is not None:
            sink.add(f.diag)
        return default


def type_call(phrase: ast.Phrase | None, kind: str, span: ast.Span):
    """The head word of a declaration's type and its call, plus the remaining words."""
    if phrase is None:
        raise Fail(error("NL0104", f"a {kind} declaration needs a type: `{kind} NAME : TYPE`", span,
                         help=" | ".join(schema.DECL_TYPES[kind])))
    head = phrase.words[0]
    name = phrases.word(head) or (head.func.id if isinstance(head, ast.Call) else None)
    return name, (head if isinstance(head, ast.Call) else None), phrase.words[1:], head


def call_args(call: ast.Call | None, defaults: dict, env, what: str) -> dict:
    """Keyword arguments of a type or optimizer call, folded, checked against `defaults`."""
    out = dict(defaults)
    if call is None:
        return out
    names = list(defaults)

    def value(key, expr):
        # word-valued arguments (`act = silu`, `agg = mean`) are written as bare names
        if isinstance(defaults[key], str) and isinstance(expr, ast.Name) and expr.id not in env:
            return expr.id
        return fold(expr, env)

    for i, a in enumerate(call.args):
        if i >= len(names):
            raise Fail(error("NL0107", f"too many arguments for {what}", a.span,
                             f"{what} takes at most {len(names)}",
                             help=f"its arguments, in order: {', '.join(names)}; name them: `{names[0]} = ...`"))
        out[names[i]] = value(names[i], a)
    for kw in call.kwargs:
        if kw.name not in defaults:
            raise Fail(error("NL0107", f"{what} has no argument `{kw.name}`", kw.span,
                             help=suggest(kw.name, names) or f"arguments: {', '.join(names)}"))
        if kw.name in names[: len(call.args)]:
            at = names.index(kw.name)
            raise Fail(error("NL0107", f"`{kw.name}` of {what} is given twice: by position and by name", kw.span,
                             "given again here", labels=[Label(call.args[at].span, f"`{kw.name}` by position")],
                             help=f"give `{kw.name}` once, e.g. only `{kw.name} = ...`"))
        out[kw.name] = value(kw.name, kw.value)
    return out


def heads_of(words, env, span) -> int:
    """`per head` (the constant `heads`), `per N heads`, or nothing (one head)."""
    got = [phrases.word(w) for w in words]
    if not words:
        return 1
    if got == ["per", "head"]:
        if "heads" not in env:
            raise Fail(error("NL0101", "`per head` needs a constant `heads`", words[1].span,
                             help="define `heads = 4` in the model, or write `per 4 heads`"))
        v = env["heads"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise Fail(error("NL0203", "`heads` must be a positive integer", words[1].span,
                             help="define `heads = 4` in the model, or write `per 4 heads`"))
        return v
    if len(words) == 3 and got[0] == "per" and got[2] in ("heads", "head"):
        return phrases.positive_int(words[1], env, "a head count")
    raise Fail(error("NL0206", "unexpected words after the type", words[0].span,
                     "expected `per head` or `per N heads`",
                     help="`per head` uses the model's `heads`; `per 4 heads` gives the count"))


def optimizer(expr, env, owner: str, declared: dict) -> ir.Optimizer:
    """An optimizer from `update adamw(lr = ...)` or the name of an `optimizer` declaration."""
    name = phrases.word(expr) or (expr.func.id if isinstance(expr, ast.Call) else None)
    if isinstance(expr, ast.Name) and name in declared:
        return declared[name]
    if name not in schema.OPTIMIZER_ARGS:
        raise Fail(error("NL0501", f"unknown optimizer `{name or '?'}`",
                         expr.func.span if isinstance(expr, ast.Call) else expr.span, "unknown optimizer",
                         help=suggest(name or "", list(schema.OPTIMIZER_ARGS) + list(declared))
                         or f"optimizers: {', '.join(schema.OPTIMIZER_ARGS)}, or an `optimizer` declaration"))
    args = call_args(expr if isinstance(expr, ast.Call) else None, schema.OPTIMIZER_ARGS[name], env, f"`{name}`")
    if args.get("lr") is None:
        raise Fail(error("NL0104", f"`{name}` needs a learning rate", expr.span, help=f"{name}(lr = 1e-3)"))
    for k, v in args.items():
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
        if k == "betas" and not (isinstance(v, tuple) and all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                              for b in v)):
            raise Fail(error("NL0201", f"`betas` of `{name}` must be a pair of numbers", _arg_span(expr, k, list(args)),
                             f"this is {_kind(v)}", help="e.g. `betas = (0.9, 0.999)`"))
        if k != "betas" and not numeric:
            raise Fail(error("NL0201", f"`{k}` of `{name}` must be a number", _arg_span(expr, k, list(args)),
                             f"this is {_kind(v)}", help=f"e.g. `{k} = {_example(name, k)}`"))
        if k == "betas":
            ok = isinstance(v, tuple) and len(v) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in v)
        elif k in ("ns_steps", "frequency", "hidden"):
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            ok = ok and (k not in ("beta", "beta1", "beta2", "beta3") or v < 1) and (k != "lr" or v > 0)
        if not ok:
            raise Fail(error("NL0205", f"`{k}` of `{name}` is out of range", _arg_span(expr, k, list(args)),
                             f"{k} = {v!r}",
                             help="learning rates are > 0, betas in [0, 1), step counts positive integers"))
    return ir.Optimizer(f"{owner}.{name}", name, tuple(args.items()), expr.span, declared=False)


def _kind(v) -> str:
    """A folded value as a type error names it."""
    if isinstance(v, bool):
        return f"the boolean `{str(v).lower()}`"
    if isinstance(v, str):
        return f"the string {v!r}" if len(v) < 30 else "a string"
    if isinstance(v, tuple):
        return "a tuple"
    return repr(v)


def _example(name: str, key: str):
    default = schema.OPTIMIZER_ARGS.get(name, {}).get(key)
    return default if default is not None else "3e-4"


def _arg_span(call, key: str, names: list):
    """The span of argument `key` of a call (keyword or positional), else the call's."""
    if not isinstance(call, ast.Call):
        return call.span
    for kw in call.kwargs:
        if kw.name == key:
            return kw.value.span
    i = names.index(key) if key in names else len(call.args)
    return call.args[i].span if i < len(call.args) else call.span


def declared_optimizer(decl: ast.Decl, env, sink: Sink) -> list[ir.Optimizer]:
    out = []
    props_of(decl.body, "optimizer", sink)
    if decl.type is None or len(decl.type.words) != 1:
        sink.add(error("NL0104", "an optimizer declaration needs a type: `optimizer NAME : adamw(lr = 1e-3)`",
                       decl.span))
        return out
    for ident in decl.names:
        opt = guarded(sink, optimizer, decl.type.words[0], env, ident.name, {})
        if opt is not None:
            out.append(ir.Optimizer(ident.name, opt.kind, opt.args, ident.span, declared=True))
    return out


def outer_level(decl: ast.Decl, env, optimizers: dict, sink: Sink) -> ir.Outer | None:
    p = props_of(decl.body, "level", sink)
    name = decl.names[0].name
    clock = guarded(sink, phrases.clock, p["clock"], env) if "clock" in p else ir.Clock("steps", 1, decl.span)
    if clock is not None and clock.unit != "steps":
        sink.add(error("NL0301", "the outer level ticks in steps", clock.span, "expected `every N steps`",
                       help="e.g. `clock every 1 step`; tokens are the unit of the levels inside blocks"))
    objective = "next_token"
    if "objective" in p:
        objective = guarded(sink, phrases.choice, p["objective"], ("next_token",), default="next_token")
    if "update" not in p:
        sink.add(error("NL0104", f"the outer level `{name}` needs an optimizer", decl.names[0].span,
                       help="add `update adamw(lr = 3e-4)`"))
        return None
    opt = guarded(sink, lambda: optimizer(phrases.one_expr(p["update"]), env, name, optimizers))
    clip = guarded(sink, lambda: phrases.number(phrases.one_expr(p["clip"]), env, "clip")) if "clip" in p else None
    if clip is not None and clip <= 0:
        sink.add(error("NL0205", "`clip` must be positive", p["clip"].values[0].span, f"this is {clip:g}",
                       help="the largest gradient norm kept, e.g. `clip 1.0`; omit it for no clipping"))
        clip = None
    bptt = guarded(sink, phrases.choice, p["bptt"], ("truncated", "full"), default="truncated") if "bptt" in p else "truncated"
    warmup = guarded(sink, lambda: int(phrases.number(phrases.one_expr(p["warmup"]), env, "warmup")), default=0) if "warmup" in p else 0
    schedule = guarded(sink, phrases.choice, p["schedule"], ("constant", "cosine"), default="constant") if "schedule" in p else "constant"
    if opt is None or clock is None:
        return None
    return ir.Outer(name, clock, objective, opt, clip, bptt, warmup, schedule, decl.span)


def cms_chain(decl: ast.Decl, name: str, width: int, env, outer: str, optimizers: dict, sink: Sink) -> ir.Cms | None:
    p = props_of(decl.body, "cms", sink, allow_decls=("level",))
    typed = guarded(sink, type_call, decl.type, "cms", decl.names[0].span)
    if typed is None:
        return None
    variant, call, rest, head = typed
    if variant not in schema.DECL_TYPES["cms"]:
        sink.add(error("NL0206", f"unknown cms variant `{variant}`", head.span,
                       help=suggest(variant or "", schema.DECL_TYPES["cms"]) or "sequential | independent | nested"))
        return None
    agg = "weighted_sum"
    if variant == "independent" and call is not None:
        args = guarded(sink, call_args, call, {"agg": "weighted_sum"}, env, "`independent`", default={})
        agg = str(args.get("agg", agg)) if args else agg
        if agg not in ("weighted_sum", "sum", "mean"):
            sink.add(error("NL0206", f"unknown aggregation `{agg}`", call.span, help="weighted_sum | sum | mean"))
    taught = guarded(sink, phrases.by_level, p["taught"]) if "taught" in p else outer
    if taught is not None and taught != outer:
        sink.add(error("NL0101", f"`{name}` is taught by the unknown level `{taught}`",
                       p["taught"].values[0].words[-1].span, "not a level that owns a loss",
                       help=f"the language-model loss belongs to the outer level `{outer}`"))
        taught = outer
    default_opt = ir.Optimizer(f"{name}.sgd", "sgd", (("lr", 1e-2), ("weight_decay", 0.0)), decl.span, False)
    opt = guarded(sink, lambda: optimizer(phrases.one_expr(p["update"]), env, name, optimizers)) if "update" in p else default_opt
    lifetime = guarded(sink, phrases.lifetime, p["state"], default="persist") if "state" in p else "persist"
    flush = guarded(sink, phrases.choice, p["flush"], ("partial", "drop"), default="partial") if "flush" in p else "partial"
    lr = guarded(sink, lambda: phrases.number(phrases.one_expr(p["lr"]), env, "lr"), default=1.0) if "lr" in p else 1.0
    members = []
    for stmt in decl.body or ():
        if isinstance(stmt, ast.Decl) and stmt.kind == "level":
            for ident in stmt.names:
                m = cms_member(stmt, ident, name, width, env, opt or default_opt, lr, optimizers, sink)
                if m is not None:
                    members.append(m)
    if not members and any(isinstance(s, ast.Decl) and s.kind == "level" for s in decl.body or ()):
        return None  # every member failed and was reported
    if not members:
        sink.add(error("NL0104", f"the cms chain `{name}` has no levels", decl.names[0].span,
                       help="add members: `level fast : mlp(expand = 4) { clock every 16 tokens }`"))
        return None
    return ir.Cms(name, variant, agg, tuple(members), taught or outer, lifetime or "persist", flush or "partial",
                  width, decl.span)


def cms_member(stmt, ident, chain, width, env, opt, lr, optimizers, sink) -> ir.CmsMember | None:
    p = props_of(stmt.body, "cms_level", sink)
    try:
        kind, call, rest, head = type_call(stmt.type, "level", ident.span)
        if kind != "mlp" or rest:
            raise Fail(error("NL0206", "a cms level is an MLP: `level NAME : mlp(expand = 4)`", head.span))
        args = call_args(call, schema.CMS_MLP_ARGS, env, "`mlp`")
    except Fail as f:
        if f.diag is not None:
            sink.add(f.diag)
        return None
    hidden = args["hidden"] if args["hidden"] is not None else args["expand"] * width
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
        sink.add(error("NL0203", "the hidden width of a cms level must be a positive integer", stmt.type.span,
                       f"this is {hidden!r}", help="give a whole `expand` (e.g. `mlp(expand = 4)`) or `hidden = N`"))
        return None
    act = args["act"]
    if act not in schema.ACTIVATIONS:
        sink.add(error("NL0206", f"unknown activation `{act}`", stmt.type.span,
                       help=suggest(str(act), schema.ACTIVATIONS) or ", ".join(schema.ACTIVATIONS)))
        return None
    if "clock" not in p:
        sink.add(error("NL0104", f"the cms level `{ident.name}` needs a clock", ident.span,
                       help="`clock every 16 tokens`, or `clock never` for a frozen MLP"))
        return None
    clock = guarded(sink, phrases.clock, p["clock"], env)
    if clock is None:
        return None
    if clock.unit == "steps":
        sink.add(error("NL0301", "a cms level ticks in tokens", clock.span, "expected `every N tokens` or `never`",
                       help="e.g. `clock every 16 tokens`"))
    own_opt = guarded(sink, lambda: optimizer(phrases.one_expr(p["update"]), env, f"{chain}.{ident.name}", optimizers)) if "update" in p else None
    own_lr = guarded(sink, lambda: phrases.number(phrases.one_expr(p["lr"]), env, "lr"), default=lr) if "lr" in p else lr
    return ir.CmsMember(f"{chain}.{ident.name}", chain, hidden, width, act, bool(args["bias"]), clock,
                        own_opt or opt, own_lr, ident.span)

