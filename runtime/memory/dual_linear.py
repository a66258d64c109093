"""The dual form of a linear memory without delta/dgd transitions: whatever a chunk does that does not
depend on its start state is computed for all chunks of a group at once, and the loop over chunks does
only the rest.

With gradients at the anchor (the chunk's start state W, and S the momentum) and delta_t = dl/dy of
token t at the anchor, a chunk of L tokens produces (scan.py's in-chunk products: retention G, decay B,
coupling Cm; cw the folded direct-gradient coefficient, eta the momentum's)

    y      = g0 Q W^T + c0 Q S^T + R delta,   R[t, i] = (G[t, i] cw_i - Cm[t, i] eta_i) (q_t . k_i)
    W_end  = gL W + cL S + delta^T diag(rho) K,   rho_i = G[L, i] cw_i - Cm[L, i] eta_i
    S_end  = dL S - delta^T diag(sig) K,          sig_i = B[L, i] eta_i

(g0, c0: the first columns of the rows each token reads; gL, cL, dL: the chunk's last row; read at the
anchor, y = Q W^T). R, rho K and sig K are the chunk's `Weights`. Two ways to run the chunks:

- `run_loop`, for any elementwise objective: per chunk one product of W with the chunk's queries and
  keys stacked (and values, for a self-generated target M_anchor(v) = W v), the objective's derivative
  delta, the read and the end states: five arithmetic operations a chunk (ten with momentum) and 25
  operations in all, views included, where the general loop of dual.py makes twelve and 53. On a
  2-core CPU (B = 2, T = 2048, 4 heads of 64, chunks of 64) TTT-linear's forward took 11.2-11.6 ms
  against 14.3-14.7, forward + backward with the huber objective 11% less; Titans' rules, whose
  time goes to the in-chunk products of scan.py, ran as fast either way.
- `run_maps`, for an affine gradient dl/dy = a y - b target: then delta = X W^T + O with X = a K (minus
  b V for a self-generated target) and O = -b V (0 for a self-generated target), and the chunk is an
  affine map of (W, S): W_end = W (gL I + X^T diag(rho) K) + cL S + O^T diag(rho) K, S_end =
  -W X^T diag(sig) K + dL S - O^T diag(sig) K, y = (g0 Q + R X) W^T + c0 Q S^T + R O. The loop is one
  product per chunk (two more with momentum); the maps cost dk x dk each, more arithmetic than the loop
  for large states, so they run where operations cost more than arithmetic (`MAX_STATE`).

Autograd differentiates through both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch
from torch import Tensor

from .coeffs import DualCoefficients, _is_zero
from .compiled import CompiledStep, run_in_blocks
from .functional import clip_deltas
from .objectives import GradFn
from .scan import Geometry, _rows
from .state_update import state_update
from .tape import gram, plus_product, weight_rows


# The largest state, as B * H * dk * dv (every batch row's and head's W together), that runs as affine
# maps, for a forward alone and for a forward that backward will follow: the maps make far fewer
# operations than the loop and more arithmetic (dk x dk products), so they win where operations cost
# more than arithmetic, which the state's size decides. Measured on a 2-core CPU against run_loop
# (TTT-linear's and Titans' rules; ratio = the loop's time over the maps'): at 2 K to 8 K the maps ran
# 1.2x to 3.5x faster (B = 2, H = 4, dk 16 or 32, chunks of 16 or 32; B = 1, H = 1 or 4, dk 32 or
# 64), at 16 K the two were even (0.85x to 1.37x: B = 1, H = 4, dk 64; B = 1, H = 1, dk 128; B = 8,
# H = 8, dk 16 with chunks of 64), and from 32 K the loop won (0.27x to 1.0x forward, 0.66x to 1.0x
# forward + backward: B = 2 or 8, H = 4, dk 32 to 128).
MAX_STATE = 1 << 13
MAX_STATE_WITH_BACKWARD = 1 << 14


def form(cfg, affine: Optional[tuple[float, float]], coefficients: DualCoefficients, k: Tensor,
         shared_anchor: bool) -> Optional[str]:
    """How a group of chunks k (B, H, count, L, dk) runs: 'maps', 'loop', or None for the general loop
    of dual.py. Both forms here need a linear memory with a gradient, no delta/dgd transition, whole
    chunks and each chunk's anchor its start state; the maps also an affine gradient, more than one
    chunk, a state small enough that the loop's operations cost more than the maps' arithmetic, and
    no autocast."""
    batch, heads, count, length, _ = k.shape
    if not (cfg.family == 'linear' and cfg.has_gradient and length == cfg.chunk and shared_anchor
            and _is_zero(coefficients.cp) and _is_zero(coefficients.cp2)):
        return None
    state = batch * heads * cfg.dk * cfg.dv
    limit = MAX_STATE_WITH_BACKWARD if torch.is_grad_enabled() else MAX_STATE
    # under autocast the maps would carry the state through bf16 products (W M); the loop accumulates
    # every update in the state's own dtype
    autocast = torch.is_autocast_enabled(k.device.type)
    return 'maps' if affine is not None and count > 1 and state <= limit and not autocast else 'loop'


@dataclass(frozen=True)
class Weights:
    """What the chunks of a group read and write, for all of them (B, H, count, ...)."""

    g0: Optional[Tensor]         # (.., L, 1): the start state's share of each read; None: all 1
    c0: Optional[Tensor]         # (.., L, 1): the start momentum's share of each read
    read: Optional[Tensor]       # (.., L, L): R; None: read at the anchor
    rk: Tensor                   # (.., L, dk): diag(rho) K
    sk: Optional[Tensor]         # (.., L, dk): -diag(sig) K (momentum)
    last: Tensor                 # (..): gL
    last_c: Optional[Tensor]     # (..): cL
    last_d: Optional[Tensor]     # (..): dL

    @staticmethod
    def build(cfg, coefficients: DualCoefficients, geometry: Geometry, gates: Mapping[str, Tensor],
              q: Tensor, k: Tensor, momentum: bool) -> 'Weights':
        cw = _per_token(coefficients.cw, k)
        eta = _per_token(gates['eta'], k) if momentum else None

        def weights(g: Tensor, c: Optional[Tensor]) -> Tensor:
            """G[., i] cw_i - Cm[., i] eta_i over the chunk's tokens i, for rows g of G and c of Cm."""
            out = g[..., 1:] * cw.unsqueeze(-2)
            return out if c is None else out - c[..., 1:] * eta.unsqueeze(-2)

        g0 = c0 = read = None
        if cfg.read != 'anchor':
            mode = 'after' if cfg.read == 'after' else 'before'
            g = _rows(geometry.retention, mode)
            c = _rows(geometry.coupling, mode) if momentum else None
            g0 = g[..., :1] if isinstance(coefficients.a, Tensor) else None      # else no retention
            c0 = c[..., :1] if c is not None else None
            read = weights(g, c) * gram(q, k)
        last_g = geometry.retention[..., -1, :]
        last_c = geometry.coupling[..., -1, :] if momentum else None
        rho = weights(last_g.unsqueeze(-2), None if last_c is None else last_c.unsqueeze(-2)).squeeze(-2)
        sk = None
        if momentum:
            last_d = geometry.decay[..., -1, :]
            sk = (last_d[..., 1:] * eta).unsqueeze(-1) * -k
        return Weights(g0, c0, read, rho.unsqueeze(-1) * k, sk, last_g[..., 0],
                       last_c[..., 0] if momentum else None, last_d[..., 0] if momentum else None)


def run_loop(cfg, objective: GradFn, w: Weights, q: Tensor, k: Tensor, v: Tensor, weight: Tensor,
             momentum: Optional[Tensor], compile: bool = False) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """(y (B, H, count, L, dv), W and S after the group) for the chunks q, k, v (B, H, count, L, d)
    starting from `weight` (B, H, dv, dk) and `momentum` (or None), any elementwise objective;
    `compile`: compiled.BLOCK chunks at a time by torch.compile (compiled.run_in_blocks).

    Each chunk's output is finished inside the loop, while its products are still in cache: reading
    them all after the loop, as one batched product, made the loop a quarter slower (TTT-linear, B = 2,
    T = 2048, 4 heads of 64)."""
    # the start state's share of each read folded into the queries: g0 Q W^T = (g0 Q) W^T
    reads = q if w.read is None or w.g0 is None else w.g0 * q
    inputs = torch.cat([reads, k, v] if cfg.self_target else [reads, k], dim=-2)
    mom_reads = w.c0 * q if momentum is not None and w.read is not None else None
    tiles = (inputs, v, mom_reads, w.read, w.rk, w.sk, w.last, w.last_c, w.last_d)
    return run_in_blocks(_COMPILED_LOOP, (cfg, objective, k.shape[-2]), tiles, (weight, momentum), compile)


def _loop(cfg, objective: GradFn, length: int, tiles: tuple, weight: Tensor,
          momentum: Optional[Tensor]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    outputs = []
    for x, vi, mq, read, rk, sk, last, last_c, last_d in zip(*(_chunks(t, tiles[0].shape[2]) for t in tiles)):
        products = weight_rows(weight, x)
        y, out = products[..., :length, :], products[..., length:2 * length, :]
        delta = objective(out, products[..., 2 * length:, :] if cfg.self_target else vi)
        if cfg.clip is not None:
            (delta,) = clip_deltas(cfg, (x[..., length:2 * length, :],), (delta,))
        if read is not None:
            if mq is not None:
                y = plus_product(y, mq, momentum.transpose(-1, -2))
            y = plus_product(y, read, delta)
        outputs.append(y)
        if momentum is not None:
            weight, momentum = (state_update(weight, last, delta, rk, momentum, last_c),
                                state_update(momentum, last_d, delta, sk))
        else:
            weight = state_update(weight, last, delta, rk)
    return torch.stack(outputs, 2), weight, momentum


_COMPILED_LOOP = CompiledStep(_loop)


def run_maps(cfg, affine: tuple[float, float], w: Weights, q: Tensor, k: Tensor, v: Tensor,
             weight: Tensor, momentum: Optional[Tensor]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """As run_loop, for an affine gradient (see the module docstring)."""
    slope, target = affine
    x = slope * k - target * v if cfg.self_target else slope * k
    offset = None if cfg.self_target else -target * v
    # the outputs' maps: y = phi_w W^T (+ phi_s S^T) (+ y_off)
    phi_w, phi_s, y_off = q, None, None
    if w.read is not None:
        phi_w = (q if w.g0 is None else w.g0 * q) + w.read @ x
        phi_s = w.c0 * q if w.c0 is not None else None
        y_off = w.read @ offset if offset is not None else None
    # the end states' maps: W_end = W m_w + cL S + n_w, S_end = W m_s + dL S + n_s
    eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    m_w = w.last[..., None, None] * eye + x.transpose(-1, -2) @ w.rk
    n_w = offset.transpose(-1, -2) @ w.rk if offset is not None else None
    if momentum is not None:
        m_s = x.transpose(-1, -2) @ w.sk
        n_s = offset.transpose(-1, -2) @ w.sk if offset is not None else None
    # per chunk (unbound once: indexing a tensor in the loop would give each step's backward a
    # gradient of the whole tensor)
    count = k.shape[2]
    m_w, n_w = _chunks(m_w, count), _chunks(n_w, count)
    if momentum is not None:
        scale_c, scale_d = _chunks(w.last_c[..., None, None], count), _chunks(w.last_d[..., None, None], count)
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
