"""What every optimizer level shares: the step loop, `last_update_norm` and a state that saves cleanly.

An optimizer here is a level over gradients (docs/semantics.md §7): its state is a memory of past
gradients. Each class computes, for one parameter tensor, the change Δθ of a step; the shared
`step()` applies it and keeps the squared norms so that `last_update_norm` can be read (the loop logs
it per level) without a device synchronisation on every step.

State contract (the trainer saves it with safetensors + JSON): per parameter, `state[p]` holds only
tensors and Python numbers; `state_dict()` / `load_state_dict()` are torch's, and a resumed optimizer
continues bit-exactly. Loading copies the tensors, so a loaded optimizer never shares its state with
the dictionary it was loaded from (torch's own loader keeps same-dtype tensors as they are).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor


class UpdateNormMixin:
    """`last_update_norm` and copy-on-load for torch.optim.Optimizer subclasses."""

    _update_norms: list

    @property
    def last_update_norm(self) -> float:
        """‖Δθ‖ of the last `step()`: the L2 norm of the whole change, sqrt(Σ_params Σ_elements Δθ²).

        0.0 before the first step. Reading it synchronises with the device; stepping does not.
        """
        return math.sqrt(float(self.update_square()))

    def update_square(self):
        """‖Δθ‖² of the last `step()` as a float64 scalar on the parameters' device, read by no one yet
        (0.0 before the first step)."""
        norms = getattr(self, '_update_norms', None)
        if not norms:
            return 0.0
        device, dtype = norms[0].device, norms[0].dtype
        if all(n.device == device and n.dtype == dtype for n in norms):   # one stack, one conversion
            stacked = torch.stack(norms).to(torch.float64)
        else:
            stacked = torch.stack([n.to(device=device, dtype=torch.float64) for n in norms])
        return stacked.square().sum()

    def _record_updates(self, deltas: list[Tensor]) -> None:
        """Keep ‖Δθ‖ of every parameter: one multi-tensor kernel on a GPU, no synchronisation."""
        self._update_norms = list(torch._foreach_norm([d.detach() for d in deltas])) if deltas else []

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        for state in self.state.values():
            for key, value in state.items():
                if isinstance(value, Tensor):
                    state[key] = value.clone()


class LevelOptimizer(UpdateNormMixin, torch.optim.Optimizer):
    """Base class: subclasses implement `_delta(p, grad, state, group) -> Δθ` (a tensor shaped like p).

    `_delta` may create and update `state` (tensors and Python numbers only); it must not change `p`.
    It may return one of its state tensors; the step only reads the result.
    Parameters without a gradient are skipped and keep their state unchanged.
    """

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        self._update_norms = []

    def _delta(self, p: Tensor, grad: Tensor, state: dict, group: dict) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None):
        """One tick of the level: Δθ for every parameter with a gradient, then θ ← θ + Δθ."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, deltas = [], []
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f'{type(self).__name__} does not support sparse gradients')
                if p.is_complex():
                    raise RuntimeError(f'{type(self).__name__} does not support complex parameters')
                params.append(p)
                deltas.append(self._delta(p, p.grad, self.state[p], group))
        # every Δθ depends on its own parameter only, so they are applied together (one multi-tensor kernel)
        if params:
            torch._foreach_add_(params, deltas)
        self._record_updates(deltas)
        return loss


def check_rate(name: str, value, low: float = 0.0, high: Optional[float] = None, open_low=False) -> None:
    """Raise ValueError unless low ≤ value (< high when given; > low when open_low)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if open_low else value >= low) and (high is None or value < high)
    if not ok:
        bound = f'> {low}' if open_low else f'≥ {low}'
        raise ValueError(f'{name} must be {bound}' + (f' and < {high}' if high is not None else '') + f', got {value!r}')


def check_count(name: str, value, low: int = 1) -> None:
    """Raise ValueError unless value is an int ≥ low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f'{name} must be an integer ≥ {low}, got {value!r}')
