"""The dual form of a linear memory with an affine gradient: every chunk as an affine map of its start
state, so the loop over chunks is one product per chunk and the rest runs for all chunks at once.

With gradients at the anchor, no delta/dgd transition and dl/dy = a*y - b*target, a chunk of L tokens
that starts from (W, S) (S the momentum) has anchor gradients delta = X W^T + O, where X = a K (minus
b V for a self-generated target M_anchor(v) = W v) and O = -b V (0 for a self-generated target). With
the in-chunk products of scan.py (retention G, decay B, coupling Cm) and the folded coefficients cw
(the direct gradient term) and eta (the momentum's), everything the chunk produces is linear in
(W, S):

    y      = (g0 Q + R X) W^T + c0 Q S^T + R O,   R[t, i] = (G[t, i] cw_i - Cm[t, i] eta_i) (q_t . k_i)
    W_end  = W (gL I + X^T diag(rho) K) + cL S + O^T diag(rho) K,   rho_i = G[L, i] cw_i - Cm[L, i] eta_i
    S_end  = -W X^T diag(sig) K + dL S - O^T diag(sig) K,            sig_i = B[L, i] eta_i

(g0, c0: the first columns of the rows each token reads; gL, cL, dL: the chunk's last row). The
matrices in parentheses and the offsets depend only on the inputs, so they are computed for every
chunk of a group together; the scan over chunks is W_{c+1} = W_c M_c + cL S_c + N_c (and the same for
S); the outputs of all chunks are then one batched product with the stacked start states. The loop
form (dual.py) makes about ten operations per chunk; this one two (four with momentum), for about the
same arithmetic. Autograd differentiates through it.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor

from .coeffs import DualCoefficients, _is_zero
from .scan import Geometry, _rows
from .tape import gram


# The largest chunk, as B * H * L * dk * dv (the multiply-adds of one product of the chunk's tokens with
# the state), that runs here, for a forward alone and for a forward that backward will follow. This form
# spends more arithmetic than the loop (the maps are dk x dk) and far fewer operations, so it wins where
# operations cost more than arithmetic. Measured on a 2-core CPU, retain + momentum: at 65 K and
# 131 K (dk 32 or 16, chunks of 16 or 32) it ran 1.7x to 2.5x faster than the loop, forward and
# forward + backward; at 524 K (dk 64, chunk 16) the forward was as fast and forward + backward 11%
# faster; at 2.1 M (dk 64, chunk 64) the forward 25% slower and forward + backward up to 21% faster
# (TTT-linear; Titans' rules even); at 8.4 M (dk 128, chunk 64) 1.5x to 2.4x slower.
MAX_WORK = 1 << 20
MAX_WORK_WITH_BACKWARD = 1 << 22


def eligible(cfg, affine: Optional[tuple[float, float]], coefficients: DualCoefficients, k: Tensor,
             shared_anchor: bool) -> bool:
    """Whether a group of chunks k (B, H, count, L, dk) runs here: a linear memory, an affine gradient,
    no delta/dgd transition, whole chunks, each chunk's anchor its start state, and chunks small enough
    that the loop's operations cost more than this form's arithmetic (MAX_WORK)."""
    batch, heads, count, length, _ = k.shape
    work = batch * heads * length * cfg.dk * cfg.dv
    limit = MAX_WORK_WITH_BACKWARD if torch.is_grad_enabled() else MAX_WORK
    return (cfg.family == 'linear' and affine is not None and cfg.has_gradient and count > 1
            and length == cfg.chunk and shared_anchor and work <= limit
            and _is_zero(coefficients.cp) and _is_zero(coefficients.cp2))


def run_affine(cfg, affine: tuple[float, float], coefficients: DualCoefficients, geometry: Geometry,
               gates: Mapping[str, Tensor], q: Tensor, k: Tensor, v: Tensor, weight: Tensor,
               momentum: Optional[Tensor]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """(y (B, H, count, L, dv), W and S after the group) for the chunks q, k, v (B, H, count, L, d)
    starting from `weight` (B, H, dv, dk) and `momentum` (or None)."""
    slope, target = affine
    x = slope * k - target * v if cfg.self_target else slope * k
    offset = None if cfg.self_target else -target * v
    cw = _per_token(coefficients.cw, k)
    eta = _per_token(gates['eta'], k) if momentum is not None else None

    def weights(g: Tensor, c: Optional[Tensor]) -> Tensor:
        """G[., i] cw_i - Cm[., i] eta_i over the chunk's tokens i, for rows g of G and c of Cm."""
        out = g[..., 1:] * cw.unsqueeze(-2)
        return out if c is None else out - c[..., 1:] * eta.unsqueeze(-2)

    # the outputs' maps: y = phi_w W^T (+ phi_s S^T) (+ y_off)
    if cfg.read == 'anchor':
        phi_w, phi_s, y_off = q, None, None
    else:
        mode = 'after' if cfg.read == 'after' else 'before'
        g = _rows(geometry.retention, mode)
        c = _rows(geometry.coupling, mode) if momentum is not None else None
        read = weights(g, c) * gram(q, k)
        phi_w = g[..., :1] * q + read @ x
        phi_s = c[..., :1] * q if c is not None else None
        y_off = read @ offset if offset is not None else None
    # the end states' maps: W_end = W m_w + cL S + n_w, S_end = W m_s + dL S + n_s
    last_g = geometry.retention[..., -1, :]
    last_c = geometry.coupling[..., -1, :] if momentum is not None else None
    rho = weights(last_g.unsqueeze(-2), None if last_c is None else last_c.unsqueeze(-2)).squeeze(-2)
    rk = rho.unsqueeze(-1) * k
    eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    m_w = last_g[..., :1, None] * eye + x.transpose(-1, -2) @ rk
    n_w = offset.transpose(-1, -2) @ rk if offset is not None else None
    if momentum is not None:
        last_d = geometry.decay[..., -1, :]
        sk = (last_d[..., 1:] * eta).unsqueeze(-1) * k
        m_s = -(x.transpose(-1, -2) @ sk)
        n_s = -(offset.transpose(-1, -2) @ sk) if offset is not None else None
    # per chunk (unbound once: indexing a tensor in the loop would give each step's backward a
    # gradient of the whole tensor)
    count = k.shape[2]
    m_w, n_w = _chunks(m_w, count), _chunks(n_w, count)
    if momentum is not None:
        scale_c, scale_d = _chunks(last_c[..., :1, None], count), _chunks(last_d[..., :1, None], count)
        m_s, n_s = _chunks(m_s, count), _chunks(n_s, count)
    starts, mom_starts = [], []
    for i in range(count):
        starts.append(weight)
        new_weight = weight @ m_w[i]
        if n_w[i] is not None:
            new_weight = new_weight + n_w[i]
        if momentum is not None:
            mom_starts.append(momentum)
            new_weight = new_weight + scale_c[i] * momentum
            new_momentum = scale_d[i] * momentum + weight @ m_s[i]
            momentum = new_momentum + n_s[i] if n_s[i] is not None else new_momentum
        weight = new_weight
    y = phi_w @ torch.stack(starts, 2).transpose(-1, -2)
    if phi_s is not None:
        y = y + phi_s @ torch.stack(mom_starts, 2).transpose(-1, -2)
    if y_off is not None:
        y = y + y_off
    return y, weight, momentum


def _per_token(value, like: Tensor) -> Tensor:
    """A folded coefficient (a tensor (B, H, count, L) or a constant) as a tensor shaped like like[..., 0]."""
    return value if isinstance(value, Tensor) else torch.full_like(like[..., 0], float(value))


def _chunks(t: Optional[Tensor], count: int) -> list:
    """t (B, H, count, ...) as a list of its chunks (None: a list of None)."""
    return [None] * count if t is None else list(t.unbind(2))
