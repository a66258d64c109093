"""Interval analysis of gate expressions: the range a gate can take, for the stability checks."""

from __future__ import annotations

import math

from . import ir

INF = math.inf
ANY = (-INF, INF)

_FIXED = {
    "sigmoid": lambda lo, hi: (_sig(lo), _sig(hi)),
    "tanh": lambda lo, hi: (math.tanh(lo), math.tanh(hi)),
    "softplus": lambda lo, hi: (_softplus(lo), _softplus(hi)),
    "exp": lambda lo, hi: (_exp(lo), _exp(hi)),
    "relu": lambda lo, hi: (max(lo, 0.0), max(hi, 0.0)),
    "abs": lambda lo, hi: (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi))),
    "l2norm": lambda lo, hi: (-1.0, 1.0),
    "sqrt": lambda lo, hi: (math.sqrt(max(lo, 0.0)), math.sqrt(hi) if hi < INF else INF),
    "log": lambda lo, hi: (math.log(lo) if lo > 0 else -INF, math.log(hi) if 0 < hi < INF else (INF if hi == INF else -INF)),
    "silu": lambda lo, hi: (-0.2785 if lo < 0 else lo * _sig(lo), hi * _sig(hi) if hi < INF else INF),
    "gelu": lambda lo, hi: (-0.17 if lo < 0 else lo / 2, hi if hi < INF else INF),
}


def _sig(x):
    if x == INF:
        return 1.0
    if x == -INF:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


def _exp(x):
    if x == -INF:
        return 0.0
    return math.exp(x) if x < 700 else INF


def _softplus(x):
    if x == INF:
        return INF
    if x == -INF:
        return 0.0
    return math.log1p(math.exp(x)) if x < 50 else x


def _mul(a, b):
    """Product of two numbers where 0·∞ = 0 (a bound times a zero bound)."""
    if a == 0 or b == 0:
        return 0.0
    return a * b


def interval(value, bindings: dict) -> tuple[float, float]:
    """(lo, hi) of a value; `bindings` maps a block's binding names to values."""
    if isinstance(value, ir.Const):
        return (value.value, value.value)
    if isinstance(value, ir.Ref):
        target = bindings.get(value.name)
        return interval(target, bindings) if target is not None else ANY
    if isinstance(value, ir.Op):
        if value.fn in _FIXED:
            lo, hi = interval(value.args[0], bindings)
            return _FIXED[value.fn](lo, hi)
        if value.fn in ("min", "max"):
            a, b = (interval(x, bindings) for x in value.args)
            f = min if value.fn == "min" else max
            return (f(a[0], b[0]), f(a[1], b[1]))
        return ANY
    if isinstance(value, ir.Bin):
        a, b = interval(value.left, bindings), interval(value.right, bindings)
        if value.op == "+":
            return (a[0] + b[0], a[1] + b[1])
        if value.op == "-":
            return (a[0] - b[1], a[1] - b[0])
        if value.op == "*":
            ps = [_mul(x, y) for x in a for y in b]
            return (min(ps), max(ps))
        if value.op == "/":
            if b[0] <= 0 <= b[1]:
                return ANY
            qs = [_mul(x, 1.0 / y) if y not in (INF, -INF) else 0.0 for x in a for y in b]
            return (min(qs), max(qs))
        if value.op == "**" and isinstance(value.right, ir.Const):
            p = value.right.value
            if a[0] >= 0:
                try:
                    return (a[0] ** p, a[1] ** p) if p >= 0 else (a[1] ** p if a[1] > 0 else 0.0, a[0] ** p if a[0] > 0 else INF)
                except OverflowError:
                    return (0.0, INF)
        return ANY
    return ANY


def number_text(x: float) -> str:
    return "∞" if x == INF else "-∞" if x == -INF else f"{x:g}"


def text(r) -> str:
    """An interval as written in mathematics: an infinite end is open, `[0, ∞)`."""
    lo = "(" if r[0] == -INF else "["
    hi = ")" if r[1] == INF else "]"
    return f"{lo}{number_text(r[0])}, {number_text(r[1])}{hi}"
