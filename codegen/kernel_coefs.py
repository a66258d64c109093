"""Folding a memory's rule order into per-token coefficients: polynomials of the gates (η, α, β) and of
‖k‖², printed as Triton expressions with their partial derivatives (for codegen/kernels.py).

The folding is the same as the chunked path's (runtime/memory/coeffs.py); a test checks they agree.
Like the rest of the generator, this module does not import torch.
"""

from __future__ import annotations

from typing import Mapping, Optional

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
