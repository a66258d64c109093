"""The token-by-token reference: semantics §2 transcribed as a plain loop (the ground truth).

Slow and obvious on purpose. It runs in whatever dtype it is given (float64 in the tests). Per token t:
the target is v_t, or M_anchor(v_t) for a self-generated target; the rules run in the declared order,
each taking its gradient at the anchor theta_{c(t)} or at the current state (after the preceding rules
of the same token); the read uses theta_{t-1}, theta_t or the anchor; when t reaches a chunk boundary the
anchor moves to theta_t.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor

from . import functional as F
from .config import MemoryConfig, Rule
from .functional import Params
from .objectives import GradFn
from .inputs import check_inputs, start_state
from .state import MemoryState

def reference(cfg: MemoryConfig, objective: GradFn, q: Tensor, k: Tensor, v: Tensor,
              gates: Mapping[str, Tensor], params0: Optional[Params],
              state: Optional[MemoryState] = None) -> tuple[Tensor, MemoryState]:
    """Run the memory over T tokens one at a time; returns y (B, H, T, dv) and the carried state."""
    check_inputs(cfg, q, k, v, gates)
    start = start_state(cfg, params0, state, k)
    theta, anchor, momentum = dict(start.params), dict(start.anchor), start.momentum
    position = start.position
    outputs = []
    for i in range(k.shape[2]):
        token = _Token(cfg, objective, q[:, :, i:i + 1], k[:, :, i:i + 1], v[:, :, i:i + 1],
                       {name: gate[:, :, i] for name, gate in gates.items()})
        previous = theta
        target = F.apply(cfg, anchor, token.v) if cfg.self_target else token.v
        for rule in cfg.rules:
            point = anchor if rule.at == 'anchor' else theta
            theta, momentum = token.apply_rule(rule, theta, momentum, point, target)
        read_from = {'before': previous, 'after': theta, 'anchor': anchor}[cfg.read]
        outputs.append(F.apply(cfg, read_from, token.q))
        position += 1
        if position % cfg.chunk == 0:
            anchor = theta
    y = torch.cat(outputs, dim=2) if outputs else v.new_zeros(*v.shape[:3], cfg.dv)
    return y, MemoryState(theta, anchor, momentum, position)


class _Token:
    """The inputs of one token and the update rules acting on a state with them."""

    def __init__(self, cfg: MemoryConfig, objective: GradFn, q: Tensor, k: Tensor, v: Tensor,
                 gates: Mapping[str, Tensor]) -> None:
        self.cfg, self.objective = cfg, objective
        self.q, self.k, self.v = q, k, v          # (B, H, 1, width)
        self.gates = gates                        # name -> (B, H)

    def gate(self, name: str, like: Tensor) -> Tensor:
        """A per-head gate shaped to broadcast against a parameter (B, H, ...)."""
        g = self.gates[name]
        return g.reshape(*g.shape, *([1] * (like.dim() - 2)))

    def gradient(self, point: Params, target: Tensor) -> Params:
        """g_t = dl_t/dtheta at `point`, one full tensor per parameter."""
        fwd, deltas = F.gradients(self.cfg, self.objective, point, self.k, target)
        grads = {}
        for layer, x, delta in zip(F.layers(self.cfg), fwd.inputs, deltas):
            grads[layer.weight] = delta.transpose(-1, -2) @ x          # delta x^T, (B, H, out, in)
            if layer.bias:
                grads[layer.bias] = delta[:, :, 0]
        return grads

    def transition_inputs(self, rule: Rule, point: Params) -> dict[str, Tensor]:
        """Weight name -> the vector x of its transition W (a I - eta x x^T): k for the layer whose input
        is k; with per_layer, every layer's own input at the rule's point."""
        if not rule.per_layer:
            return {F.layers(self.cfg)[0].weight: self.k}
        fwd = F.forward(self.cfg, point, self.k)
        return {layer.weight: x for layer, x in zip(F.layers(self.cfg), fwd.inputs)}

    def apply_rule(self, rule: Rule, theta: Params, momentum: Optional[Params], point: Params,
                   target: Tensor) -> tuple[Params, Optional[Params]]:
        kind = rule.kind
        if kind == 'retain':
            return {n: self.gate('alpha', p) * p for n, p in theta.items()}, momentum
        if kind == 'gd':
            g = self.gradient(point, target)
            return {n: p - self.gate('eta', p) * g[n] for n, p in theta.items()}, momentum
        if kind == 'momentum':
            g = self.gradient(point, target)
            momentum = {n: self.gate('beta', s) * s - self.gate('eta', s) * g[n] for n, s in momentum.items()}
            return {n: p + momentum[n] for n, p in theta.items()}, momentum
        inputs = self.transition_inputs(rule, point)
        if kind == 'delta':
            return {n: _shrink(p, inputs.get(n), 1.0, self.gate('eta', p)) for n, p in theta.items()}, momentum
        # dgd: W (alpha I - eta x x^T) - eta g on transition layers; alpha W - eta g elsewhere.
        g = self.gradient(point, target)
        new = {}
        for n, p in theta.items():
            eta = self.gate('eta', p)
            new[n] = _shrink(p, inputs.get(n), self.gate('alpha', p), eta) - eta * g[n]
        return new, momentum


def _shrink(p: Tensor, x: Optional[Tensor], alpha, eta: Tensor) -> Tensor:
    """p (alpha I - eta x x^T) for a weight with transition input x (B, H, 1, in); alpha p otherwise."""
    if x is None:
        return alpha * p
    return alpha * p - eta * (p @ x.transpose(-1, -2)) @ x
