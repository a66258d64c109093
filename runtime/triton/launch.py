"""Launching one level's generated kernels: buffers, grids, block sizes and the carried state.

Kernels read q, k, v (B, H, T, d) contiguous in their own dtype (float32, bf16 or fp16; converted to
float32 as they load), and contiguous float32 copies of the gates (B, H, T) and of the state
(B, H, dv, dk); outputs and gradients are float32 buffers, cast back to the inputs' dtype. One program
of a walk over the tiles handles a block of BV rows of W for one (batch, head): the rows of a linear
memory evolve independently. In the dual form the gradients that sum over the row blocks (q, k, v,
gates) come back as per-block partials and are summed here; the wy form's backward walk stores each
block's share of its products with the tiles' states, which its tile-parallel half sums, and its
tile-parallel kernels pass keys and values a block of columns at a time.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from ..memory import MemoryConfig, MemoryState
from .backend import interpreting

GATES = ("eta", "alpha", "beta")
GATE_FILL = {"eta": 0.0, "alpha": 1.0, "beta": 1.0}


def as_f32(t: Tensor) -> Tensor:
    """The kernels read contiguous float32."""
    return t.to(torch.float32).contiguous()


def _out_dtype(v: Tensor) -> torch.dtype:
    """The dtype a kernel stores y in: the caller's half precision, else float32."""
    return v.dtype if v.dtype in (torch.bfloat16, torch.float16) else torch.float32


def kernel_input(t: Tensor) -> Tensor:
    """q, k or v as the kernels read them: contiguous, in its own dtype when that is float32, bf16 or
    fp16 (every kernel converts to float32 as it loads, so no float32 copy is made), else float32."""
    return t.contiguous() if t.dtype in (torch.float32, torch.bfloat16, torch.float16) else as_f32(t)


def detached_without_grad(*inputs: Tensor) -> tuple[Tensor, ...]:
    """The inputs of an autograd.Function, detached under no_grad: its needs_input_grad reads
    requires_grad whatever the grad mode, and a forward that nobody differentiates need not keep the
    states of its tiles for a backward."""
    return inputs if torch.is_grad_enabled() else tuple(t.detach() for t in inputs)


def shares_half_dtype(*tensors: Tensor) -> bool:
    """Whether the tensors share one half-precision dtype (bf16 or fp16)."""
    dtypes = {t.dtype for t in tensors}
    return len(dtypes) == 1 and dtypes.pop() in (torch.bfloat16, torch.float16)


def gate_arguments(gates: Mapping[str, Tensor], k: Tensor, convert=as_f32) -> list[Tensor]:
    """eta, alpha, beta (B, H, T) as `convert` makes them (float32; kernel_input keeps a half-precision
    gate as it is, for kernels that convert as they load and whose backward needs no float32 copy), a
    gate the rules do not read filled with its neutral value."""
    batch, heads, tokens = k.shape[:3]
    return [convert(gates[name]) if gates.get(name) is not None
            else torch.full((batch, heads, tokens), GATE_FILL[name], dtype=torch.float32, device=k.device)
            for name in GATES]


GPU_ROWS = 16

# The wy form's walks only multiply by the state (or its gradient), so a program can take more rows of
# it: in tf32, at 64 (or 32) rows and 4 warps, they compile for sm_90 with nothing spilled (Gated
# DeltaNet, head width 128: 242 and 249 registers at 64; at 32-token tiles, 32 rows: 172 and 0 bytes
# spilled, against 868 and 276 at 64 rows), and at B x H = 128 a head of 128 rows is two
# programs, all in one wave on 132 multiprocessors (at 16 rows and 8 warps: eight programs a head, one
# per multiprocessor, eight waves). Fewer walks than multiprocessors (B x H = 16) keep 16 rows, so that
# every multiprocessor still gets a program. Chosen from compile reports, not timed yet. In full float32
# the forward walk spills 13.5 KB per thread at 64 rows: GPU_ROWS.
WALK_ROWS = 64
WALK_WARPS = 4
# The wy form's backward walk stores, per block of rows, a share of its products with the tiles' states
# (three token-by-width tiles per tile), which prep_bwd reads back and sums: a head in many blocks makes
# that traffic many times the states'. So the half-precision walks split a head into at most
# WY_MAX_PARTS blocks even where that leaves multiprocessors idle. On an H200 (Gated DeltaNet, 16 heads of
# 128, bf16, 1 x 16384, forward + backward) 8 blocks of 16 rows took 7.54 ms of GPU time, 4 of 32 rows
# 6.04 and 2 of 64 rows 6.56 (the forward walk 1.41, 1.35 and 1.71 ms).
WY_MAX_PARTS = 4
# The dual form's forward (one kernel, the whole tile's work in the walk) takes up to 32 rows in tf32 at
# its 8 warps: 232 to 255 registers, nothing spilled, at head widths 64 and 128 (TTT-linear, Titans
# linear); 64 rows spill at width 128. Its backward keeps GPU_ROWS.
DUAL_WALK_ROWS = 32
# The wy form's tile-parallel kernels (prep, prep_bwd) pass keys and values a block of columns at a
# time and keep only C x C matrices and one block: TILE_FLOATS values of a block at most (C x columns)
# in prep, so tiles of 16 tokens take whole rows of 128 columns in one load and one product, and
# TILE_FLOATS_BWD in prep_bwd, which carries more per block. At 16 columns and 4 warps they compiled
# for sm_90 in 151 and 142 registers, nothing spilled (Gated DeltaNet, head width 128); on an H100 the
# prep of 16-token tiles then took half of the forward's GPU time (0.55 of 1.10 ms at 8 x 2048, 16
# heads), its loads 32 bytes a row. Tiles of 16, 4 warps: prep at 128 columns 192 registers, nothing
# spilled; prep_bwd at 32 columns 8 bytes spilled, at 64 0.6 KB, at 128 1.5 KB.
# Tiles above 16 tokens run the tile-parallel kernels at 8 warps with every register they allow
# (with_register_cap): at 4 warps, or at 8 without the cap (ptxas then chose 32 registers), prep_bwd
# spilled at 32-token tiles (396 B per thread; 45 KB at 64 tokens), at 8 with the cap 8 B (7 KB at 64).
# At 16-token tiles the cap made prep spill (68 B, from none), so 16-token tiles are left uncapped.
# Tiles of 16 tokens run them at one warp: their C x C products chain (X from squarings, dA = X^T dX X^T),
# for which Triton spreads the warps over the rows, and a tile has only 16, so every warp of four computed
# the same products (and held them in its registers: 255 a thread at any warp count). On an H100 (Gated
# DeltaNet, 16 heads of 128, bf16, 8 x 2048, forward + backward) one warp took prep_bwd from 1.48 to 1.11 ms
# and prep from 0.233 to 0.197 ms (1 x 16384: prep_bwd 1.89 -> 1.63 ms; two warps 1.61), though ptxas
# reports 1.3 KB spilled per thread at one warp against 0.1 at four (compile_report.py).
TILE_WARPS = 1
# ... but a tile-parallel kernel whose tf32 products take a transposed operand keeps two: prep_bwd in tf32
# (backward_precision "tf32") at one warp gave gradients 5.5e-2 from the chunked path's on an H100 (the
# same call at two or four warps, and in float32 at one, 4.0e-3; beyond semantics §6, and the bf16 test
# failed: d alpha 0.23), though it ran in 0.94 ms against 1.11. Triton has given wrong tf32 products with
# a transposed operand before, so prep, whose Gram matrices take one where they are not multiplied as
# stored in bf16, keeps two warps then too.
TILE_WARPS_TF32 = 2
TILE_WARPS_WIDE = 8
TILE_FLOATS = 2048
TILE_FLOATS_BWD = 512
# The wy form's walks pipeline three stages: the next tiles' terms, which do not depend on the state, load
# while the current tile multiplies. On an H100, two stages made Gated DeltaNet's forward 10% (8 x 2048)
# to 15% (1 x 16384) faster than one (sm_90 compile report: 1 KB more shared memory, 20 bytes more
# spilled), and three (every kernel, bf16 walks) 8% and 22% faster than two.
WALK_STAGES = 3
# prep pipelines two: on an H100 its loads of keys and values overlapped, 0.285 ms instead of 0.342 at
# 8 x 2048 (prep_bwd, at two, took 1.95 ms instead of 1.86, so it keeps one).
PREP_STAGES = 2
# For half-precision inputs the wy form's walks multiply in the inputs' own precision ("half": the state
# and the columns rounded to bf16 or fp16 for each product, accumulated in float32, as flash-linear-
# attention multiplies its chunk states); "tf32" keeps them at the forward's. On an H100 (Gated DeltaNet,
# 16 heads of 128, bf16) the forward walk took 0.29 ms instead of 0.52 at 8 x 2048 and 1.61 instead of
# 2.99 at 1 x 16384, the backward walk 0.45 instead of 0.78; the bf16 tests against the float64
# reference hold.
WALK_PRECISION = "half"

# The wy form's forward walk may store the start state of every second tile only (`states_every` 2: at
# 16-token tiles a head of 128 x 128 in bf16 takes 537 MB at 8 x 2048 with 16 heads); the backward walk
# then makes the others again, one product a tile (E^T Kend of the tile before, as the forward made it).
# On an H100 (8 x 2048) the forward walk took 0.323 ms instead of 0.418 storing half the states, but a
# backward walk that unrolled its loop body for the two tiles of a pair took 1.06 ms instead of 0.53;
# this one keeps one body a tile and is not timed yet, so every state is stored by default.
STATES_EVERY = 1
# The wy form's forward may walk WALK_TILES tiles a step: `_nl_merge_tiles` turns the terms of that many
# consecutive tiles (from prep, at 16 tokens) into those of one tile, so the walk, the one sequential
# kernel of the forward, takes that many times fewer steps (a walk of 64-token tiles took 0.70 ms instead
# of 1.61 at 1 x 16384 on an H100, fifth run) while prep keeps its 16-token tiles. For a backward it
# stores the start state of each step; the backward walk, over single tiles, makes the others again
# from it, as with `states_every`. Slower on an H200 (ninth run): the merge took 0.25 ms at 2 tiles and
# 0.69 at 4 (fla builds its 64-token terms in 0.18) and the backward walk 4.8 ms instead of 1.97 at
# 1 x 16384, so forward + backward was 24-51% slower and only the forward at 1 x 16384 gained (7%).
WALK_TILES = 1
MERGE_WARPS = 8

# The backward kernels' tl.dot precision whatever the inputs: in tf32 they spill far more (ptxas for
# sm_90: Gated DeltaNet's one-kernel backward at width 128 1.5 -> 15.5 KB per thread, the Titans MLP of
# 8 heads of 32 8.4 -> 21.0 KB; benchmarks/gpu/compile_report.py --dtype bfloat16); on an H100 the wy
# form's prep_bwd of then took 177 ms in tf32 (spilling) against 13.9 ms in float32. The wy form's
# backward walk is the exception (see WALK_ROWS): it follows the forward's precision.
BACKWARD_PRECISION = "ieee"


def launch_options(warps: Optional[int], stages: Optional[int], large: bool, walk: bool = True) -> dict:
    """Launch options on a GPU (the interpreter ignores them): `warps` and `stages` where set; else one
    software-pipelining stage, since the tile loop carries the state and pipelining it multiplies its
    buffers (ptxas for sm_90: the backward of an MLP memory 32 -> 128 -> 32 needs 284 KB of shared
    memory at Triton's default and 77 KB at one stage; Gated DeltaNet's at head width 128 spills 8.7 KB
    per thread, and 1.4 KB at one stage); and 8 warps for large states, whose tiles spill at 4 (Gated
    DeltaNet's forward at width 128: 9.0 KB at 4 warps, 0.6 KB at 8). A `walk` (a kernel that carries a
    state over the tiles: few programs, one or two per multiprocessor) may take every register
    (with_register_cap); the tile-parallel kernels, many programs, are left to ptxas's choice."""
    if interpreting():
        return {}
    options = {"num_stages": 1 if stages is None else stages,
               "num_warps": warps if warps is not None else (8 if large else 4)}
    return with_register_cap(options) if walk else options


def with_register_cap(options: dict) -> dict:
    """`options` with maxnreg, the most registers a thread can have at its warps (255 up to 8 warps).
    Without it ptxas -O3 may, for a walk that spills anyway, aim at occupancy instead: 32 registers and
    several times the spills (sm_90: Titans linear's backward at width 128, 5.9 KB at 32 registers,
    1.4 KB at 255; the Titans MLP 32 -> 64 -> 32's, 6.2 and 3.1 KB; benchmarks/gpu/compile_report.py)."""
    return {**options, "maxnreg": min(255, 65536 // (32 * options["num_warps"]))}


def multiprocessors(device) -> int:
    """Streaming multiprocessors of a CUDA device (1 for anything else)."""
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda":
        return 1
    return _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _pow2(n: int) -> int:
    return max(16, 1 << max(0, (n - 1).bit_length()))


@dataclass
class LevelKernels:
    """The generated kernels of one linear memory level and their constants (see codegen/kernels.py).

    `fwd` is None for levels with no chunk-parallel form (they run `step`); `bwd` is None where the
    backward recomputes with the chunked PyTorch path. `tile` is the tile of the wy form (free),
    `block_v` the rows of W per program, `decode_tokens` the call length up to which `step` runs."""

    level: str
    form: str
    dk: int
    dv: int
    chunk: int
    block_t: int
    tile_tokens: int               # tokens per tile of the dual form: the chunk, or 16 of a longer one
    read: str
    self_target: bool
    momentum: bool
    fwd: Any
    bwd: Any
    step: Any
    prep: Any = None              # wy form: the tiles' state-free terms, before `fwd` walks the tiles
    prep_bwd: Any = None          # wy form: their backward, after `bwd` walks the tiles in reverse
    columns: str = ""             # wy form: what a tile's columns E are made of ('u', 'w', both or none)
    reason: str = ""
    backward: str = ""
    tile: Optional[int] = None
    block_v: Optional[int] = None
    tile_columns: Optional[int] = None  # wy form: columns per block of the tile-parallel kernels (None: TILE_FLOATS)
    decode_tokens: int = 1
    whole_rows: bool = False      # a program takes every row of W (clip: a token's gradient norm spans them)
    warps: Optional[int] = None   # warps per program (launch_options chooses when None)
    tile_warps: Optional[int] = None  # wy form: warps per program of the tile-parallel kernels (None: `warps`,
                                      # else TILE_WARPS / TILE_WARPS_WIDE)
    stages: Optional[int] = None  # software-pipelining stages of the tile loop (launch_options chooses)
    backward_precision: str = BACKWARD_PRECISION  # tl.dot precision of the backward kernels but the wy walk
    stored_products: bool = True  # wy form: products of half-precision operands read from memory as stored
    walk_precision: Optional[str] = None  # wy form: the walks' tl.dot precision for half-precision inputs
                                          # ("half" or "tf32"; None: WALK_PRECISION)
    states_every: int = STATES_EVERY  # wy form: 1 or 2, tiles per start state stored for the backward walk
    merge: Any = None             # wy form: _nl_merge_tiles, the terms of several tiles as those of one
    walk_tiles: int = WALK_TILES  # wy form: 1, 2 or 4 tiles a step of the forward walk
    launches: dict = field(default_factory=lambda: {"fwd": 0, "bwd": 0, "step": 0, "recompute": 0, "merge": 0})

    def __post_init__(self) -> None:
        if self.walk_tiles not in (1, 2, 4):
            raise ValueError(f"walk_tiles must be 1, 2 or 4 (tiles a step of the forward walk), got {self.walk_tiles}")

    # ---------------------------------------------------------------- sizes

    def wy_tile(self) -> int:
        if self.tile is not None:
            return _pow2(self.tile)
        return 16 if interpreting() else self.block_t

    def rows_per_program(self, walk: bool = False, heads: int = 0, device=None, tile: int = 0) -> int:
        """Rows of W per program: all of them under the interpreter; on a GPU GPU_ROWS, which keeps the
        kernels' live tiles within the register file (benchmarks/gpu/compile_report.py measures it). In
        tf32 (`walk`) the wy form's walks take up to WALK_ROWS (at 16-token tiles; proportionally fewer
        at longer tiles, whose walks spill at 64 rows) and the dual form's forward up to DUAL_WALK_ROWS:
        the fewest, largest programs that still give every multiprocessor of `device` one, for `heads`
        (batch x heads) walks, and in the wy form at most WY_MAX_PARTS programs a head. `tile`: the
        tokens of a wy-form walk's step, when it walks merged tiles. A `whole_rows` level (clip) takes them
        all, whatever `block_v` asks for."""
        full = _pow2(self.dv)
        if self.whole_rows:
            return full
        if self.block_v is not None:
            return _pow2(self.block_v)
        if interpreting():
            return full
        rows = min(full, GPU_ROWS)
        if walk and self.fwd is not None:
            wanted = multiprocessors(device)
            widest = WALK_ROWS * 16 // (tile or self.wy_tile()) if self.prep is not None else DUAL_WALK_ROWS
            for wide in (widest, widest // 2):
                if rows < wide <= full and heads * -(-self.dv // wide) >= wanted:
                    return wide
            if self.prep is not None:
                return max(rows, min(widest, full // WY_MAX_PARTS))
        return rows

    def walk_settings(self, prec: str, heads: int, device, tile: int = 0) -> tuple[int, dict]:
        """Rows per program and launch options of the walks: the wy form's two (WALK_STAGES), the dual
        form's forward (in tf32, see WALK_ROWS, DUAL_WALK_ROWS)."""
        rows = self.rows_per_program(walk=prec == "tf32", heads=heads, device=device, tile=tile)
        options = self.launch_options(WALK_WARPS if rows > GPU_ROWS and self.prep is not None else None)
        if options and self.prep is not None and self.stages is None:
            options["num_stages"] = WALK_STAGES
        return rows, options

    def multiplies_as_stored(self, *tensors: Tensor) -> bool:
        """Whether the wy form's products of two operands read from memory (q kᵀ, k kᵀ, dY Eᵀ, dE vᵀ, the
        shares of dWm kᵀ) multiply them as stored (`stored_products`): on a GPU, where the tensors share a
        half-precision dtype, whose products float32 holds exactly (the sums of float32 but for their
        order, on tensor cores at full rate). The interpreter's bf16 tl.dot is wrong: there they convert."""
        return self.stored_products and not interpreting() and shares_half_dtype(*tensors)

    def walk_precision_of(self, prec: str, dtype: torch.dtype) -> str:
        """The wy form's walks' tl.dot precision for a forward at `prec` on inputs of `dtype`: for
        half-precision inputs on a GPU (`prec` tf32) `walk_precision` (WALK_PRECISION where unset), "half"
        meaning the inputs' own ("bf16" or "fp16"); else `prec`: float32 q and k next to a bf16 v (CUDA
        autocast normalises in float32) keep tf32, not a half precision chosen for half inputs."""
        if prec != "tf32" or dtype not in (torch.bfloat16, torch.float16):
            return prec
        chosen = self.walk_precision or WALK_PRECISION
        if chosen == "half":
            return "bf16" if dtype == torch.bfloat16 else "fp16"
        return chosen

    def columns_per_block(self, tile: int, backward: bool = False) -> int:
        """Key and value columns per block of the wy form's tile-parallel kernels: `tile_columns`, or as many
        as keep a block within TILE_FLOATS (TILE_FLOATS_BWD) values; whole rows under the interpreter."""
        full = _pow2(max(self.dk, self.dv))
        if self.tile_columns is not None:
            return min(full, _pow2(self.tile_columns))
        if interpreting():
            return full
        return min(full, max(16, (TILE_FLOATS_BWD if backward else TILE_FLOATS) // tile))

    def tile_options(self, tile: int, backward: bool = False, tf32_transposed: bool = False) -> dict:
        """Launch options of the wy form's tile-parallel kernels for tiles of `tile` tokens (TILE_WARPS,
        TILE_WARPS_WIDE; at least TILE_WARPS_TF32 for a kernel whose tf32 products take a transposed
        operand; `tile_warps`, else `warps`, where the level sets it); prep pipelines PREP_STAGES stages."""
        wide = tile > 16
        if self.tile_warps is not None:
            options = launch_options(self.tile_warps, self.stages, max(self.dk, self.dv) > 32, walk=wide)
        else:
            warps = TILE_WARPS_WIDE if wide else TILE_WARPS
            options = self.launch_options(max(warps, TILE_WARPS_TF32) if tf32_transposed else warps, walk=wide)
        if options and not backward and self.stages is None:
            options["num_stages"] = PREP_STAGES
        return options

    @staticmethod
    def tiles_per_program(n_tiles: int) -> int:
        """Tiles per program of the wy form's tile-parallel kernels: one on a GPU; all of a head's under
        the interpreter, which pays per program."""
        return n_tiles if interpreting() else 1

    @staticmethod
    def precision(dtype: torch.dtype) -> str:
        """The forward kernels' tl.dot input precision, from the dtype of the caller's tensors (before
        the float32 copies): exact float32 under the interpreter and for float32/64 inputs, tf32 for
        half-precision inputs on a GPU (fewer registers, too: ptxas for sm_90 fits Gated DeltaNet's
        forward at width 128 in 171 registers instead of 252). The backward kernels stay at
        BACKWARD_PRECISION."""
        if interpreting() or dtype in (torch.float32, torch.float64):
            return "ieee"
        return "tf32"

    def launch_options(self, warps: Optional[int] = None, walk: bool = True) -> dict:
        """As launch_options(), with `warps` (where the level sets none) instead of its choice."""
        return launch_options(self.warps if self.warps is not None else warps, self.stages,
                              max(self.dk, self.dv) > 32, walk)

    def tiles(self, position: int, tokens: int) -> tuple[int, int, int, dict]:
        """(offset, sub0, n_tiles, extra constexprs) of a call of `tokens` tokens starting at `position`:
        the tokens of the first tile before the call, that tile's index in its chunk (dual form), the
        number of tiles, and the tile's constexprs where the launcher chooses it (wy form)."""
        if self.form == "dual":
            tile = self.tile_tokens
            offset = position % tile
            return offset, (position % self.chunk) // tile, -(-(tokens + offset) // tile), {}
        tile = self.wy_tile()
        n_tiles = -(-tokens // tile)
        if self.merges(n_tiles):   # whole steps of the walk: the tiles past the tokens are identities
            n_tiles = -(-n_tiles // self.walk_tiles) * self.walk_tiles
        return 0, 0, n_tiles, {"C": tile, "BT": tile, "LOG2_BT": int(math.log2(tile))}

    def merges(self, n_tiles: int) -> bool:
        """Whether the wy form's forward walks `walk_tiles` tiles a step over a call of `n_tiles` tiles."""
        return self.walk_tiles > 1 and n_tiles > 1

    def state_period(self, n_tiles: int) -> int:
        """Tiles per start state the wy form's forward stores for the backward walk: one a step of its walk
        (`walk_tiles` tiles where it merges them, else `states_every`)."""
        return self.walk_tiles if self.merges(n_tiles) else self.states_every

    # ---------------------------------------------------------------- running

    def uses_step(self, tokens: int) -> bool:
        return self.fwd is None or tokens <= self.decode_tokens

    def run(self, cfg: MemoryConfig, objective, q: Tensor, k: Tensor, v: Tensor, gates: Mapping[str, Tensor],
            start: MemoryState) -> tuple[Tensor, MemoryState]:
        """y (B, H, T, dv) and the carried state after the call, differentiable w.r.t. every input."""
        from .autograd import ChunkFunction, StepFunction

        batch, heads, tokens, _ = k.shape
        dtype = v.dtype
        gate_args = gate_arguments(gates, k, convert=kernel_input)   # converted as the kernels load them
        theta0 = as_f32(start.params["W"])
        anchor0 = as_f32(start.anchor["W"])
        mom0 = as_f32(start.momentum["W"]) if cfg.has_momentum else torch.zeros_like(theta0)
        inputs = detached_without_grad(kernel_input(q), kernel_input(k), kernel_input(v), *gate_args, theta0,
                                       anchor0, mom0)
        fn = StepFunction if self.uses_step(tokens) else ChunkFunction
        y, theta1, anchor1, mom1 = fn.apply(self, cfg, objective, start.position, self.precision(dtype), *inputs)
        theta = theta1.to(dtype)
        anchor = theta if self.prep is not None else anchor1.to(dtype)   # the wy form's anchor is its state
        state = MemoryState({"W": theta}, {"W": anchor}, {"W": mom1.to(dtype)} if cfg.has_momentum else None,
                            start.position + tokens)
        return y.to(dtype), state

    # ---------------------------------------------------------------- launches (float32 contiguous tensors)

    def launch_fwd(self, position: int, q, k, v, eta, alpha, beta, theta0, anchor0, mom0, store: bool,
                   prec: str = "ieee"):
        """(y, theta1, anchor1, mom1, what the backward keeps): the per-tile start states when `store`, and
        the dual form's per-tile momentum states, or the wy form's per-tile columns E and the terms its
        backward walk reads (w, kend, aq, gq, gend)."""
        batch, heads, tokens, _ = k.shape
        offset, sub0, n_tiles, extra = self.tiles(position, tokens)
        # y in the dtype the caller gets it in (the kernels accumulate in float32 and round once, on the store)
        y = torch.empty(batch, heads, tokens, self.dv, dtype=_out_dtype(v), device=k.device)
        theta1, anchor1 = torch.empty_like(theta0), torch.empty_like(theta0)
        mom1 = torch.empty_like(theta0) if self.momentum else mom0.clone()
        shape = (batch, heads, n_tiles, self.dv, self.dk) if store else (1,)
        starts = torch.empty(shape, dtype=torch.float32, device=k.device)
        mstarts = torch.empty(shape if self.momentum else (1,), dtype=torch.float32, device=k.device)
        if self.prep is not None:  # mstarts: the tiles' columns E (the wy form has no momentum)
            if store:  # kept for the backward in the caller's precision (q keeps it), as flash-linear-attention does,
                       # every state_period-th tile's
                starts = torch.empty(batch, heads, -(-n_tiles // self.state_period(n_tiles)), self.dv, self.dk,
                                     dtype=q.dtype, device=k.device)
                if self.columns:
                    mstarts = torch.empty(batch, heads, n_tiles * extra["C"], self.dv, dtype=q.dtype, device=k.device)
            terms = self.launch_prep(q, k, v, eta, alpha, beta, n_tiles, extra, prec)
            walked, walk_tiles, tile, every = terms, n_tiles, extra["C"], self.states_every
            if self.merges(n_tiles):   # the walk stores the start of each of its steps
                walked, walk_tiles, tile, every = (*self.launch_merge(q, terms, n_tiles, tile, prec), 1)
            rows, options = self.walk_settings(prec, batch * heads, k.device, tile)
            self.fwd[(-(-self.dv // rows), batch * heads)](
                q, *walked, theta0, y, theta1, anchor1, starts, mstarts, tokens, walk_tiles, BV=rows, STORE=store,
                PREC=self.walk_precision_of(prec, q.dtype), C=tile, BT=tile, EVERY=every, **options)
            self.launches["fwd"] += 1
            # kept for the backward: the states and columns, and the terms its walk reads (not u)
            return y, theta1, anchor1, mom1, (starts, mstarts, *terms[1:])
        else:
            rows, options = self.walk_settings(prec, batch * heads, k.device)
            self.fwd[(-(-self.dv // rows), batch * heads)](
                q, k, v, eta, alpha, beta, theta0, anchor0, mom0, y, theta1, anchor1, mom1, starts, mstarts,
                tokens, offset, sub0, n_tiles, BV=rows, STORE=store, PREC=prec, **extra, **options)
        self.launches["fwd"] += 1
        return y, theta1, anchor1, mom1, (starts, mstarts)

    def launch_prep(self, q, k, v, eta, alpha, beta, n_tiles: int, extra: dict, prec: str) -> tuple:
        """The wy form's per-tile terms (u, w, kend, aq, gq, gend; see the generated `<level>_prep`),
        padded to whole tiles; every tile at once."""
        batch, heads, tokens, _ = k.shape
        tile = extra["C"]
        padded = n_tiles * tile
        # u, w and kend, the three terms the walks stream, in the caller's half precision (as
        # flash-linear-attention keeps its u and w; rounded to the nearest: Gated DeltaNet's output within
        # 2.7e-3 of the reference at width 64, where truncation had taken it past the 5e-3 of
        # semantics §6); aq and the gates' products stay float32
        half = q.dtype if q.dtype in (torch.bfloat16, torch.float16) else torch.float32
        empty = lambda *s, dtype=torch.float32: torch.empty(batch, heads, *s, dtype=dtype, device=k.device)  # noqa: E731
        terms = (empty(padded, self.dv, dtype=half), empty(padded, self.dk, dtype=half),
                 empty(padded, self.dk, dtype=half), empty(n_tiles, tile, tile), empty(padded), empty(n_tiles))
        per_program = self.tiles_per_program(n_tiles)
        grid = (-(-n_tiles // per_program), batch * heads)
        half = self.multiplies_as_stored(q, k, v)
        self.prep[grid](q, k, v, eta, alpha, beta, *terms, tokens, n_tiles, BB=self.columns_per_block(tile),
                        TILES=per_program, PREC=prec, HALF=half, **extra,
                        **self.tile_options(tile, tf32_transposed=prec == "tf32" and not half))
        return terms

    def launch_merge(self, q, terms: tuple, n_tiles: int, tile: int, prec: str) -> tuple[tuple, int, int]:
        """(the terms, the number of tiles, their tokens) of the walk over merged tiles: `walk_tiles`
        consecutive tiles of `terms` as one (see the generated `_nl_merge_tiles`), every merged tile at once."""
        batch, heads = q.shape[:2]
        factor = self.walk_tiles
        merged, length = -(-n_tiles // factor), tile * factor
        u, w, kend, aq, gq, gend = terms
        out = (u.new_empty(batch, heads, merged * length, self.dv), w.new_empty(batch, heads, merged * length, self.dk),
               kend.new_empty(batch, heads, merged * length, self.dk), aq.new_empty(batch, heads, merged, length, length),
               gq.new_empty(batch, heads, merged * length), gend.new_empty(batch, heads, merged))
        self.merge[(merged, batch * heads)](
            q, *terms, *out, q.shape[2], n_tiles, merged, DK=self.dk, DV=self.dv, C=tile, M=factor,
            LOG2_M=int(math.log2(factor)), BB=self.columns_per_block(length), HAS_U="u" in self.columns,
            HAS_W="w" in self.columns, PREC=prec, HALF=self.multiplies_as_stored(q, kend),
            **self.launch_options(MERGE_WARPS, walk=False))
        self.launches["merge"] += 1
        return out, merged, length

    def launch_bwd(self, position: int, saved, dy, dtheta1, danchor1, dmom1, prec: str = "ieee"):
        """Gradients of the nine inputs; `prec` is the forward's precision (the wy form's walks follow it,
        the other backward kernels run BACKWARD_PRECISION)."""
        q, k, v, eta, alpha, beta, theta0, anchor0, mom0, starts, mstarts = saved[:11]
        batch, heads, tokens, _ = k.shape
        offset, sub0, n_tiles, extra = self.tiles(position, tokens)
        if self.prep_bwd is not None:  # the wy form: the anchor out is theta out
            return self.launch_bwd_wy(saved, dy.contiguous(), (dtheta1 + danchor1).contiguous(), n_tiles, extra,
                                      prec)
        bv = self.rows_per_program()
        nv = -(-self.dv // bv)
        dev = k.device
        # the kernel writes every token of dq, dk and the gates and the whole dtheta0 and danchor0;
        # dv only where the update reads v, dmom0 only with momentum
        zeros = lambda *s: torch.zeros(*s, dtype=torch.float32, device=dev)  # noqa: E731
        empty = lambda *s: torch.empty(*s, dtype=torch.float32, device=dev)  # noqa: E731
        dq, dk = empty(nv, batch, heads, tokens, self.dk), empty(nv, batch, heads, tokens, self.dk)
        dv = zeros(nv, batch, heads, tokens, self.dv)
        deta, dalpha, dbeta = (empty(nv, batch, heads, tokens) for _ in range(3))
        dtheta0, danchor0, dmom0 = (empty(batch, heads, self.dv, self.dk), empty(batch, heads, self.dv, self.dk),
                                    zeros(batch, heads, self.dv, self.dk))
        aligned = self.form != "dual" or (position + tokens) % self.chunk == 0
        d_end = (dtheta1 + danchor1) if aligned else dtheta1
        d_anchor_end = torch.zeros_like(danchor1) if aligned else danchor1
        grid = (nv, batch * heads)
        self.bwd[grid](q, k, v, eta, alpha, beta, anchor0, starts, mstarts,
                       dy.contiguous(), d_end.contiguous(), dmom1.contiguous(), d_anchor_end.contiguous(),
                       dq, dk, dv, deta, dalpha, dbeta, dtheta0, danchor0, dmom0,
                       tokens, offset, sub0, n_tiles, batch * heads, BV=bv, PREC=self.backward_precision, **extra,
                       **self.launch_options())
        self.launches["bwd"] += 1
        return (dq.sum(0), dk.sum(0), dv.sum(0), deta.sum(0), dalpha.sum(0), dbeta.sum(0),
                dtheta0, danchor0, dmom0)

    def launch_bwd_wy(self, saved, dy, d_end, n_tiles: int, extra: dict, prec: str) -> tuple:
        """The wy form's backward: the walk of the state's gradient over the tiles in reverse, in the
        forward's precision, taking at every tile its block of rows' share of the products with the tile's
        states; then everything else for all tiles at once, in BACKWARD_PRECISION."""
        q, k, v, eta, alpha, beta, theta0, anchor0, mom0, starts, columns, w, kend, aq, gq, gend = saved
        batch, heads, tokens, _ = k.shape
        tile = extra["C"]
        rows, options = self.walk_settings(prec, batch * heads, k.device)
        parts = -(-self.dv // rows)
        # the shares of dY W_start, E dW_end and dE W_start in the states' dtype (one-element stand-ins
        # where the level has no columns E, or no Wm), of sum(dW_end * W_start) in float32
        share = lambda: torch.empty(parts, batch, heads, n_tiles * tile, self.dk, dtype=starts.dtype,  # noqa: E731
                                    device=k.device)
        unused = starts.new_zeros(1)
        products = (share(), share() if self.columns else unused, share() if "w" in self.columns else unused,
                    torch.empty(parts, batch, heads, n_tiles, dtype=torch.float32, device=k.device))
        dcolumns = torch.empty_like(columns)
        dtheta0 = torch.empty(batch, heads, self.dv, self.dk, dtype=torch.float32, device=k.device)
        self.bwd[(parts, batch * heads)](
            q, w, kend, aq, gq, gend, dy, d_end, starts, columns, dcolumns, *products, dtheta0, tokens, n_tiles,
            BV=rows, C=tile, BT=extra["BT"], PREC=self.walk_precision_of(prec, q.dtype),
            EVERY=self.state_period(n_tiles), **options)
        # written in full for every token, each element once: dq, dk, dv and the gates' gradients in the
        # dtypes of q, k, v and the gates (no conversion after the kernel), dv zero for a level whose
        # update does not read v
        empty = lambda *s, like=eta: torch.empty(batch, heads, tokens, *s, dtype=like.dtype, device=k.device)  # noqa: E731
        dv = empty(self.dv, like=v) if "u" in self.columns else torch.zeros_like(v)
        grads = (empty(self.dk, like=q), empty(self.dk, like=k), dv, empty(like=eta), empty(like=alpha),
                 empty(like=beta))
        # the products of stored operands in their own half precision where they share it
        half = self.multiplies_as_stored(q, k, v, dy, starts, *((columns, dcolumns) if self.columns else ()))
        per_program = self.tiles_per_program(n_tiles)
        self.prep_bwd[(-(-n_tiles // per_program), batch * heads)](
            q, k, v, eta, alpha, beta, dy, columns, dcolumns, *products, *grads, tokens, n_tiles,
            BB=self.columns_per_block(tile, backward=True),
            TILES=per_program, PREC=self.backward_precision, HALF=half, PARTS=parts, **extra,
            **self.tile_options(tile, backward=True, tf32_transposed=self.backward_precision == "tf32"))
        self.launches["bwd"] += 1
        return (*grads, dtheta0, None, None)   # the start anchor and momentum: not read by the wy form

    def launch_step(self, position: int, q, k, v, eta, alpha, beta, theta0, anchor0, mom0):
        batch, heads, tokens, _ = k.shape
        bv = self.rows_per_program()
        y = torch.empty(batch, heads, tokens, self.dv, dtype=torch.float32, device=k.device)
        theta1, anchor1 = torch.empty_like(theta0), torch.empty_like(theta0)
        mom1 = torch.empty_like(theta0) if self.momentum else mom0.clone()
        grid = (-(-self.dv // bv), batch * heads)
        self.step[grid](q, k, v, eta, alpha, beta, theta0, anchor0, mom0, y, theta1, anchor1, mom1,
                        tokens, position % self.chunk, BV=bv, **self.launch_options())
        self.launches["step"] += 1
        return y, theta1, anchor1, mom1
