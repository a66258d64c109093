"""Tiles of the chunk-parallel recurrence, solved with batched matmuls and one triangular system.

Every parameter P (out, in) of a memory (a bias is a (out, 1) matrix whose input is the constant 1)
evolves inside a tile of L tokens as

    S_t = beta_t S_{t-1} + m_t x_t^T                                   (momentum, optional)
    P_t = P_{t-1} (a_t I + p_t x_t^T) + S_t (r_t I + p2_t x_t^T) + w_t x_t^T

with per-token scalars a, r, beta and vectors x, p, p2 (in), w, m (out) that do not depend on the state
inside the tile. This covers every rule order: retain / gd / momentum / delta / dgd at the chunk anchor
(p = c x, the dual form) and, at chunk size 1 with a linear memory and an affine gradient, gradients at
the current state and self-generated targets (p a mix of k and v: the WY/UT form). Writing
P_t = a_t P_{t-1} + r_t S_t + e_t x_t^T, the unknown columns e_t = w_t + P_{t-1} p_t + S_t p2_t satisfy a
unit lower-triangular system (I - A) E = R with A[t, i] = G[t-1, i] (p_t . x_i), where G holds the
in-tile products of a. Nothing divides by a gate, so a gate may be 0. Reads at the in-tile states and
the end state follow without materialising any per-token P_t:

    P_t xi_t = G[t,0] P_0 xi_t + Cm[t,0] S_0 xi_t + sum_{j<=t} Cm[t,j] (x_j . xi_t) m_j
               + sum_{i<=t} G[t,i] (x_i . xi_t) e_i,        Cm = G diag(r) B,

B holding the in-tile products of beta. All tensors may carry extra leading dimensions (a stack of
tiles), so the state-independent parts (and the wy form's reads) run for many tiles at once. Autograd
differentiates through everything; it keeps the L x L matrices of every tile.

Unlike the textbook gated-delta rewrite (beta = eta / alpha), this form never divides by a gate: the
retention alpha may be 0 on the chunk-parallel path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from .functional import linear_apply
from .tape import gram
from .state_update import state_update


def segment_products(a: Tensor) -> Tensor:
    """G (..., L+1, L+1) with G[t, i] = a_{i+1} * ... * a_t for i <= t (1 on the diagonal), 0 above;
    index 0 is the tile start, index t the state after the t-th token. a is (..., L).

    Running products of the masked gates, never a division or a log: exact when a gate is 0 or tiny,
    and so is the gradient (differences of cumulative log-gates would amplify rounding by 1/a)."""
    return _SegmentProducts.apply(a)


def _segment_products(a: Tensor) -> Tensor:
    length = a.shape[-1]
    padded = torch.cat([torch.ones_like(a[..., :1]), a], dim=-1)
    rows = torch.arange(length + 1, device=a.device)
    later = rows.unsqueeze(0) > rows.unsqueeze(-1)                       # [i, t]: t > i
    steps = torch.where(later, padded.unsqueeze(-2), torch.ones_like(padded).unsqueeze(-2))
    return torch.cumprod(steps, dim=-1).transpose(-1, -2).tril()


class _SegmentProducts(torch.autograd.Function):
    """The gradient by two small matmuls instead of cumprod's backward (several times slower here):
    dG[t, i] / da_j = G[t, j] G[j-1, i] for i < j <= t (a product split at j, so no division), hence
    da_j = sum_t G[t, j] (dG G^T)[t, j-1]; the triangles of G supply the index bounds. Differentiable,
    so higher-order gradients still work."""

    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        g = _segment_products(a)
        ctx.save_for_backward(g)
        return g

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (g,) = ctx.saved_tensors
        coupled = grad.tril() @ g.transpose(-1, -2)
        return (g[..., :, 1:] * coupled[..., :, :-1]).sum(-2)


def _rows(matrix: Tensor, mode: str) -> Tensor:
    """Rows of a (L+1, L+1) product matrix for the state each token reads: after (t) or before (t-1)."""
    return matrix[..., 1:, :] if mode == 'after' else matrix[..., :-1, :]


def _scaled(coef: Tensor, vectors: Tensor) -> Tensor:
    return coef.unsqueeze(-1) * vectors


@dataclass(frozen=True)
class Geometry:
    """The state-independent in-tile products of a stack of tiles (leading dims ..., then L+1, L+1):
    retention G from a, and with momentum the decay B from beta and the coupling Cm = G diag(r) B."""

    retention: Tensor
    decay: Optional[Tensor] = None
    coupling: Optional[Tensor] = None

    @staticmethod
    def build(a: Union[Tensor, float], like: Tensor, beta: Optional[Tensor] = None,
              r: Union[Tensor, float, None] = None) -> 'Geometry':
        """`a` (..., L) or the constant 1 (no retention); `like` (..., L) gives shape, dtype, device."""
        if isinstance(a, Tensor):
            retention = segment_products(a)
        else:
            ones = torch.ones(like.shape[-1] + 1, like.shape[-1] + 1, dtype=like.dtype, device=like.device)
            retention = ones.tril().expand(*like.shape[:-1], *ones.shape)
        if beta is None:
            return Geometry(retention)
        decay = segment_products(beta)
        r = r if isinstance(r, Tensor) else torch.full_like(like, float(r))
        r = torch.cat([torch.zeros_like(r[..., :1]), r], dim=-1)
        return Geometry(retention, decay, (retention * r.unsqueeze(-2)) @ decay)


@dataclass(frozen=True)
class Momentum:
    """Momentum terms of a tile: start S_0 (..., out, in), per-token m (..., L, out), p2 (..., L, in)."""

    start: Tensor
    m: Tensor
    p2: Optional[Tensor] = None


def system_inverse(geometry: Geometry, x: Tensor, p: Tensor) -> Tensor:
    """(I - A)^-1 with A[t, i] = G[t-1, i] (p_t . x_i) (strictly lower): for tiles whose x and p are
    known before the loop over tiles, so that each tile's solve becomes one matmul."""
    system = _system(geometry, x, p)
    return _solve_lower(system, torch.eye(x.shape[-2], dtype=x.dtype, device=x.device).expand_as(system))


def _system(geometry: Geometry, x: Tensor, p: Tensor) -> Tensor:
    """I - A, the unit lower-triangular matrix of the tile's system for its columns."""
    eye = torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
    return eye - _rows(geometry.retention, 'before')[..., 1:] * gram(p, x)


def solve_columns(geometry: Geometry, start: Tensor, x: Tensor, p: Optional[Tensor], w: Optional[Tensor],
                  momentum: Optional[Momentum] = None, inverse: Optional[Tensor] = None) -> Optional[Tensor]:
    """The columns e_t (..., L, out) of one tile; `inverse` is system_inverse(geometry, x, p) if known.

    p (or momentum.p2) None means that term is absent; with neither present no solve is needed. w None
    means no direct gradient term; when nothing else contributes either, e is 0 and None is returned."""
    rhs = w
    if p is not None:
        g_before = _rows(geometry.retention, 'before')
        rhs = _plus(rhs, _scaled(g_before[..., 0], linear_apply(start, p)))
        if momentum is not None:
            c_before = _rows(geometry.coupling, 'before')
            rhs = rhs + _scaled(c_before[..., 0], linear_apply(momentum.start, p))
            rhs = rhs + (c_before[..., 1:] * gram(p, x)) @ momentum.m
    if momentum is not None and momentum.p2 is not None:
        d_after = _rows(geometry.decay, 'after')
        rhs = _plus(rhs, _scaled(d_after[..., 0], linear_apply(momentum.start, momentum.p2)))
        rhs = rhs + (d_after[..., 1:] * gram(momentum.p2, x)) @ momentum.m
    if p is None or rhs is None:
        return rhs
    if inverse is not None:
        return inverse @ rhs
    return _solve_lower(_system(geometry, x, p), rhs)


def _plus(total: Optional[Tensor], term: Optional[Tensor]) -> Optional[Tensor]:
    """total + term, where None stands for an absent (zero) term."""
    if total is None:
        return term
    return total if term is None else total + term


def _solve_lower(system: Tensor, rhs: Tensor) -> Tensor:
    """X with system X = rhs, system unit lower triangular; half-precision inputs are solved in float32
    (the triangular solve has no bf16 / fp16 kernels)."""
    if system.dtype in (torch.float16, torch.bfloat16):
        x = torch.linalg.solve_triangular(system.float(), rhs.float(), upper=False, unitriangular=True)
        return x.to(rhs.dtype)
    return torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)


@dataclass(frozen=True)
class TileScan:
    """A solved tile (or a stack of them): reads at in-tile states and the end state."""

    start: Tensor                 # P_0 (..., out, in)
    x: Tensor                     # (..., L, in)
    e: Optional[Tensor]           # (..., L, out); None when the tile has no such columns (all 0)
    geometry: Geometry
    momentum: Optional[Momentum] = None

    def read(self, xi: Tensor, mode: str) -> Tensor:
        """P_t xi_t (mode 'after') or P_{t-1} xi_t (mode 'before') for xi (..., L, in)."""
        g = _rows(self.geometry.retention, mode)
        overlap = gram(xi, self.x)                                    # (x_i . xi_t) at [t, i]
        out = _scaled(g[..., 0], linear_apply(self.start, xi))
        if self.e is not None:
            out = out + (g[..., 1:] * overlap) @ self.e
        if self.momentum is not None:
            c = _rows(self.geometry.coupling, mode)
            out = out + _scaled(c[..., 0], linear_apply(self.momentum.start, xi))
            out = out + (c[..., 1:] * overlap) @ self.momentum.m
        return out

    def end(self) -> tuple[Tensor, Optional[Tensor]]:
        """(P_L, S_L): the parameter and the momentum after the last token of the tile."""
        g = self.geometry.retention[..., -1, :]
        columns = _scaled(g[..., 1:], self.e) if self.e is not None else None
        if self.momentum is None:
            return state_update(self.start, g[..., 0], columns, self.x), None
        mom = self.momentum
        c, d = self.geometry.coupling[..., -1, :], self.geometry.decay[..., -1, :]
        columns = _plus(columns, _scaled(c[..., 1:], mom.m))
        end = state_update(self.start, g[..., 0], columns, self.x, mom.start, c[..., 0])
        return end, state_update(mom.start, d[..., 0], _scaled(d[..., 1:], mom.m), self.x)
