"""The memory function M_theta: R^dk -> R^dv, its forward pass and its hand-written backward pass.

Parameters are per batch row and head: a weight `W` (linear) or `W1..WL` (mlp) shaped (B, H, out, in),
biases `b1..bL` shaped (B, H, out). Inputs are (B, H, N, in) for N tokens at once. An mlp of depth L is
    x_1 = k,  z_l = W_l x_l + b_l,  x_{l+1} = act(z_l),  M(k) = z_L  (+ k when residual),
so W1 is the layer whose input is k. The backward pass returns, per layer, the output-side gradient
delta_l = dl/dz_l (B, H, N, out); the weight gradient of token n is delta_l[n] x_l[n]^T. It is written
with differentiable torch ops so that autograd can take the outer (second-order) gradient through it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .config import MemoryConfig
from .tape import needs_graph, weight_back, weight_rows

Params = dict[str, Tensor]


def _pdf(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))


def _sigmoid_slope(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 - s)


def _tanh_slope(z: Tensor) -> Tensor:
    t = torch.tanh(z)
    return 1.0 - t * t


# name -> (act', act''): the derivatives in closed form.
_SLOPES: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    'gelu': (lambda z: torch.special.ndtr(z) + z * _pdf(z), lambda z: _pdf(z) * (2.0 - z * z)),
    'silu': (lambda z: torch.sigmoid(z) + z * _sigmoid_slope(z),
             lambda z: _sigmoid_slope(z) * (2.0 + z * (1.0 - 2.0 * torch.sigmoid(z)))),
    'sigmoid': (_sigmoid_slope, lambda z: _sigmoid_slope(z) * (1.0 - 2.0 * torch.sigmoid(z))),
    'tanh': (_tanh_slope, lambda z: -2.0 * torch.tanh(z) * _tanh_slope(z)),
}


class _Slope(torch.autograd.Function):
    """act'(z) with its own derivative act''(z) in closed form: a handful of elementwise operations in
    place of autograd's walk back through every operation of act' (erf, exp and the products for gelu),
    which the chunk-parallel path pays once per tile. The backward is made of differentiable torch
    operations, so higher-order gradients still work."""

    @staticmethod
    def forward(ctx, z: Tensor, name: str):
        ctx.name = name
        ctx.save_for_backward(z)
        return _SLOPES[name][0](z)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (z,) = ctx.saved_tensors
        return grad * _SLOPES[ctx.name][1](z), None


def _slope(name: str) -> Callable[[Tensor], Tensor]:
    return lambda z: _Slope.apply(z, name)


# name -> back * act'(z) in one pass: ATen's own activation backward kernels (the chunked path's; the
# reference keeps the closed forms above, so each checks the other).
_FUSED_BACKWARD: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    'silu': torch.ops.aten.silu_backward,
    'gelu': torch.ops.aten.gelu_backward,
}


class _ActBackward(torch.autograd.Function):
    """back * act'(z) by _FUSED_BACKWARD, one elementwise kernel instead of six; differentiable again
    (ATen's kernels are not) through itself and act''(z) in closed form."""

    @staticmethod
    def forward(ctx, back: Tensor, z: Tensor, name: str):
        ctx.name = name
        ctx.save_for_backward(back, z)
        return _FUSED_BACKWARD[name](back, z)

    @staticmethod
    def backward(ctx, grad: Tensor):
        back, z = ctx.saved_tensors
        need = ctx.needs_input_grad
        return (_ActBackward.apply(grad, z, ctx.name) if need[0] else None,
                grad * back * _SLOPES[ctx.name][1](z) if need[1] else None, None)


def times_slope(name: str, back: Tensor, z: Tensor, fused: bool = False) -> Tensor:
    """back * act'(z); `fused` by ATen's activation backward where it has one (silu, gelu)."""
    if fused and name in _FUSED_BACKWARD:
        return _ActBackward.apply(back, z, name) if needs_graph(back, z) else _FUSED_BACKWARD[name](back, z)
    return back * ACTIVATION_FNS[name][1](z)


# name -> (activation, its derivative); gelu is the exact (erf) one.
ACTIVATION_FNS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    'silu': (torch.nn.functional.silu, _slope('silu')),
    'gelu': (torch.nn.functional.gelu, _slope('gelu')),
    'relu': (torch.relu, lambda z: (z > 0).to(z.dtype)),
    'tanh': (torch.tanh, _slope('tanh')),
    'sigmoid': (torch.sigmoid, _slope('sigmoid')),
    'identity': (lambda z: z, torch.ones_like),
}


@dataclass(frozen=True)
class Layer:
    """Names and sizes of one layer: weight (out, in) and optional bias (out,)."""

    index: int           # 1-based layer number
    weight: str
    bias: Optional[str]
    fan_in: int
    fan_out: int


def layers(cfg: MemoryConfig) -> tuple[Layer, ...]:
    if cfg.family == 'linear':
        return (Layer(1, 'W', None, cfg.dk, cfg.dv),)
    widths = [cfg.dk] + [cfg.hidden] * (cfg.depth - 1) + [cfg.dv]
    return tuple(
        Layer(i, f'W{i}', f'b{i}' if cfg.bias else None, widths[i - 1], widths[i])
        for i in range(1, cfg.depth + 1))


def param_shapes(cfg: MemoryConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of theta per head (without the leading batch and head dimensions)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in layers(cfg):
        shapes[layer.weight] = (layer.fan_out, layer.fan_in)
        if layer.bias:
            shapes[layer.bias] = (layer.fan_out,)
    return shapes


def init_params(cfg: MemoryConfig, heads: int, generator: Optional[torch.Generator] = None,
                dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None) -> Params:
    """Initial state theta_0 shaped (heads, ...), to be learned by the outer level; in torch's default
    dtype unless `dtype` is given, like the model's other parameters.

    A linear memory starts empty (W = 0, as linear attention does); mlp weights are drawn from
    N(0, 1/fan_in) and biases start at zero."""
    params: Params = {}
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    for layer in layers(cfg):
        shape = (heads, layer.fan_out, layer.fan_in)
        if cfg.family == 'linear':
            params[layer.weight] = torch.zeros(shape, dtype=dtype, device=device)
        else:
            weight = torch.randn(shape, generator=generator, dtype=dtype, device=device)
            params[layer.weight] = weight / math.sqrt(layer.fan_in)
        if layer.bias:
            params[layer.bias] = torch.zeros((heads, layer.fan_out), dtype=dtype, device=device)
    return params


def linear_apply(weight: Tensor, x: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """z = W x (+ b) for every token: weight (B, H, out, in), x (B, H, N, in) -> (B, H, N, out)."""
    z = weight_rows(weight, x)
    return z if bias is None else z + bias.unsqueeze(-2)


@dataclass(frozen=True)
class Forward:
    """A forward pass kept for backprop: the input x_l and pre-activation z_l of every layer."""

    out: Tensor
    inputs: tuple[Tensor, ...]
    preacts: tuple[Tensor, ...]


def forward(cfg: MemoryConfig, params: Params, x: Tensor) -> Forward:
    act = ACTIVATION_FNS[cfg.act][0]
    inputs, preacts = [], []
    h = x
    all_layers = layers(cfg)
    for layer in all_layers:
        inputs.append(h)
        z = linear_apply(params[layer.weight], h, params[layer.bias] if layer.bias else None)
        preacts.append(z)
        h = act(z) if layer.index < len(all_layers) else z
    out = x + h if cfg.residual else h
    return Forward(out, tuple(inputs), tuple(preacts))


def apply(cfg: MemoryConfig, params: Params, x: Tensor) -> Tensor:
    """M_theta(x) for every token of x (B, H, N, dk)."""
    return forward(cfg, params, x).out


def backward(cfg: MemoryConfig, params: Params, fwd: Forward, dout: Tensor, fused: bool = False) -> tuple[Tensor, ...]:
    """Per-layer output gradients delta_l = dl/dz_l given dout = dl/dM (B, H, N, dv); `fused`: the
    activation's slope by ATen's backward kernel (times_slope)."""
    all_layers = layers(cfg)
    deltas = [dout]
    for layer in reversed(all_layers[1:]):
        back = weight_back(deltas[0], params[layer.weight])
        deltas.insert(0, times_slope(cfg.act, back, fwd.preacts[layer.index - 2], fused))
    return tuple(deltas)


def gradients(cfg: MemoryConfig, objective: Callable[[Tensor, Tensor], Tensor], params: Params,
              keys: Tensor, target: Tensor) -> tuple[Forward, tuple[Tensor, ...]]:
    """Forward pass on the keys and the per-layer deltas of the objective against `target` (clipped)."""
    fwd = forward(cfg, params, keys)
    return fwd, clip_deltas(cfg, fwd.inputs, backward(cfg, params, fwd, objective(fwd.out, target)))


def clip_deltas(cfg: MemoryConfig, inputs: tuple[Tensor, ...], deltas: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The deltas of `cfg.clip`'s per-token gradient-norm clipping: every token's gradient g_t (all
    layers' δ_l x_lᵀ, and δ_l for a bias) scaled by min(1, c / ‖g_t‖), ‖g_t‖² = Σ_l ‖δ_l‖² (‖x_l‖² [+ 1]).
    The gradient is linear in the deltas, so scaling them scales it; the outer backward differentiates
    through the scale. Unchanged without `clip`."""
    if cfg.clip is None:
        return deltas
    extra = 1.0 if cfg.bias else 0.0
    square = sum((d * d).sum(-1) * ((x * x).sum(-1) + extra) for d, x in zip(deltas, inputs))
    over = square > cfg.clip * cfg.clip
    # the unselected branch of `where` still gets a gradient: keep its rsqrt finite where the norm is 0
    scale = torch.where(over, cfg.clip * torch.rsqrt(torch.where(over, square, torch.ones_like(square))),
                        torch.ones_like(square))
    return tuple(d * scale.unsqueeze(-1) for d in deltas)
