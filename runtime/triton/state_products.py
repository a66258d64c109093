"""The wy form's backward: its products with the tiles' states, in one pass over them.

A tile of C tokens reads y = gq (q W_startᵀ) + Aq E and ends at W_end = gend W_start + Eᵀ Kend, with the
columns E = U + Wm W_startᵀ (U = X (cw v), Wm = X (gb p); generated `<level>_prep`). The forward walk
stores every tile's start state W_start and its columns E; the backward walk every tile's end-state
gradient dW_end and dE = Aqᵀ dY + Kend dW_endᵀ. What the backward still needs from the states is, per tile,

    dY W_start,  E dW_end,  dE W_start  and  Σ dW_end ∘ W_start,

the backward's only products with whole states (dv x dk per tile), and its bulk of memory traffic.
`_state_products` computes all four reading each state once: one program per (block of BK key
columns, tile, batch x head), walking the state's rows BV at a time. The generated `<level>_prep_bwd`
then finishes each tile with its small (C x C and C x d) products. The padded tokens of the last tile
have zero gradients and zero columns, so they add nothing. Importing this module imports Triton.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .backend import interpreting
from .launch import _pow2

BLOCK = 64   # key columns and state rows per step on a GPU (the interpreter takes whole heads); at 8 warps
# sm_90 compiles it in 128 registers, nothing spilled (4 warps: 255 and 16 bytes spilled)


class StateProducts(NamedTuple):
    """Per tile, padded to whole tiles: (B, H, tiles * C, dk) x 3 in the states' dtype, and (B, H, tiles)
    in float32. E dW_end and dE W_start are one-element stand-ins where the level has no columns E
    (dE W_start: no Wm)."""

    dyp: Tensor      # dY W_start
    dkend: Tensor    # E dW_end
    dwm: Tensor      # dE W_start
    dgend: Tensor    # Σ dW_end ∘ W_start


@triton.jit
def _state_products(
    s, ds,                                  # the tiles' start states and end-state gradients (B, H, tiles, dv, dk)
    dy, e, de,                              # (B, H, T, dv); the tiles' columns and their gradient (B, H, tiles * C, dv)
    dyp, dkend, dwm, dgend,                 # out: (B, H, tiles * C, dk) x 3, (key blocks, B, H, tiles) partial sums
    T, n_tiles,
    DV: tl.constexpr, DK: tl.constexpr, C: tl.constexpr, BV: tl.constexpr, BK: tl.constexpr,
    HAS_E: tl.constexpr, HAS_W: tl.constexpr, PREC: tl.constexpr, HALF: tl.constexpr,
):
    i_k = tl.program_id(0)
    j = tl.program_id(1)
    i_bh = tl.program_id(2).to(tl.int64)
    rows = tl.arange(0, C)
    ik = i_k * BK + tl.arange(0, BK)
    mk = ik < DK
    t = j * C + rows
    o_tok = i_bh * T + t
    o_pad = (i_bh * n_tiles + j) * C + rows
    o_tile = (i_bh * n_tiles + j) * DV * DK
    acc_y = tl.zeros([C, BK], dtype=tl.float32)
    acc_e = tl.zeros([C, BK], dtype=tl.float32)
    acc_w = tl.zeros([C, BK], dtype=tl.float32)
    acc_g = tl.zeros([BK], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(DV, BV)):
        iv = i_v * BV + tl.arange(0, BV)
        mv = iv < DV
        o_s = o_tile + iv[:, None] * DK + ik[None, :]
        S = tl.load(s + o_s, mask=mv[:, None] & mk[None, :], other=0.0)
        dS = tl.load(ds + o_s, mask=mv[:, None] & mk[None, :], other=0.0)
        dY = tl.load(dy + o_tok[:, None] * DV + iv[None, :], mask=(t < T)[:, None] & mv[None, :], other=0.0)
        acc_g += tl.sum(S.to(tl.float32) * dS.to(tl.float32), axis=0)
        if not HALF:
            S = S.to(tl.float32)
            dS = dS.to(tl.float32)
            dY = dY.to(tl.float32)
        acc_y += tl.dot(dY, S, input_precision=PREC)
        if HAS_E:
            E = tl.load(e + o_pad[:, None] * DV + iv[None, :], mask=mv[None, :], other=0.0)
            acc_e += tl.dot(E if HALF else E.to(tl.float32), dS, input_precision=PREC)
        if HAS_W:
            dE = tl.load(de + o_pad[:, None] * DV + iv[None, :], mask=mv[None, :], other=0.0)
            acc_w += tl.dot(dE if HALF else dE.to(tl.float32), S, input_precision=PREC)
    o_out = o_pad[:, None] * DK + ik[None, :]
    tl.store(dyp + o_out, acc_y.to(dyp.dtype.element_ty), mask=mk[None, :])
    if HAS_E:
        tl.store(dkend + o_out, acc_e.to(dkend.dtype.element_ty), mask=mk[None, :])
    if HAS_W:
        tl.store(dwm + o_out, acc_w.to(dwm.dtype.element_ty), mask=mk[None, :])
    tl.store(dgend + (i_k * tl.num_programs(2) + i_bh) * n_tiles + j, tl.sum(acc_g, axis=0))


def _block(n: int) -> int:
    return _pow2(n) if interpreting() else min(_pow2(n), BLOCK)


def state_products(columns: str, tile: int, starts: Tensor, dstarts: Tensor, dy: Tensor, e: Tensor, de: Tensor,
                   prec: str, half: bool = False) -> StateProducts:
    """`columns` says what E is made of: 'u' (U), 'w' (Wm W_startᵀ), 'uw' (both) or '' (no E); `tile` is
    C. starts, dstarts: (B, H, tiles, dv, dk); dy (B, H, T, dv); e, de (B, H, tiles * C, dv), as the walks
    stored them; `prec` tl.dot's input precision (tf32 only for half-precision states, which tf32 holds
    exactly); `half`: the operands share a half-precision dtype and multiply as stored, on a GPU only
    (LevelKernels.multiplies_as_stored)."""
    b, h, n, dv, dk = starts.shape
    bk, bv = _block(dk), _block(dv)
    n_k = -(-dk // bk)
    out = lambda: torch.empty(b, h, n * tile, dk, dtype=starts.dtype, device=starts.device)  # noqa: E731
    unused = starts.new_zeros(1)
    dyp = out()
    dkend = out() if columns else unused
    dwm = out() if "w" in columns else unused
    dgend = torch.empty(n_k, b, h, n, dtype=torch.float32, device=starts.device)
    options = {} if interpreting() else {"num_warps": 8, "num_stages": 2}
    _state_products[(n_k, n, b * h)](
        starts, dstarts, dy.contiguous(), e, de, dyp, dkend, dwm, dgend, dy.shape[2], n,
        DV=dv, DK=dk, C=tile, BV=bv, BK=bk, HAS_E=bool(columns), HAS_W="w" in columns,
        PREC=prec if starts.dtype in (torch.bfloat16, torch.float16) else "ieee", HALF=half, **options)
    return StateProducts(dyp, dkend, dwm, dgend.sum(0))
