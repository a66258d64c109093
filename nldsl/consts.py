"""Pass 3: constant folding.

Model-level bindings whose right side is arithmetic over numbers and other constants become
constants (`head_dim = dim / heads`). Bindings that build networks (`layer = a -> b`) are left to the
elaborator. `/` between integers stays an integer when it divides exactly, so sizes stay sizes.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Mapping

from . import ast
from .diagnostics import Diagnostic, error

NAMED = {"true": True, "false": False, "inf": math.inf}
# Models compute in float32 (or bf16, whose range is the same): a larger number, finite in the spec,
# would overflow on its way into a tensor, so no number a spec writes or computes may exceed it.
FLOAT32_MAX = (2 - 2 ** -23) * 2 ** 127
RANGE_HELP = "models compute in float32: numbers are at most about 3.4e38 in size"
NETWORK_WORDS = {"residual", "stack", "embed", "lm_head", "rmsnorm", "layernorm"}


class Fail(Exception):
    def __init__(self, diag: Diagnostic):
        self.diag = diag


def is_network_expr(expr, network_names) -> bool:
    """True when `expr` builds a network rather than a value: a pipe, a combinator, a block."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Pipe):
            return True
        if isinstance(node, ast.Name) and (node.id in network_names or node.id in NETWORK_WORDS):
            return True
    return False


def suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


def shown(v) -> str:
    """A folded value as a message shows it: `10.6667`, not `10.666666666666666`."""
    return f"{v:g}" if isinstance(v, float) else repr(v)


def fold(expr, env: Mapping[str, object]):
    """The value of a constant expression, or raise Fail with a diagnostic."""
    if isinstance(expr, ast.Number):
        if not abs(expr.value) <= FLOAT32_MAX:
            raise Fail(error("NL0202", f"the number `{expr.text}` is too large", expr.span, "beyond float32's range",
                             help=RANGE_HELP))
        return expr.value
    if isinstance(expr, ast.String):
        return expr.value
    if isinstance(expr, ast.Name):
        if expr.id in env:
            if isinstance(env[expr.id], Poison):
                raise Fail(None)  # already reported where it was defined
            return env[expr.id]
        if expr.id in NAMED:
            return NAMED[expr.id]
        if expr.id == getattr(env, "defining", None):
            raise Fail(error("NL0111", f"`{expr.id}` is defined in terms of itself", expr.span,
                             "used inside its own definition", help=f"give `{expr.id}` a value: e.g. `{expr.id} = 64`"))
        if getattr(env, "is_later", lambda _: False)(expr.id):
            raise Fail(error("NL0101", f"`{expr.id}` is used before it is defined", expr.span, "defined further down",
                             help=f"constants are evaluated in order; move the definition of `{expr.id}` above this line"))
        raise Fail(error("NL0101", f"unknown name `{expr.id}`", expr.span, "not a known constant",
                         help=suggest(expr.id, list(env) + list(NAMED)) or "define it with `name = value`"))
    if isinstance(expr, ast.TupleExpr) or isinstance(expr, ast.ListExpr):
        return tuple(fold(x, env) for x in expr.items)
    if isinstance(expr, ast.UnaryOp):
        v = _number(fold(expr.operand, env), expr.operand)
        return -v if expr.op == "-" else v
    if isinstance(expr, ast.BinOp):
        return _binop(expr, _number(fold(expr.left, env), expr.left), _number(fold(expr.right, env), expr.right))
    if isinstance(expr, ast.Call) and expr.func.id in ("min", "max") and len(expr.args) >= 2 and not expr.kwargs:
        vals = [_number(fold(a, env), a) for a in expr.args]
        return min(vals) if expr.func.id == "min" else max(vals)
    raise Fail(error("NL0201", "expected a constant here", expr.span, "not a constant expression",
                     help="constants are numbers, strings, tuples and arithmetic over other constants"))


def _number(v, node):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Fail(error("NL0201", "arithmetic needs numbers", node.span, f"this is {type(v).__name__}",
                         help="+ - * / % ** apply to numbers; strings, tuples and booleans take no arithmetic"))
    return v


def _binop(expr: ast.BinOp, a, b):
    op = expr.op
    try:
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        elif op == "/":
            if b == 0:
                raise ZeroDivisionError
            r = a // b if isinstance(a, int) and isinstance(b, int) and a % b == 0 else a / b
        elif op == "%":
            if b == 0:
                raise ZeroDivisionError
            r = a % b
        else:  # **
            if isinstance(a, int) and isinstance(b, int) and b >= 0 and abs(a) > 1 and b * math.log2(abs(a)) > 256:
                raise OverflowError
            r = a ** b
            if isinstance(r, complex):
                raise ValueError
    except ZeroDivisionError:
        raise Fail(error("NL0202", "division by zero", expr.right.span, "this is zero",
                         help="divide by a constant that is not zero")) from None
    except OverflowError:
        raise Fail(error("NL0202", "this arithmetic overflows", expr.span, "too large for a number",
                         help="constants are 64-bit floats or integers of at most 256 bits")) from None
    except ValueError:
        raise Fail(error("NL0202", "this arithmetic has no real value", expr.span,
                         "a negative number to a fractional power")) from None
    if not abs(r) <= FLOAT32_MAX:
        raise Fail(error("NL0202", "this arithmetic overflows", expr.span, "beyond float32's range",
                         help=RANGE_HELP))
    return r


def fold_constants(assigns, network_names, base: Mapping[str, object] | None = None):
    """Fold bindings in order; returns (constants, network bindings, diagnostics).

    `assigns` are (name, Assign) pairs, the name as the model writes it: `L.rate` for the constant
    `rate` of a library imported `as L`. The result is keyed by these names, so a qualified import's
    constants are only visible qualified. Inside its library a binding's names are written bare and
    looked up under the library's prefix (`Scoped`); a network binding's value is rewritten to the
    qualified names (`L.mix`), so that it means the same wherever it is used.
    """
    env: dict[str, object] = dict(base or {})
    nets: dict[str, ast.Assign] = {}
    diags: list[Diagnostic] = []
    remaining = {name for name, _ in assigns}
    all_networks = set(network_names)
    for name, a in assigns:
        remaining.discard(name)
        prefix = name[: len(name) - len(a.name)]
        scope = Scoped(env, prefix, remaining, a.name)
        networks = {n[len(prefix):] for n in all_networks if n.startswith(prefix)} if prefix else all_networks
        try:
            if is_network_expr(a.value, networks):
                nets[name] = a if not prefix else dataclasses.replace(
                    a, value=_qualify(a.value, prefix, networks | set(scope)))
                all_networks.add(name)
                continue
            env[name] = fold(a.value, scope)
        except Fail as f:
            if f.diag is not None:
                diags.append(f.diag)
            env[name] = Poison()
        except RecursionError:
            diags.append(error("NL0005", "this expression is nested too deeply", a.span,
                               help="name intermediate values with `x = ...`"))
            env[name] = Poison()
    return env, nets, diags


class Scoped(Mapping):
    """The constants as a binding sees them: under its library's import prefix (`L.`), names bare.

    It also knows the binding being defined and the bindings still to come, so that an unknown name
    can be told apart from a constant used before its definition or inside its own."""

    def __init__(self, env: Mapping[str, object], prefix: str = "", later=frozenset(), defining: str | None = None):
        self.env, self.prefix, self.later, self.defining = env, prefix, later, defining

    def __getitem__(self, name: str):
        return self.env[self.prefix + name]

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self.prefix + name in self.env

    def __iter__(self):
        return (k[len(self.prefix):] for k in self.env if k.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def is_later(self, name: str) -> bool:
        return self.prefix + name in self.later


def import_prefix(name: str) -> str:
    """The import prefix of a qualified name: `L.` for `L.mix`, `` for `mix`."""
    return name[: name.rfind(".") + 1]


def library_constants(env: Mapping[str, object], prefix: str) -> dict:
    """The constants of the library imported with `prefix`, written bare (none without a prefix)."""
    return {k[len(prefix):]: v for k, v in env.items() if k.startswith(prefix)} if prefix else {}


def scoped(env: Mapping[str, object], prefix: str) -> dict:
    """The constants as a declaration of a library imported with `prefix` sees them: every constant,
    with the library's own also written bare (they take precedence over the model's)."""
    return {**env, **library_constants(env, prefix)}


def _qualify(expr, prefix: str, known: set):
    """`expr` with every name of its library (`known`, written bare there) written `prefix + name`."""
    parts = tuple(prefix.rstrip(".").split("."))
    return ast.replace_names(expr, lambda n: ast.Name(parts + n.parts, n.span) if n.id in known else n)


class Poison:
    """The value of a constant whose definition failed: later uses raise no second diagnostic."""

    def __repr__(self) -> str:
        return "<undefined>"
