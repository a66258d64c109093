"""One tile of the chunk-parallel recurrence, solved with batched matmuls and one triangular solve.

Every parameter P (out, in) of a memory (a bias is a (out, 1) matrix whose input is the constant 1)
evolves inside a tile of L tokens as

    S_t = beta_t S_{t-1} + m_t x_t^T                                   (momentum, optional)
    P_t = P_{t-1} (a_t I + p_t x_t^T) + S_t (r_t I + p2_t x_t^T) + w_t x_t^T

with per-token scalars a, r, beta and vectors x, p, p2 (in), w, m (out) that do not depend on the state
inside the tile. This covers every rule order: retain / gd / momentum / delta / dgd at the chunk anchor
(p = c x, the dual form) and, at chunk size 1 with a linear memory and an affine gradient, gradients at
the current state and self-generated targets (p a mix of k and v, the WY/UT form). Writing
P_t = a_t P_{t-1} + r_t S_t + e_t x_t^T, the unknown columns e_t = w_t + P_{t-1} p_t + S_t p2_t satisfy a
unit lower-triangular system (I - A) E = R with A[t, i] = G[t-1, i] (p_t . x_i); G holds the in-tile
products of the retention a, so nothing divides by a gate (a gate may be 0). Reads at the in-tile states
(P_t xi_t or P_{t-1} xi_t) and the end state then follow without materialising any per-token P_t:

    P_t xi_t = G[t,0] P_0 xi_t + Cm[t,0] S_0 xi_t + sum_{j<=t} Cm[t,j] (x_j . xi_t) m_j
               + sum_{i<=t} G[t,i] (x_i . xi_t) e_i,        Cm = G diag(r) B,

B holding the in-tile products of beta. Autograd differentiates through all of it; it keeps the (L x L)
matrices of every tile, which is acceptable at the chunk sizes used here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


def segment_products(a: Tensor) -> Tensor:
    """G (..., L+1, L+1) with G[t, i] = a_{i+1} * ... * a_t for i <= t (1 on the diagonal), 0 above;
    index 0 is the tile start, index t the state after the t-th token. a is (..., L)."""
    length = a.shape[-1]
    padded = torch.cat([torch.ones_like(a[..., :1]), a], dim=-1)
    steps = padded.unsqueeze(-1).expand(*padded.shape, length + 1)          # steps[t, i] = a_t
    rows = torch.arange(length + 1, device=a.device)
    below = rows.unsqueeze(-1) > rows.unsqueeze(0)
    products = torch.cumprod(torch.where(below, steps, torch.ones_like(steps)), dim=-2)
    return torch.where(below | (rows.unsqueeze(-1) == rows.unsqueeze(0)), products, torch.zeros_like(products))


def _rows(matrix: Tensor, mode: str) -> Tensor:
    """Rows of a (L+1, L+1) product matrix for the states read by each token: after (t) or before (t-1)."""
    return matrix[..., 1:, :] if mode == 'after' else matrix[..., :-1, :]


def _scaled(coef: Tensor, vectors: Tensor) -> Tensor:
    return coef.unsqueeze(-1) * vectors


@dataclass(frozen=True)
class Momentum:
    """Momentum terms of a tile: start S_0 (B, H, out, in), per-token m (B, H, L, out), beta and r
    (B, H, L), p2 (B, H, L, in) or None."""

    start: Tensor
    m: Tensor
    beta: Tensor
    r: Tensor
    p2: Optional[Tensor]


@dataclass(frozen=True)
class TileScan:
    """The solved tile: enough to read at in-tile states and to produce the end state."""

    start: Tensor                 # P_0 (B, H, out, in)
    x: Tensor                     # (B, H, L, in)
    e: Tensor                     # (B, H, L, out)
    retention: Tensor             # G (B, H, L+1, L+1)
    momentum: Optional[Momentum]
    coupling: Optional[Tensor]    # Cm = G diag(r) B
    decay: Optional[Tensor]       # B (products of beta)

    def read(self, xi: Tensor, mode: str) -> Tensor:
        """P_t xi_t (mode 'after') or P_{t-1} xi_t (mode 'before') for xi (B, H, L, in)."""
        g = _rows(self.retention, mode)
        overlap = xi @ self.x.transpose(-1, -2)                       # (x_i . xi_t) at [t, i]
        out = _scaled(g[..., 0], xi @ self.start.transpose(-1, -2)) + (g[..., 1:] * overlap) @ self.e
        if self.momentum is not None:
            c = _rows(self.coupling, mode)
            out = out + _scaled(c[..., 0], xi @ self.momentum.start.transpose(-1, -2))
            out = out + (c[..., 1:] * overlap) @ self.momentum.m
        return out

    def end(self) -> tuple[Tensor, Optional[Tensor]]:
        """(P_L, S_L): the parameter and the momentum after the last token of the tile."""
        g = self.retention[..., -1, :]
        end = g[..., 0, None, None] * self.start + (_scaled(g[..., 1:], self.e)).transpose(-1, -2) @ self.x
        if self.momentum is None:
            return end, None
        c, d, mom = self.coupling[..., -1, :], self.decay[..., -1, :], self.momentum
        end = end + c[..., 0, None, None] * mom.start + _scaled(c[..., 1:], mom.m).transpose(-1, -2) @ self.x
        momentum_end = d[..., 0, None, None] * mom.start + _scaled(d[..., 1:], mom.m).transpose(-1, -2) @ self.x
        return end, momentum_end


def scan_tile(start: Tensor, x: Tensor, a: Tensor, p: Optional[Tensor], w: Tensor,
              momentum: Optional[Momentum] = None) -> TileScan:
    """Solve one tile of P_t = P_{t-1}(a_t I + p_t x_t^T) + S_t(r_t I + p2_t x_t^T) + w_t x_t^T.

    p (or momentum.p2) None means that term is absent; with neither present no solve is needed."""
    retention = segment_products(a)
    coupling = decay = None
    if momentum is not None:
        decay = segment_products(momentum.beta)
        r = torch.cat([torch.zeros_like(momentum.r[..., :1]), momentum.r], dim=-1)
        coupling = (retention * r.unsqueeze(-2)) @ decay
    rhs = w
    if p is not None:
        g_before = _rows(retention, 'before')
        p_overlap = p @ x.transpose(-1, -2)                               # (p_t . x_i) at [t, i]
        rhs = rhs + _scaled(g_before[..., 0], p @ start.transpose(-1, -2))
        if momentum is not None:
            c_before = _rows(coupling, 'before')
            rhs = rhs + _scaled(c_before[..., 0], p @ momentum.start.transpose(-1, -2))
            rhs = rhs + (c_before[..., 1:] * p_overlap) @ momentum.m
    if momentum is not None and momentum.p2 is not None:
        d_after = _rows(decay, 'after')
        rhs = rhs + _scaled(d_after[..., 0], momentum.p2 @ momentum.start.transpose(-1, -2))
        rhs = rhs + (d_after[..., 1:] * (momentum.p2 @ x.transpose(-1, -2))) @ momentum.m
    if p is None:
        e = rhs
    else:
        eye = torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
        system = eye - g_before[..., 1:] * p_overlap                      # unit lower triangular
        e = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    return TileScan(start, x, e, retention, momentum, coupling, decay)
