"""The 'wy' form: chunk size 1, linear memory, gradient affine in W (or no gradient), no momentum.

Every token is W_t = W_{t-1}(a_t I + p_t k_t^T) + w_t k_t^T with a, p, w known in advance (coeffs.py),
so tiles of any size are exact. Per group of equal tiles, everything that does not depend on the state
is computed at once: the in-tile products, the inverse of the triangular system and from it the WY/UT
pair U = T w, Wp = T (g * p) with e = U + Wp W_0^T. The loop over tiles then costs two matmuls per tile
(e and the end state), and the reads of all tiles run batched after the loop.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from .coeffs import along, wy_coefficients
from .functional import linear_apply
from .config import MemoryConfig
from .objectives import GradFn, affine_coefficients
from .scan import Geometry, TileScan, system_inverse
from .state import MemoryState
from .tiles import join_groups, tile_groups, unbind_tiles


def run_wy(cfg: MemoryConfig, objective: GradFn, q: Tensor, k: Tensor, v: Tensor,
           gates: Mapping[str, Tensor], start: MemoryState, tile: int) -> tuple[Tensor, MemoryState]:
    affine = affine_coefficients(objective, cfg.dv) if cfg.has_gradient else (0.0, 0.0)
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
        starts, columns = [], []
        for ui, wpi, ki, tile_geometry in unbind_tiles((u, wp, kg, geometry), group.count):
            starts.append(weight)
            e = ui if wpi is None else ui + linear_apply(weight, wpi)
            columns.append(e)
            weight = TileScan(weight, ki, e, tile_geometry).end()[0]
        scans = TileScan(torch.stack(starts, 2), kg, torch.stack(columns, 2), geometry)
        y = scans.read(qg, mode)
        outputs.append(y.reshape(y.shape[0], y.shape[1], group.tokens, cfg.dv))
    params = {'W': weight}
    return join_groups(outputs), MemoryState(params, dict(params), None, start.position + k.shape[2])


def _sum_or_none(*terms):
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0]
    for term in present[1:]:
        total = total + term
    return total
