"""M3, multi-scale momentum Muon ([A] Algorithm 1; docs/semantics.md §7): a two-level CMS over gradients."""
from __future__ import annotations

import torch

from .base import LevelOptimizer, check_count, check_rate
from .newton_schulz import NS_QUINTIC, as_matrix, newton_schulz


def orthogonalise(t: torch.Tensor, steps: int) -> torch.Tensor:
    """NS_T as M3 uses it: Newton–Schulz on the (shape[0], rest) matrix of a tensor of ≥ 2 dimensions,
    the identity for 0-D and 1-D tensors. No shape scaling (Algorithm 1 has none)."""
    if t.ndim >= 2 and t.numel() > 0:
        return newton_schulz(as_matrix(t), steps, NS_QUINTIC).reshape(t.shape)
    return t.clone()


class M3(LevelOptimizer):
    """m3(lr, beta1 = 0.9, beta2 = 0.999, beta3 = 0.9, alpha = 1.0, frequency = 8, ns_steps = 5, eps = 1e-8).

    Algorithm 1 of [A] as written, per parameter tensor, with t counting this parameter's steps from 1
    and f = frequency:

        M1 ← M1 + β₁ g                 fast momentum, every step
        V  ← V + β₂ g²                 second moment, every step
        O1 = NS_T(M1)
        Θ  ← Θ − η (O1 + α·O2) / (√V + ε)
        when t is a multiple of f:     slow momentum, at the end of each window of f steps
            M2 ← M2 + β₃ Σ g over the window's f steps
            O2 = NS_T(M2)              held for the next f steps

    So steps 1 … f use O2 = NS_T(0) = 0, steps f+1 … 2f use the O2 of the first window, and so on:
    Algorithm 1 refreshes M2 at the start of chunk k from the gradients of chunk k−1. Its sum
    Σ_{i=(k−1)f}^{kf} has f+1 terms; the window here has exactly f (the same slip as CMS's Eq. 71).
    Where the text's Eq. 75 differs (β₂ and a minus sign on the slow term), Algorithm 1 is followed.

    As written, M1, M2 and V are sums with β as weights, not exponential moving averages: nothing
    decays, there is no bias correction, and √V grows like √t, so the step shrinks over time.

    NS_T is Newton–Schulz with T = ns_steps quintic iterations (see newton_schulz) on the
    (shape[0], rest) matrix of parameters with 2 or more dimensions, without Muon's shape scaling.
    For 0-D and 1-D parameters NS_T is the identity, so their update is η (M1 + α M2)/(√V + ε), an
    Adam-like step on the sums.

    State per parameter: `step` (int), `M1`, `M2`, `V`, `window_sum` (Σ g of the current window) and
    `O2` (the held slow direction).
    """

    def __init__(self, params, lr: float, beta1: float = 0.9, beta2: float = 0.999, beta3: float = 0.9,
                 alpha: float = 1.0, frequency: int = 8, ns_steps: int = 5, eps: float = 1e-8):
        check_rate('lr', lr)
        for name, beta in (('beta1', beta1), ('beta2', beta2), ('beta3', beta3)):
            check_rate(name, beta, 0.0, 1.0)
        check_rate('alpha', alpha)
        check_count('frequency', frequency)
        check_count('ns_steps', ns_steps, 0)
        check_rate('eps', eps)
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, beta3=beta3, alpha=alpha,
                                      frequency=frequency, ns_steps=ns_steps, eps=eps))

    def _delta(self, p, grad, state, group):
        if 'step' not in state:
            state['step'] = 0
            for key in ('M1', 'M2', 'V', 'window_sum', 'O2'):
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state['step'] += 1
        state['M1'].add_(grad, alpha=group['beta1'])
        state['V'].addcmul_(grad, grad, value=group['beta2'])
        state['window_sum'].add_(grad)
        o1 = orthogonalise(state['M1'], group['ns_steps'])
        direction = o1.add_(state['O2'], alpha=group['alpha'])
        delta = direction.div_(state['V'].sqrt().add_(group['eps'])).mul_(-group['lr'])
        if state['step'] % group['frequency'] == 0:
            state['M2'].add_(state['window_sum'], alpha=group['beta3'])
            state['window_sum'].zero_()
            state['O2'] = orthogonalise(state['M2'], group['ns_steps'])
        return delta
