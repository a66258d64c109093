"""The wy form's backward products with the tiles' states (runtime/triton/state_products.py), batched over
all tiles, against the same products written out tile by tile in float64."""
from __future__ import annotations

import pytest
import torch

from nldsl.runtime.triton.state_products import state_products

pytestmark = pytest.mark.triton


def tile_by_tile(columns, starts, dstarts, dy, u, w, kend, aq):
    b, h, n, dv, dk = starts.shape
    c = aq.shape[-1]
    dy = torch.cat([dy, dy.new_zeros(b, h, n * c - dy.shape[2], dv)], dim=2)
    out = {name: [] for name in ("dyp", "e", "de", "dkend", "dwm", "dgend")}
    for j in range(n):
        rows = slice(j * c, (j + 1) * c)
        s, ds, d_y = starts[:, :, j], dstarts[:, :, j], dy[:, :, rows]
        e = torch.zeros(b, h, c, dv, dtype=s.dtype)
        if "u" in columns:
            e = e + u[:, :, rows]
        if "w" in columns:
            e = e + w[:, :, rows] @ s.transpose(-1, -2)
        de = aq[:, :, j].transpose(-1, -2) @ d_y + kend[:, :, rows] @ ds.transpose(-1, -2)
        out["dyp"].append(d_y @ s)
        out["e"].append(e)
        out["de"].append(de)
        out["dkend"].append(e @ ds)
        out["dwm"].append(de @ s)
        out["dgend"].append((ds * s).sum((-1, -2)))
    return {name: torch.stack(parts, dim=2) for name, parts in out.items()}


@pytest.mark.parametrize("columns", ["uw", "u", "w", ""])
def test_batched_state_products_equal_the_products_tile_by_tile(columns):
    gen = torch.Generator().manual_seed(len(columns))
    b, h, n, c, dk, dv, tokens = 2, 3, 4, 16, 8, 12, 53   # the last tile padded
    rnd = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    starts, dstarts = rnd(b, h, n, dv, dk), rnd(b, h, n, dv, dk)
    dy, u, w, kend = rnd(b, h, tokens, dv), rnd(b, h, n * c, dv), rnd(b, h, n * c, dk), rnd(b, h, n * c, dk)
    aq = rnd(b, h, n, c, c)
    got = state_products(columns, starts, dstarts, dy, u, w, kend, aq)
    want = tile_by_tile(columns, starts, dstarts, dy, u, w, kend, aq)
    flat = lambda x: x.reshape(b, h, n * c, x.shape[-1])  # noqa: E731
    torch.testing.assert_close(got.dyp, flat(want["dyp"]))
    torch.testing.assert_close(got.dgend, want["dgend"].float())
    if not columns:   # no columns E: the rest are one-element stand-ins
        assert got.e.numel() == got.de.numel() == got.dkend.numel() == got.dwm.numel() == 1
        return
    torch.testing.assert_close(got.e, flat(want["e"]))
    torch.testing.assert_close(got.de, flat(want["de"]))
    torch.testing.assert_close(got.dkend, flat(want["dkend"]))
    if "w" in columns:
        torch.testing.assert_close(got.dwm, flat(want["dwm"]))
    else:
        assert got.dwm.numel() == 1


def test_half_precision_states_give_half_precision_products():
    """A bf16 model stores its tiles' states in bf16: the products run in bf16 (float32 accumulation)."""
    gen = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    starts, dstarts = rnd(1, 1, 2, 8, 8).bfloat16(), rnd(1, 1, 2, 8, 8).bfloat16()
    dy, u, w, kend, aq = rnd(1, 1, 20, 8), rnd(1, 1, 32, 8), rnd(1, 1, 32, 8).bfloat16(), rnd(1, 1, 32, 8), \
        rnd(1, 1, 2, 16, 16)
    got = state_products("uw", starts, dstarts, dy, u, w, kend, aq)
    assert {t.dtype for t in (got.dyp, got.e, got.de, got.dkend, got.dwm)} == {torch.bfloat16}
    assert got.dgend.dtype == torch.float32
    want = tile_by_tile("uw", *(t.double() for t in (starts, dstarts, dy, u, w, kend, aq)))
    rel = (got.de.double() - want["de"].reshape(1, 1, 32, 8)).norm() / want["de"].norm()
    assert rel < 2e-2
