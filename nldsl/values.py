"""Elaborating the expressions of a block body into dataflow values (`ir.Value`).

Names resolve, in order, to: the block's parameters, its earlier bindings, its memory and attention
levels (which are read by calling them), model constants, builtins, blocks and cms chains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ast, ir, schema
from .consts import FLOAT32_MAX, RANGE_HELP, Fail, Poison, fold, suggest
from .diagnostics import error
from .phrases import positive_int

UNARY = {"l2norm", "rmsnorm", "layernorm", "silu", "gelu", "relu", "tanh", "sigmoid", "softplus",
         "exp", "log", "abs", "sqrt"}


@dataclass
class Scope:
    block: str
    params: tuple[str, ...]
    consts: dict
    levels: dict  # local name → qualified level name (memories and attention)
    bindings: dict = field(default_factory=dict)  # name → ir.Value
    later: set = field(default_factory=set)  # bindings defined further down (for a better message)
    failed: set = field(default_factory=set)  # bindings whose definition was reported: uses stay quiet
    blocks: set = field(default_factory=set)
    chains: set = field(default_factory=set)
    label_counts: dict = field(default_factory=dict)

    def known(self):
        return list(self.params) + list(self.bindings) + list(self.levels) + list(self.consts) + list(schema.BUILTINS)


class ValueBuilder:
    def __init__(self, scope: Scope):
        self.scope = scope

    def _label(self, base: str, fn: str) -> str:
        key = (base, fn)
        n = self.scope.label_counts.get(key, 0) + 1
        self.scope.label_counts[key] = n
        name = base if fn == "linear" else f"{base}_{fn}"
        return name if n == 1 else f"{name}{n}"

    def build(self, expr, label: str, allow_self: bool = False) -> ir.Value:
        s = self.scope
        if isinstance(expr, ast.Number):
            if not abs(expr.value) <= FLOAT32_MAX:
                raise Fail(error("NL0202", f"the number `{expr.text}` is too large", expr.span,
                                 "beyond float32's range", help=RANGE_HELP))
            return ir.Const(float(expr.value), expr.span)
        if isinstance(expr, ast.Name):
            n = expr.id
            if n in s.params:
                return ir.Input(n, expr.span)
            if n in s.failed:
                raise Fail(None)  # its definition already has a diagnostic
            if n in s.bindings:
                return ir.Ref(n, expr.span)
            if n in s.levels:
                raise Fail(error("NL0404", f"`{n}` is a level, not a value", expr.span, "a level",
                                 help=f"read it with a query: `{n}(q)`"))
            if n in s.consts:
                v = s.consts[n]
                if isinstance(v, Poison):
                    raise Fail(None)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return ir.Const(float(v), expr.span)
                raise Fail(error("NL0201", f"`{n}` is not a number", expr.span))
            if n in s.later:
                raise Fail(error("NL0101", f"`{n}` is used before it is defined", expr.span,
                                 help="bindings are evaluated in order; move its definition up"))
            raise Fail(error("NL0101", f"unknown name `{n}`", expr.span, "not defined in this block",
                             help=suggest(n, s.known()) or "define it with `name = ...`"))
        if isinstance(expr, ast.BinOp):
            if expr.op == "%":
                raise Fail(error("NL0106", "`%` is not defined on values", expr.span, "on a value",
                                 help="`%` works on constants only, e.g. `pad = dim % 8`"))
            if expr.op == "**":
                exponent = self._exponent(expr.right)
                return ir.Bin("**", self.build(expr.left, label), ir.Const(float(exponent), expr.right.span), expr.span)
            return ir.Bin(expr.op, self.build(expr.left, label), self.build(expr.right, label), expr.span)
        if isinstance(expr, ast.UnaryOp):
            inner = self.build(expr.operand, label)
            if expr.op == "-" and isinstance(inner, ir.Const):
                return ir.Const(-inner.value, expr.span)  # a negative number, checked like one
            return inner if expr.op == "+" else ir.Bin("*", ir.Const(-1.0, expr.span), inner, expr.span)
        if isinstance(expr, ast.Call):
            return self._call(expr, label, allow_self)
        raise Fail(error("NL0201", "this kind of expression is not a value", expr.span,
                         help="values are built from the block's input with builtins, memories and arithmetic"))

    def _call(self, call: ast.Call, label: str, allow_self: bool) -> ir.Value:
        s = self.scope
        fn = call.func.id
        if fn in s.levels:
            if call.kwargs or len(call.args) > 1:
                raise Fail(error("NL0404", f"a read of `{fn}` takes one query", call.span,
                                 f"given {len(call.args) + len(call.kwargs)}",
                                 help=f"`{fn}(q)` reads the memory at q; combine inputs first, e.g. `{fn}(a + b)`"))
            query = self.build(call.args[0], label) if call.args else None
            return ir.Read(s.levels[fn], query, call.span)
        if fn == "self":
            if not allow_self:
                raise Fail(error("NL0106", "`self(v)` is only meaningful as a memory's `value`", call.span,
                                 help="it makes the memory generate its own target v̂ = M(v)"))
            self._arity(call, 1, ())
            return ir.Op("self", (self.build(call.args[0], label),), (), call.span)
        if fn in UNARY:
            self._arity(call, 1, ())
            lab = self._label(label, fn) if fn in ("rmsnorm", "layernorm") else ""
            return ir.Op(fn, (self.build(call.args[0], label),), (), call.span, lab)
        if fn == "linear":
            self._arity(call, 2, ("bias",))
            out = self._int(call.args[1], "the output width of `linear`")
            bias = bool(fold(call.kwarg("bias"), s.consts)) if call.kwarg("bias") is not None else False
            x = self.build(call.args[0], label)
            return ir.Op("linear", (x,), (("out", out), ("bias", bias)), call.span, self._label(label, "linear"))
        if fn == "conv":
            self._arity(call, 1, ("window",))
            window = self._int(call.kwarg("window"), "the window of `conv`") if call.kwarg("window") is not None else 4
            x = self.build(call.args[0], label)
            return ir.Op("conv", (x,), (("window", window),), call.span, self._label(label, "conv"))
        if fn in ("min", "max"):
            self._arity(call, 2, ())
            return ir.Op(fn, tuple(self.build(a, label) for a in call.args), (), call.span)
        if fn in s.blocks or fn in s.chains:
            self._arity(call, 1, ())
            target = ir.BlockCall(fn, call.span) if fn in s.blocks else ir.CmsCall(fn, call.span)
            return ir.Apply(target, self.build(call.args[0], label), call.span)
        if fn in schema.OBJECTIVE_FUNCTIONS:
            raise Fail(error("NL0106", f"`{fn}` is a function of custom objectives, not of values", call.func.span,
                             help="it is written in a memory's `objective custom(...)`, as a function of r"))
        if fn in schema.BUILTINS:
            raise Fail(error("NL0106", f"`{fn}` is a network combinator, not a value function", call.func.span,
                             help="use it in the model's `network = ...` pipeline"))
        raise Fail(error("NL0106", f"unknown function `{fn}`", call.func.span,
                         help=suggest(fn, list(UNARY) + ["linear", "conv", "self", "min", "max"] + list(s.levels))
                         or "see `nlc explain NL0106` for the builtins"))

    def _exponent(self, expr):
        """The exponent of `**`: a number or a constant of the model, not a value of the block."""
        try:
            return fold(expr, self.scope.consts)
        except Fail:
            s = self.scope
            values = set(s.params) | set(s.bindings) | s.later | s.failed | set(s.levels)
            if any(isinstance(n, ast.Name) and n.id in values for n in ast.walk(expr)):
                raise Fail(error("NL0201", "`**` takes a constant exponent", expr.span, "a value of the block",
                                 help="write a number or a model constant, e.g. `x ** 2`")) from None
            raise

    def _arity(self, call: ast.Call, npos: int, kws: tuple[str, ...]):
        if len(call.args) != npos:
            raise Fail(error("NL0107", f"`{call.func.id}` takes {npos} positional argument{'s' if npos != 1 else ''}",
                             call.span, f"given {len(call.args)}", help=schema.BUILTINS.get(call.func.id, "")))
        for kw in call.kwargs:
            if kw.name not in kws:
                raise Fail(error("NL0107", f"`{call.func.id}` has no argument `{kw.name}`", kw.span,
                                 help=suggest(kw.name, kws) or schema.BUILTINS.get(call.func.id, "")))

    def _int(self, expr, what: str) -> int:
        return positive_int(expr, self.scope.consts, what)


def reads_in(value) -> list[ir.Read]:
    """Every memory/attention read inside a value (not following Refs)."""
    return [v for v in ir.walk(value) if isinstance(v, ir.Read)]


def refs_in(value) -> list[str]:
    return [v.name for v in ir.walk(value) if isinstance(v, ir.Ref)]
