"""The wy form's backward: its products with the tiles' states, as batched matrix products.

A tile of C tokens reads y = gq (q W_startᵀ) + Aq E and ends at W_end = gend W_start + Eᵀ Kend, with the
columns E = U + Wm W_startᵀ (U = X (cw v), Wm = X (gb p); generated `<level>_prep`). Given every tile's
start state W_start (stored by the forward walk) and the gradient dW_end of its end state (stored by the
backward walk), the backward needs, per tile,

    dY W_start,  E,  dE = Aqᵀ dY + Kend dW_endᵀ,  E dW_end,  dE W_start  and  Σ dW_end ∘ W_start.

These are the backward's only products with a whole state (dv x dk per tile), and its bulk; here they
run as batched matrix products over all tiles at once (cuBLAS on a GPU: tensor cores in the stored
states' precision, bf16 for a bf16 model, with float32 accumulation), and the generated
`<level>_prep_bwd` finishes each tile with its small (C x C and C x d) products. Padded tokens of the last
tile have zero gradients and zero terms, so they add nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
import torch
from torch import Tensor


class StateProducts(NamedTuple):
    """Per tile, padded to whole tiles: (B, H, tiles * C, dk), (.., dv), (.., dv), (.., dk), (.., dk),
    (B, H, tiles). E, dE, E dW_end and dE W_start are one-element stand-ins where the level has no
    columns E (or no Wm, for dE W_start)."""

    dyp: Tensor      # dY W_start
    e: Tensor        # E
    de: Tensor       # dE
    dkend: Tensor    # E dW_end
    dwm: Tensor      # dE W_start
    dgend: Tensor    # Σ dW_end ∘ W_start


def state_products(columns: str, starts: Tensor, dstarts: Tensor, dy: Tensor, u: Tensor, w: Tensor,
                   kend: Tensor, aq: Tensor) -> StateProducts:
    """`columns` says what E is made of: 'u' (U), 'w' (Wm W_startᵀ), 'uw' (both) or '' (no E).
    starts, dstarts: (B, H, tiles, dv, dk); dy (B, H, T, dv); u, w, kend, aq as `<level>_prep` made them."""
    b, h, n, dv, dk = starts.shape
    dt = starts.dtype
    c = aq.shape[-1]

    def tiles(x: Tensor) -> Tensor:    # (B, H, tiles * C, d) -> (B * H * tiles, C, d)
        return x.reshape(b * h * n, c, x.shape[-1]).to(dt)

    def flat(x: Tensor) -> Tensor:     # (B * H * tiles, C, d) -> (B, H, tiles * C, d)
        return x.reshape(b, h, n * c, x.shape[-1])

    s, ds = starts.reshape(b * h * n, dv, dk), dstarts.reshape(b * h * n, dv, dk)
    d_y = tiles(F.pad(dy, (0, 0, 0, n * c - dy.shape[2])))
    dyp = torch.bmm(d_y, s)
    dgend = torch.bmm(ds.reshape(b * h * n, 1, dv * dk), s.reshape(b * h * n, dv * dk, 1)).reshape(b, h, n)
    unused = dyp.new_zeros(1)
    if not columns:
        return StateProducts(flat(dyp), unused, unused, unused, unused, dgend.float())
    if columns == "uw":
        e = torch.baddbmm(tiles(u), tiles(w), s.transpose(1, 2))
    else:
        e = tiles(u) if columns == "u" else torch.bmm(tiles(w), s.transpose(1, 2))
    de = torch.baddbmm(torch.bmm(aq.reshape(b * h * n, c, c).transpose(1, 2).to(dt), d_y), tiles(kend),
                       ds.transpose(1, 2))
    dwm = flat(torch.bmm(de, s)) if "w" in columns else unused
    return StateProducts(flat(dyp), flat(e), flat(de), flat(torch.bmm(e, ds)), dwm, dgend.float())
