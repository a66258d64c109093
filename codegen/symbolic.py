"""Symbolic derivatives of custom elementwise objectives, emitted as torch code.

A custom objective `custom(<expression of r>)` defines the per-component loss ℓ(r) of the residual
r = M(k) − v; the memory needs dℓ/dr. Expressions are small trees (numbers, r, named constants,
+ − × ÷, powers with a constant exponent, and abs, sign, exp, log, sqrt, tanh, sigmoid, softplus, min, max);
`derivative` applies the chain rule and `to_torch` prints the result as torch code in the variable
`r`. Only names of the spec's constants are substituted — nothing from the spec reaches the code as
text except numbers printed by `repr`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Union

from nldsl import ast

from .names import literal


class NotDifferentiable(Exception):
    def __init__(self, message: str, span):
        super().__init__(message)
        self.span = span


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Var:
    pass


@dataclass(frozen=True)
class Fn:
    name: str
    args: tuple


@dataclass(frozen=True)
class BinE:
    op: str
    a: "E"
    b: "E"


E = Union[Num, Var, Fn, BinE]
UNARY = ("abs", "sign", "exp", "log", "sqrt", "tanh", "sigmoid", "softplus")
R = Var()


def from_ast(expr, consts: Mapping[str, float]) -> E:
    if isinstance(expr, ast.Number):
        return Num(float(expr.value))
    if isinstance(expr, ast.Name):
        if expr.id == "r":
            return R
        v = consts.get(expr.id)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return Num(float(v))
        raise NotDifferentiable(f"`{expr.id}` is not `r` or a numeric constant", expr.span)
    if isinstance(expr, ast.UnaryOp):
        inner = from_ast(expr.operand, consts)
        return inner if expr.op == "+" else BinE("*", Num(-1.0), inner)
    if isinstance(expr, ast.BinOp):
        a, b = from_ast(expr.left, consts), from_ast(expr.right, consts)
        if expr.op == "**" and not isinstance(b, Num):
            raise NotDifferentiable("an exponent must be a constant", expr.right.span)
        if expr.op == "%":
            raise NotDifferentiable("`%` has no derivative", expr.span)
        return BinE(expr.op, a, b)
    if isinstance(expr, ast.Call) and not expr.kwargs:
        name = expr.func.id
        if name in UNARY and len(expr.args) == 1:
            return Fn(name, (from_ast(expr.args[0], consts),))
        if name in ("min", "max") and len(expr.args) == 2:
            return Fn(name, tuple(from_ast(a, consts) for a in expr.args))
    raise NotDifferentiable("a custom objective is built from r, numbers, constants, + - * / **, "
                            f"{', '.join(UNARY)}, min and max", expr.span)


def _num(e, v) -> bool:
    return isinstance(e, Num) and e.value == v


def add(a, b):
    if _num(a, 0):
        return b
    if _num(b, 0):
        return a
    if isinstance(a, Num) and isinstance(b, Num):
        return Num(a.value + b.value)
    return BinE("+", a, b)


def mul(a, b):
    if _num(a, 0) or _num(b, 0):
        return Num(0.0)
    if _num(a, 1):
        return b
    if _num(b, 1):
        return a
    if isinstance(a, Num) and isinstance(b, Num):
        return Num(a.value * b.value)
    return BinE("*", a, b)


def derivative(e: E) -> E:
    """d e / d r."""
    if isinstance(e, Num):
        return Num(0.0)
    if isinstance(e, Var):
        return Num(1.0)
    if isinstance(e, BinE):
        da, db = derivative(e.a), derivative(e.b)
        if e.op == "+":
            return add(da, db)
        if e.op == "-":
            return add(da, mul(Num(-1.0), db))
        if e.op == "*":
            return add(mul(da, e.b), mul(e.a, db))
        if e.op == "/":
            return BinE("/", add(mul(da, e.b), mul(Num(-1.0), mul(e.a, db))), BinE("**", e.b, Num(2.0)))
        if e.op == "**":
            p = e.b.value
            if p == 0:
                return Num(0.0)
            return mul(mul(Num(p), BinE("**", e.a, Num(p - 1)) if p != 2 else e.a), da)
    if isinstance(e, Fn):
        x = e.args[0]
        dx = derivative(x)
        inner = {
            "abs": lambda: Fn("sign", (x,)),
            "sign": lambda: Num(0.0),
            "exp": lambda: e,
            "log": lambda: BinE("/", Num(1.0), x),
            "sqrt": lambda: BinE("/", Num(0.5), e),
            "tanh": lambda: add(Num(1.0), mul(Num(-1.0), BinE("**", e, Num(2.0)))),
            "sigmoid": lambda: mul(e, add(Num(1.0), mul(Num(-1.0), e))),
            "softplus": lambda: Fn("sigmoid", (x,)),
        }
        if e.name in inner:
            return mul(inner[e.name](), dx)
        a, b = e.args
        pick = "ge" if e.name == "max" else "le"
        return Fn("where_" + pick, (a, b, derivative(a), derivative(b)))
    raise TypeError(e)


_TORCH = {"abs": "torch.abs", "sign": "torch.sign", "exp": "torch.exp", "log": "torch.log",
          "sqrt": "torch.sqrt", "tanh": "torch.tanh", "sigmoid": "torch.sigmoid",
          "softplus": "torch.nn.functional.softplus"}


def to_torch(e: E) -> str:
    if isinstance(e, Num):
        return literal(float(e.value))
    if isinstance(e, Var):
        return "r"
    if isinstance(e, BinE):
        return f"({to_torch(e.a)} {e.op} {to_torch(e.b)})"
    if e.name in _TORCH:
        return f"{_TORCH[e.name]}({to_torch(e.args[0])})"
    if e.name in ("min", "max"):
        return f"torch.{'minimum' if e.name == 'min' else 'maximum'}({to_torch(e.args[0])}, {to_torch(e.args[1])})"
    a, b, da, db = (to_torch(x) for x in e.args)
    cmp = ">=" if e.name == "where_ge" else "<="
    return f"torch.where({a} {cmp} {b}, {da} + 0 * r, {db} + 0 * r)"


def gradient_code(expr, consts) -> str:
    """Torch code (in `r`) of dℓ/dr for a custom objective; raises NotDifferentiable."""
    d = derivative(from_ast(expr, consts))
    code = to_torch(d)
    return code if re.search(r"\br\b", code) else f"{code} + 0 * r"


def loss_code(expr, consts) -> str:
    return to_torch(from_ast(expr, consts))
