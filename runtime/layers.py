"""Building blocks that generated model code calls: short convolution, softmax attention, norms, CMS.

Inputs are (B, T, D) tensors (batch, time, features). A layer that carries state along a sequence takes
an optional cache and returns the new one, so that running a sequence in two calls with the carried
cache reproduces one call (docs/semantics.md §2.5): `f(x[:, :a], None)` then `f(x[:, a:], cache)`
gives `f(x, None)`. Caches keep the autograd graph; call `.detach()` on them to truncate it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    'silu': F.silu,
    'gelu': F.gelu,
    'relu': F.relu,
    'tanh': torch.tanh,
    'sigmoid': torch.sigmoid,
    'softplus': F.softplus,
    'identity': lambda x: x,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """The elementwise activation called `name` (silu, gelu, relu, tanh, sigmoid, softplus, identity)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}") from None


def fused_prologue(backend: str, like: Tensor) -> bool:
    """Whether a prologue layer runs its fused Triton kernel: the backend is triton and Triton can run
    on tensors like `like` (CUDA, or TRITON_INTERPRET=1 on a CPU). Otherwise, and for an empty
    tensor, the PyTorch ops run."""
    if backend != "triton" or like.numel() == 0:
        return False
    from .triton.backend import triton_unavailable

    return triton_unavailable(like) is None


def l2norm(x: Tensor, heads: int, eps: float = 1e-6) -> Tensor:
    """Scale each head's slice of the last dim to unit L2 norm: x * rsqrt(sum(x^2) + eps) per head."""
    width = x.shape[-1]
    if heads < 1 or width % heads:
        raise ValueError(f"last dim {width} does not split into {heads} heads")
    xh = x.unflatten(-1, (heads, width // heads))
    xh = xh * torch.rsqrt(xh.pow(2).sum(-1, keepdim=True) + eps)
    return xh.flatten(-2)


class L2Norm(nn.Module):
    """`l2norm(x)` of a spec: each head's slice of the last dim scaled to unit L2 norm (see `l2norm`);
    one fused kernel each way for backend 'triton'. No parameters."""

    def __init__(self, heads: int, eps: float = 1e-6):
        super().__init__()
        self.heads, self.eps = heads, eps
        self.backend = "chunked"

    def extra_repr(self) -> str:
        return f"heads={self.heads}"

    def forward(self, x: Tensor) -> Tensor:
        if self.heads >= 1 and x.shape[-1] % self.heads == 0 and fused_prologue(self.backend, x):
            from .triton.prologue import l2_norm

            return l2_norm(x, self.heads, self.eps)
        return l2norm(x, self.heads, self.eps)


class ShortConv(nn.Module):
    """Causal depthwise convolution over time: y_t = sum_j weight[:, j] * x_{t-(window-1)+j} (+ bias),
    then optionally an activation and a per-head L2 norm (`l2norm(act(conv(x)))` in a spec).

    `weight[:, -1]` multiplies the current token. Inputs before the sequence start are zeros; the cache
    holds the last window-1 inputs, (B, window-1, width). The taps are summed in a fixed order, so a
    split run equals the unsplit run bit for bit. With `backend = 'triton'` (set by `set_backend`)
    convolution, activation and norm run as one fused kernel where Triton can run.
    """

    def __init__(self, width: int, window: int = 4, bias: bool = False):
        super().__init__()
        if width < 1 or window < 1:
            raise ValueError("ShortConv needs width >= 1 and window >= 1")
        self.width, self.window = width, window
        self.backend = "chunked"
        self.weight = nn.Parameter(torch.empty(width, window))
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None
        bound = 1.0 / math.sqrt(window)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor, cache: Optional[Tensor] = None, act: str = "identity",
                l2norm_heads: Optional[int] = None) -> tuple[Tensor, Tensor]:
        fn = activation(act)
        if l2norm_heads is not None and (l2norm_heads < 1 or self.width % l2norm_heads):
            raise ValueError(f"width {self.width} does not split into {l2norm_heads} heads")
        if fused_prologue(self.backend, x):
            from .triton.prologue import ACTIVATIONS, conv_act_norm

            if act in ACTIVATIONS:
                y = conv_act_norm(x, cache, self.weight, self.bias, act, l2norm_heads)
                return y, self._next_cache(x, cache)
        batch, length, _ = x.shape
        if cache is None:
            cache = x.new_zeros(batch, self.window - 1, self.width)
        padded = torch.cat([cache, x], dim=1)
        y = padded[:, :length] * self.weight[:, 0]
        for j in range(1, self.window):
            y = y + padded[:, j:j + length] * self.weight[:, j]
        if self.bias is not None:
            y = y + self.bias
        if act != "identity":
            y = fn(y)
        if l2norm_heads is not None:
            y = l2norm(y, l2norm_heads)
        return y, padded[:, padded.shape[1] - (self.window - 1):]

    def _next_cache(self, x: Tensor, cache: Optional[Tensor]) -> Tensor:
        """The last window-1 inputs of cache ++ x, without concatenating the whole call."""
        keep, length = self.window - 1, x.shape[1]
        if length >= keep:
            return x[:, length - keep:]
        if cache is None:
            cache = x.new_zeros(x.shape[0], keep, self.width)
        return torch.cat([cache[:, length:], x], dim=1)


class BoundedGate(nn.Module):
    """A gate's bounding chain: shift + scale * act(z) (`0.5 + 0.5 * sigmoid(z)`, `-softplus(z)`).

    The PyTorch path applies the spec's operations in the spec's order (the scale is skipped when it
    is 1, the shift when it is 0); with `backend = 'triton'` one fused kernel computes the chain where
    Triton can run. No parameters.
    """

    def __init__(self, act: str, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.fn = activation(act)
        self.act, self.scale, self.shift = act, float(scale), float(shift)
        self.backend = "chunked"

    def extra_repr(self) -> str:
        return f"act={self.act!r}, scale={self.scale}, shift={self.shift}"

    def forward(self, z: Tensor) -> Tensor:
        if fused_prologue(self.backend, z):
            from .triton.prologue import ACTIVATIONS, bounded_gate

            if self.act in ACTIVATIONS:
                return bounded_gate(z, self.act, self.scale, self.shift)
        y = self.fn(z)
        if self.scale != 1.0:
            y = self.scale * y
        if self.shift != 0.0:
            y = self.shift + y
        return y


@dataclass(frozen=True, eq=False)
class KVCache:
    """Past keys (B, H, P, dk) and values (B, H, P, dv) of an attention layer, and the tokens seen."""

    k: Tensor
    v: Tensor
    position: int

    def detach(self) -> 'KVCache':
        return KVCache(self.k.detach(), self.v.detach(), self.position)


class CausalAttention(nn.Module):
    """Causal softmax attention over heads; the projections belong to the generated code.

    q, k: (B, T, heads*dk), v: (B, T, heads*dv) -> o: (B, T, heads*dv). With `window=W` each query
    sees itself and the W-1 previous tokens. The scale defaults to dk**-0.5. The cache holds the past
    keys and values (only the last W-1 with a window), so split runs and token-by-token decoding equal
    the full pass (up to the rounding of softmax sums over differently padded key sets).
    """

    def __init__(self, heads: int, dk: int, dv: int, window: Optional[int] = None,
                 scale: Optional[float] = None):
        super().__init__()
        if window is not None and window < 1:
            raise ValueError("an attention window must be at least 1 token")
        self.heads, self.dk, self.dv, self.window = heads, dk, dv, window
        self.scale = dk ** -0.5 if scale is None else scale

    def _split(self, x: Tensor, d: int) -> Tensor:
        return x.unflatten(-1, (self.heads, d)).transpose(1, 2)  # (B, H, T, d)

    def forward(self, q: Tensor, k: Tensor, v: Tensor,
                cache: Optional[KVCache] = None) -> tuple[Tensor, KVCache]:
        length = q.shape[1]
        q, k, v = self._split(q, self.dk), self._split(k, self.dk), self._split(v, self.dv)
        position = 0
        if cache is not None:
            k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
            position = cache.position
        past = k.shape[2] - length
        if past == 0 and self.window is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:
            query_at = torch.arange(length, device=q.device).unsqueeze(1) + past
            key_at = torch.arange(k.shape[2], device=q.device).unsqueeze(0)
            mask = key_at <= query_at
            if self.window is not None:
                mask = mask & (key_at > query_at - self.window)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        if self.window is not None:
            keep = min(self.window - 1, k.shape[2])
            k, v = k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]
        return o.transpose(1, 2).flatten(-2), KVCache(k, v, position + length)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dim (one fused kernel for backend 'triton')."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.backend = "chunked"
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        if fused_prologue(self.backend, x):
            from .triton.prologue import rms_norm

            return rms_norm(x, self.weight, self.eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LayerNorm(nn.Module):
    """Standard layer normalisation over the last dim with gain `weight` and optional `bias`."""

    def __init__(self, width: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.width, self.eps = width, eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.width,), self.weight, self.bias, self.eps)


class CmsMLP(nn.Module):
    """One CMS level's block: y = w_out act(w_in x + b_in) + b_out.

    w_in (hidden, width) starts like nn.Linear; w_out (width, hidden) starts `out_scale` times smaller,
    and the biases at zero, so a new level's output starts near zero.
    """

    def __init__(self, width: int, hidden: int, act: str = 'gelu', bias: bool = True,
                 out_scale: float = 1e-2):
        super().__init__()
        self.width, self.hidden, self.act_name = width, hidden, act
        self.act = activation(act)
        self.w_in = nn.Parameter(torch.empty(hidden, width).uniform_(-1, 1) / math.sqrt(width))
        self.w_out = nn.Parameter(torch.empty(width, hidden).uniform_(-1, 1) * (out_scale / math.sqrt(hidden)))
        self.b_in = nn.Parameter(torch.zeros(hidden)) if bias else None
        self.b_out = nn.Parameter(torch.zeros(width)) if bias else None

    def forward(self, x: Tensor, init: Optional['CmsMLP'] = None) -> Tensor:
        """The MLP on x; with `init` (the learned initial state it is reset to) the gradient of each weight
        reaches its initial value too, unchanged: the first-order gradient of the loss with respect to
        the initial state, whatever steps were taken since the reset (semantics §5)."""
        w_in, b_in, w_out, b_out = self.w_in, self.b_in, self.w_out, self.b_out
        if init is not None and torch.is_grad_enabled():
            w_in, b_in, w_out, b_out = (_through(p, p0) for p, p0 in
                                        zip((w_in, b_in, w_out, b_out), (init.w_in, init.b_in, init.w_out, init.b_out)))
        return F.linear(self.act(F.linear(x, w_in, b_in)), w_out, b_out)


def _through(p: Optional[Tensor], p0: Optional[Tensor]) -> Optional[Tensor]:
    """p's value, differentiable with respect to both p and p0 (the gradient of p copied to p0)."""
    if p is None or p0 is None or not p0.requires_grad:
        return p
    return p + (p0 - p0.detach())


class CmsChain(nn.Module):
    """A chain of CMS levels (docs/semantics.md §3); members are registered under their spec names.

    - sequential, nested: y <- y + MLP_i(y) for each member in order. The residual is a choice of the
      runtime, so an untrained chain starts near the identity. `nested` differs from `sequential` only
      in how the training loop resets levels (a meta edge), not in the forward pass.
    - independent: y = Agg(MLP_1(x), ..., MLP_k(x)) with `agg` = weighted_sum (softmax of the learnable
      vector `agg`, starting uniform), sum or mean. No residual is added here.
    `initial` names the members that the training loop resets to a learned initial state (the next
    member of a nested chain, every member under `reset per sequence`): each gets a copy of its weights
    under `init.<member>`, which starts equal to them, and the gradient of every weight reaches its
    copy as well (`CmsMLP.forward`). Which level learns the copy, and when the member goes back to it,
    is the training loop's business (nldsl.runtime.train.levels).
    The forward pass has no state: CMS windows are stepped by the training loop (see window_positions).
    """

    VARIANTS = ('sequential', 'independent', 'nested')
    AGGREGATIONS = ('weighted_sum', 'sum', 'mean')

    def __init__(self, members: Sequence[tuple[str, CmsMLP]], variant: str = 'sequential',
                 agg: str = 'weighted_sum', initial: Sequence[str] = ()):
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"unknown CMS variant {variant!r}; expected one of {self.VARIANTS}")
        if agg not in self.AGGREGATIONS:
            raise ValueError(f"unknown CMS aggregation {agg!r}; expected one of {self.AGGREGATIONS}")
        if not members:
            raise ValueError("a CMS chain needs at least one member")
        self.variant, self.aggregation = variant, agg
        self.names: list[str] = []
        for name, mlp in members:
            if name in self.names or name in ('agg', 'init') or not name.isidentifier():
                raise ValueError(f"bad or repeated CMS member name {name!r}")
            self.add_module(name, mlp)
            self.names.append(name)
        if variant == 'independent' and agg == 'weighted_sum':
            self.agg = nn.Parameter(torch.zeros(len(self.names)))
        unknown = set(initial) - set(self.names)
        if unknown:
            raise ValueError(f"initial states for members the chain does not have: {sorted(unknown)}")
        self.init = nn.ModuleDict({name: copy.deepcopy(getattr(self, name)) for name in self.names if name in initial})

    def forward(self, x: Tensor) -> Tensor:
        mlps = [(getattr(self, name), self.init[name] if name in self.init else None) for name in self.names]
        if self.variant != 'independent':
            y = x
            for mlp, init in mlps:
                y = y + mlp(y, init)
            return y
        outs = torch.stack([mlp(x, init) for mlp, init in mlps])
        if self.aggregation == 'sum':
            return outs.sum(0)
        if self.aggregation == 'mean':
            return outs.mean(0)
        weights = torch.softmax(self.agg, dim=0).to(outs.dtype)
        return torch.tensordot(weights, outs, dims=1)


def window_positions(position: int, length: int, period: int) -> list[int]:
    """Where CMS windows of `period` tokens close inside a call of `length` tokens.

    The call holds sequence positions position+1 .. position+length (1-based, from the sequence start;
    `position` tokens came before). Returns the counts r in 1..length such that position + r is a
    multiple of `period`: the window closes with the call's r-th token, i.e. after x[:, :r].
    """
    if period < 1 or position < 0 or length < 0:
        raise ValueError("window_positions needs period >= 1, position >= 0 and length >= 0")
    first = period - position % period
    return list(range(first, length + 1, period))


class Embedding(nn.Embedding):
    """Token embedding initialised with std dim**-0.5, so that a tied output head starts with unit-scale logits."""

    def __init__(self, vocab: int, dim: int):
        super().__init__(vocab, dim)
        nn.init.normal_(self.weight, std=dim ** -0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) to vectors (B, T, dim). A tensor of another shape or of floats is refused with
        what was expected; so, on a CPU and outside compilation, are ids outside [0, vocab) (a CUDA
        device asserts on them, and checking there would wait for the device at every call)."""
        if tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise ValueError(f"the model takes token ids as an integer tensor of shape (batch, tokens); got a "
                             f"tensor of dtype {str(tokens.dtype).removeprefix('torch.')} and shape {tuple(tokens.shape)}")
        if tokens.device.type == "cpu" and tokens.numel() and not torch.compiler.is_compiling():
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or high >= self.num_embeddings:
                raise ValueError(f"token ids run from 0 to {self.num_embeddings - 1} (the spec's vocab); got "
                                 f"{low if low < 0 else high}")
        return super().forward(tokens)
