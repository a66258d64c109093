"""The forward kernels' tl.dot input precision follows the dtype of the caller's tensors, not of the
float32 copies the kernels read: tf32 tensor cores for bf16/fp16 inputs on a GPU, exact float32 for
float32 inputs and under the interpreter. So does the wy form's backward walk (and its recomputation of
the tile terms); the other backward kernels stay exact (launch.BACKWARD_PRECISION).
The kernels are replaced by recorders, so this runs without a GPU."""
from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from nldsl.runtime import MemoryConfig, Rule, standard_objective  # noqa: E402
from nldsl.runtime.memory import MemoryState  # noqa: E402
from nldsl.runtime.triton import launch  # noqa: E402
from nldsl.runtime.triton.registry import kernels_for  # noqa: E402
from triton_testkit import DEVICE, tf32_truncated  # noqa: E402

pytestmark = pytest.mark.triton


class Recorder:
    """Stands in for a jitted kernel: `kernel[grid](*args, **constexprs)` records the constexprs and the
    arguments (until the test ends: see `forget_the_arguments`)."""

    made: list["Recorder"] = []

    def __init__(self):
        self.calls = []
        self.args = []
        Recorder.made.append(self)

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append(kwargs)
            self.args.append(args)
        return launch


@pytest.fixture(autouse=True)
def forget_the_arguments():
    """A recorded output holds its autograd node, whose context holds the kernels, these recorders: a cycle
    through the autograd graph, which Python's collector cannot see, so it would keep every test's
    tensors and graph alive for the rest of the session. Dropping the arguments breaks it."""
    yield
    for recorder in Recorder.made:
        recorder.args.clear()
    Recorder.made.clear()


CONFIGS = {
    "linear": MemoryConfig("linear", 16, 16, rules=(Rule("retain"), Rule("gd")), chunk=4, read="after"),
    "wy": MemoryConfig("linear", 16, 16, rules=(Rule("retain"), Rule("gd", at="current")), chunk=1, read="after"),
    "mlp": MemoryConfig("mlp", 16, 16, depth=2, hidden=16, act="silu", residual=True,
                        rules=(Rule("retain"), Rule("momentum")), chunk=4, read="anchor"),
}


def start_state(cfg, kernels, batch, heads):
    if cfg.family == "linear":
        shapes = {"W": (batch, heads, cfg.dv, cfg.dk)}
    else:
        shapes = {"W1": (batch, heads, cfg.hidden, cfg.dk), "W2": (batch, heads, cfg.dv, cfg.hidden)}
    zeros = {n: torch.zeros(s) for n, s in shapes.items()}
    return MemoryState(zeros, dict(zeros), dict(zeros) if cfg.has_momentum else None, 0)


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("dtype,on_gpu,expected", [
    (torch.bfloat16, True, "tf32"), (torch.float16, True, "tf32"), (torch.float32, True, "ieee"),
    (torch.bfloat16, False, "ieee")], ids=["bf16-gpu", "fp16-gpu", "fp32-gpu", "bf16-interpreter"])
def test_the_dot_precision_follows_the_callers_dtype(monkeypatch, family, dtype, on_gpu, expected):
    cfg = CONFIGS[family]
    found, reason = kernels_for(cfg, standard_objective("l2"), f"prec.{family}")
    assert found is not None and found.bwd is not None, reason
    fwd, bwd = Recorder(), Recorder()
    kernels = dataclasses.replace(found, fwd=fwd, bwd=bwd, launches={n: 0 for n in found.launches})
    prep = prep_bwd = None
    if getattr(found, "prep", None) is not None:  # the wy form's tile-parallel kernels
        prep, prep_bwd = Recorder(), Recorder()
        kernels = dataclasses.replace(kernels, prep=prep, prep_bwd=prep_bwd)
    monkeypatch.setattr(launch, "interpreting", lambda: not on_gpu)
    batch, heads, tokens = 2, 2, 12
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, tokens, 16, generator=gen).to(dtype).requires_grad_() for _ in range(3))
    gates = {n: torch.rand(batch, heads, tokens, generator=gen).to(dtype).requires_grad_()
             for n in ("eta", "alpha", "beta")}
    y, _ = kernels.run(cfg, standard_objective("l2"), q, k, v, gates, start_state(cfg, kernels, batch, heads))
    y.float().sum().backward()
    # the wy form's walks multiply in the inputs' own half precision (WALK_PRECISION), the rest at `expected`
    walk = {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype] if prep is not None and expected == "tf32" else expected
    assert [c["PREC"] for c in fwd.calls] == [walk]
    # q, k, v reach the kernels in the caller's dtype (they convert as they load): no float32 copies
    first = (prep or fwd).args[0]
    assert [t.dtype for t in first[:3]] == [dtype] * 3 and q.grad.dtype == dtype
    # so do a linear memory's gates (an MLP memory's backward recomputes with them in float32)
    assert [t.dtype for t in first[3:6]] == [dtype if cfg.family == "linear" else torch.float32] * 3
    assert all(g.grad.dtype == dtype for g in gates.values())
    assert (prep is not None) == (family == "wy")
    if prep is None:
        assert [c["PREC"] for c in bwd.calls] == [launch.BACKWARD_PRECISION] == ["ieee"]
    else:  # the terms once (the backward keeps the forward's); the backward walk in the same precision
        assert [c["PREC"] for c in prep.calls] == [expected]
        assert [c["PREC"] for c in bwd.calls] == [walk]
        assert [c["PREC"] for c in prep_bwd.calls] == [launch.BACKWARD_PRECISION]
        # the start states kept for the backward, and the backward walk's shares of its products with
        # them, in the caller's precision
        assert fwd.args[0][11].dtype == bwd.args[0][8].dtype == bwd.args[0][11].dtype == dtype
        # the terms the walks stream, u, w and kend, in the caller's precision; aq and the gates' products
        # in float32
        u, w, kend, aq, gq, gend = prep.args[0][6:12]
        assert [t.dtype for t in (u, w, kend)] == [dtype] * 3
        assert [t.dtype for t in (aq, gq, gend)] == [torch.float32] * 3
    # y in the caller's dtype, as the kernels store it
    y_index = 8 if prep is not None else (9 if cfg.family == "linear" else 12)
    assert fwd.args[0][y_index].shape == (batch, heads, tokens, 16)
    assert fwd.args[0][y_index].dtype == (dtype if cfg.family == "linear" else torch.float32)


def record_wy_run(monkeypatch, dtype, heads=2, tokens=40, interpreted=False, **settings):
    """The launches of Gated DeltaNet's wy kernels (width 128) for a forward and backward "on a GPU"
    (or under the interpreter): (fwd, bwd, prep, prep_bwd) recorders, the level's `settings` replaced."""
    cfg = MemoryConfig("linear", 128, 128, rules=(Rule("retain"), Rule("gd", at="current")), chunk=1, read="after")
    found, reason = kernels_for(cfg, standard_objective("l2"), "prec.walk")
    assert found is not None and found.prep is not None, reason
    recorders = fwd, bwd, prep, prep_bwd = Recorder(), Recorder(), Recorder(), Recorder()
    kernels = dataclasses.replace(found, fwd=fwd, bwd=bwd, prep=prep, prep_bwd=prep_bwd,
                                  launches={n: 0 for n in found.launches}, **settings)
    monkeypatch.setattr(launch, "interpreting", lambda: interpreted)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, 128, generator=gen).to(dtype).requires_grad_() for _ in range(3))
    gates = {n: torch.rand(1, heads, tokens, generator=gen).to(dtype) for n in ("eta", "alpha", "beta")}
    y, _ = kernels.run(cfg, standard_objective("l2"), q, k, v, gates, start_state(cfg, kernels, 1, heads))
    y.float().sum().backward()
    return recorders


@pytest.mark.parametrize("dtype,rows,warps", [(torch.bfloat16, launch.WALK_ROWS, launch.WALK_WARPS),
                                              (torch.float32, launch.GPU_ROWS, 8)], ids=["tf32", "ieee"])
def test_the_wy_walks_launch_settings_follow_the_precision(monkeypatch, dtype, rows, warps):
    """On a GPU the wy form's walks take WALK_ROWS rows of W per program (fewer, larger programs) with
    WALK_WARPS warps when they multiply in tf32; in full float32 GPU_ROWS rows and the level's warps. The
    tile-parallel kernels pass TILE_FLOATS (prep_bwd: TILE_FLOATS_BWD) values of a 16-token tile's keys and
    values at a time with TILE_WARPS warps."""
    fwd, bwd, prep, prep_bwd = record_wy_run(monkeypatch, dtype)
    assert [(c["BV"], c["num_warps"]) for c in fwd.calls] == [(rows, warps)]
    assert [(c["BV"], c["num_warps"]) for c in bwd.calls] == [(rows, warps)]
    # the backward walk's blocks of rows each store a share of the products with the tiles' states, which
    # prep_bwd sums
    assert bwd.args[0][11].shape[0] == 128 // rows and [c["PARTS"] for c in prep_bwd.calls] == [128 // rows]
    # the walks pipeline WALK_STAGES stages and may take every register their warps allow
    assert [(c["num_stages"], c["maxnreg"]) for c in fwd.calls + bwd.calls] == [(launch.WALK_STAGES, 255)] * 2
    # the tile-parallel kernels: whole rows of k and v in prep (2,048 values of a 16-token tile), 32 columns
    # in prep_bwd, TILE_WARPS warps, ptxas's registers
    assert [c["C"] for c in prep.calls] == [16] and launch.TILE_FLOATS // 16 == 128 and launch.TILE_FLOATS_BWD // 16 == 32
    assert [(c["BB"], c["num_warps"]) for c in prep.calls + prep_bwd.calls] == [(128, launch.TILE_WARPS), (32, launch.TILE_WARPS)]
    assert not any("maxnreg" in c for c in prep.calls + prep_bwd.calls)
    # prep pipelines PREP_STAGES stages, prep_bwd one
    assert [c["num_stages"] for c in prep.calls + prep_bwd.calls] == [launch.PREP_STAGES, 1] == [2, 1]


@pytest.mark.parametrize("multiprocessors,rows", [(1, 64), (4, 64), (8, 32), (132, 32)])
def test_the_wy_walks_split_a_head_in_at_most_four_blocks(monkeypatch, multiprocessors, rows):
    """Half-precision walks take WALK_ROWS rows (two blocks of a head of 128) where that gives every
    multiprocessor a program, else half as many; with fewer walks than that (here 2 heads on 132
    multiprocessors) at most WY_MAX_PARTS blocks a head, each storing its share of the backward's
    products with the states for prep_bwd to sum."""
    monkeypatch.setattr(launch, "multiprocessors", lambda device: multiprocessors)
    fwd, bwd, _, prep_bwd = record_wy_run(monkeypatch, torch.bfloat16)
    assert [c["BV"] for c in fwd.calls + bwd.calls] == [rows] * 2
    assert [c["PARTS"] for c in prep_bwd.calls] == [128 // rows] and 128 // 32 == launch.WY_MAX_PARTS


@pytest.mark.parametrize("dtype,setting,walk,others", [(torch.bfloat16, "tf32", "tf32", "tf32"),
                                                        (torch.float16, "half", "fp16", "tf32"),
                                                        (torch.float32, "half", "ieee", "ieee")],
                         ids=["bf16-tf32", "fp16-half", "float32-half"])
def test_a_levels_walk_precision_reaches_the_walks_only(monkeypatch, dtype, setting, walk, others):
    """`walk_precision` sets the tl.dot precision of the wy form's two walks (the backward's with its
    products with the tiles' states) for half-precision inputs on a GPU ("half": the inputs' own), and
    nothing else: prep keeps the forward's (tf32), prep_bwd BACKWARD_PRECISION; float32 inputs keep ieee
    everywhere."""
    fwd, bwd, prep, prep_bwd = record_wy_run(monkeypatch, dtype, walk_precision=setting)
    assert [c["PREC"] for c in fwd.calls + bwd.calls] == [walk] * 2
    assert [c["PREC"] for c in prep.calls] == [others]
    assert [c["PREC"] for c in prep_bwd.calls] == [launch.BACKWARD_PRECISION]
    # prep and prep_bwd multiply half-precision operands read from memory as stored
    assert [c["HALF"] for c in prep.calls + prep_bwd.calls] == [dtype != torch.float32] * 2
    # the walks' rows and warps are those of the forward's precision
    assert [c["BV"] for c in fwd.calls] == [launch.WALK_ROWS if dtype != torch.float32 else launch.GPU_ROWS]


@pytest.mark.parametrize("dtypes,half", [((torch.bfloat16,) * 3, True), ((torch.float16,) * 3, True),
                                         ((torch.bfloat16, torch.float32, torch.bfloat16), False),
                                         ((torch.float32,) * 3, False)], ids=["bf16", "fp16", "mixed", "float32"])
def test_operands_multiply_as_stored_only_when_they_share_a_half_dtype(dtypes, half):
    """bf16 or fp16 values multiply exactly into float32, so operands that share that dtype need no
    conversion; one float32 operand would lose bits rounded to half."""
    assert launch.shares_half_dtype(*(torch.zeros(4, dtype=d) for d in dtypes)) == half


@pytest.mark.parametrize("setting,interpreted,half", [(True, False, True), (False, False, False), (True, True, False)],
                         ids=["gpu", "switched-off", "interpreted"])
def test_stored_products_are_a_gpu_setting_of_the_level(monkeypatch, setting, interpreted, half):
    """On a GPU the wy form's tile-parallel kernels multiply bf16 operands as stored unless the level
    switches it off (`stored_products`); the interpreter's bf16 tl.dot is wrong, so never there."""
    _, _, prep, prep_bwd = record_wy_run(monkeypatch, torch.bfloat16, interpreted=interpreted,
                                         stored_products=setting)
    assert [c["HALF"] for c in prep.calls + prep_bwd.calls] == [half] * 2


@pytest.mark.parametrize("tile,walk_rows,tile_warps,capped", [(16, 64, 1, False), (32, 32, 8, True), (64, 16, 8, True)])
def test_longer_wy_tiles_take_fewer_walk_rows_and_wider_tile_kernels(monkeypatch, tile, walk_rows, tile_warps, capped):
    """At tiles longer than 16 tokens the wy form's walks take proportionally fewer rows (32 at 32-token
    tiles) and the tile-parallel kernels TILE_WARPS_WIDE warps with every register they allow: the settings
    the compile reports found nearly spill-free at 32-token tiles."""
    monkeypatch.setattr(launch, "multiprocessors", lambda device: 16)
    fwd, bwd, prep, prep_bwd = record_wy_run(monkeypatch, torch.bfloat16, heads=8, tokens=70, tile=tile)
    assert [c["C"] for c in prep.calls + prep_bwd.calls] == [tile] * 2
    assert [c["BV"] for c in fwd.calls + bwd.calls] == [walk_rows] * 2
    assert [c["num_warps"] for c in prep.calls + prep_bwd.calls] == [tile_warps] * 2
    assert all(("maxnreg" in c) == capped for c in prep.calls + prep_bwd.calls)


@pytest.mark.parametrize("every,stored", [(1, 3), (2, 2)])
def test_the_forward_walk_stores_every_states_every_th_start_state(monkeypatch, every, stored):
    """40 tokens are 3 tiles of 16: the forward walk stores all three start states, or with `states_every`
    2 the first and third, and both walks get the setting; every one by default."""
    fwd, bwd, _, _ = record_wy_run(monkeypatch, torch.bfloat16, states_every=every)
    assert [c["EVERY"] for c in fwd.calls + bwd.calls] == [every] * 2
    assert fwd.args[0][11].shape == (1, 2, stored, 128, 128) and bwd.args[0][8] is fwd.args[0][11]
    assert launch.STATES_EVERY == 1


@pytest.mark.parametrize("settings,warps", [({}, (1, 1)), ({"backward_precision": "tf32"}, (1, 2)),
                                            ({"stored_products": False}, (2, 1))])
def test_tile_kernels_with_transposed_tf32_products_keep_two_warps(monkeypatch, settings, warps):
    """16-token tiles run the tile-parallel kernels at TILE_WARPS (one) warp, but a kernel whose tf32
    products take a transposed operand at TILE_WARPS_TF32 (two): prep_bwd in tf32 (at one warp its
    gradients left the contract on an H100), and prep where its Gram matrices are not multiplied as stored
    in bf16 (the forward of bf16 inputs is tf32)."""
    _, _, prep, prep_bwd = record_wy_run(monkeypatch, torch.bfloat16, **settings)
    assert tuple(c["num_warps"] for c in prep.calls + prep_bwd.calls) == warps
    assert (launch.TILE_WARPS, launch.TILE_WARPS_TF32) == (1, 2)


@pytest.mark.parametrize("settings,walk_warps,tile_warps", [({"tile_warps": 2}, launch.WALK_WARPS, 2),
                                                       ({"warps": 8}, 8, 8), ({"warps": 8, "tile_warps": 2}, 8, 2)])
def test_the_tile_parallel_kernels_warps_can_be_set_apart_from_the_walks(monkeypatch, settings, walk_warps,
                                                                           tile_warps):
    """`tile_warps` sets the warps of prep and prep_bwd alone; `warps` sets every kernel's, the tile-parallel
    kernels' too unless `tile_warps` is set."""
    fwd, bwd, prep, prep_bwd = record_wy_run(monkeypatch, torch.bfloat16, **settings)
    assert [c["num_warps"] for c in fwd.calls + bwd.calls] == [walk_warps] * 2
    assert [c["num_warps"] for c in prep.calls + prep_bwd.calls] == [tile_warps] * 2


@pytest.mark.parametrize("warps,cap", [(4, 255), (8, 255), (16, 128)])
def test_the_register_cap_is_what_the_warps_allow(warps, cap):
    """65,536 registers per multiprocessor, 255 at most per thread."""
    assert launch.with_register_cap({"num_warps": warps, "num_stages": 1}) == {"num_warps": warps, "num_stages": 1,
                                                                                "maxnreg": cap}


@pytest.mark.parametrize("chunk,heads,rows", [(1, 128, 64), (1, 48, 32), (1, 16, 32), (16, 128, 32), (16, 16, 16)],
                         ids=["wy-128", "wy-48", "wy-16", "dual-128", "dual-16"])
def test_the_walks_take_the_widest_rows_that_still_fill_the_device(monkeypatch, chunk, heads, rows):
    """Fewer, wider programs while there is one for every multiprocessor (132 on an H100/H200): at head
    width 128, 128 wy walks take 64 rows, 48 take 32, 16 take 32 too (WY_MAX_PARTS: 64 programs, not 128);
    the dual form's forward takes up to 32, and at 16 walks 16. The other kernels keep 16."""
    cfg = MemoryConfig("linear", 128, 128, rules=(Rule("retain"), Rule("gd", at="current" if chunk == 1 else "anchor")),
                       chunk=chunk, read="after")
    found, reason = kernels_for(cfg, standard_objective("l2"), f"prec.walk{chunk}")
    assert found is not None and (found.prep is not None) == (chunk == 1), reason
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    monkeypatch.setattr(launch, "multiprocessors", lambda device: 132)
    assert found.rows_per_program(walk=True, heads=heads, device="cuda") == rows
    assert found.rows_per_program(walk=False, heads=heads, device="cuda") == launch.GPU_ROWS


ROUND = None  # the generated kernels' _nl_tf32, set by the test below


@triton.jit
def _round_kernel(x, out, N: tl.constexpr):
    i = tl.arange(0, N)
    tl.store(out + i, ROUND(tl.load(x + i)))


def test_tf32_operands_are_rounded_to_the_nearest_not_truncated():
    """The generated kernels' _nl_tf32, which every tf32 tl.dot operand goes through (_nl_dot): the
    nearest tf32 (10 mantissa bits), ties away from zero, signs, zeros, inf and NaN kept; tensor
    cores would truncate instead."""
    import numpy as np

    found, reason = kernels_for(CONFIGS["linear"], standard_objective("l2"), "prec.round")
    assert found is not None, reason
    global ROUND
    ROUND = found.fwd.fn.__globals__["_nl_tf32"]
    gen = torch.Generator().manual_seed(0)
    finite = torch.randn(4000, generator=gen) * torch.logspace(-30, 30, 4000).float()
    ties = torch.tensor([1.0 + 2.0 ** -11, -(1.0 + 2.0 ** -11), 1.0 + 3 * 2.0 ** -11], dtype=torch.float32)
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45, -3e-39,
                            torch.finfo(torch.float32).max], dtype=torch.float32)
    x = torch.cat([finite, ties, special, torch.zeros(4096 - 4000 - 3 - 8)])
    x = x.to(DEVICE)
    out = torch.empty_like(x)
    _round_kernel[(1,)](x, out, N=4096)
    x, out = x.cpu(), out.cpu()
    bits = out.view(torch.int32).numpy().view(np.uint32)
    assert not (bits[~np.isnan(out.numpy())] & 0x1FFF).any(), "not a tf32 value"
    # the nearest: within half a tf32 step (2**-11 of the value's binade), closer than truncation on average
    err = (out[:4000].double() - finite.double()).abs()
    half_step = 2.0 ** (torch.frexp(finite.double()).exponent.double() - 12)
    assert bool((err <= half_step * (1 + 1e-12)).all())
    truncated = torch.from_numpy(tf32_truncated(finite.numpy()))
    rel = lambda y: (y.double() - finite.double()) / finite.double()  # noqa: E731
    assert rel(out[:4000]).abs().mean() < 0.6 * rel(truncated).abs().mean()
    # truncation's error has one sign (towards zero): it drifts; the nearest's averages out
    assert rel(truncated).mean() < -2e-4 and abs(rel(out[:4000]).mean()) < 2e-5
    assert out[4000:4003].tolist() == [1.0 + 2.0 ** -10, -(1.0 + 2.0 ** -10), 1.0 + 4 * 2.0 ** -11]
    s = out[4003:4011]
    assert s[:2].tolist() == [0.0, 0.0] and torch.signbit(s[1]) and not torch.signbit(s[0])
    assert s[2] == float("inf") and s[3] == -float("inf") and torch.isnan(s[4])
    assert s[5] == 0.0 and s[6] == torch.tensor(-3e-39).view(torch.int32).bitwise_and(~0x1FFF).view(torch.float32)
    assert s[7] == float("inf")  # above the largest tf32, the nearest is inf


@pytest.mark.parametrize("hidden,rules,forward,backward", [
    (32, ("dgd",), (8, 255), (8, 255)), (128, ("retain", "momentum"), (8, 255), (16, 128)),
    (16, ("retain", "momentum"), (4, 255), (4, 255))], ids=["hope's 4,096 values", "24,576 values", "1,536 values"])
def test_mlp_kernels_warps_follow_their_state(monkeypatch, hidden, rules, forward, backward):
    """8 warps from 4,096 state values (hope.nl's MLPs 32 -> 32 -> 32), 16 for the backward of a state
    above 8,192 (32 -> 128 -> 32 with momentum), and every register the warps allow."""
    dims = 32 if hidden > 16 else 16
    cfg = MemoryConfig("mlp", dims, dims, depth=2, hidden=hidden, act="silu", residual=True,
                       rules=tuple(Rule(r) for r in rules), chunk=16, read="anchor")
    found, reason = kernels_for(cfg, standard_objective("mse"), f"prec.mlp{hidden}")
    assert found is not None, reason
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    got = [found.launch_options(backward=backward_kernel) for backward_kernel in (False, True)]
    assert [(o["num_warps"], o["maxnreg"]) for o in got] == [forward, backward]


@pytest.mark.parametrize("dtype,walk", [(torch.bfloat16, "bf16"), (torch.float16, "fp16"), (torch.float32, "tf32")])
def test_a_walk_multiplies_in_half_precision_only_for_half_inputs(dtype, walk):
    """The forward's precision follows v (tf32 for a bf16 v on a GPU); q and k may still be float32 (CUDA
    autocast runs the norms in float32), and their walks must not round them to a half precision."""
    found, reason = kernels_for(CONFIGS["wy"], standard_objective("l2"), "prec.walk")
    assert found is not None, reason
    assert launch.WALK_PRECISION == "half" and found.walk_precision_of("tf32", dtype) == walk
    assert found.walk_precision_of("ieee", dtype) == "ieee"
