"""Per-token coefficients of a tile (see scan.py) from the declared rules, vectorised over tokens.

Within one token every rule multiplies the parameter on the right by (c I + d x x^T) (retain, delta,
the transition part of dgd) or adds a rank-one term along x^T (a gradient, the momentum). Products of
such factors with one x stay of the form a I + (coefficient) x x^T, so a whole token folds into the
scalars returned here. Scalars are tensors (B, H, L) or the Python number 0 for a term that is absent,
so that the scan can skip it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Union

import torch
from torch import Tensor

from .config import Rule

Scalar = Union[Tensor, float]


def _is_zero(value: Scalar) -> bool:
    return not isinstance(value, Tensor) and value == 0


def _mul(*factors: Scalar) -> Scalar:
    """Product that stays the Python number 0 when a factor is the constant 0."""
    if any(_is_zero(f) for f in factors):
        return 0.0
    out: Scalar = 1.0
    for f in factors:
        out = out * f
    return out


def _add(*terms: Scalar) -> Scalar:
    """Sum that drops constant-0 terms (and stays 0 when all are)."""
    out: Scalar = 0.0
    for term in terms:
        if not _is_zero(term):
            out = term if _is_zero(out) else out + term
    return out


@dataclass(frozen=True)
class DualCoefficients:
    """For gradients at the anchor, with delta_t the anchor gradient at the layer's output:
    transition a I + cp x x^T, additive cw delta x^T, momentum m = -eta delta with
    S-coupling r I + cp2 x x^T after the momentum rule."""

    a: Scalar
    cp: Scalar
    cw: Scalar
    r: Scalar
    cp2: Scalar


def dual_coefficients(rules: tuple[Rule, ...], gates: Mapping[str, Tensor], norm2: Optional[Tensor],
                      applies: Callable[[Rule], bool]) -> DualCoefficients:
    """Fold the rules of each token; `norm2` is |x_t|^2 and `applies(rule)` says whether a delta/dgd
    transition acts on this parameter (only weights whose transition input is x)."""
    a, cp, cw, r, cp2 = 1.0, 0.0, 0.0, 0.0, 0.0

    def multiply(c: Scalar, d: Scalar) -> None:
        nonlocal a, cp, cw, r, cp2
        f = _add(c, _mul(d, norm2))
        cp, cw, cp2 = _add(_mul(f, cp), _mul(a, d)), _mul(f, cw), _add(_mul(f, cp2), _mul(r, d))
        a, r = _mul(a, c), _mul(r, c)

    for rule in rules:
        eta = gates.get('eta')
        if rule.kind == 'retain':
            multiply(gates['alpha'], 0.0)
        elif rule.kind == 'gd':
            cw = _add(cw, -eta)
        elif rule.kind == 'momentum':
            r = _add(r, 1.0)
        elif rule.kind == 'delta':
            if applies(rule):
                multiply(1.0, -eta)
        else:  # dgd
            multiply(gates['alpha'], -eta if applies(rule) else 0.0)
            cw = _add(cw, -eta)
    return DualCoefficients(a, cp, cw, r, cp2)


@dataclass(frozen=True)
class WYCoefficients:
    """For a linear memory at chunk size 1 with dl/dy = ao y - bo v: the token's transition is
    W_{t-1} (a I + (ck k + cv v) k^T) + cw v k^T (cv carries a self-generated target W_{t-1} v)."""

    a: Scalar
    ck: Scalar
    cv: Scalar
    cw: Scalar


def wy_coefficients(rules: tuple[Rule, ...], gates: Mapping[str, Tensor], norm2: Tensor,
                    affine: tuple[float, float], self_target: bool) -> WYCoefficients:
    ao, bo = affine
    a, ck, cv, cw = 1.0, 0.0, 0.0, 0.0

    def multiply(c: Scalar, d: Scalar) -> None:
        nonlocal a, ck, cv, cw
        f = _add(c, _mul(d, norm2))
        ck, cv, cw = _add(_mul(f, ck), _mul(a, d)), _mul(f, cv), _mul(f, cw)
        a = _mul(a, c)

    def add_target(eta: Tensor) -> None:
        # -eta * (-bo * target) k^T: a constant v, or the anchor's M(v) = W_{t-1} v.
        nonlocal cv, cw
        if bo == 0:
            return
        if self_target:
            cv = _add(cv, bo * eta)
        else:
            cw = _add(cw, bo * eta)

    for rule in rules:
        eta = gates.get('eta')
        if rule.kind == 'retain':
            multiply(gates['alpha'], 0.0)
        elif rule.kind == 'delta':
            multiply(1.0, -eta)
        elif rule.kind == 'gd' and rule.at == 'current':
            multiply(1.0, -ao * eta if ao else 0.0)
            add_target(eta)
        elif rule.kind == 'gd':
            if ao:
                ck = _add(ck, -ao * eta)
            add_target(eta)
        elif rule.at == 'current':  # dgd: the transition and the gradient both act on the current state
            multiply(gates['alpha'], -(1.0 + ao) * eta)
            add_target(eta)
        else:  # dgd at anchor
            multiply(gates['alpha'], -eta)
            if ao:
                ck = _add(ck, -ao * eta)
            add_target(eta)
    return WYCoefficients(a, ck, cv, cw)


def as_tensor(value: Scalar, like: Tensor) -> Tensor:
    """A (B, H, L) tensor for a coefficient that may be a Python number."""
    return value if isinstance(value, Tensor) else torch.full_like(like, float(value))


def along(value: Scalar, vectors: Tensor) -> Optional[Tensor]:
    """coefficient * vectors (B, H, L, n), or None when the coefficient is the constant 0."""
    if _is_zero(value):
        return None
    return value.unsqueeze(-1) * vectors if isinstance(value, Tensor) else value * vectors
