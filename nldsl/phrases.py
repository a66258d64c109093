"""Reading property phrases: `every 16 tokens`, `reset per sequence`, `retain, gd at current`, ...

Each reader takes a property (or one of its phrases) and the constants, and returns a value or raises
`Fail` with a diagnostic that points at the offending word and says what would be accepted.
"""

from __future__ import annotations

from . import ast, ir, schema
from .consts import Fail, fold, shown, suggest
from .diagnostics import error


def word(expr) -> str | None:
    return expr.id if isinstance(expr, ast.Name) else None


def words_text(phrase: ast.Phrase) -> list:
    return [word(w) for w in phrase.words]


def single(prop: ast.Prop) -> ast.Phrase:
    if len(prop.values) != 1:
        span = prop.values[1].span if len(prop.values) > 1 else prop.key_span
        raise Fail(error("NL0201", f"`{prop.key}` takes one value", span,
                         "unexpected" if len(prop.values) > 1 else "missing a value",
                         help=("remove the values after the first comma" if len(prop.values) > 1 else
                               f"write a value after the key, e.g. `{prop.key} {_EXAMPLE_VALUES.get(prop.key, '...')}`")))
    return prop.values[0]


def one_expr(prop: ast.Prop):
    phrase = single(prop)
    if len(phrase.words) != 1:
        raise Fail(error("NL0201", f"`{prop.key}` takes one expression", phrase.words[1].span, "unexpected word",
                         help="arithmetic and calls are one expression; several words side by side are not"))
    return phrase.words[0]


# The largest size a spec may give: tensor dimensions and the offsets of generated kernels are 32-bit.
MAX_SIZE = 2 ** 31 - 1


def positive_int(expr, env, what: str) -> int:
    v = fold(expr, env)
    problem = size_error(v, what, expr.span)
    if problem is not None:
        raise Fail(problem)
    return int(v)


def size_error(v, what: str, span, label: str = "this is", fix: str = "`{n}`",
               otherwise: str = "write a whole number of at least 1"):
    """None when `v` is a size (an integer from 1 to MAX_SIZE), else its diagnostic: NL0203 for anything
    else (a float such as 64.0 too, with `fix` written for its whole number), NL0205 beyond MAX_SIZE."""
    if isinstance(v, float) and v.is_integer() and v >= 1:
        return error("NL0203", f"{what} must be a positive integer, not a float", span, f"{label} {v!r}",
                     help=f"write {fix.format(n=int(v))}" if v < 1e16 else otherwise)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 1:
        return error("NL0203", f"{what} must be a positive integer", span, f"{label} {shown(v)}", help=otherwise)
    if v > MAX_SIZE:
        return error("NL0205", f"{what} is too large", span, f"{label} {shown(v)}",
                     help=f"sizes are at most 2**31 - 1 = {MAX_SIZE:,}")
    return None


# What a key's value looks like, for "missing a value" (the keys of schema.KEYS that take one value).
_EXAMPLE_VALUES = {"clock": "every 16 tokens", "chunk": "16", "window": "64", "clip": "1.0", "warmup": "100",
                   "objective": "l2", "read": "before write", "state": "persist", "init": "zero",
                   "schedule": "cosine", "bptt": "truncated", "flush": "partial", "taught": "by pretrain",
                   "lr": "0.1", "key": "k", "value": "v", "query": "q", "retain": "alpha", "momentum": "beta"}


def _text(expr) -> str:
    """A short expression as written (a number or a name), for a help line."""
    if isinstance(expr, ast.Number):
        return expr.text
    return word(expr) or "N"


def number(expr, env, what: str) -> float:
    v = fold(expr, env)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Fail(error("NL0201", f"{what} must be a number", expr.span, f"this is {shown(v)}"))
    return v


def _expect(phrase: ast.Phrase, forms: list[list[str]], what: str) -> list[str]:
    """Match a phrase against accepted word sequences; return the matching form."""
    got = words_text(phrase)
    for form in forms:
        if got == form:
            return form
    listed = " | ".join(" ".join(f) for f in forms)
    bad = next((w for w, g in zip(phrase.words, got) if g is None or all(g not in f for f in forms)), phrase.words[0])
    hint = suggest(word(bad) or "", [w for f in forms for w in f]) if word(bad) else ""
    if hint:  # the whole phrase with the word corrected, when that is one of the forms
        fixed = [hint.split("`")[1] if w is bad else g for w, g in zip(phrase.words, got)]
        if fixed in forms:
            hint = f"did you mean `{' '.join(fixed)}`?"
    raise Fail(error("NL0206", f"unknown {what}", bad.span, f"expected {listed}", help=hint or f"write one of: {listed}"))


def clock(prop: ast.Prop, env) -> ir.Clock:
    phrase = single(prop)
    ws = phrase.words
    if len(ws) == 1 and word(ws[0]) == "never":
        return ir.Clock("never", None, phrase.span)
    if ws and isinstance(ws[0], ast.Call) and ws[0].func.id == "every":
        raise Fail(error("NL0301", "a clock is written `every N tokens` or `every N steps`", ws[0].span,
                         "`every(...)` reads as a call", help="name the period: `period = 2 * 8` then `every period tokens`"))
    if len(ws) == 3 and word(ws[0]) == "every":
        unit = word(ws[2])
        units = {"token": "tokens", "tokens": "tokens", "step": "steps", "steps": "steps"}
        if unit not in units:
            raise Fail(error("NL0301", "unknown clock unit", ws[2].span, "expected `tokens` or `steps`",
                             help=suggest(unit or "", list(units)) or "clocks count tokens or outer steps"))
        return ir.Clock(units[unit], positive_int(ws[1], env, "a clock period"), phrase.span)
    raise Fail(error("NL0301", "malformed clock", phrase.span, "expected `every N tokens`, `every N steps` or `never`",
                     help=(f"name the unit: `every {_text(ws[1])} tokens` or `every {_text(ws[1])} steps`"
                           if len(ws) == 2 and word(ws[0]) == "every" else
                           "e.g. `clock every 16 tokens`, `clock every 1 step` or `clock never`")))


def rules(prop: ast.Prop) -> tuple[ir.Rule, ...]:
    if not prop.values:
        raise Fail(error("NL0201", f"`{prop.key}` takes one or more update rules", prop.key_span, "missing a value",
                         help=f"e.g. `{prop.key} gd` or `{prop.key} retain, momentum`"))
    out = []
    for phrase in prop.values:
        head = phrase.words[0]
        name = word(head) or (head.func.id if isinstance(head, ast.Call) else None)
        if name not in schema.RULES:
            raise Fail(error("NL0501", f"unknown update rule `{name or '?'}`", head.span,
                             f"expected one of {', '.join(schema.RULES)}",
                             help=suggest(name or "", schema.RULES) or "rules are applied in the order written"))
        per_layer = False
        if isinstance(head, ast.Call):
            if head.args or any(k.name != "per_layer" for k in head.kwargs) or name != "dgd":
                raise Fail(error("NL0107", f"`{name}` takes no arguments" if name != "dgd" else
                                 "`dgd` takes only `per_layer = true`", head.span,
                                 help="gates are properties of the memory: lr, retain, momentum"))
            per_layer = bool(fold(head.kwarg("per_layer"), {"true": True, "false": False}))
        at = "anchor" if name in schema.GRADIENT_RULES else "none"
        rest = words_text(phrase)[1:]
        if rest:
            if rest not in (["at", "anchor"], ["at", "current"]):
                bad = phrase.words[2] if rest[0] == "at" and len(rest) == 2 else phrase.words[1]
                raise Fail(error("NL0206", "unknown words after a rule", bad.span,
                                 "expected `at anchor` or `at current`",
                                 help=suggest(word(bad) or "", ["anchor", "current"]) or
                                 "`at anchor` takes the gradient at the chunk's start state, `at current` at the "
                                 "current state"))
            if at == "none":
                raise Fail(error("NL0502", f"`{name}` takes no gradient, so it has no gradient point",
                                 phrase.words[1].span, "remove this"))
            at = rest[1]
        out.append(ir.Rule(name, at, per_layer, phrase.span))
    return tuple(out)


def objective(prop: ast.Prop, env) -> ir.Objective:
    expr = one_expr(prop)
    name = word(expr) or (expr.func.id if isinstance(expr, ast.Call) else None)
    if name not in schema.OBJECTIVES:
        raise Fail(error("NL0501", f"unknown objective `{name or '?'}`", expr.span,
                         f"expected one of {', '.join(schema.OBJECTIVES)}",
                         help=suggest(name or "", schema.OBJECTIVES) or "custom(<expression of r>) defines your own"))
    arity = {"huber": ("delta",), "lp": ("p",), "custom": ("expr",)}.get(name, ())
    if isinstance(expr, ast.Call):
        if not arity:
            raise Fail(error("NL0107", f"`{name}` takes no arguments", expr.span))
        arg = _objective_argument(expr, name, arity[0])
        if name == "custom":
            _custom_objective(arg, env)
            # its constants as numbers: the expression means the same wherever it is generated from
            inlined = ast.replace_names(arg, lambda n: n if n.id == "r" or n.id not in env else
                                        ast.Number(env[n.id], repr(env[n.id]), n.span))
            return ir.Objective("custom", (), inlined, expr.span)
        v = number(arg, env, f"the argument of {name}")
        if v <= 0 or (name == "lp" and v < 1):
            raise Fail(error("NL0205", f"`{name}` needs a positive argument" + (" ≥ 1" if name == "lp" else ""),
                             arg.span, f"this is {v:g}"))
        return ir.Objective(name, ((arity[0], float(v)),), None, expr.span)
    if arity:
        raise Fail(error("NL0107", f"`{name}` needs an argument", expr.span, help=f"e.g. {name}(1.0)" if name != "custom" else "custom(0.5 * r * r)"))
    return ir.Objective(name, (), None, expr.span)


def _objective_argument(call: ast.Call, name: str, param: str):
    """The one argument of `huber(1.0)`, `lp(3)`, `custom(...)`; the first two may also name it:
    `huber(delta = 1.0)`, `lp(p = 3)`."""
    example = "custom(0.5 * r * r)" if name == "custom" else f"{name}(1.0) or {name}({param} = 1.0)"
    if len(call.args) + len(call.kwargs) != 1:
        raise Fail(error("NL0107", f"`{name}` takes one argument", call.span, help=f"e.g. {example}"))
    if call.args:
        return call.args[0]
    kw = call.kwargs[0]
    if name == "custom" or kw.name != param:
        raise Fail(error("NL0107", f"`{name}` has no argument `{kw.name}`", kw.span, help=f"e.g. {example}"))
    return kw.value


def _custom_objective(expr, env) -> None:
    """Check that a custom objective is an elementwise expression of `r` that can be differentiated:
    numbers, constants, `r`, + - * / **, and the functions of schema.OBJECTIVE_FUNCTIONS."""
    uses_r = False
    callees = {id(n.func) for n in ast.walk(expr) if isinstance(n, ast.Call)}
    for node in ast.walk(expr):
        if isinstance(node, ast.Name) and id(node) not in callees:
            if node.id == "r":
                uses_r = True
            elif node.id not in env:
                raise Fail(error("NL0101", f"unknown name `{node.id}` in a custom objective", node.span,
                                 "not `r` or a constant", help=suggest(node.id, ["r"] + list(env))
                                 or "a custom objective is an expression of the residual `r` = M(k) − v"))
        elif isinstance(node, ast.Call):
            fn = node.func.id
            if fn not in schema.OBJECTIVE_FUNCTIONS:
                allowed = f"custom objectives use {', '.join(schema.OBJECTIVE_FUNCTIONS)}"
                if fn in schema.BUILTINS:
                    raise Fail(error("NL0508", f"`{fn}` cannot be used in a custom objective", node.func.span,
                                     "no derivative rule for it here", help=allowed))
                raise Fail(error("NL0106", f"unknown function `{fn}`", node.func.span, "unknown function",
                                 help=suggest(fn, schema.OBJECTIVE_FUNCTIONS) or allowed))
            want = 2 if fn in ("min", "max") else 1
            if len(node.args) != want or node.kwargs:
                raise Fail(error("NL0107", f"`{fn}` takes {want} argument{'s' if want > 1 else ''}", node.span,
                                 f"given {len(node.args) + len(node.kwargs)}"))
        elif isinstance(node, ast.BinOp) and node.op == "%":
            raise Fail(error("NL0508", "`%` has no derivative", node.span, "not differentiable",
                             help="write the loss with + - * / ** and smooth functions of `r`"))
        elif isinstance(node, ast.BinOp) and node.op == "**" and any(
                isinstance(n, ast.Name) and n.id == "r" for n in ast.walk(node.right)):
            raise Fail(error("NL0508", "an exponent must be a constant", node.right.span, "depends on `r`"))
        elif isinstance(node, (ast.String, ast.TupleExpr, ast.ListExpr, ast.Pipe)):
            raise Fail(error("NL0201", "a custom objective is a numeric expression of `r`", node.span))
    if not uses_r:
        raise Fail(error("NL0508", "this custom objective does not depend on the residual `r`", expr.span,
                         "its gradient is zero", help="e.g. `custom(0.5 * r * r)` is the l2 objective"))


def read_mode(prop: ast.Prop) -> str:
    form = _expect(single(prop), [["before", "write"], ["after", "write"], ["at", "anchor"]], "read order")
    return {"before": "before", "after": "after", "at": "anchor"}[form[0]]


def lifetime(prop: ast.Prop) -> str:
    form = _expect(single(prop), [["reset", "per", "sequence"], ["persist"]], "state lifetime")
    return "reset" if form[0] == "reset" else "persist"


def by_level(prop: ast.Prop, allow_zero: bool = False) -> str | None:
    phrase = single(prop)
    got = words_text(phrase)
    if allow_zero and got == ["zero"]:
        return None
    if len(got) == 2 and got[0] == "by" and got[1]:
        return got[1]
    forms = "`by LEVEL`" + (" or `zero`" if allow_zero else "")
    raise Fail(error("NL0206", f"`{prop.key}` expects {forms}", phrase.span))


def choice(prop: ast.Prop, options: tuple[str, ...]) -> str:
    return _expect(single(prop), [[o] for o in options], f"value for `{prop.key}`")[0]
