"""Elementwise functions for Triton kernels that Triton's core language lacks or computes imprecisely;
the fused prologue and every generated kernel module call them. Importing this module imports Triton."""

from __future__ import annotations

import triton
import triton.language as tl

# tanh's Taylor coefficients, x − x³/3 + 2x⁵/15 − …, through x¹⁵: for |x| < 1/2 the first term left out
# is below float32's rounding of the sum. (A kernel reads a global only as a constexpr.)
_T3, _T5, _T7 = tl.constexpr(-1.0 / 3.0), tl.constexpr(2.0 / 15.0), tl.constexpr(-17.0 / 315.0)
_T9, _T11 = tl.constexpr(62.0 / 2835.0), tl.constexpr(-1382.0 / 155925.0)
_T13, _T15 = tl.constexpr(21844.0 / 6081075.0), tl.constexpr(-929569.0 / 638512875.0)


@triton.jit
def tanh(x):
    """tanh to within a few float32 roundings of the value everywhere. 2σ(2x) − 1 is off by about one
    rounding of 1 in absolute terms, so near 0 it loses the value's relative precision (7% at 1e-6),
    which a norm after it brings back to full size: below |x| = 1/2 the Taylor polynomial, beyond it
    1 − 2/(e^{2|x|} + 1) with the sign of x (|x| capped where that is 1, so that e^{2|x|} never
    overflows)."""
    s = x * x
    p = _T13 + s * _T15
    p = _T11 + s * p
    p = _T9 + s * p
    p = _T7 + s * p
    p = _T5 + s * p
    p = _T3 + s * p
    small = x + x * s * p
    large = 1.0 - 2.0 / (tl.exp(2.0 * tl.minimum(tl.abs(x), 15.0)) + 1.0)  # 1 in float32 from 9.1 on
    return tl.where(tl.abs(x) < 0.5, small, tl.where(x < 0.0, -large, large))


@triton.jit
def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^−|x|) without overflow, where log(1 + u) would lose the whole
    of a u below float32's rounding of 1 (e^x for x < −17): log1p(u) as log(1 + u) · u / ((1 + u) − 1),
    which is u itself where 1 + u rounds to 1."""
    u = tl.exp(-tl.abs(x))
    w = 1.0 + u
    exact = tl.where(w == 1.0, 1.0, w - 1.0)
    return tl.maximum(x, 0.0) + tl.where(w == 1.0, u, tl.log(w) * (u / exact))


@triton.jit
def power(x, p):
    """x ** p for a float exponent p, as exp(p · log x); 0 ** p (0 for p > 0, inf for p < 0) is taken apart,
    so that no log of 0 is evaluated (the interpreter warns on one; a GPU does not)."""
    zero = x == 0.0
    y = tl.exp(p * tl.log(tl.where(zero, 1.0, x)))
    return tl.where(zero, tl.where(p > 0, 0.0, float("inf")), y)
