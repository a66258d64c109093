"""The chunk-parallel path: exact, differentiable, with a Python loop only across tiles.

Three forms (`chunk_form` names the one a config gets, with the reason, for the compiler's diagnostic):

- 'dual' (C > 1, every gradient at the anchor): one tile per chunk, cut at absolute positions that are
  multiples of C (a state carried in mid-chunk starts with a short tile). All gradients of a tile are
  taken at once at the anchor; retention, momentum and delta/dgd transitions are solved by scan.py;
  reads at in-chunk states go through the dual form (no per-token weights).
- 'wy' (C = 1, linear memory, no momentum, gradient affine in W or no gradient): gradients at the
  previous or the current state are linear in W, so each token is W_{t-1}(a I + p k^T) + w k^T and tiles
  of any size (`tile`) are exact.
- 'sequential': C = 1 with momentum, with an MLP memory, or with a non-affine objective: no exact
  chunk-parallel form is implemented, so the reference recurrence runs token by token.

No formula divides by a gate, so retention alpha = 0 is handled. The backward pass is plain autograd
through the tiles (it keeps each tile's L x L matrices and anchor activations).
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import torch
from torch import Tensor

from . import functional as F
from .coeffs import as_tensor, along, dual_coefficients, wy_coefficients
from .config import MemoryConfig, Rule
from .functional import Params
from .inputs import check_inputs, start_state
from .objectives import affine_coefficients
from .reference import reference
from .scan import Momentum, TileScan, scan_tile
from .state import MemoryState

Objective = Callable[[Tensor, Tensor], Tensor]


def chunk_form(cfg: MemoryConfig, objective: object = None) -> tuple[str, str]:
    """('dual' | 'wy' | 'sequential', reason) for this config and objective.

    `objective` is an Objective, a standard objective's name, or None for an unknown (custom) objective,
    which is treated as non-affine."""
    if isinstance(objective, str):
        from .objectives import standard_objective
        objective = standard_objective(objective)
    if cfg.chunk > 1:
        return 'dual', (f"chunk size {cfg.chunk}: gradients at the chunk anchor are computed in parallel "
                        "(dual form); retention, momentum and delta/dgd transitions are solved per chunk")
    if cfg.has_momentum:
        return 'sequential', ("chunk size 1 with momentum: no chunk-parallel template for the coupled "
                              "(W, s) recurrence; running token by token")
    if cfg.family != 'linear':
        return 'sequential', ("chunk size 1 with an MLP memory: the gradient is not linear in the state; "
                              "running token by token")
    if cfg.has_gradient and affine_coefficients(objective, cfg.dv) is None:
        name = getattr(objective, 'name', 'a custom objective')
        return 'sequential', (f"chunk size 1 with {name}: the gradient is not affine in W; "
                              "running token by token")
    return 'wy', "chunk size 1, linear memory, affine gradient: WY/UT form over tiles of free size"


def chunked(cfg: MemoryConfig, objective: Objective, q: Tensor, k: Tensor, v: Tensor,
            gates: Mapping[str, Tensor], params0: Optional[Params], state: Optional[MemoryState] = None,
            tile: int = 64) -> tuple[Tensor, MemoryState]:
    """Same contract and results as `reference`, computed chunk-parallel where an exact form exists."""
    check_inputs(cfg, q, k, v, gates)
    if tile < 1:
        raise ValueError(f"tile size must be >= 1, got {tile}")
    form, _ = chunk_form(cfg, objective)
    if form == 'sequential':
        return reference(cfg, objective, q, k, v, gates, params0, state)
    start = start_state(cfg, params0, state, k)
    run = _run_wy if form == 'wy' else _run_dual
    return run(cfg, objective, q, k, v, gates, start, tile)


def _tiles(position: int, tokens: int, size: int, aligned: bool) -> list[tuple[int, int]]:
    """[start, end) token ranges; aligned tiles end where the absolute position is a multiple of size."""
    bounds, start = [], 0
    while start < tokens:
        length = size - (position + start) % size if aligned else size
        bounds.append((start, min(start + length, tokens)))
        start = bounds[-1][1]
    return bounds


def _slice(gates: Mapping[str, Tensor], start: int, end: int) -> dict[str, Tensor]:
    return {name: gate[:, :, start:end] for name, gate in gates.items()}


def _run_wy(cfg: MemoryConfig, objective: Objective, q: Tensor, k: Tensor, v: Tensor,
            gates: Mapping[str, Tensor], start: MemoryState, tile: int) -> tuple[Tensor, MemoryState]:
    affine = affine_coefficients(objective, cfg.dv) if cfg.has_gradient else (0.0, 0.0)
    weight = start.params['W']
    mode = 'after' if cfg.read == 'after' else 'before'
    outputs = []
    for lo, hi in _tiles(start.position, k.shape[2], tile, aligned=False):
        kt, vt = k[:, :, lo:hi], v[:, :, lo:hi]
        co = wy_coefficients(cfg.rules, _slice(gates, lo, hi), (kt * kt).sum(-1), affine, cfg.self_target)
        p = _sum_or_none(along(co.ck, kt), along(co.cv, vt))
        w = along(co.cw, vt)
        scan = scan_tile(weight, kt, as_tensor(co.a, kt[..., 0]), p,
                         torch.zeros_like(vt) if w is None else w)
        outputs.append(scan.read(q[:, :, lo:hi], mode))
        weight = scan.end()[0]
    params = {'W': weight}
    return torch.cat(outputs, dim=2), MemoryState(params, dict(params), None, start.position + k.shape[2])


def _sum_or_none(*terms: Optional[Tensor]) -> Optional[Tensor]:
    present = [t for t in terms if t is not None]
    return None if not present else present[0] if len(present) == 1 else sum(present[1:], present[0])


def _run_dual(cfg: MemoryConfig, objective: Objective, q: Tensor, k: Tensor, v: Tensor,
              gates: Mapping[str, Tensor], start: MemoryState, tile: int) -> tuple[Tensor, MemoryState]:
    theta, anchor, momentum = dict(start.params), dict(start.anchor), start.momentum
    position = start.position
    outputs = []
    for lo, hi in _tiles(position, k.shape[2], cfg.chunk, aligned=True):
        y, theta, momentum = _dual_tile(cfg, objective, theta, anchor, momentum, q[:, :, lo:hi],
                                        k[:, :, lo:hi], v[:, :, lo:hi], _slice(gates, lo, hi))
        outputs.append(y)
        position += hi - lo
        if position % cfg.chunk == 0:
            anchor = theta
    return torch.cat(outputs, dim=2), MemoryState(theta, anchor, momentum, position)


def _dual_tile(cfg: MemoryConfig, objective: Objective, theta: Params, anchor: Params,
               momentum: Optional[Params], q: Tensor, k: Tensor, v: Tensor,
               gates: Mapping[str, Tensor]) -> tuple[Tensor, Params, Optional[Params]]:
    """One chunk (or the part of it inside this call): all gradients at the anchor, then the scans."""
    target = F.apply(cfg, anchor, v) if cfg.self_target else v
    fwd = F.forward(cfg, anchor, k)
    deltas = F.backward(cfg, anchor, fwd, objective(fwd.out, target)) if cfg.has_gradient else None
    scans: dict[str, TileScan] = {}
    ones = torch.ones_like(k[..., :1])
    for layer, x in zip(F.layers(cfg), fwd.inputs):
        delta = deltas[layer.index - 1] if deltas is not None else None
        first = layer.index == 1

        def applies(rule: Rule, first: bool = first) -> bool:
            return first or rule.per_layer

        scans[layer.weight] = _scan_param(cfg, gates, theta[layer.weight], x, delta, applies,
                                          momentum[layer.weight] if momentum else None)
        if layer.bias:
            scans[layer.bias] = _scan_param(cfg, gates, theta[layer.bias].unsqueeze(-1), ones, delta,
                                            lambda rule: False,
                                            momentum[layer.bias].unsqueeze(-1) if momentum else None)
    if cfg.read == 'anchor':
        y = F.apply(cfg, anchor, q)
    else:
        y = _read(cfg, scans, q, cfg.read)
    biases = {layer.bias for layer in F.layers(cfg) if layer.bias}
    new_theta, new_momentum = {}, ({} if momentum is not None else None)
    for name, scan in scans.items():
        end, mom_end = scan.end()
        new_theta[name] = end.squeeze(-1) if name in biases else end
        if new_momentum is not None:
            new_momentum[name] = mom_end.squeeze(-1) if name in biases else mom_end
    return y, new_theta, new_momentum


def _scan_param(cfg: MemoryConfig, gates: Mapping[str, Tensor], start: Tensor, x: Tensor,
                delta: Optional[Tensor], applies: Callable[[Rule], bool],
                momentum: Optional[Tensor]) -> TileScan:
    co = dual_coefficients(cfg.rules, gates, (x * x).sum(-1), applies)
    like = x[..., 0]
    w = along(co.cw, delta) if delta is not None else None
    if w is None:
        w = torch.zeros(*like.shape, start.shape[-2], dtype=x.dtype, device=x.device)
    mom = None
    if momentum is not None:
        mom = Momentum(momentum, -gates['eta'].unsqueeze(-1) * delta, gates['beta'],
                       as_tensor(co.r, like), along(co.cp2, x))
    return scan_tile(start, x, as_tensor(co.a, like), along(co.cp, x), w, mom)


def _read(cfg: MemoryConfig, scans: Mapping[str, TileScan], q: Tensor, mode: str) -> Tensor:
    """M at the in-chunk states, layer by layer: each layer's query is the previous layer's output."""
    act = F.ACTIVATION_FNS[cfg.act][0]
    all_layers = F.layers(cfg)
    ones = torch.ones_like(q[..., :1])
    h = q
    for layer in all_layers:
        z = scans[layer.weight].read(h, mode)
        if layer.bias:
            z = z + scans[layer.bias].read(ones, mode)
        h = act(z) if layer.index < len(all_layers) else z
    return q + h if cfg.residual else h
