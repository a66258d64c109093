"""The 'wy' form: chunk size 1, linear memory, gradient affine in W (or no gradient), no momentum.

Every token is W_t = W_{t-1}(a_t I + p_t k_t^T) + w_t k_t^T with a, p, w known in advance (coeffs.py),
so tiles of any size are exact. Per group of equal tiles, everything that does not depend on the state
is computed at once: the in-tile products, the inverse of the triangular system and from it the WY/UT
pair U = T w, Wp = T (g * p) with e = U + Wp W_0^T, the read matrices G * (q k^T) and the scaled keys
of the end state. The loop over tiles then costs three products per tile: W with the tile's queries
and Wp stacked, the read, the end state (as the generated Triton walks do).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor

from .coeffs import along, wy_coefficients
from .compiled import CompiledStep, run_in_blocks
from .config import MemoryConfig
from .objectives import GradFn
from .scan import Geometry, _rows, system_inverse
from .state_update import state_update
from .tape import gram, plus_product, weight_rows
from .state import MemoryState
from .tiles import join_groups, tile_groups


def run_wy(cfg: MemoryConfig, objective: GradFn, q: Tensor, k: Tensor, v: Tensor,
           gates: Mapping[str, Tensor], start: MemoryState, tile: int,
           compile: bool = False) -> tuple[Tensor, MemoryState]:
    """`compile`: the walk over the tiles compiled by torch.compile, compiled.BLOCK tiles at a time
    (compiled.run_in_blocks)."""
    affine = cfg.affine(objective) if cfg.has_gradient else (0.0, 0.0)
    mode = 'after' if cfg.read == 'after' else 'before'
    weight = start.params['W']
    outputs = []
    for group in tile_groups(start.position, k.shape[2], tile, aligned=False):
        qg, kg, vg, gg = group.split(q), group.split(k), group.split(v), group.split_gates(gates)
        co = wy_coefficients(cfg.rules, gg, (kg * kg).sum(-1), affine, cfg.self_target)
        geometry = Geometry.build(co.a, kg[..., 0])
        p = _sum_or_none(along(co.ck, kg), along(co.cv, vg))
        w = along(co.cw, vg)
        w = torch.zeros_like(vg) if w is None else w
        if p is not None:
            inverse = system_inverse(geometry, kg, p)
            u = inverse @ w
            wp = inverse @ (geometry.retention[..., :-1, 0].unsqueeze(-1) * p)
        else:
            u, wp = w, None
        y, weight = _walk(mode, geometry, qg, kg, u, wp, weight, isinstance(co.a, Tensor), compile)
        outputs.append(y.reshape(y.shape[0], y.shape[1], group.tokens, cfg.dv))
    params = {'W': weight}
    return join_groups(outputs), MemoryState(params, dict(params), None, start.position + k.shape[2])


def _walk(mode: str, geometry: Geometry, q: Tensor, k: Tensor, u: Tensor, wp: Optional[Tensor], weight: Tensor,
          retention: bool, compile: bool) -> tuple[Tensor, Tensor]:
    """The loop over a group's tiles (B, H, count, L, ...): per tile its columns e = u + wp W^T, its
    reads g0 (q W^T) + (G * q k^T) e and its end state gL W + e^T (G[L] * k), one product of W with
    the tile's queries and wp stacked. What does not depend on W (the read matrices, the scaled keys)
    is computed for all tiles first, and each tile's reads are finished while its products are in
    cache."""
    rows = _rows(geometry.retention, mode)
    reads = rows[..., 1:] * gram(q, k)
    last = geometry.retention[..., -1, :]
    kend = last[..., 1:].unsqueeze(-1) * k
    scaled = rows[..., :1] * q if retention else q
    inputs = scaled if wp is None else torch.cat([scaled, wp], dim=-2)
    tiles = (inputs, u, reads, kend, last[..., 0])
    return run_in_blocks(_COMPILED_TILES, (k.shape[-2], wp is None), tiles, (weight,), compile)


def _tiles(length: int, plain: bool, tiles: tuple[Tensor, ...], weight: Tensor) -> tuple[Tensor, Tensor]:
    outputs = []
    for x, ui, read, ke, gl in zip(*(t.unbind(2) for t in tiles)):
        products = weight_rows(weight, x)
        e = ui if plain else ui + products[..., length:, :]
        outputs.append(plus_product(products[..., :length, :], read, e))
        weight = state_update(weight, gl, e, ke)
    return torch.stack(outputs, 2), weight


_COMPILED_TILES = CompiledStep(_tiles)


def _sum_or_none(*terms):
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0]
    for term in present[1:]:
        total = total + term
    return total
