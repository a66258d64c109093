"""Launching the generated kernel of a fused MLP memory level (codegen/kernels_mlp.py).

The kernel works on contiguous float32 copies of q, k, v (B, H, T, d), of the gates (B, H, T) and of
the state: W1 (B, H, hidden, dk), W2 (B, H, dv, hidden), their anchors and momenta; outputs are cast
back to the inputs' dtype. One program handles one (batch, head): both layers' weights stay on chip
across the tiles. A state too large for that (above ON_CHIP_FLOATS) can run `<level>_fwd_streamed` and
`<level>_bwd_streamed`: the same kernels with the state in global memory, streamed through the program
a block of hidden units at a time; on a GPU they run only where they measured faster than the chunked
path (STREAMED_FORWARD_FLOATS), and the level falls back elsewhere. With `store`, the forward also writes the start state (theta and
momentum) of every tile, from which the backward recomputes each tile (autograd_mlp.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from ..memory import MemoryConfig, MemoryState
from .backend import interpreting, needs_grad
from .autograd_mlp import named, names_of
from .launch import (BACKWARD_PRECISION, as_f32, detached_without_grad, gate_arguments, kernel_input, launch_options,
                     multiprocessors, with_register_cap)

# When the streamed kernels run (a state too large for the chip, on a GPU). Measured on an H100 in
# float32 at titans-pytorch's configuration (4 heads of 256, hidden 1024, chunk 64, T = 2048;
# benchmarks/gpu/titans_vs_titans_pytorch.py):
# - forward + backward, B = 2: streamed forward and backward kernel 887 ms, streamed forward and the
#   chunks walked in PyTorch 379 ms, the chunked path 266 to 361 ms; B = 8: 1,178, 332 and 183 to
#   246 ms. The backward kernel runs one program per head (a head's hidden units are not split over
#   programs as the forward's are). With gradients the level runs the chunked path.
# - forward alone: streamed 26.7 ms against 52.6 ms chunked at B = 2 (W1 and W2 of the batch's 8 heads:
#   4.2 M values), 122.6 against 54.3 ms at B = 8 (16.8 M). The streamed forward's time grows with the
#   batch's state, the chunked path's (bound by its launches there) barely: it streams up to
#   STREAMED_FORWARD_FLOATS, between the two.
# `stream` forces the streamed kernels; after a streamed forward, `stream_backward` chooses the backward
# kernel, else on a GPU the walk (STREAMED_BACKWARD).
STREAMED_FORWARD_FLOATS = 8 * 2 ** 20
STREAMED_BACKWARD = False

# The most float32 values of live state (W1, W2 and their anchors and momenta, padded to the blocks) one
# program keeps in registers on a GPU: 128 KiB, half an SM's register file. A heuristic bound: above it
# the kernels would spill or fail to compile, and the level runs the streamed kernels or the chunked path.
ON_CHIP_FLOATS = 32768


def _unused(like: Tensor) -> Tensor:
    """A stand-in for a tensor a kernel is passed but never touches (the momenta of a level without
    momentum): one float32 value, allocated but not filled, so no kernel runs for it."""
    return torch.empty(1, dtype=torch.float32, device=like.device)


def _two_copies(tensors) -> list[Tensor]:
    """Room for two float32 copies of each tensor: a tile of a streamed kernel reads one, writes the other."""
    return [torch.empty(2, *t.shape, dtype=torch.float32, device=t.device) for t in tensors]


def _block(n: int) -> int:
    return max(16, 1 << max(0, (n - 1).bit_length()))


@dataclass
class MlpLevelKernels:
    """The generated kernels of one MLP memory level and their constants. `bwd` None makes the backward
    walk the tiles with the chunked PyTorch path instead of the generated kernel (autograd_mlp.py)."""

    level: str
    dk: int
    hidden: int
    dv: int
    chunk: int
    tile_tokens: int
    block_t: int
    read: str
    momentum: bool
    fwd: Any
    bias: bool = False            # biases b1, b2 (their state follows the weights'; streamed: forward only)
    bwd: Any = None
    fwd_streamed: Any = None      # the forward with the state in global memory (a state too large for fwd)
    bwd_streamed: Any = None      # its backward (None: the tiles in reverse in PyTorch)
    fwd_streamed_out: Any = None  # the first pass of fwd_streamed, for a head split over several programs
    slices: Optional[int] = None  # programs per head of the streamed forward (None: as many as fill the GPU)
    hidden_block: int = 16        # hidden units per block of the streamed kernels
    stream: Optional[bool] = None  # the streamed kernels: always (True), never (False), above ON_CHIP_FLOATS on a GPU
    stream_backward: Optional[bool] = None  # after a streamed forward: bwd_streamed (True), the PyTorch walk (False),
                                            # None: the walk on a GPU (STREAMED_BACKWARD), bwd_streamed elsewhere
    reason: str = ""
    warps: Optional[int] = None   # warps per program (launch_options chooses when None)
    stages: Optional[int] = None  # software-pipelining stages of the tile loop (launch_options chooses)
    backward_precision: str = BACKWARD_PRECISION  # the backward kernel's tl.dot precision
    launches: dict = field(default_factory=lambda: {"fwd": 0, "bwd": 0, "bwd_tiles": 0})

    def backward_kernel_streamed(self, like: Tensor) -> bool:
        """Whether the backward of a streamed forward on tensors like `like` runs bwd_streamed (else the
        PyTorch walk over the chunks)."""
        if self.bwd_streamed is None:
            return False
        if self.stream_backward is not None:
            return self.stream_backward
        return STREAMED_BACKWARD if like.is_cuda and not interpreting() else True

    @property
    def streamed_backward(self) -> str:
        walk = "the tiles in reverse, each recomputed and differentiated with the chunked PyTorch path"
        if self.bwd_streamed is None or self.stream_backward is False:
            return walk
        kernel = ("Triton backward kernel with the state's gradients in global memory (the tiles in reverse, "
                  "each recomputed from its stored start state)")
        return kernel if self.stream_backward else f"on a GPU {walk}; elsewhere the {kernel}"

    @property
    def backward(self) -> str:
        if self.stream:
            return self.streamed_backward
        if self.bwd is not None:
            return "Triton backward kernel (the tiles in reverse, each recomputed from its stored start state)"
        return "the tiles in reverse, each recomputed and differentiated with the chunked PyTorch path"

    @staticmethod
    def precision(dtype: torch.dtype) -> str:
        from .launch import LevelKernels

        return LevelKernels.precision(dtype)

    def launch_options(self, backward: bool = False) -> dict:
        """As the linear family's: 8 warps for a state of 4,096 values or more, 16 for the backward of one
        above 8,192 (it also carries the state's gradients), every register a thread may have (maxnreg).
        ptxas for sm_90, bf16 inputs, spills per thread: hope.nl's MLPs 32 -> 32 -> 32 (4,096 values)
        3.5 KB in the backward at 4 warps, 1.2 KB at 8 and 1.9 KB at 16, 0.8 / 0.7 KB in the forward at
        4 / 8; an MLP 32 -> 128 -> 32 (24,576 values) 6.4 KB in the backward at 16 warps and 7.0 KB at 8,
        its forward 0.2 KB at 8 and 0.6 KB at 16; titans.nl's (12,288 values) 3.1 KB in the backward at
        16 warps, nothing in the forward at 8."""
        floats = self.state_floats()
        options = launch_options(self.warps, self.stages, floats >= 4096)
        if options and self.warps is None and backward and floats > 8192:
            options = with_register_cap({**options, "num_warps": 16})
        return options

    def state_floats(self) -> int:
        """float32 values of the state one program holds: theta, anchor (and momentum) of W1 and W2, and of
        the biases when there are biases."""
        copies = 3 if self.momentum else 2
        biases = _block(self.hidden) + _block(self.dv) if self.bias else 0
        return copies * (_block(self.hidden) * (_block(self.dk) + _block(self.dv)) + biases)

    def streams(self, like: Tensor, grad: bool = False) -> bool:
        """Whether a call on tensors like `like` (q: B, H, T, dk) runs the streamed kernels (state in global
        memory); `grad`: the call needs gradients. Unless `stream` says, only on a GPU for a state too
        large for the chip, in a forward without gradients of at most STREAMED_FORWARD_FLOATS (see there)."""
        if self.fwd_streamed is None:
            return False
        if self.stream is not None:
            return self.stream
        return self._too_large(like) and not grad and self._batch_floats(like) <= STREAMED_FORWARD_FLOATS

    def _too_large(self, like: Tensor) -> bool:
        return like.is_cuda and not interpreting() and self.state_floats() > ON_CHIP_FLOATS

    def _batch_floats(self, like: Tensor) -> int:
        """W1's and W2's values over the call's batch x heads."""
        return like.shape[0] * like.shape[1] * self.hidden * (self.dk + self.dv)

    def unfit(self, like: Tensor, grad: bool = False) -> Optional[str]:
        """Why the kernels do not run on a GPU for tensors like `like` (None when they do); `grad` as in
        `streams`."""
        if not self._too_large(like) or self.streams(like, grad):
            return None
        why = (f"a head's state (W1 {self.hidden}x{self.dk}, W2 {self.dv}x{self.hidden}, with anchors"
               f"{' and momenta' if self.momentum else ''}: {self.state_floats()} float32 values) does not fit "
               f"on chip (the generated kernel keeps it in registers; limit {ON_CHIP_FLOATS})")
        if self.fwd_streamed is None:
            return why
        if grad:
            return why + ", and with gradients the streamed kernels ran slower than the chunked path"
        return (why + f", and the streamed forward ran slower than the chunked path for a batch's state above "
                      f"{STREAMED_FORWARD_FLOATS} values (this call: {self._batch_floats(like)})")

    def tiles(self, position: int, tokens: int) -> tuple[int, int, int]:
        """(offset, sub0, n_tiles) of a call of `tokens` tokens starting at `position`: the tokens of the
        first tile before the call, that tile's index in its chunk, and the number of tiles."""
        offset = position % self.tile_tokens
        return offset, (position % self.chunk) // self.tile_tokens, -(-(tokens + offset) // self.tile_tokens)

    def run(self, cfg: MemoryConfig, objective, q: Tensor, k: Tensor, v: Tensor, gates: Mapping[str, Tensor],
            start: MemoryState) -> tuple[Tensor, MemoryState]:
        """y (B, H, T, dv) and the carried state after the call, differentiable w.r.t. every input."""
        from .autograd_mlp import MlpChunkFunction

        batch, heads, tokens, _ = k.shape
        dtype = v.dtype
        gate_args = gate_arguments(gates, k)
        state = []
        for pair in names_of(self.bias):
            state += [as_f32(start.params[n]) for n in pair] + [as_f32(start.anchor[n]) for n in pair]
            if cfg.has_momentum:
                state += [as_f32(start.momentum[n]) for n in pair]
            else:
                state += [_unused(k), _unused(k)]   # no momentum: the kernels neither read nor write it
        streamed = self.streams(k, needs_grad(q, k, v, gates, start))   # as the backend chose (unfit)
        outs = MlpChunkFunction.apply(self, cfg, objective, start.position, self.precision(dtype), streamed,
                                      *detached_without_grad(kernel_input(q), kernel_input(k), kernel_input(v),
                                                             *gate_args, *state))
        y, *rest = (t.to(dtype) for t in outs)
        theta, anchor, mom = named(rest, self.bias)
        end = MemoryState(theta, anchor, mom if cfg.has_momentum else None, start.position + tokens)
        return y, end

    def launch_fwd(self, position: int, q, k, v, eta, alpha, beta, *state, store: bool, prec: str = "ieee",
                   streamed: bool = False):
        """y, the end state (W1, W2, their anchors and momenta, then the same of b1, b2 with biases) and the
        tile start states (theta and momentum of each pair; stand-ins without `store`); `streamed` runs
        fwd_streamed. `state` is (w1, w2, a1, a2, s1, s2) and with biases (b1, b2, ab1, ab2, sb1, sb2)."""
        batch, heads, tokens, _ = k.shape
        offset, sub0, n_tiles = self.tiles(position, tokens)
        dev = k.device
        y = torch.empty(batch, heads, tokens, self.dv, dtype=torch.float32, device=dev)
        outs, stored = [], []
        for i in range(len(state) // 6):
            t1, t2, a1, a2, s1, s2 = state[6 * i:6 * i + 6]
            outs += [torch.empty_like(t) for t in (t1, t2, a1, a2)]
            outs += [torch.empty_like(s1), torch.empty_like(s2)] if self.momentum else [_unused(k), _unused(k)]
            if store:
                starts = [torch.empty(batch, heads, n_tiles, *t.shape[2:], dtype=torch.float32, device=dev)
                          for t in (t1, t2)]
                stored += starts + ([torch.empty_like(t) for t in starts] if self.momentum else [_unused(k)] * 2)
            else:
                stored += [_unused(k)] * 4
        grid = (batch * heads,)
        if streamed:
            y = self._launch_streamed(position, (q, k, v, eta, alpha, beta, *state), y, outs, stored, store, prec)
        else:
            bias_args = (*state[6:], *outs[6:], *stored[4:])
            self.fwd[grid](q, k, v, eta, alpha, beta, *state[:6], y, *outs[:6], *stored[:4], tokens, offset, sub0,
                           n_tiles, *bias_args, STORE=store, PREC=prec, **self.launch_options())
        self.launches["fwd"] += 1
        return (y, *outs), stored

    def slices_for(self, programs: int, device) -> int:
        """Programs per head of the streamed forward (`slices`, or on a GPU enough for about two per
        multiprocessor; 1 when `programs`, batch x heads, fill it), at most one per block of hidden units;
        1 without fwd_streamed_out (a level with biases)."""
        if self.fwd_streamed_out is None:
            return 1
        blocks = -(-self.hidden // self.hidden_block)
        if self.slices is not None:
            wanted = self.slices
        elif interpreting() or torch.device(device).type != "cuda":
            wanted = 1
        else:
            wanted = -(-2 * multiprocessors(device) // programs)
        return max(1, min(wanted, blocks))

    def _launch_streamed(self, position: int, inputs, y, outs, stored, store: bool, prec: str):
        """fwd_streamed over all the tiles, the state in a work space. A head split over several programs
        (slices of its hidden units) runs a chunk at a time: fwd_streamed_out, the slices' shares of the
        memory at the chunk's anchor, then fwd_streamed on them; y is the sum of the slices' shares. With
        biases (no split: b2 stays on chip), their state, outputs, stored starts and work space follow."""
        inputs, bias_inputs = inputs[:12], inputs[12:]
        outputs = (*outs[:6], *stored[:4])
        q, k, v, eta, alpha, beta, w1, w2, a1, a2, s1, s2 = inputs
        batch, heads, tokens, _ = k.shape
        offset, sub0, n_tiles = self.tiles(position, tokens)
        space = _two_copies((w1, w2, a1, a2)) + (_two_copies((s1, s2)) if self.momentum else [_unused(k)] * 2)
        n_s = self.slices_for(batch * heads, k.device)
        blocks = -(-self.hidden // self.hidden_block)
        span = self.hidden_block * -(-blocks // n_s)      # hidden units per slice, whole blocks
        options = launch_options(self.warps, self.stages, True)
        grid = (batch * heads, n_s)
        constants = dict(HB=self.hidden_block, PREC=prec)
        if n_s == 1:
            bias_args = ()
            if self.bias:
                b1 = bias_inputs[0]
                bias_space = _two_copies((b1, b1)) + (_two_copies((b1,)) if self.momentum else [_unused(k)])
                bias_args = (*bias_inputs, *outs[6:], *stored[4:], *bias_space)
            self.fwd_streamed[grid](*inputs, y, *outputs, *space, _unused(k), _unused(k), tokens, offset, sub0,
                                    n_tiles, 0, n_tiles, 0, span, 1, 1, *bias_args, STORE=store, **constants,
                                    **options)
            return y
        for copies, start in zip(space, (w1, w2, a1, a2, s1, s2)):
            if copies.dim() > 1:
                copies[0].copy_(start)
        shares = torch.empty(n_s, *y.shape, dtype=torch.float32, device=k.device)
        parts = [torch.empty_like(shares) for _ in range(2)]   # M_anchor(k) and M_anchor(v) per slice
        n_sub = self.chunk // self.tile_tokens
        heads_of_chunks = [j for j in range(1, n_tiles) if (j + sub0) % n_sub == 0]
        anchor_copy = 0
        for lo, hi in zip([0, *heads_of_chunks], [*heads_of_chunks, n_tiles]):
            self.fwd_streamed_out[grid](k, v, space[2], space[3], *parts, tokens, offset, lo, hi, anchor_copy, span,
                                        **constants, **options)
            self.fwd_streamed[grid](*inputs, shares, *outputs, *space, *parts, tokens, offset, sub0, n_tiles, lo, hi,
                                    anchor_copy, span, 0, int(hi == n_tiles), SPLIT=True, STORE=store, **constants,
                                    **options)
            # the chunk ended inside the call: the anchor moved to the other copy
            anchor_copy ^= int((hi - 1 + sub0) % n_sub == n_sub - 1 and hi * self.tile_tokens - offset <= tokens)
        return shares.sum(0)

    def launch_bwd(self, position: int, saved, dy, dw1, dw2, da1, da2, ds1, ds2, *dbias, streamed: bool = False):
        """Gradients of the forward's tensor inputs (q, k, v, the three gates, W1, W2, their anchors and
        momenta, then the same of the biases) from the stored tile start states; `streamed` runs
        bwd_streamed. `dbias`: the gradients of the biases out (db1, db2, dab1, dab2, dsb1, dsb2)."""
        q, k, v, eta, alpha, beta, w1, w2, a1, a2, s1, s2 = saved[:12]
        bias_state = saved[12:18] if self.bias else ()
        st1, st2, ss1, ss2 = saved[12 + len(bias_state):16 + len(bias_state)]
        bias_stored = saved[16 + len(bias_state):]
        tokens = k.shape[2]
        offset, sub0, n_tiles = self.tiles(position, tokens)
        # the anchor out is theta out when the call ends on a chunk boundary: the kernels then add its
        # gradient to theta's
        aligned = int((position + tokens) % self.chunk == 0)
        # the kernel writes every element of these (the momenta's only with momentum; without, their
        # gradients are not asked for): no zero fill, one kernel launch less each on a GPU
        grads_in = [torch.empty_like(t, dtype=torch.float32) for t in (q, k, v, eta, alpha, beta)]
        grads_state = [torch.empty_like(t) for t in (w1, w2, a1, a2, s1, s2)]
        grads_bias = [torch.empty_like(t) for t in bias_state]
        c = lambda t: t.contiguous()  # noqa: E731
        args = (q, k, v, eta, alpha, beta, a1, a2, st1, st2, ss1, ss2,
                c(dy), c(dw1), c(dw2), c(ds1), c(ds2), c(da1), c(da2), *grads_in, *grads_state)
        grid = (k.shape[0] * k.shape[1],)
        if streamed:
            # the state's gradients, then a tile's partial gradients of the hidden pre-activations and
            # activations
            space = _two_copies((w1, w2)) + (_two_copies((s1, s2)) if self.momentum else [_unused(k)] * 2)
            space += _two_copies((a1, a2))
            space += [torch.empty(grid[0], self.block_t, self.hidden, dtype=torch.float32, device=k.device)
                      for _ in range(2)]
            self.bwd_streamed[grid](*args, *space, tokens, offset, sub0, n_tiles, aligned, HB=self.hidden_block,
                                    PREC=self.backward_precision, **launch_options(self.warps, self.stages, True))
        else:
            bias_args = ()
            if self.bias:
                _, _, ab1, ab2, _, _ = bias_state
                bias_args = (ab1, ab2, *bias_stored, *(c(g) for g in dbias), *grads_bias)
            self.bwd[grid](*args, tokens, offset, sub0, n_tiles, aligned, *bias_args, PREC=self.backward_precision,
                           **self.launch_options(backward=True))
        self.launches["bwd"] += 1
        return (*grads_in, *grads_state, *grads_bias)
