"""Fused Triton kernels for the prologue of a memory level: what runs between the projections and the
memory (docs/semantics.md §2.5 for the short convolution's cache).

- `conv_act_norm`: the short causal depthwise convolution, its activation and an optional per-head
  L2 normalisation in one pass over (B, T, W), where the PyTorch path makes a pass per tap, one for the
  activation and four for the norm. The backward recomputes the forward from x and the cache (nothing
  but the inputs is saved), writes du = ∂loss/∂(conv output) once with the per-block sums of the
  weight and bias gradients, then gathers the input and cache gradients from du.
- `bounded_gate`: shift + scale · act(z), a gate's bounding chain (`0.5 + 0.5 * sigmoid(...)`,
  `-softplus(...)`), in one elementwise pass each way.
- `rms_norm`: x · rsqrt(mean(x²) + eps) · weight over the last dim, forward and backward in one pass
  each (the weight gradient as per-program partial sums).
- `l2_norm`: a per-head L2 norm on its own (HOPE's k and v, read from memories), one pass each way.

Every kernel computes in float32 and stores in the input's dtype; the backwards are first order only
(`once_differentiable`: a double backward through them is an error, not a silent zero). The kernels
are plain `@triton.jit` functions specialised by constexpr flags (activation, bias, norm), so nothing
is rendered per spec.
`runtime/layers.py` calls them for the triton backend when `triton_unavailable` says they can run;
importing this module imports Triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .backend import interpreting, on_device
from .elementwise import softplus, tanh

ACTIVATIONS = {"identity": 0, "silu": 1, "sigmoid": 2, "relu": 3, "tanh": 4, "softplus": 5}
LAUNCHES = {"conv_fwd": 0, "conv_bwd": 0, "gate_fwd": 0, "gate_bwd": 0, "rms_fwd": 0, "rms_bwd": 0,
            "l2_fwd": 0, "l2_bwd": 0}


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _rows_per_program(width: int) -> int:
    """Rows (tokens) per program for a tile `width` wide: small under the interpreter, so that tests
    cross block boundaries, and about 4K elements per tile on a GPU."""
    if interpreting():
        return 8
    return max(1, min(64, 4096 // width))


def _activation_code(act: str) -> int:
    try:
        return ACTIVATIONS[act]
    except KeyError:
        raise ValueError(f"no fused form of activation {act!r}; fused ones: {sorted(ACTIVATIONS)}") from None


# ------------------------------------------------------------------------------------ activations


@triton.jit
def _act(u, ACT: tl.constexpr):
    if ACT == 1:
        out = u * tl.sigmoid(u)
    elif ACT == 2:
        out = tl.sigmoid(u)
    elif ACT == 3:
        out = tl.maximum(u, 0.0)
    elif ACT == 4:
        out = tanh(u)
    elif ACT == 5:
        out = softplus(u)
    else:
        out = u
    return out


@triton.jit
def _act_grad(u, ACT: tl.constexpr):
    """d act(u) / du."""
    if ACT == 1:
        s = tl.sigmoid(u)
        out = s * (1.0 + u * (1.0 - s))
    elif ACT == 2:
        s = tl.sigmoid(u)
        out = s * (1.0 - s)
    elif ACT == 3:
        out = tl.where(u > 0.0, 1.0, 0.0)
    elif ACT == 4:
        th = tanh(u)
        out = 1.0 - th * th
    elif ACT == 5:
        out = tl.sigmoid(u)
    else:
        out = u * 0.0 + 1.0
    return out


# ------------------------------------------------------------------ short conv + activation + l2norm


@triton.jit
def _tap(x, cache, b, s, c, ok, T, W, K: tl.constexpr, HAS_CACHE: tl.constexpr):
    """The padded input at times s (B, T, W rows; s < 0 reads the cache's last K-1 inputs), float32."""
    inside = ok & (s[:, None] >= 0) & (s[:, None] < T)
    val = tl.load(x + (b * T + s[:, None]) * W + c[None, :], mask=inside, other=0.0).to(tl.float32)
    if HAS_CACHE:
        before = ok & (s[:, None] < 0) & (s[:, None] >= 1 - K)
        val += tl.load(cache + (b * (K - 1) + s[:, None] + K - 1) * W + c[None, :], mask=before,
                       other=0.0).to(tl.float32)
    return val


@triton.jit
def _conv(x, cache, w, bias, b, t, c, ok, T, W, K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
          HAS_CACHE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """u_t = sum_j w[:, j] x_{t-(K-1)+j} (+ bias), the taps summed in order as ShortConv does."""
    u = tl.zeros((BT, BD), dtype=tl.float32)
    cm = c < W
    for j in tl.static_range(K):
        wj = tl.load(w + c * K + j, mask=cm, other=0.0).to(tl.float32)
        u += _tap(x, cache, b, t - (K - 1) + j, c, ok, T, W, K, HAS_CACHE) * wj[None, :]
    if HAS_BIAS:
        u += tl.load(bias + c, mask=cm, other=0.0).to(tl.float32)[None, :]
    return u


@triton.jit
def conv_fwd_kernel(x, cache, w, bias, y, T, W, D, eps,
                    K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, ACT: tl.constexpr,
                    L2: tl.constexpr, HAS_CACHE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """One program: BT tokens × one group of D channels (a head when L2) of one sequence."""
    pid_t, b, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pid_t * BT + tl.arange(0, BT)
    col = tl.arange(0, BD)
    c = g * D + col
    ok = ((col < D) & (c < W))[None, :] & (t < T)[:, None]
    u = _conv(x, cache, w, bias, b, t, c, ok, T, W, K, BT, BD, HAS_CACHE, HAS_BIAS)
    a = tl.where(ok, _act(u, ACT), 0.0)
    if L2:
        a = a * tl.rsqrt(tl.sum(a * a, axis=1) + eps)[:, None]
    tl.store(y + (b * T + t[:, None]) * W + c[None, :], a.to(y.dtype.element_ty), mask=ok)


@triton.jit
def conv_bwd_du_kernel(x, cache, w, bias, dy, du, dw_part, db_part, B, T, W, D, eps,
                       K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, ACT: tl.constexpr,
                       L2: tl.constexpr, HAS_CACHE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """du = ∂loss/∂u for a tile (u recomputed), and the tile's sums of du·x (weight) and du (bias)."""
    pid_t, b, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pid_t * BT + tl.arange(0, BT)
    col = tl.arange(0, BD)
    c = g * D + col
    cm = (col < D) & (c < W)
    ok = cm[None, :] & (t < T)[:, None]
    u = _conv(x, cache, w, bias, b, t, c, ok, T, W, K, BT, BD, HAS_CACHE, HAS_BIAS)
    g_out = tl.load(dy + (b * T + t[:, None]) * W + c[None, :], mask=ok, other=0.0).to(tl.float32)
    if L2:
        a = tl.where(ok, _act(u, ACT), 0.0)
        n = tl.rsqrt(tl.sum(a * a, axis=1) + eps)
        yn = a * n[:, None]
        g_out = n[:, None] * (g_out - yn * tl.sum(yn * g_out, axis=1)[:, None])
    g_u = tl.where(ok, g_out * _act_grad(u, ACT), 0.0)
    tl.store(du + (b * T + t[:, None]) * W + c[None, :], g_u, mask=ok)
    part = (pid_t * B + b) * W + c
    for j in tl.static_range(K):
        xs = _tap(x, cache, b, t - (K - 1) + j, c, ok, T, W, K, HAS_CACHE)
        tl.store(dw_part + part * K + j, tl.sum(g_u * xs, axis=0), mask=cm)
    if HAS_BIAS:
        tl.store(db_part + part, tl.sum(g_u, axis=0), mask=cm)


@triton.jit
def conv_bwd_dx_kernel(du, w, dxp, T, W, D, K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """∂loss/∂(cache ++ x) at padded times p in [0, T+K-1): sum_j w[:, j] du_{p-j}."""
    pid_p, b, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    p = pid_p * BT + tl.arange(0, BT)
    col = tl.arange(0, BD)
    c = g * D + col
    cm = (col < D) & (c < W)
    acc = tl.zeros((BT, BD), dtype=tl.float32)
    for j in tl.static_range(K):
        s = p - j
        inside = cm[None, :] & ((s >= 0) & (s < T))[:, None]
        wj = tl.load(w + c * K + j, mask=cm, other=0.0).to(tl.float32)
        acc += tl.load(du + (b * T + s[:, None]) * W + c[None, :], mask=inside, other=0.0) * wj[None, :]
    ok = cm[None, :] & (p < T + K - 1)[:, None]
    tl.store(dxp + (b * (T + K - 1) + p[:, None]) * W + c[None, :], acc, mask=ok)


def _conv_geometry(width: int, heads: int | None):
    """(channels per group D, its power-of-two tile BD, groups, tokens per program BT)."""
    if heads is not None:
        group = width // heads
        block = _pow2(group)
        return group, block, heads, _rows_per_program(block)
    block = min(_pow2(width), 16 if interpreting() else 128)
    return block, block, -(-width // block), _rows_per_program(block)


def no_gradient(inputs: int) -> tuple:
    """The backward of a fused function whose output nothing differentiated: no gradient for any input,
    as the PyTorch ops give. Zeros would reach the parameters before it, which would then have a zero
    gradient on this backend and none on the others, and an optimizer's weight decay would move them
    here only."""
    return (None,) * inputs


class ConvActNorm(torch.autograd.Function):
    """y = l2norm_per_head(act(short_conv(x; cache, weight, bias))) for x (B, T, W), cache (B, K-1, W)."""

    @staticmethod
    def forward(ctx, x, cache, weight, bias, act, heads, eps):
        ctx.set_materialize_grads(False)  # see no_gradient
        batch, tokens, width = x.shape
        window = weight.shape[1]
        x = x.contiguous()
        cache = cache.contiguous() if cache is not None else None
        weight = weight.contiguous()
        group, block, groups, bt = _conv_geometry(width, heads)
        y = torch.empty_like(x)
        grid = (-(-tokens // bt), batch, groups)
        conv_fwd_kernel[grid](x, cache if cache is not None else x, weight, bias if bias is not None else weight, y,
                              tokens, width, group, eps, K=window, BT=bt, BD=block, ACT=_activation_code(act),
                              L2=heads is not None, HAS_CACHE=cache is not None and window > 1,
                              HAS_BIAS=bias is not None)
        LAUNCHES["conv_fwd"] += 1
        ctx.save_for_backward(x, cache, weight, bias)
        ctx.act, ctx.heads, ctx.eps = act, heads, eps
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        if dy is None:
            return no_gradient(7)
        x, cache, weight, bias = ctx.saved_tensors
        batch, tokens, width = x.shape
        window = weight.shape[1]
        group, block, groups, bt = _conv_geometry(width, ctx.heads)
        n_blocks = -(-tokens // bt)
        f32 = dict(dtype=torch.float32, device=x.device)
        du = torch.empty(batch, tokens, width, **f32)
        dw_part = torch.zeros(n_blocks, batch, width, window, **f32)
        db_part = torch.zeros(n_blocks, batch, width, **f32) if bias is not None else du
        grid = (n_blocks, batch, groups)
        conv_bwd_du_kernel[grid](x, cache if cache is not None else x, weight, bias if bias is not None else weight,
                                 dy.contiguous(), du, dw_part, db_part, batch, tokens, width, group, ctx.eps,
                                 K=window, BT=bt, BD=block, ACT=_activation_code(ctx.act), L2=ctx.heads is not None,
                                 HAS_CACHE=cache is not None and window > 1, HAS_BIAS=bias is not None)
        dxp = torch.empty(batch, tokens + window - 1, width, **f32)
        grid = (-(-(tokens + window - 1) // bt), batch, groups)
        conv_bwd_dx_kernel[grid](du, weight, dxp, tokens, width, group, K=window, BT=bt, BD=block)
        LAUNCHES["conv_bwd"] += 1
        dx = dxp[:, window - 1:].to(x.dtype)
        dcache = dxp[:, :window - 1].to(cache.dtype) if cache is not None else None
        dweight = dw_part.sum((0, 1)).to(weight.dtype)
        dbias = db_part.sum((0, 1)).to(bias.dtype) if bias is not None else None
        return dx, dcache, dweight, dbias, None, None, None


def conv_act_norm(x, cache, weight, bias=None, act: str = "identity", heads: int | None = None, eps: float = 1e-6):
    """The fused short convolution (+ activation, + per-head L2 norm when `heads` is given); y (B, T, W)."""
    _activation_code(act)
    with on_device(x):
        return ConvActNorm.apply(x, cache, weight, bias, act, heads, eps)


# ------------------------------------------------------------------------------------ bounded gates


@triton.jit
def gate_fwd_kernel(z, y, N, shift, scale, ACT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    u = tl.load(z + i, mask=ok, other=0.0).to(tl.float32)
    tl.store(y + i, (shift + scale * _act(u, ACT)).to(y.dtype.element_ty), mask=ok)


@triton.jit
def gate_bwd_kernel(z, dy, dz, N, scale, ACT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    u = tl.load(z + i, mask=ok, other=0.0).to(tl.float32)
    g = tl.load(dy + i, mask=ok, other=0.0).to(tl.float32)
    tl.store(dz + i, (g * scale * _act_grad(u, ACT)).to(dz.dtype.element_ty), mask=ok)


def _gate_block() -> int:
    return 64 if interpreting() else 1024


class BoundedGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, act, scale, shift):
        ctx.set_materialize_grads(False)  # see no_gradient
        z = z.contiguous()
        y = torch.empty_like(z)
        n = z.numel()
        block = _gate_block()
        gate_fwd_kernel[(-(-n // block),)](z, y, n, float(shift), float(scale), ACT=_activation_code(act), BLOCK=block)
        LAUNCHES["gate_fwd"] += 1
        ctx.save_for_backward(z)
        ctx.act, ctx.scale = act, scale
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        if dy is None:
            return no_gradient(4)
        (z,) = ctx.saved_tensors
        dz = torch.empty_like(z)
        n = z.numel()
        block = _gate_block()
        gate_bwd_kernel[(-(-n // block),)](z, dy.contiguous(), dz, n, float(ctx.scale), ACT=_activation_code(ctx.act),
                                           BLOCK=block)
        LAUNCHES["gate_bwd"] += 1
        return dz, None, None, None


def bounded_gate(z, act: str, scale: float = 1.0, shift: float = 0.0):
    """shift + scale * act(z), elementwise, fused."""
    _activation_code(act)
    with on_device(z):
        return BoundedGate.apply(z, act, scale, shift)


# ------------------------------------------------------------------------------------------ rmsnorm


@triton.jit
def rms_fwd_kernel(x, w, y, rstd, R, W, eps, BR: tl.constexpr, BW: tl.constexpr):
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    c = tl.arange(0, BW)
    ok = (r < R)[:, None] & (c < W)[None, :]
    xv = tl.load(x + r[:, None] * W + c[None, :], mask=ok, other=0.0).to(tl.float32)
    wv = tl.load(w + c, mask=c < W, other=0.0).to(tl.float32)
    s = tl.rsqrt(tl.sum(xv * xv, axis=1) / W + eps)
    tl.store(rstd + r, s, mask=r < R)
    tl.store(y + r[:, None] * W + c[None, :], (xv * s[:, None] * wv[None, :]).to(y.dtype.element_ty), mask=ok)


@triton.jit
def rms_bwd_kernel(x, w, rstd, dy, dx, dw_part, R, W, BR: tl.constexpr, BW: tl.constexpr):
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    c = tl.arange(0, BW)
    ok = (r < R)[:, None] & (c < W)[None, :]
    xv = tl.load(x + r[:, None] * W + c[None, :], mask=ok, other=0.0).to(tl.float32)
    wv = tl.load(w + c, mask=c < W, other=0.0).to(tl.float32)
    g = tl.load(dy + r[:, None] * W + c[None, :], mask=ok, other=0.0).to(tl.float32)
    s = tl.load(rstd + r, mask=r < R, other=0.0)
    gw = g * wv[None, :]
    dot = tl.sum(gw * xv, axis=1) / W
    gx = s[:, None] * gw - xv * (s * s * s * dot)[:, None]
    tl.store(dx + r[:, None] * W + c[None, :], gx.to(dx.dtype.element_ty), mask=ok)
    tl.store(dw_part + tl.program_id(0) * W + c, tl.sum(g * xv * s[:, None], axis=0), mask=c < W)


def _rms_geometry(width: int) -> tuple[int, int]:
    block = _pow2(width)
    return block, (4 if interpreting() else max(1, min(16, 8192 // block)))


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        ctx.set_materialize_grads(False)  # see no_gradient
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        rows, width = x2.shape
        block, br = _rms_geometry(width)
        y = torch.empty_like(x2)
        rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
        rms_fwd_kernel[(-(-rows // br),)](x2, weight.contiguous(), y, rstd, rows, width, eps, BR=br, BW=block)
        LAUNCHES["rms_fwd"] += 1
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape = shape
        return y.reshape(shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        if dy is None:
            return no_gradient(3)
        x2, weight, rstd = ctx.saved_tensors
        rows, width = x2.shape
        block, br = _rms_geometry(width)
        n_prog = -(-rows // br)
        dx = torch.empty_like(x2)
        dw_part = torch.empty(n_prog, width, dtype=torch.float32, device=x2.device)
        rms_bwd_kernel[(n_prog,)](x2, weight.contiguous(), rstd, dy.reshape(rows, width).contiguous(), dx, dw_part,
                                  rows, width, BR=br, BW=block)
        LAUNCHES["rms_bwd"] += 1
        return dx.reshape(ctx.shape), dw_part.sum(0).to(weight.dtype), None


def rms_norm(x, weight, eps: float = 1e-6):
    """x * rsqrt(mean(x^2, -1) + eps) * weight, fused."""
    with on_device(x):
        return RMSNormFunction.apply(x, weight, eps)


# ------------------------------------------------------------------------------- per-head l2norm


@triton.jit
def l2_fwd_kernel(x, y, rnorm, R, D, eps, BR: tl.constexpr, BD: tl.constexpr):
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    c = tl.arange(0, BD)
    ok = (r < R)[:, None] & (c < D)[None, :]
    xv = tl.load(x + r[:, None] * D + c[None, :], mask=ok, other=0.0).to(tl.float32)
    n = tl.rsqrt(tl.sum(xv * xv, axis=1) + eps)
    tl.store(rnorm + r, n, mask=r < R)
    tl.store(y + r[:, None] * D + c[None, :], (xv * n[:, None]).to(y.dtype.element_ty), mask=ok)


@triton.jit
def l2_bwd_kernel(x, rnorm, dy, dx, R, D, BR: tl.constexpr, BD: tl.constexpr):
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    c = tl.arange(0, BD)
    ok = (r < R)[:, None] & (c < D)[None, :]
    xv = tl.load(x + r[:, None] * D + c[None, :], mask=ok, other=0.0).to(tl.float32)
    g = tl.load(dy + r[:, None] * D + c[None, :], mask=ok, other=0.0).to(tl.float32)
    n = tl.load(rnorm + r, mask=r < R, other=0.0)
    yn = xv * n[:, None]
    gx = n[:, None] * (g - yn * tl.sum(yn * g, axis=1)[:, None])
    tl.store(dx + r[:, None] * D + c[None, :], gx.to(dx.dtype.element_ty), mask=ok)


class L2NormFunction(torch.autograd.Function):
    """Each head's slice of the last dim scaled to unit norm: rows of D = width / heads."""

    @staticmethod
    def forward(ctx, x, heads, eps):
        ctx.set_materialize_grads(False)  # see no_gradient
        shape = x.shape
        group = shape[-1] // heads
        x2 = x.reshape(-1, group).contiguous()
        rows = x2.shape[0]
        block, br = _rms_geometry(group)
        y = torch.empty_like(x2)
        rnorm = torch.empty(rows, dtype=torch.float32, device=x.device)
        l2_fwd_kernel[(-(-rows // br),)](x2, y, rnorm, rows, group, eps, BR=br, BD=block)
        LAUNCHES["l2_fwd"] += 1
        ctx.save_for_backward(x2, rnorm)
        ctx.shape = shape
        return y.reshape(shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        if dy is None:
            return no_gradient(3)
        x2, rnorm = ctx.saved_tensors
        rows, group = x2.shape
        block, br = _rms_geometry(group)
        dx = torch.empty_like(x2)
        l2_bwd_kernel[(-(-rows // br),)](x2, rnorm, dy.reshape(rows, group).contiguous(), dx, rows, group,
                                         BR=br, BD=block)
        LAUNCHES["l2_bwd"] += 1
        return dx.reshape(ctx.shape), None, None


def l2_norm(x, heads: int, eps: float = 1e-6):
    """x * rsqrt(sum(x^2) + eps) per head's slice of the last dim, fused."""
    with on_device(x):
        return L2NormFunction.apply(x, heads, eps)
