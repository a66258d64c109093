"""Rendering `kernels.py`: the Triton kernels of a compiled package's linear in-context memories.

For every linear memory level the generator fixes, from its configuration, what the kernels compute:

- the **form**: `dual` (chunk C > 1: every gradient at the chunk anchor, one tile per chunk), `wy`
  (C = 1, no momentum, gradient affine in W: tiles of free size) or `recurrent` (C = 1 otherwise:
  token by token). The token-by-token `step` kernel is generated for every level (decoding, and the
  fused form of the `recurrent` levels);
- the **rule order**, folded into per-token coefficients. Within one token every rule multiplies W on
  the right by (c I + d k kᵀ) or adds a rank-one term; the folding (the same as the chunked path's,
  runtime/memory/coeffs.py, which the tests check) runs here on polynomials of the gates (η, α, β)
  and of ‖k‖², and the polynomials are printed as Triton expressions, with their partial derivatives
  for the backward kernel. The step kernel applies the rules one statement per rule, in order;
- the **objective's derivative** dℓ/dy: affine ones (l2, sq, mse, dot) as a·y − b·target, elementwise
  ones (l1, huber, lp and the spec's custom expressions, differentiated symbolically by symbolic.py)
  as Triton code in the residual r, with the second derivative the backward kernel needs;
- the **dimensions** dk, dv and the chunk size C, inlined as `tl.constexpr` defaults.

Templates (templates/kernels*.py.jinja) only test flags and paste these strings. The output is
deterministic. MLP memories get no kernels yet; the runtime falls back to the chunked path for them.
A memory configuration is anything with the fields of `nldsl.ir.Memory` that matter here (family, dk,
dv, chunk, read, self_target, rules with kind and at): the IR itself, or the runtime's MemoryConfig.
Like the rest of the generator, this module does not import torch.
"""

from __future__ import annotations

import ast as pyast
import math
from dataclasses import dataclass
from typing import Mapping, Optional


from nldsl import ir

from . import symbolic as S
from .names import comment, literal, py
from .jinja import environment

# ------------------------------------------------------------------ polynomials of the gates

VARIABLES = ("eta", "alpha", "beta", "n2")
CODE_NAME = {"eta": "g_eta", "alpha": "g_alpha", "beta": "g_beta", "n2": "n2"}
GATES = ("eta", "alpha", "beta")


class Poly:
    """A polynomial in the per-token gates and ‖k‖² with float coefficients (exact for the folding of
    update rules, which only adds and multiplies). Supports what memory/coeffs.py does with numbers:
    +, -, *, comparison with 0."""

    __slots__ = ("terms",)

    def __init__(self, terms: Optional[Mapping[tuple, float]] = None):
        self.terms = {m: c for m, c in (terms or {}).items() if c != 0.0}

    @staticmethod
    def const(value: float) -> "Poly":
        return Poly({(): float(value)})

    @staticmethod
    def var(name: str) -> "Poly":
        return Poly({((name, 1),): 1.0})

    @staticmethod
    def of(value) -> "Poly":
        return value if isinstance(value, Poly) else Poly.const(float(value))

    def __add__(self, other) -> "Poly":
        out = dict(self.terms)
        for m, c in Poly.of(other).terms.items():
            out[m] = out.get(m, 0.0) + c
        return Poly(out)

    __radd__ = __add__

    def __neg__(self) -> "Poly":
        return Poly({m: -c for m, c in self.terms.items()})

    def __sub__(self, other) -> "Poly":
        return self + (-Poly.of(other))

    def __rsub__(self, other) -> "Poly":
        return Poly.of(other) + (-self)

    def __mul__(self, other) -> "Poly":
        out: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in Poly.of(other).terms.items():
                powers = dict(m1)
                for name, e in m2:
                    powers[name] = powers.get(name, 0) + e
                key = tuple(sorted(powers.items()))
                out[key] = out.get(key, 0.0) + c1 * c2
        return Poly(out)

    __rmul__ = __mul__

    def __eq__(self, other) -> bool:
        return self.terms == Poly.of(other).terms

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.terms.items())))

    @property
    def is_zero(self) -> bool:
        return not self.terms

    @property
    def constant(self) -> Optional[float]:
        """The value when the polynomial is a constant, else None."""
        if not self.terms:
            return 0.0
        if set(self.terms) == {()}:
            return self.terms[()]
        return None

    def uses(self, name: str) -> bool:
        return any(v == name for m in self.terms for v, _ in m)

    def derivative(self, name: str) -> "Poly":
        out: dict = {}
        for m, c in self.terms.items():
            powers = dict(m)
            e = powers.get(name, 0)
            if e == 0:
                continue
            if e == 1:
                del powers[name]
            else:
                powers[name] = e - 1
            key = tuple(sorted(powers.items()))
            out[key] = out.get(key, 0.0) + c * e
        return Poly(out)

    def code(self) -> str:
        """A Triton expression over the names of CODE_NAME; a constant prints as a bare number."""
        if not self.terms:
            return "0.0"
        parts = []
        for m in sorted(self.terms, key=lambda m: (len(m), m)):
            c = self.terms[m]
            factors = [CODE_NAME[v] for v, e in m for _ in range(e)]
            if not factors:
                parts.append(repr(c))
            elif c == 1.0:
                parts.append(" * ".join(factors))
            elif c == -1.0:
                parts.append("-" + " * ".join(factors))
            else:
                parts.append(" * ".join([repr(c)] + factors))
        text = parts[0]
        for p in parts[1:]:
            text += f" - {p[1:]}" if p.startswith("-") else f" + {p}"
        return text


GRADIENT_RULES = ("gd", "momentum", "dgd")


def _has_momentum(cfg) -> bool:
    return any(r.kind == "momentum" for r in cfg.rules)


def _has_gradient(cfg) -> bool:
    return any(r.kind in GRADIENT_RULES for r in cfg.rules)


def fold_dual(rules) -> dict:
    """Per-token coefficients of a tile whose gradients are taken at the anchor (a linear memory): the
    token maps W to W (a I + cp k kᵀ) + S (r I + cp2 k kᵀ) + cw δ kᵀ, with δ = dl/dy at the anchor and
    the momentum S ← β S − η δ kᵀ."""
    eta, alpha, n2 = Poly.var("eta"), Poly.var("alpha"), Poly.var("n2")
    c = {"a": Poly.const(1.0), "cp": Poly(), "cw": Poly(), "r": Poly(), "cp2": Poly()}

    def multiply(scale, d) -> None:
        f = scale + d * n2
        c["cp"], c["cw"], c["cp2"] = f * c["cp"] + c["a"] * d, f * c["cw"], f * c["cp2"] + c["r"] * d
        c["a"], c["r"] = c["a"] * scale, c["r"] * scale

    for rule in rules:
        if rule.kind == "retain":
            multiply(alpha, Poly())
        elif rule.kind == "gd":
            c["cw"] = c["cw"] - eta
        elif rule.kind == "momentum":
            c["r"] = c["r"] + 1.0
        elif rule.kind == "delta":
            multiply(Poly.const(1.0), -eta)
        else:  # dgd
            multiply(alpha, -eta)
            c["cw"] = c["cw"] - eta
    return c


def fold_wy(rules, affine: tuple[float, float], self_target: bool) -> dict:
    """Per-token coefficients at chunk size 1 with dl/dy = ao y − bo target: the token maps W_(t−1) to
    W_(t−1) (a I + (ck k + cv v) kᵀ) + cw v kᵀ (cv carries a self-generated target W_(t−1) v)."""
    ao, bo = affine
    eta, alpha, n2 = Poly.var("eta"), Poly.var("alpha"), Poly.var("n2")
    c = {"a": Poly.const(1.0), "ck": Poly(), "cv": Poly(), "cw": Poly()}

    def multiply(scale, d) -> None:
        f = scale + d * n2
        c["ck"], c["cv"], c["cw"] = f * c["ck"] + c["a"] * d, f * c["cv"], f * c["cw"]
        c["a"] = c["a"] * scale

    def add_target() -> None:
        if bo != 0.0:
            key = "cv" if self_target else "cw"
            c[key] = c[key] + bo * eta

    for rule in rules:
        if rule.kind == "retain":
            multiply(alpha, Poly())
        elif rule.kind == "delta":
            multiply(Poly.const(1.0), -eta)
        elif rule.kind == "gd" and rule.at == "current":
            multiply(Poly.const(1.0), -ao * eta)
            add_target()
        elif rule.kind == "gd":
            c["ck"] = c["ck"] - ao * eta
            add_target()
        elif rule.at == "current":  # dgd: the transition and the gradient both act on the current state
            multiply(alpha, -(1.0 + ao) * eta)
            add_target()
        else:  # dgd at the anchor (the previous state)
            multiply(alpha, -eta)
            c["ck"] = c["ck"] - ao * eta
            add_target()
    return c


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
              "tanh": "_nl_tanh", "sigmoid": "tl.sigmoid"}


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
            return f"tl.exp({p!r} * tl.log({a}))"
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


# ------------------------------------------------------------------ the plan of one level

@dataclass(frozen=True)
class Coef:
    """One per-token coefficient: its Triton name, polynomial and value at a masked token."""

    name: str
    poly: Poly
    masked: float

    @property
    def line(self) -> str:
        value = self.poly.code()
        if self.poly.constant is not None:
            value = f"zero + {value}"
        return f"{self.name} = tl.where(valid, {value}, {self.masked!r})"


@dataclass(frozen=True)
class KernelPlan:
    """Everything the templates print for one level; every field is a flag, a number or code."""

    level: str                 # the spec's level name (block.level)
    prefix: str                # kernel names: <prefix>_fwd, <prefix>_bwd, <prefix>_step
    doc: str
    form: str                  # dual | wy | recurrent
    reason: str                # why this form (one line)
    dk: int
    dv: int
    chunk: int
    block_t: int               # the tile: the chunk rounded up to a power of two >= 16 (dual), WY_TILE (wy)
    read: str                  # after | before | anchor (anchor is before when C = 1)
    self_target: bool
    momentum: bool
    gradient: bool             # some rule consumes the objective's gradient
    transition: bool           # the tile has a triangular system (delta / dgd, or a gradient at the current state)
    transition2: bool          # a transition acts on the momentum term (momentum before delta / dgd)
    objective: ObjectiveCode
    uses: tuple                # the gates (and n2) the coefficients read
    coefs: tuple               # Coef lines of the chunk kernels
    backward: bool             # a Triton backward kernel exists for this level
    backward_reason: str
    dgate_lines: tuple         # backward: gate gradients from coefficient gradients
    step_lines: tuple          # the step kernel's rule statements, in order
    step_uses: tuple
    step_momentum: bool
    rules_text: str

    # names and literals the templates paste
    @property
    def level_literal(self) -> str:
        return literal(self.level)

    @property
    def form_literal(self) -> str:
        return literal(self.form)

    @property
    def read_literal(self) -> str:
        return literal(self.read)

    @property
    def reason_literal(self) -> str:
        return literal(self.reason)

    @property
    def backward_reason_literal(self) -> str:
        return literal(self.backward_reason)

    @property
    def fwd_name(self) -> str:
        return "None" if self.form == "recurrent" else f"{self.prefix}_fwd"

    @property
    def bwd_name(self) -> str:
        return f"{self.prefix}_bwd" if self.backward else "None"

    @property
    def read_text(self) -> str:
        return {"after": "y_t = W_t q_t (after the write)", "before": "y_t = W_(t-1) q_t (before the write)",
                "anchor": "y_t = W_anchor q_t (the chunk's start state)"}[self.read]

    @property
    def rg(self) -> str:
        """Which in-tile products the read uses: 'a' (after: up to t) or 'b' (before: up to t - 1)."""
        return "a" if self.read == "after" else "b"

    @property
    def has_e(self) -> bool:
        """Some rule writes rank-one columns E (a gradient step, a transition or the wy term); without
        them (e.g. Titans' retain + momentum) only the momentum writes and the E terms are skipped."""
        return self.has_cw or self.transition

    @property
    def uses_n2(self) -> bool:
        return "n2" in self.uses

    @property
    def has_cw(self) -> bool:
        return any(c.name == "c_cw" for c in self.coefs)

    @property
    def block_k(self) -> int:
        return _block(self.dk)

    @property
    def tile_tokens(self) -> int:
        """Tokens per tile: the chunk (dual form) or the tile of the wy form (free; the launcher may
        pass another power of two)."""
        return self.chunk if self.form == "dual" else self.block_t

    @staticmethod
    def gate_default(gate: str) -> str:
        """The value a masked token loads: no write, full retention, momentum kept."""
        return "0.0" if gate == "eta" else "1.0"

    @property
    def dual(self) -> bool:
        return self.form == "dual"

    @property
    def affine(self) -> bool:
        return self.objective.affine is not None

    @property
    def affine_expr(self) -> str:
        """dl/dy at the anchor for an affine objective, in Z (= M(k)) and TG (the target)."""
        a, b = self.objective.affine
        return _affine_text(a, b, "Z", "TG")

    @property
    def needs_z(self) -> bool:
        return not self.affine or self.objective.affine[0] != 0.0

    @property
    def needs_before(self) -> bool:
        return self.read == "before" or self.transition

    @property
    def wy_value(self) -> bool:
        """wy form: the rank-one term w = cw v is present."""
        return self.form == "wy" and self.has_cw

    @property
    def wy_key(self) -> bool:
        return any(c.name == "c_ck" for c in self.coefs)

    @property
    def wy_vkey(self) -> bool:
        return any(c.name == "c_cv" for c in self.coefs)

    @property
    def loads_v_value(self) -> bool:
        """v is read in dv columns (the target, or the wy rank-one term)."""
        return (self.dual and self.gradient and not self.self_target) or (self.form == "wy" and self.wy_value)

    @property
    def loads_v_key(self) -> bool:
        """v is read in dk columns (a self-generated target M(v), or its wy form)."""
        return (self.dual and self.gradient and self.self_target) or (self.form == "wy" and self.wy_vkey)

    @property
    def log2_bt(self) -> int:
        return int(math.log2(self.block_t))


def _affine_text(a: float, b: float, y: str, target: str) -> str:
    if a == 0.0:
        return f"-{target}" if b == 1.0 else f"{-b!r} * {target}"
    if a == b:
        return f"{y} - {target}" if a == 1.0 else f"{a!r} * ({y} - {target})"
    return f"{a!r} * {y} - {b!r} * {target}"


def kernel_form(cfg, objective: ObjectiveCode) -> tuple[str, str]:
    """('dual' | 'wy' | 'recurrent' | 'none', reason) of a memory configuration."""
    if cfg.family != "linear":
        return "none", "MLP memories have no generated Triton kernels yet"
    if cfg.chunk > 1:
        return "dual", f"chunk {cfg.chunk}: gradients at the chunk anchor, one tile per chunk (dual form)"
    if _has_momentum(cfg):
        return "recurrent", "chunk 1 with momentum: no chunk-parallel form; the fused step kernel runs token by token"
    if _has_gradient(cfg) and objective.affine is None:
        return "recurrent", (f"chunk 1 with the non-affine objective {objective.name}: the fused step kernel "
                             "runs token by token")
    return "wy", "chunk 1, gradient affine in W: WY/UT form over tiles of free size"


WY_TILE = 64  # the default tile of the wy form, whose tiles are free (a GPU-sized default)


def _block(n: int) -> int:
    return max(16, 1 << max(0, (n - 1).bit_length()))


def plan_level(level: str, cfg, objective: ObjectiveCode, doc: str = "") -> KernelPlan:
    """The kernel plan of a linear memory level (raises ValueError for an MLP memory)."""
    form, reason = kernel_form(cfg, objective)
    if form == "none":
        raise ValueError(f"memory level {level}: {reason}")
    momentum, gradient = _has_momentum(cfg), _has_gradient(cfg)
    coefs: list[Coef] = []
    transition = transition2 = False
    read = cfg.read if cfg.chunk > 1 or cfg.read != "anchor" else "before"
    if form == "dual":
        co = fold_dual(cfg.rules)
        a, cp, cw, r, cp2 = (co[x] for x in ("a", "cp", "cw", "r", "cp2"))
        coefs.append(Coef("c_a", a, 1.0))
        if not cw.is_zero:
            coefs.append(Coef("c_cw", cw, 0.0))
        if momentum:
            coefs.append(Coef("c_r", r, 0.0))
            coefs.append(Coef("c_cm", -Poly.var("eta"), 0.0))
        if not cp.is_zero:
            coefs.append(Coef("c_cp", cp, 0.0))
            transition = True
        if not cp2.is_zero:
            coefs.append(Coef("c_cp2", cp2, 0.0))
            transition2 = True
    elif form == "wy":
        affine = objective.affine if gradient else (0.0, 0.0)
        co = fold_wy(cfg.rules, affine, cfg.self_target)
        a, ck, cv, cw = (co[x] for x in ("a", "ck", "cv", "cw"))
        coefs.append(Coef("c_a", a, 1.0))
        if not cw.is_zero:
            coefs.append(Coef("c_cw", cw, 0.0))
        if not ck.is_zero:
            coefs.append(Coef("c_ck", ck, 0.0))
        if not cv.is_zero:
            coefs.append(Coef("c_cv", cv, 0.0))
        transition = not ck.is_zero or not cv.is_zero
    uses = tuple(v for v in VARIABLES if any(c.poly.uses(v) for c in coefs))
    if momentum and form == "dual":
        uses = tuple(v for v in VARIABLES if v in uses or v == "beta")
    backward, backward_reason = True, "Triton backward kernel (recomputes each tile from its stored start state)"
    if form == "recurrent":
        backward, backward_reason = False, "step kernel forward; backward recomputes with the chunked PyTorch path"
    dgate = _dgate_lines(coefs, uses) if backward else ()
    step_lines, step_uses = _step_lines(cfg, objective)
    prefix = py(level)
    return KernelPlan(
        level=level, prefix=prefix, doc=doc or f"memory level {level}", form=form, reason=reason,
        dk=cfg.dk, dv=cfg.dv, chunk=cfg.chunk, block_t=_block(cfg.chunk) if form == "dual" else WY_TILE, read=read,
        self_target=cfg.self_target, momentum=momentum and form == "dual",
        gradient=gradient, transition=transition, transition2=transition2, objective=objective,
        uses=uses, coefs=tuple(coefs), backward=backward, backward_reason=backward_reason,
        dgate_lines=dgate, step_lines=step_lines, step_uses=step_uses, step_momentum=momentum,
        rules_text=rules_text(cfg.rules))


def rules_text(rules) -> str:
    return ", ".join(r.kind + (f" at {r.at}" if r.kind in GRADIENT_RULES else "") for r in rules)


def _dgate_lines(coefs, uses) -> tuple:
    """d gate = sum over coefficients of d coef * d coef / d gate (the masked coefficient gradients are
    named d_<coef without c_>); the momentum decay's direct gradient d_beta_geo is added for beta, and
    d_n2 (through |k|^2) when a coefficient reads it."""
    lines = []
    for gate in GATES + (("n2",) if "n2" in uses else ()):
        terms = []
        for c in coefs:
            d = c.poly.derivative(gate)
            if d.is_zero:
                continue
            dname = "d" + c.name[1:]
            const = d.constant
            if const == 1.0:
                terms.append(dname)
            elif const is not None:
                terms.append(f"{const!r} * {dname}")
            else:
                terms.append(f"({d.code()}) * {dname}")
        if gate == "beta" and "beta" in uses and any(c.name == "c_r" for c in coefs):
            terms.append("d_beta_geo")
        lines.append(f"d_{gate} = " + (" + ".join(terms) if terms else "zero"))
    return tuple(lines)


def _step_lines(cfg, objective: ObjectiveCode) -> tuple[tuple, tuple]:
    """The rules of one token as statements on the state block P (rows of W), the momentum S and the
    anchor Wa; `tgt` is the target, `kt` the key. Gradients at the anchor use Wa, at the current state P
    (after the rules before this one)."""
    lines: list[str] = []
    uses: set = set()

    def residual_grad(point: str) -> None:
        lines.append(f"z = tl.sum({point} * kt[None, :], axis=1)")
        if objective.affine is not None:
            a, b = objective.affine
            lines.append(f"dlt = tl.where(mv, {_affine_text(a, b, 'z', 'tgt')}, 0.0)")
        else:
            lines.append("r = z - tgt")
            lines.append(f"dlt = tl.where(mv, {objective.grad}, 0.0)")

    for i, rule in enumerate(cfg.rules):
        point = "P" if rule.at == "current" else "Wa"
        lines.append(f"# rule {i + 1}: {rule.kind}" + (f" at {rule.at}" if rule.kind in GRADIENT_RULES else ""))
        if rule.kind == "retain":
            uses.add("alpha")
            lines.append("P = g_alpha * P")
        elif rule.kind == "gd":
            uses.add("eta")
            residual_grad(point)
            lines.append("P = P - g_eta * dlt[:, None] * kt[None, :]")
        elif rule.kind == "momentum":
            uses.update(("eta", "beta"))
            residual_grad(point)
            lines.append("S = g_beta * S - g_eta * dlt[:, None] * kt[None, :]")
            lines.append("P = P + S")
        elif rule.kind == "delta":
            uses.add("eta")
            lines.append("P = P - g_eta * tl.sum(P * kt[None, :], axis=1)[:, None] * kt[None, :]")
        else:  # dgd: W (alpha I - eta k k^T) - eta g, g at the rule's point before it acts
            uses.update(("eta", "alpha"))
            residual_grad(point)
            lines.append("P = g_alpha * P - g_eta * (tl.sum(P * kt[None, :], axis=1) + dlt)[:, None] * kt[None, :]")
    return tuple(lines), tuple(g for g in GATES if g in uses)


# ------------------------------------------------------------------ rendering

@dataclass(frozen=True)
class Skipped:
    level: str
    reason: str

    @property
    def level_literal(self) -> str:
        return literal(self.level)

    @property
    def reason_literal(self) -> str:
        return literal(self.reason)


def render(plans, title: str, skipped=()) -> str:
    """The text of kernels.py for these plans (levels without kernels listed in `skipped`)."""
    text = environment().get_template("kernels.py.jinja").render(title=title, plans=list(plans), skipped=list(skipped))
    try:
        pyast.parse(text, filename="kernels.py")
    except SyntaxError as e:  # a bug in the generator, never in the spec
        raise RuntimeError(f"generated kernels.py does not parse: {e}") from e
    return text


def _doc(text: str) -> str:
    return comment(text).replace("\\", "/").replace('"', "'")


def model_kernels(model: ir.ModelIR, spec_file: str) -> str:
    """kernels.py of a compiled package: every linear memory level of the model."""
    plans, skipped = [], []
    for m in model.memories:
        cfg = m
        o = m.objective
        code = objective_code(o.name, dict(o.params), m.dv, o.expr, dict(model.constants))
        form, reason = kernel_form(cfg, code)
        if form == "none":
            skipped.append(Skipped(m.name, reason))
            continue
        doc = _doc(f"memory level {m.name} ({spec_file}:{m.span.line})")
        plans.append(plan_level(m.name, cfg, code, doc))
    return render(plans, _doc(f"{model.name}: Triton kernels of the memory levels of {spec_file}"), skipped)


def level_kernels_source(level: str, cfg, objective: ObjectiveCode) -> str:
    """kernels.py text for one level outside a compiled package (the runtime's on-demand rendering)."""
    plan = plan_level(level, cfg, objective)
    return render([plan], _doc(f"Triton kernels of memory level {level}"))


__all__ = ["KernelPlan", "ObjectiveCode", "Poly", "derivative", "fold_dual", "fold_wy", "kernel_form",
           "level_kernels_source", "model_kernels", "objective_code", "plan_level", "render",
           "runtime_objective_code"]
