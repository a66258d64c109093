"""Muon: momentum whose update is orthogonalised by Newton–Schulz ([A] Eq. 52 with m linear, σ = NS)."""
from __future__ import annotations

import math

import torch

from .base import LevelOptimizer, check_count, check_rate
from .newton_schulz import NS_QUINTIC, as_matrix, newton_schulz


class Muon(LevelOptimizer):
    """muon(lr, beta = 0.95, ns_steps = 5, weight_decay = 0).

    For a parameter with 2 or more dimensions (viewed as a (shape[0], rest) matrix of r × c):

        m ← β m + g                                   (state `momentum_buffer`; heavy-ball, not Nesterov)
        O = NS_T(m) · √max(r, c)                      (T = ns_steps, quintic coefficients NS_QUINTIC)
        θ ← θ − lr·weight_decay·θ − lr·O              (weight decay decoupled, as in AdamW)

    Scale: NS_T(m) has singular values ≈ 1 (in ≈ [0.68, 1.2], see newton_schulz), so for a full-rank
    r × c matrix its RMS is ≈ √(min(r, c)/(r·c)) = 1/√max(r, c). Multiplying by √max(r, c) makes the
    update's RMS ≈ 1 for every shape, so `lr` is the per-element step size (like sign descent or
    Adam's typical step), and one lr serves square, tall and wide matrices alike.

    Parameters with 0 or 1 dimensions (biases, norm gains, scalars) have no matrix to orthogonalise:
    they take the plain momentum step θ ← θ − lr·weight_decay·θ − lr·m with the same buffer m. That
    step is in gradient units, not unit RMS; put such parameters in their own param group if they
    need another lr.
    """

    def __init__(self, params, lr: float, beta: float = 0.95, ns_steps: int = 5, weight_decay: float = 0.0):
        check_rate('lr', lr)
        check_rate('beta', beta, 0.0, 1.0)
        check_count('ns_steps', ns_steps, 0)
        check_rate('weight_decay', weight_decay)
        super().__init__(params, dict(lr=lr, beta=beta, ns_steps=ns_steps, weight_decay=weight_decay))

    def _delta(self, p, grad, state, group):
        if 'momentum_buffer' not in state:
            state['momentum_buffer'] = torch.zeros_like(p, memory_format=torch.preserve_format)
        m = state['momentum_buffer']
        m.mul_(group['beta']).add_(grad)
        if p.ndim >= 2 and p.numel() > 0:
            matrix = as_matrix(m)
            rows, cols = matrix.shape
            direction = newton_schulz(matrix, group['ns_steps'], NS_QUINTIC).reshape(p.shape)
            direction = direction * math.sqrt(max(rows, cols))
        else:
            direction = m
        delta = direction * -group['lr']
        if group['weight_decay']:
            delta = delta - (group['lr'] * group['weight_decay']) * p
        return delta
