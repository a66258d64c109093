"""Inner objectives ("attentional biases") of a memory level, given by their gradient.

Each objective is a per-token loss l(y, v) of the memory output y = M(k_t) and the target v (the value
v_t, or the self-generated target M_anchor(v_t)); the runtime only needs dl/dy, elementwise in y and v,
for any leading shape. With the residual r = y - v (sums run over the dv output channels):

=========  ==============================================  ===========================================
name       loss l                                          dl/dy
=========  ==============================================  ===========================================
l2         1/2 * sum r_i^2                                 r
sq         sum r_i^2                                       2 r
mse        (1/dv) * sum r_i^2                              2 r / dv
dot        -<y, v>                                         -v
l1         sum |r_i|                                       sign(r)  (sign(0) = 0)
huber(d)   sum of 1/2 r_i^2 if |r_i| <= d, else            clamp(r, -d, d)
           d (|r_i| - d/2)
lp(p)      sum |r_i|^p   (p >= 1)                          p |r|^(p-1) sign(r)
=========  ==============================================  ===========================================

Every gradient is written with differentiable torch ops so that the outer level can differentiate
through it (the second-order terms of an inner gradient step).

An objective whose gradient is affine in y, dl/dy = a*y - b*v with constants (a, b), makes the inner
gradient of a linear memory affine in its weights; `affine_coefficients` reports (a, b) so the
chunk-parallel path can use the WY form at chunk size 1. A plain callable (a generated custom objective)
is accepted anywhere an `Objective` is and is treated as non-affine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

GradFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Objective:
    """An inner objective: `grad(y, v)` is dl/dy; `affine(dv)` gives (a, b) when dl/dy = a*y - b*v."""

    name: str
    grad: GradFn
    affine: Optional[Callable[[int], tuple[float, float]]] = None
    params: tuple[tuple[str, float], ...] = field(default=())

    def __call__(self, y: Tensor, v: Tensor) -> Tensor:
        return self.grad(y, v)


def _l2(y: Tensor, v: Tensor) -> Tensor:
    return y - v


def _sq(y: Tensor, v: Tensor) -> Tensor:
    return 2.0 * (y - v)


def _mse(y: Tensor, v: Tensor) -> Tensor:
    return 2.0 * (y - v) / y.shape[-1]


def _dot(y: Tensor, v: Tensor) -> Tensor:
    return (-v).expand_as(y)


def _l1(y: Tensor, v: Tensor) -> Tensor:
    return torch.sign(y - v)


def _huber(delta: float) -> GradFn:
    def grad(y: Tensor, v: Tensor) -> Tensor:
        return torch.clamp(y - v, -delta, delta)
    return grad


def _lp(p: float) -> GradFn:
    def grad(y: Tensor, v: Tensor) -> Tensor:
        r = y - v
        # |r|^(p-1) has an infinite slope at r = 0 when p < 2; where r = 0 the gradient is 0 and so is its
        # derivative (the subgradient convention), instead of 0 · ∞ = NaN in the outer backward
        a = torch.abs(r)
        safe = torch.where(a > 0, a, torch.ones_like(a))
        return p * safe ** (p - 1.0) * torch.sign(r)
    return grad


def standard_objective(name: str, **params: float) -> Objective:
    """The named standard objective (see the module docstring for the exact formulas).

    `huber` takes `delta` (default 1.0); `lp` takes `p` (default 3.0, must be >= 1)."""
    allowed = {'huber': {'delta'}, 'lp': {'p'}}.get(name, set())
    unexpected = sorted(set(params) - allowed)
    if unexpected:
        raise ValueError(f"objective {name!r}: unexpected parameter(s) {', '.join(unexpected)}")
    if name == 'l2':
        return Objective('l2', _l2, lambda dv: (1.0, 1.0))
    if name == 'sq':
        return Objective('sq', _sq, lambda dv: (2.0, 2.0))
    if name == 'mse':
        return Objective('mse', _mse, lambda dv: (2.0 / dv, 2.0 / dv))
    if name == 'dot':
        return Objective('dot', _dot, lambda dv: (0.0, 1.0))
    if name == 'l1':
        return Objective('l1', _l1)
    if name == 'huber':
        delta = float(params.get('delta', 1.0))
        if delta <= 0:
            raise ValueError(f"huber needs delta > 0, got {delta}")
        return Objective('huber', _huber(delta), params=(('delta', delta),))
    if name == 'lp':
        p = float(params.get('p', 3.0))
        if p < 1:
            raise ValueError(f"lp needs p >= 1, got {p}")
        return Objective('lp', _lp(p), params=(('p', p),))
    raise ValueError(f"unknown objective {name!r}; expected l2, sq, mse, dot, l1, huber or lp")


def affine_coefficients(objective: object, dv: int) -> Optional[tuple[float, float]]:
    """(a, b) with dl/dy = a*y - b*v if the objective declares an affine gradient, else None."""
    affine = getattr(objective, 'affine', None)
    return None if affine is None else affine(dv)
