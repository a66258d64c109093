"""Deep Momentum Gradient Descent ([A] Eq. 50): the momentum's memory of gradients is an MLP."""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .base import LevelOptimizer, check_count, check_rate

_READ_CHUNK = 1 << 16   # elements per block when the memory is read, to bound the (N, hidden) activations


@functools.lru_cache(maxsize=None)
def _identity_fit(hidden: int) -> tuple[Tensor, Tensor, Tensor]:
    """Initial memory weights (w1, b1, w2), float64: m(u) = Σ_j w2_j tanh(w1_j u + b1_j) ≈ u on [−2, 2].

    hidden ≥ 4: units of slope 1 centred evenly on [−2.5, 2.5]; fewer units: centred at 0 with slopes
    spread over [0.25, 1] (0.5 for one unit). w2 is the ridge least-squares fit (λ = 1e-2) of the
    identity on 241 points of [−3, 3]; beyond the fit the map saturates at about ±3.5 (hidden ≥ 4).
    """
    f64 = torch.float64
    if hidden >= 4:
        w1 = torch.ones(hidden, dtype=f64)
        centres = torch.linspace(-2.5, 2.5, hidden, dtype=f64)
    else:
        w1 = torch.linspace(0.25, 1.0, hidden, dtype=f64) if hidden > 1 else torch.full((1,), 0.5, dtype=f64)
        centres = torch.zeros(hidden, dtype=f64)
    b1 = -centres * w1
    grid = torch.linspace(-3.0, 3.0, 241, dtype=f64)
    features = torch.tanh(grid[:, None] * w1 + b1)
    w2 = torch.linalg.solve(features.T @ features + 1e-2 * torch.eye(hidden, dtype=f64), features.T @ grid)
    return w1, b1, w2


def memory_read(u: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    """m_φ(u) elementwise for a tensor u of any shape: Σ_j w2_j tanh(w1_j u + b1_j)."""
    flat = u.reshape(-1)
    out = torch.empty_like(flat)
    for lo in range(0, flat.numel(), _READ_CHUNK):
        block = flat[lo:lo + _READ_CHUNK]
        out[lo:lo + _READ_CHUNK] = torch.tanh(block[:, None] * w1 + b1) @ w2
    return out.reshape(u.shape)


def memory_grad(u: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Loss and gradient of the inner objective ℓ(φ) = ½ mean_i (m_φ(u_i) − u_i)² over a 1-D u.

    Returns (ℓ, ∂ℓ/∂w1, ∂ℓ/∂b1, ∂ℓ/∂w2), by hand (no autograd graph is built).
    """
    h = torch.tanh(u[:, None] * w1 + b1)           # (N, hidden)
    r = h @ w2 - u                                   # residual, (N,)
    n = u.numel()
    g_w2 = h.T @ r / n
    dz = (r[:, None] * w2) * (1 - h * h)            # ∂ℓ/∂(w1 u + b1) · N
    g_w1 = dz.T @ u / n
    g_b1 = dz.sum(0) / n
    return 0.5 * r.square().mean(), g_w1, g_b1, g_w2


class DeepMomentum(LevelOptimizer):
    """deep_momentum(lr, beta = 0.9, hidden = 16): momentum over the output of an MLP memory of gradients.

    [A] Eq. 50 replaces the linear momentum memory by an MLP m trained online: W_{i+1} = W_i + m_{i+1}(u_i),
    m_{i+1} = α m_i − η ∇L⁽²⁾(m_i; u_i), u_i = ∇L(W_i). The paper leaves m's shape, its objective and
    scales open. This is the concrete, stable version used here, per parameter tensor:

        s  = RMS(g),  u = g / s                      unit-RMS key: the memory sees O(1) inputs whatever
                                                     the gradient scale (s = 0 gives a zero step)
        φ  ← φ − (inner_lr/hidden) · ∇_φ ½ mean_i (m_φ(u_i) − u_i)²
                                                     one inner gradient step on the L2 objective (the
                                                     memory learns to reproduce the gradients it sees;
                                                     memory retention α = 1)
        v  ← β v − lr · s · m_φ(u)                   the momentum (retention β) of the memory's read-out,
                                                     back in gradient units; state `momentum_buffer`
        θ  ← θ + v

    m_φ is an elementwise MLP shared by all elements of the tensor: one input (the gradient element),
    `hidden` tanh units, one output, m_φ(u) = Σ_j w2_j tanh(w1_j u + b1_j) (state `w1`, `b1`, `w2`, each
    of length `hidden`). It starts as a smooth fit of the identity on [−2, 2] (see `_identity_fit`), so
    the first steps are those of `Momentum`; from then on it adapts to the gradients it sees. Because
    the read-out is bounded (|m_φ| ≤ Σ|w2|) and the key has unit RMS, a rare outlier element is
    squashed rather than amplified: the memory acts as a learned soft clip, and the optimizer stays
    stable where the gradient distribution is heavy-tailed. With an exact identity memory this is
    `Momentum` (paper form, m ← β m − lr g; θ ← θ + m).

    The inner objective is evaluated on at most `inner_samples` elements, taken evenly strided over
    the flattened tensor (deterministic). Stability of the inner step: the curvature of ℓ in w2 is at
    most `hidden` (|tanh| ≤ 1), so the step inner_lr/hidden with inner_lr < 2 (default 1) keeps it stable.
    """

    def __init__(self, params, lr: float, beta: float = 0.9, hidden: int = 16,
                 inner_lr: float = 1.0, inner_samples: int = 4096):
        check_rate('lr', lr)
        check_rate('beta', beta, 0.0, 1.0)
        check_count('hidden', hidden)
        check_rate('inner_lr', inner_lr)
        check_count('inner_samples', inner_samples)
        super().__init__(params, dict(lr=lr, beta=beta, hidden=hidden, inner_lr=inner_lr,
                                      inner_samples=inner_samples))

    def _delta(self, p, grad, state, group):
        hidden = group['hidden']
        if 'step' not in state:
            state['step'] = 0
            state['momentum_buffer'] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for key, value in zip(('w1', 'b1', 'w2'), _identity_fit(hidden)):
                state[key] = value.to(device=p.device, dtype=p.dtype, copy=True)
        if state['w1'].numel() != hidden:
            raise ValueError(f'DeepMomentum: the memory has {state["w1"].numel()} hidden units, the group says {hidden}')
        state['step'] += 1
        compute = torch.promote_types(p.dtype, torch.float32)
        g = grad.to(compute)
        w1, b1, w2 = (state[k].to(compute) for k in ('w1', 'b1', 'w2'))
        scale = g.square().mean().sqrt()
        u = (g / scale.clamp_min(torch.finfo(compute).tiny)).reshape(-1)
        stride = max(1, math.ceil(u.numel() / group['inner_samples']))
        _, g_w1, g_b1, g_w2 = memory_grad(u[::stride], w1, b1, w2)
        eta = group['inner_lr'] / hidden
        w1, b1, w2 = w1 - eta * g_w1, b1 - eta * g_b1, w2 - eta * g_w2
        for key, value in (('w1', w1), ('b1', b1), ('w2', w2)):
            state[key].copy_(value)
        read = memory_read(u, w1, b1, w2).reshape(p.shape) * scale
        v = state['momentum_buffer']
        v.mul_(group['beta']).add_(read.to(p.dtype), alpha=-group['lr'])
        return v
