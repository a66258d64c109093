"""The 'dual' form: chunk size C > 1, every gradient taken at the chunk anchor.

Tiles are the chunks (cut at absolute positions that are multiples of C). Per group of equal tiles,
the state-independent parts run at once: the rule coefficients, the in-tile products of the gates and,
when delta/dgd act on the key-input layer, the inverse of its triangular system. The loop over tiles
does what needs the anchor: one forward and hand-written backward pass of the memory on the tile's keys
(all gradients of the tile in parallel), the solve for the update columns e, the end state, and the
read: at the anchor directly, or at the in-chunk states through the dual form (layer by layer for an
MLP), never materialising per-token weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch
from torch import Tensor

from . import dual_linear
from . import functional as F
from .coeffs import DualCoefficients, along, dual_coefficients
from .compiled import CompiledStep
from .config import MemoryConfig
from .functional import Params
from .objectives import GradFn
from .scan import Geometry, Momentum, TileScan, solve_columns, system_inverse
from .state import MemoryState
from .recompute import may_recompute, run_recomputed
from .tape import forward_alone
from .tiles import TileGroup, join_groups, tile_groups, unbind_tiles

# Recompute each tile in backward from its saved start state (recompute.py) when the states a group of
# tiles would keep add up to this many bytes: plain autograd keeps several state-sized tensors per tile
# (4 heads of a 256 -> 1024 -> 256 MLP at B = 2, T = 2048: 4.4 GB of resident memory against 1.4 GB),
# and recomputation costs the elementwise part of one more forward of every tile (its products with
# the weights are replayed from a tape), which small memories are better off without. 0 recomputes
# always; float('inf') never (plain autograd is needed only for higher-order gradients through a memory
# level).
RECOMPUTE_MIN_BYTES = 256 * 2 ** 20


def run_dual(cfg: MemoryConfig, objective: GradFn, q: Tensor, k: Tensor, v: Tensor,
             gates: Mapping[str, Tensor], start: MemoryState, compile: bool = False) -> tuple[Tensor, MemoryState]:
    """`compile`: the general loop's tile step, or the lean loop of a linear memory, compiled by
    torch.compile (compiled.py), except where a group recomputes its tiles in backward or runs as
    affine maps."""
    carried = _Carried(dict(start.params), dict(start.anchor), start.momentum, start.position)
    outputs = []
    for group in tile_groups(start.position, k.shape[2], cfg.chunk, aligned=True):
        y, carried = _run_group(cfg, objective, group, q, k, v, gates, carried, compile)
        outputs.append(y)
    return join_groups(outputs), MemoryState(carried.theta, carried.anchor, carried.momentum, carried.position)


@dataclass(frozen=True)
class _Carried:
    theta: Params
    anchor: Params
    momentum: Optional[Params]
    position: int


@dataclass(frozen=True)
class _Prepared:
    """State-independent quantities of a group of tiles (B, H, count, L, ...)."""

    gates: dict[str, Tensor]
    first: DualCoefficients          # the key-input weight (x = k)
    scalar: DualCoefficients         # weights and biases whose transitions are scalar
    geometry: Geometry
    inverse: Optional[Tensor]        # key-input layer's system inverse, when delta/dgd act on it


def _prepare(cfg: MemoryConfig, group: TileGroup, k: Tensor, gates: Mapping[str, Tensor]) -> _Prepared:
    gg = group.split_gates(gates)
    # Only the x x^T parts depend on the parameter; a and r (hence the geometry) are shared by all.
    first = dual_coefficients(cfg.rules, gg, (k * k).sum(-1), lambda rule: True)
    scalar = dual_coefficients(cfg.rules, gg, None, lambda rule: False)
    geometry = Geometry.build(first.a, k[..., 0], gg.get('beta') if cfg.has_momentum else None, first.r)
    p = along(first.cp, k)
    inverse = system_inverse(geometry, k, p) if p is not None else None
    return _Prepared(gg, first, scalar, geometry, inverse)


def _run_group(cfg: MemoryConfig, objective: GradFn, group: TileGroup, q: Tensor, k: Tensor, v: Tensor,
               gates: Mapping[str, Tensor], carried: _Carried, compile: bool) -> tuple[Tensor, _Carried]:
    qg, kg, vg = group.split(q), group.split(k), group.split(v)
    prep = _prepare(cfg, group, kg, gates)
    affine = cfg.affine(objective)
    shared = all(carried.anchor[n] is carried.theta[n] for n in carried.theta)
    linear_form = dual_linear.form(cfg, affine, prep.first, kg, shared)
    if linear_form is not None:
        momentum = carried.momentum['W'] if carried.momentum is not None else None
        weights = dual_linear.Weights.build(cfg, prep.first, prep.geometry, prep.gates, qg, kg, momentum is not None)
        if linear_form == 'maps':
            y, weight, momentum = dual_linear.run_maps(cfg, affine, weights, qg, kg, vg, carried.theta['W'], momentum)
        else:
            y, weight, momentum = dual_linear.run_loop(cfg, objective, weights, qg, kg, vg, carried.theta['W'],
                                                       momentum, compile)
        theta = {'W': weight}
        carried = _Carried(theta, theta, {'W': momentum} if momentum is not None else None,
                           carried.position + group.tokens)
        return y.reshape(y.shape[0], y.shape[1], group.tokens, cfg.dv), carried

    def step(tile: _Prepared, qi: Tensor, ki: Tensor, vi: Tensor, theta: Params, anchor: Params,
             momentum: Optional[Params], run=_tile_step) -> tuple[Tensor, Params, Optional[Params]]:
        return run(cfg, objective, tile, qi, ki, vi, _Carried(theta, anchor, momentum, 0))

    if torch.is_grad_enabled() and group.count > 1 and group.length == cfg.chunk and may_recompute() \
            and _state_bytes(carried) * group.count >= RECOMPUTE_MIN_BYTES:
        # Keep only tile-start states for backward (see recompute.py); whole chunks end on a boundary.
        # Its step stays eager: the recomputation records and replays the step's products on a tape.
        y, theta, momentum = run_recomputed(step, prep, qg, kg, vg, carried.theta, carried.anchor,
                                            carried.momentum)
        position = carried.position + group.tokens
        carried = _Carried(theta, theta, momentum, position)
    else:
        outputs = []
        run = _COMPILED_TILE_STEP if compile else _tile_step
        for tile, qi, ki, vi in unbind_tiles((prep, qg, kg, vg), group.count):
            y, theta, momentum = step(tile, qi, ki, vi, carried.theta, carried.anchor, carried.momentum, run)
            outputs.append(y)
            position = carried.position + group.length
            anchor = theta if position % cfg.chunk == 0 else carried.anchor
            carried = _Carried(theta, anchor, momentum, position)
        y = torch.stack(outputs, 2)
    return y.reshape(y.shape[0], y.shape[1], group.tokens, cfg.dv), carried


def _state_bytes(carried: _Carried) -> int:
    """Bytes of one tile-start state: the parameters (each full batch) and the momentum."""
    tensors = [*carried.theta.values(), *(carried.momentum or {}).values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _tile_step(cfg: MemoryConfig, objective: GradFn, prep: _Prepared, q: Tensor, k: Tensor, v: Tensor,
               carried: _Carried) -> tuple[Tensor, Params, Optional[Params]]:
    """One tile: its output and the state after it."""
    fwd, target, read = _at_anchor(cfg, carried.anchor, q, k, v)
    scans = _solve_tile(cfg, objective, prep, k, fwd, target, carried)
    y = read if read is not None else _read(cfg, scans, q, cfg.read)
    return (y, *_end_states(cfg, scans))


_COMPILED_TILE_STEP = CompiledStep(_tile_step)


def _at_anchor(cfg: MemoryConfig, anchor: Params, q: Tensor, k: Tensor,
               v: Tensor) -> tuple[F.Forward, Tensor, Optional[Tensor]]:
    """The memory at the anchor on the tile's keys (kept for backprop), its target (v, or M_anchor(v)
    when self-generated) and, when it reads at the anchor, its output M_anchor(q).

    In a forward alone one pass over the keys, values and queries stacked (HOPE's memory's forward ran
    1.07-1.2x faster: B = 2, T = 2048, 4 heads, 64 -> 256 -> 64, chunks of 16); when gradients follow,
    three passes: the stacked pass's slices cost more in backward than they save on the short segments
    of a training step (hope.nl trained 17% slower)."""
    extra = ([v] if cfg.self_target else []) + ([q] if cfg.read == 'anchor' else [])
    if extra and forward_alone(q, k, v, *anchor.values()):
        n = k.shape[-2]
        fwd = F.forward(cfg, anchor, torch.cat([k, *extra], dim=-2))
        outs = fwd.out[..., n:, :].split(n, dim=-2)
        fwd = F.Forward(fwd.out[..., :n, :], tuple(x[..., :n, :] for x in fwd.inputs),
                        tuple(z[..., :n, :] for z in fwd.preacts))
        target = outs[0] if cfg.self_target else v
        return fwd, target, outs[-1] if cfg.read == 'anchor' else None
    target = F.apply(cfg, anchor, v) if cfg.self_target else v
    read = F.apply(cfg, anchor, q) if cfg.read == 'anchor' else None
    return F.forward(cfg, anchor, k), target, read


def _solve_tile(cfg: MemoryConfig, objective: GradFn, prep: _Prepared, k: Tensor, fwd: F.Forward,
                target: Tensor, carried: _Carried) -> dict[str, TileScan]:
    """All gradients of the tile at the anchor, then every parameter's update columns."""
    anchor = carried.anchor
    deltas = F.clip_deltas(cfg, fwd.inputs, F.backward(cfg, anchor, fwd, objective(fwd.out, target), fused=True)) \
        if cfg.has_gradient else None
    gates, geometry = prep.gates, prep.geometry
    per_layer = any(rule.per_layer for rule in cfg.rules)
    scans = {}
    for layer, x in zip(F.layers(cfg), fwd.inputs):
        delta = deltas[layer.index - 1] if deltas is not None else None
        inverse = None
        if layer.index == 1:
            co, inverse = prep.first, prep.inverse
        elif per_layer:
            co = dual_coefficients(cfg.rules, gates, (x * x).sum(-1), lambda rule: rule.per_layer)
        else:
            co = prep.scalar
        scans[layer.weight] = _scan(carried, layer.weight, geometry, gates, co, x, delta, inverse, False)
        if layer.bias:
            co = prep.scalar
            scans[layer.bias] = _scan(carried, layer.bias, geometry, gates, co, torch.ones_like(k[..., :1]),
                                      delta, None, True)
    return scans


def _scan(carried: _Carried, name: str, geometry: Geometry, gates: Mapping[str, Tensor],
          co: DualCoefficients, x: Tensor, delta: Optional[Tensor], inverse: Optional[Tensor],
          bias: bool) -> TileScan:
    """Solve one parameter of one tile; a bias is handled as an (out, 1) matrix with input 1."""
    def as_matrix(t: Tensor) -> Tensor:
        return t.unsqueeze(-1) if bias else t

    start = as_matrix(carried.theta[name])
    w = along(co.cw, delta) if delta is not None else None       # None: no direct gradient term
    momentum = None
    if carried.momentum is not None:
        momentum = Momentum(as_matrix(carried.momentum[name]), -gates['eta'].unsqueeze(-1) * delta,
                            along(co.cp2, x))
    p = along(co.cp, x)
    e = solve_columns(geometry, start, x, p, w, momentum, inverse)
    return TileScan(start, x, e, geometry, momentum)


def _end_states(cfg: MemoryConfig, scans: Mapping[str, TileScan]) -> tuple[Params, Optional[Params]]:
    biases = {layer.bias for layer in F.layers(cfg) if layer.bias}
    theta: Params = {}
    momentum: Optional[Params] = {} if cfg.has_momentum else None
    for name, scan in scans.items():
        end, mom_end = scan.end()
        theta[name] = end.squeeze(-1) if name in biases else end
        if momentum is not None:
            momentum[name] = mom_end.squeeze(-1) if name in biases else mom_end
    return theta, momentum


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
