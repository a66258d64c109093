"""The objective's derivative dℓ/dy as Triton code (for codegen/kernels.py): affine objectives as
a·y − b·target, elementwise ones (l1, huber, lp, custom) in the residual r with the second derivative
the backward kernel needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from . import symbolic as S

# ------------------------------------------------------------------ objectives

@dataclass(frozen=True)
class ObjectiveCode:
    """What the kernels need of an objective: (a, b) of an affine dl/dy = a·y − b·target, or the
    Triton code of dl/dy and of its derivative in the residual r = y − target."""

    name: str
    affine: Optional[tuple[float, float]] = None
    grad: str = ""
    grad2: str = ""

    @property
    def key(self) -> tuple:
        return (self.name, self.affine, self.grad, self.grad2)


AFFINE = {"l2": lambda dv: (1.0, 1.0), "sq": lambda dv: (2.0, 2.0), "mse": lambda dv: (2.0 / dv, 2.0 / dv),
          "dot": lambda dv: (0.0, 1.0)}


def _standard_grad_tree(name: str, params: Mapping[str, float]):
    """dl/dr of the elementwise standard objectives as symbolic trees (runtime/memory/objectives.py)."""
    r = S.R
    if name == "l1":
        return S.Fn("sign", (r,))
    if name == "huber":
        d = float(params.get("delta", 1.0))
        return S.Fn("min", (S.Fn("max", (r, S.Num(-d))), S.Num(d)))
    if name == "lp":
        p = float(params.get("p", 3.0))
        return S.mul(S.mul(S.Num(p), S.BinE("**", S.Fn("abs", (r,)), S.Num(p - 1.0))), S.Fn("sign", (r,)))
    raise ValueError(f"unknown objective {name!r}")


def derivative(e):
    """d e / d r of a symbolic tree, as symbolic.derivative does, extended to the where_ge / where_le
    nodes that the derivative of min / max leaves (so a custom objective can be differentiated twice:
    d/dr where(c, x, y) = where(c, dx/dr, dy/dr), the branch torch's autograd takes)."""
    if isinstance(e, (S.Num, S.Var)):
        return S.derivative(e)
    if isinstance(e, S.BinE):
        da, db = derivative(e.a), derivative(e.b)
        if e.op == "+":
            return S.add(da, db)
        if e.op == "-":
            return S.add(da, S.mul(S.Num(-1.0), db))
        if e.op == "*":
            return S.add(S.mul(da, e.b), S.mul(e.a, db))
        if e.op == "/":
            top = S.add(S.mul(da, e.b), S.mul(S.Num(-1.0), S.mul(e.a, db)))
            return S.BinE("/", top, S.BinE("**", e.b, S.Num(2.0)))
        p = e.b.value  # '**' with a constant exponent
        if p == 0:
            return S.Num(0.0)
        return S.mul(S.mul(S.Num(p), S.BinE("**", e.a, S.Num(p - 1)) if p != 2 else e.a), da)
    if e.name in ("where_ge", "where_le"):
        a, b, da, db = e.args
        return S.Fn(e.name, (a, b, derivative(da), derivative(db)))
    if e.name in ("min", "max"):
        a, b = e.args
        pick = "where_ge" if e.name == "max" else "where_le"
        return S.Fn(pick, (a, b, derivative(a), derivative(b)))
    x = e.args[0]
    inner = {
        "abs": lambda: S.Fn("sign", (x,)),
        "sign": lambda: S.Num(0.0),
        "exp": lambda: e,
        "log": lambda: S.BinE("/", S.Num(1.0), x),
        "sqrt": lambda: S.BinE("/", S.Num(0.5), e),
        "tanh": lambda: S.add(S.Num(1.0), S.mul(S.Num(-1.0), S.BinE("**", e, S.Num(2.0)))),
        "sigmoid": lambda: S.mul(e, S.add(S.Num(1.0), S.mul(S.Num(-1.0), e))),
        "softplus": lambda: S.Fn("sigmoid", (x,)),
    }[e.name]
    return S.mul(inner(), derivative(x))


def objective_code(name: str, params: Mapping[str, float], dv: int, custom_expr=None,
                   consts: Optional[Mapping[str, float]] = None) -> ObjectiveCode:
    """The kernel form of a standard objective (by name and parameters) or of a custom expression in r
    (its AST, with the spec's numeric constants); raises symbolic.NotDifferentiable."""
    if name == "custom":
        grad = derivative(S.from_ast(custom_expr, dict(consts or {})))
        return ObjectiveCode("custom", None, triton_code(grad), triton_code(derivative(grad)))
    if name in AFFINE:
        return ObjectiveCode(name, AFFINE[name](dv))
    grad = _standard_grad_tree(name, params)
    text = name + "".join(f"_{k}={v!r}" for k, v in sorted(params.items()))
    return ObjectiveCode(text, None, triton_code(grad), triton_code(derivative(grad)))


def runtime_objective_code(objective, dv: int) -> Optional[ObjectiveCode]:
    """The kernel form of a runtime `Objective` (a standard one); None for a plain callable."""
    name = getattr(objective, "name", None)
    if name is None or name == "custom":
        return None
    return objective_code(name, dict(getattr(objective, "params", ())), dv)


_TRITON_FN = {"abs": "tl.abs", "sign": "_nl_sign", "exp": "tl.exp", "log": "tl.log", "sqrt": "tl.sqrt",
              "tanh": "_nl_tanh", "sigmoid": "tl.sigmoid",
              "softplus": "_nl_softplus"}


def _triton(e) -> str:
    if isinstance(e, S.Num):
        return repr(float(e.value)) if e.value >= 0 else f"({float(e.value)!r})"
    if isinstance(e, S.Var):
        return "r"
    if isinstance(e, S.BinE):
        a = _triton(e.a)
        if e.op == "**":
            p = float(e.b.value)
            if p.is_integer() and abs(p) <= 8:
                n = int(abs(p))
                power = "(1.0 + 0.0 * r)" if n == 0 else "(" + " * ".join([a] * n) + ")"
                return power if p >= 0 else f"(1.0 / {power})"
            return f"_nl_power({a}, {p!r})"
        return f"({a} {e.op} {_triton(e.b)})"
    if e.name in _TRITON_FN:
        return f"{_TRITON_FN[e.name]}({_triton(e.args[0])})"
    if e.name in ("min", "max"):
        fn = "tl.minimum" if e.name == "min" else "tl.maximum"
        return f"{fn}({_triton(e.args[0])}, {_triton(e.args[1])})"
    a, b, da, db = (_triton(x) for x in e.args)
    cmp = ">=" if e.name == "where_ge" else "<="
    return f"tl.where({a} {cmp} {b}, {da}, {db})"


def triton_code(e) -> str:
    """Triton code of a symbolic expression in `r`, shaped like r even when it is a constant."""
    code = _triton(e)
    return code if _mentions_r(e) else f"{code} + 0.0 * r"


def _mentions_r(e) -> bool:
    if isinstance(e, S.Var):
        return True
    if isinstance(e, S.Num):
        return False
    if isinstance(e, S.BinE):
        return _mentions_r(e.a) or _mentions_r(e.b)
    return any(_mentions_r(a) for a in e.args)
