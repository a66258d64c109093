"""The wy form's backward products with the tiles' states (runtime/triton/state_products.py), one pass over
the states, against the same products written out tile by tile in float64."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

from nldsl.runtime.triton import state_products as sp  # noqa: E402
from nldsl.runtime.triton.state_products import state_products  # noqa: E402
from triton_testkit import DEVICE  # noqa: E402

pytestmark = pytest.mark.triton


def tile_by_tile(tile, starts, dstarts, dy, e, de):
    b, h, n, dv, dk = starts.shape
    dy = torch.cat([dy, dy.new_zeros(b, h, n * tile - dy.shape[2], dv)], dim=2)
    out = {name: [] for name in ("dyp", "dkend", "dwm", "dgend")}
    for j in range(n):
        rows = slice(j * tile, (j + 1) * tile)
        s, ds = starts[:, :, j], dstarts[:, :, j]
        out["dyp"].append(dy[:, :, rows] @ s)
        out["dkend"].append(e[:, :, rows] @ ds)
        out["dwm"].append(de[:, :, rows] @ s)
        out["dgend"].append((ds * s).sum((-1, -2)))
    cat = {name: torch.cat(parts, dim=2) for name, parts in out.items() if name != "dgend"}
    return {**cat, "dgend": torch.stack(out["dgend"], dim=2)}


def inputs(dtype=torch.float32, seed=0, dk=8, dv=12):
    gen = torch.Generator().manual_seed(seed)
    b, h, n, tile, tokens = 2, 3, 4, 16, 53   # the last tile padded
    rnd = lambda *shape: torch.randn(*shape, generator=gen).to(DEVICE, dtype)  # noqa: E731
    e, de = rnd(b, h, n * tile, dv), rnd(b, h, n * tile, dv)
    e[:, :, tokens:] = de[:, :, tokens:] = 0   # padded tokens: no columns (as the walks store them)
    return tile, rnd(b, h, n, dv, dk), rnd(b, h, n, dv, dk), rnd(b, h, tokens, dv), e, de


def close(got, want, what, bound=1e-5):
    got, want = got.cpu().double(), want.cpu().double()
    assert (got - want).norm() / want.norm() <= bound, what


@pytest.mark.parametrize("columns", ["uw", "u", "w", ""])
@pytest.mark.parametrize("dk,dv,gpu_blocks", [(8, 12, False), (80, 72, True)], ids=["one block", "the GPU's blocks"])
def test_the_state_products_equal_the_products_tile_by_tile(monkeypatch, columns, dk, dv, gpu_blocks):
    """Whole heads at once (the interpreter's blocks), and BLOCK key columns and state rows at a time (a
    GPU's: two blocks of each, the second partly masked)."""
    if gpu_blocks:
        monkeypatch.setattr(sp, "interpreting", lambda: False)
    tile, *tensors = inputs(seed=len(columns), dk=dk, dv=dv)
    got = state_products(columns, tile, *tensors, prec="ieee")
    want = tile_by_tile(tile, *(t.cpu().double() for t in tensors))
    close(got.dyp, want["dyp"], "dyp")
    close(got.dgend, want["dgend"], "dgend")
    if columns:
        close(got.dkend, want["dkend"], "dkend")
    else:   # no columns E: one-element stand-ins
        assert got.dkend.numel() == 1
    if "w" in columns:
        close(got.dwm, want["dwm"], "dwm")
    else:
        assert got.dwm.numel() == 1


def test_half_precision_states_give_half_precision_products():
    """A bf16 model stores its tiles' states and columns in bf16: the products come back in bf16 (float32
    accumulation)."""
    tile, *tensors = inputs(torch.bfloat16)
    got = state_products("uw", tile, *tensors, prec="ieee")
    assert {t.dtype for t in (got.dyp, got.dkend, got.dwm)} == {torch.bfloat16}
    assert got.dgend.dtype == torch.float32
    want = tile_by_tile(tile, *(t.cpu().double() for t in tensors))
    for name in ("dyp", "dkend", "dwm"):
        close(getattr(got, name), want[name], name, bound=1e-2)

