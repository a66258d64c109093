"""Shared helpers for the memory tests: random inputs, carried states and float64 comparisons."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nldsl.runtime.memory import MemoryConfig, MemoryState, init_params, param_shapes

DTYPE = torch.float64

# docs/semantics.md §6: a float32 or bf16 path against the float64 reference, as RMS(x - y) / RMS(x)
OUTPUT_RATIO = 5e-3            # outputs and states
GATE_RATIO = 2e-2              # gradients of the gates
ANCHOR_RATIO = 3e-2            # every other gradient, for levels with anchor gradients


@dataclass(frozen=True)
class Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    gates: dict
    params0: dict

    def leaves(self) -> dict[str, torch.Tensor]:
        named = {'q': self.q, 'k': self.k, 'v': self.v}
        named.update({f'gate.{n}': g for n, g in self.gates.items()})
        named.update({f'theta0.{n}': p for n, p in self.params0.items()})
        return named

    def window(self, start: int, end: int) -> 'Inputs':
        """The tokens [start, end) (the same initial parameters)."""
        return Inputs(self.q[:, :, start:end], self.k[:, :, start:end], self.v[:, :, start:end],
                      {n: g[:, :, start:end] for n, g in self.gates.items()}, self.params0)


def make_inputs(cfg: MemoryConfig, batch: int, heads: int, tokens: int, seed: int,
                eta_max: float = 0.4, grad: bool = True) -> Inputs:
    """Random float64 inputs with gates in their ranges: eta in (0, eta_max), alpha in (0.6, 1),
    beta in (0, 0.9); keys scaled to norm about 1; a perturbed (non-zero) initial state."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=DTYPE) * scale).requires_grad_(grad)

    def uniform(lo, hi):
        u = torch.rand(batch, heads, tokens, generator=gen, dtype=DTYPE)
        return (lo + (hi - lo) * u).requires_grad_(grad)

    q = rand(batch, heads, tokens, cfg.dk, scale=cfg.dk ** -0.5)
    k = rand(batch, heads, tokens, cfg.dk, scale=cfg.dk ** -0.5)
    v = rand(batch, heads, tokens, cfg.dv)
    gates = {'eta': uniform(0.02, eta_max), 'alpha': uniform(0.6, 1.0), 'beta': uniform(0.0, 0.9)}
    base = init_params(cfg, heads, generator=gen, dtype=DTYPE)
    params0 = {n: (p + 0.3 * torch.randn(p.shape, generator=gen, dtype=DTYPE)).requires_grad_(grad)
               for n, p in base.items()}
    return Inputs(q, k, v, gates, params0)


def random_state(cfg: MemoryConfig, batch: int, heads: int, position: int, seed: int,
                 grad: bool = True) -> MemoryState:
    """A carried-in state at `position`: random theta, momentum and anchor (the anchor equals theta when
    the position is on a chunk boundary, as it would after a real run)."""
    gen = torch.Generator().manual_seed(seed)

    def draw(shape):
        return (0.3 * torch.randn(batch, heads, *shape, generator=gen, dtype=DTYPE)).requires_grad_(grad)

    shapes = param_shapes(cfg)
    params = {n: draw(s) for n, s in shapes.items()}
    anchor = dict(params) if position % cfg.chunk == 0 else {n: draw(s) for n, s in shapes.items()}
    momentum = {n: draw(s) for n, s in shapes.items()} if cfg.has_momentum else None
    return MemoryState(params, anchor, momentum, position)


def state_leaves(state: MemoryState) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.to_tensors().items():
        if key != 'position' and value.requires_grad and value.is_leaf:
            out[f'state.{key}'] = value
    return out


def scale(x: torch.Tensor) -> float:
    return max(1.0, x.detach().pow(2).mean().sqrt().item())


def assert_close(expected: torch.Tensor, actual: torch.Tensor, what: str, rtol: float = 1e-9) -> None:
    """max |x - y| <= rtol * max(1, RMS(x)), the float64 tolerance of the correctness contract."""
    assert expected.shape == actual.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (expected.detach() - actual.detach()).abs().max().item() if expected.numel() else 0.0
    assert err <= rtol * scale(expected), f"{what}: max abs diff {err:.3e} (scale {scale(expected):.3e})"


def assert_states_close(expected: MemoryState, actual: MemoryState, what: str) -> None:
    assert expected.position == actual.position, f"{what}: position {actual.position} != {expected.position}"
    exp, act = expected.to_tensors(), actual.to_tensors()
    assert set(exp) == set(act), f"{what}: state entries {sorted(act)} != {sorted(exp)}"
    for key in exp:
        if key != 'position':
            assert_close(exp[key], act[key], f"{what} {key}")


def probe_loss(y: torch.Tensor, state: MemoryState, seed: int) -> torch.Tensor:
    """A fixed random linear functional of the outputs and the final state (for gradient checks)."""
    gen = torch.Generator().manual_seed(seed)
    total = (y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum()
    for key, value in sorted(state.to_tensors().items()):
        if key != 'position':
            total = total + (value * torch.randn(value.shape, generator=gen, dtype=value.dtype)).sum()
    return total


def gradients(loss: torch.Tensor, leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
    return {n: (torch.zeros_like(leaves[n]) if g is None else g) for n, g in zip(names, grads)}


def ratio(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """RMS(x - y) / RMS(x), with an absolute floor for (near-)zero references."""
    x, y = expected.detach().cpu().double(), actual.detach().cpu().double()
    diff = (x - y).pow(2).mean().sqrt().item() if x.numel() else 0.0
    if diff <= 1e-6:
        return 0.0
    return diff / max(x.pow(2).mean().sqrt().item(), 1e-12)
