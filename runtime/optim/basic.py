"""SGD, momentum and AdamW as optimizer levels (docs/semantics.md §7)."""
from __future__ import annotations

import torch

from .base import LevelOptimizer, UpdateNormMixin, check_rate


class SGD(LevelOptimizer):
    """Plain gradient descent: θ ← θ − lr (g + weight_decay·θ).

    Weight decay is coupled (added to the gradient, an L2 penalty), as in torch.optim.SGD; with
    constant hyperparameters the two agree step for step. Stateless.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        check_rate('lr', lr)
        check_rate('weight_decay', weight_decay)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    def _delta(self, p, grad, state, group):
        if group['weight_decay']:
            grad = grad + group['weight_decay'] * p
        return -group['lr'] * grad


class Momentum(LevelOptimizer):
    """Momentum in the paper's form ([A] Eq. 33–34, docs/semantics.md §7): a value-less memory of gradients.

        g ← g + weight_decay·θ            (coupled weight decay, as torch.optim.SGD)
        m ← β m − lr·g                    (state `momentum_buffer`, in parameter units, starts at 0)
        θ ← θ + m

    With a constant lr this equals the other common form, m' ← β m' + g; θ ← θ − lr·m' (m = −lr·m'),
    i.e. torch.optim.SGD(momentum=β). They differ when lr changes: here a new lr applies to new
    gradients only, and the velocity already gathered keeps its size.
    """

    def __init__(self, params, lr: float, beta: float = 0.9, weight_decay: float = 0.0):
        check_rate('lr', lr)
        check_rate('beta', beta, 0.0, 1.0)
        check_rate('weight_decay', weight_decay)
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay))

    def _delta(self, p, grad, state, group):
        if group['weight_decay']:
            grad = grad + group['weight_decay'] * p
        if 'momentum_buffer' not in state:
            state['momentum_buffer'] = torch.zeros_like(p, memory_format=torch.preserve_format)
        m = state['momentum_buffer']
        m.mul_(group['beta']).add_(grad, alpha=-group['lr'])
        return m


class AdamW(UpdateNormMixin, torch.optim.AdamW):
    """torch.optim.AdamW under the spec's names: adamw(lr, betas, eps, weight_decay).

    The update is exactly torch's (bias-corrected Adam moments, decoupled weight decay
    θ ← θ − lr·wd·θ). The one difference is the default weight_decay, 0.0 as in the spec (torch's
    is 0.01). `last_update_norm` compares each parameter with a copy taken before the step, which
    costs one parameter-sized copy during `step()`.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        check_rate('lr', lr)
        betas = tuple(betas)
        if len(betas) != 2:
            raise ValueError(f'betas must be a pair, got {betas!r}')
        check_rate('betas[0]', betas[0], 0.0, 1.0)
        check_rate('betas[1]', betas[1], 0.0, 1.0)
        check_rate('eps', eps)
        check_rate('weight_decay', weight_decay)
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self._update_norms = []

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p.detach() for group in self.param_groups for p in group['params'] if p.grad is not None]
        before = torch._foreach_mul(params, 1.0) if params else []   # one multi-tensor copy
        super().step()
        self._record_updates(torch._foreach_sub(params, before) if params else [])
        return loss
