"""Compile a memory level's generated kernels for a GPU without one: compile time, registers, spills.

    python benchmarks/gpu/compile_report.py                       # every configuration below, sm_90
    python benchmarks/gpu/compile_report.py gdn128 titans_small --arch 90
    python benchmarks/gpu/compile_report.py --spec examples/hope.nl        # every memory level of a spec
    python benchmarks/gpu/compile_report.py gdn128 --dtype bfloat16        # as a bf16 model launches them

Each configuration's level runs its forward and backward once on tiny CPU tensors with the launches
intercepted (nothing executes): every launch's arguments and constexprs are recorded, exactly as a GPU
run would pass them (block sizes as chosen for a GPU, not for the interpreter; the walks' rows as for a
batch large enough to fill the GPU, i.e. the widest), and each distinct
kernel is then compiled by Triton for the target (`triton.compile`, which runs ptxas). ptxas -v then
reports registers per thread and spilled bytes. What a GPU run would pay before its first step, and
whether a kernel keeps its state in registers, is known here, before any device time is spent.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass

os.environ.pop("TRITON_INTERPRET", None)  # the kernels must be JIT functions, not interpreted ones
os.environ["TRITON_ALWAYS_COMPILE"] = "1"  # compile times, not cache hits

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from nldsl.runtime.memory import MemoryConfig, Rule, init_params, standard_objective  # noqa: E402
from nldsl.runtime.memory.inputs import start_state  # noqa: E402
from nldsl.runtime.triton.launch_mlp import ON_CHIP_FLOATS  # noqa: E402


def linear(rules, dim, chunk, read="after", self_target=False):
    return MemoryConfig("linear", dim, dim, rules=tuple(Rule(*r) if isinstance(r, tuple) else Rule(r) for r in rules),
                        read=read, chunk=chunk, self_target=self_target)


def mlp(rules, dim, hidden, chunk, read="anchor", act="gelu", self_target=False, bias=False):
    return MemoryConfig("mlp", dim, dim, depth=2, hidden=hidden, act=act, residual=True, bias=bias,
                        rules=tuple(Rule(r) for r in rules), read=read, chunk=chunk, self_target=self_target)


CONFIGS = {
    # benchmarks/gpu/kernels_vs_fla.py's level: Gated DeltaNet at head dim 128 (the wy form)
    "gdn128": (linear(["retain", ("gd", "current")], 128, 1), "l2"),
    "gdn64": (linear(["retain", ("gd", "current")], 64, 1), "l2"),
    "titans_linear64": (linear(["retain", "momentum"], 64, 16, read="anchor"), "l2"),
    "titans_linear128": (linear(["retain", "momentum"], 128, 16, read="anchor"), "l2"),
    "ttt_linear128": (linear(["gd"], 128, 64), "l2"),
    # benchmarks/gpu/titans_vs_titans_pytorch.py's small-heads configuration
    "titans_small": (mlp(["retain", "momentum"], 32, 128, 64), "mse"),
    "titans_example": (mlp(["retain", "momentum"], 32, 64, 16), "sq"),
    "titans_bias": (mlp(["retain", "momentum"], 32, 128, 64, read="after", bias=True), "mse"),
    # states too large for the registers (the streamed kernels, as a GPU launches them): titans-pytorch's
    # default head (benchmarks/titans_peer.nl) and one of width 128
    "titans_peer": (mlp(["retain", "momentum"], 256, 1024, 64), "mse"),
    "titans_mlp128": (mlp(["retain", "momentum"], 128, 512, 64), "mse"),
    # tiny ones, for the test of this script
    "tiny_linear": (linear(["retain", "gd"], 16, 4), "l2"),
    "tiny_mlp": (mlp(["retain", "momentum"], 16, 16, 4), "mse"),
    "tiny_mlp2": (mlp(["retain", "momentum"], 32, 64, 4, read="after"), "mse"),   # two blocks of 32 hidden units
    "tiny_mlp_bias": (mlp(["retain", "momentum"], 16, 24, 4, read="before", bias=True), "mse"),
}

DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int32: "i32",
          torch.int64: "i64", torch.bool: "i1"}


@dataclass
class Launch:
    fn: JITFunction
    args: tuple
    kwargs: dict


def record_launches(cfg, objective, level: str, overrides: dict, dtype=torch.float32) -> list[Launch]:
    """The launches of one forward and backward of the level's kernels (B = 1, H = 1, two chunks) on
    inputs of `dtype` (bf16 inputs make tf32 dots), with `overrides` of the level's launch settings
    (tile, block_v, warps); with `walk_tiles` above 1 also those of a forward without gradients (its
    merged tiles)."""
    from nldsl.runtime.triton.registry import kernels_for

    found, reason = kernels_for(cfg, objective, level)
    if found is None:
        sys.exit(f"{level}: no generated kernels: {reason}")
    found = dataclasses.replace(found, **{k: v for k, v in overrides.items() if v is not None})
    if getattr(found, "stream", False) is None and found.state_floats() > ON_CHIP_FLOATS:
        found = dataclasses.replace(found, stream=True)  # as a GPU launches a state too large for the registers
    seen: list[Launch] = []

    def run(self, *args, grid, warmup, **kwargs):
        seen.append(Launch(self, args, kwargs))

    tokens = max(2 * cfg.chunk, 32)
    gen = torch.Generator().manual_seed(0)
    widths = (cfg.dk, cfg.dk, cfg.dk if cfg.self_target else cfg.dv)
    q, k, v = (torch.randn(1, 1, tokens, d, generator=gen).to(dtype).requires_grad_(True) for d in widths)
    gates = {n: torch.rand(1, 1, tokens, generator=gen).requires_grad_(True) for n in cfg.required_gates()}
    params0 = {n: p.requires_grad_(True) for n, p in init_params(cfg, 1, generator=gen).items()}
    old = JITFunction.run
    JITFunction.run = run
    try:
        y, state = found.run(cfg, objective, q, k, v, gates, start_state(cfg, params0, None, k))
        loss = y.float().sum() + sum(t.float().sum() for t in state.params.values())
        loss.backward()
        if getattr(found, "walk_tiles", 1) > 1:
            with torch.no_grad():
                found.run(cfg, objective, q, k, v, gates, start_state(cfg, params0, None, k))
    except RuntimeError:
        pass  # the backward may trip over the never-written outputs; the launches are recorded by then
    finally:
        JITFunction.run = old
    return seen


def signature(launch: Launch) -> tuple[dict, dict, dict]:
    """(signature, constexprs, options) of a recorded launch, as JITFunction.run would build them."""
    fn = launch.fn
    options = {k: launch.kwargs[k] for k in ("num_warps", "num_stages", "maxnreg") if k in launch.kwargs}
    values = dict(zip(fn.arg_names, launch.args))
    values.update({k: v for k, v in launch.kwargs.items() if k in fn.arg_names})
    sig, consts = {}, {}
    for p in fn.params:
        value = values.get(p.name, p.default)
        if p.is_constexpr:
            sig[p.name], consts[p.name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            sig[p.name] = "*" + DTYPES[value.dtype]
        elif isinstance(value, bool):
            sig[p.name] = "i1"
        elif isinstance(value, int):
            sig[p.name] = "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
        elif isinstance(value, float):
            sig[p.name] = "fp32"
        elif value is None:
            sig[p.name], consts[p.name] = "constexpr", None
        else:
            raise TypeError(f"{fn.__name__}: argument {p.name} of type {type(value).__name__}")
    return sig, consts, options


def ptxas_summary(log: str) -> str:
    """'R registers, S / L bytes spill stores / loads' of the kernel, from ptxas -v's log."""
    regs = re.findall(r"Used (\d+) registers", log)
    spill = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if not regs:
        return "no ptxas report"
    stores, loads = (spill[-1] if spill else ("?", "?"))
    return f"{regs[-1]} registers, {stores} / {loads} bytes spill stores / loads"


def compile_for(launch: Launch, arch: int):
    """(compiled kernel, seconds, ptxas log) for one recorded launch."""
    sig, consts, options = signature(launch)
    triton.knobs.nvidia.dump_ptxas_log = True  # ptxas -v's report, printed by Triton
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(ASTSource(launch.fn, sig, consts), target=GPUTarget("cuda", arch, 32),
                                  options=options)
    return compiled, time.perf_counter() - start, log.getvalue()


def spec_levels(path: str) -> list[tuple[str, MemoryConfig, object]]:
    """(level name, config, objective) of every memory level of a spec with generated kernels."""
    from nldsl.compiler import load
    from nldsl.runtime import MemoryLevel
    from nldsl.runtime.triton.registry import kernels_for

    out, seen = [], set()
    for module in load(path).modules():
        if isinstance(module, MemoryLevel) and module.level_name not in seen:
            seen.add(module.level_name)
            found, reason = kernels_for(module.cfg, module.objective, module.level_name)
            if found is None:
                print(f"[{module.level_name}] no generated kernels: {reason}")
            else:
                out.append((module.level_name, module.cfg, module.objective))
    return out


def report(name: str, cfg: MemoryConfig, objective, arch: int, overrides: dict, dtype=torch.float32) -> None:
    launches = record_launches(cfg, objective, name if "." in name else f"report.{name}", overrides, dtype)
    print(f"[{name}] {cfg.family} dk={cfg.dk} dv={cfg.dv} chunk={cfg.chunk} "
          f"rules={','.join(r.kind for r in cfg.rules)}: {len(launches)} launches", flush=True)
    done = set()
    for launch in launches:
        _, consts, options = signature(launch)
        key = (launch.fn.__name__, tuple(sorted((k, str(v)) for k, v in consts.items())), str(options))
        if key in done:
            continue
        done.add(key)
        compiled, seconds, log = compile_for(launch, arch)
        shown = ", ".join([f"{k}={v}" for k, v in consts.items() if k.isupper()]
                          + [f"{k}={v}" for k, v in options.items()])
        print(f"  {launch.fn.__name__:<32} compile {seconds:6.1f} s | {ptxas_summary(log)} | "
              f"shared {compiled.metadata.shared} B | {shown}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*", help=f"of {', '.join(CONFIGS)} (default: all but the tiny ones)")
    ap.add_argument("--spec", help="report every memory level of this .nl spec instead")
    ap.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100/H200)")
    ap.add_argument("--tile", type=int, help="the wy form's tile (tokens per tile) instead of the level's")
    ap.add_argument("--block-v", type=int, help="rows of the state per program (linear memories)")
    ap.add_argument("--tile-columns", type=int,
                    help="key and value columns per block of the wy form's tile-parallel kernels")
    ap.add_argument("--warps", type=int, help="warps per program instead of the level's")
    ap.add_argument("--tile-warps", type=int, help="warps per program of the wy form's tile-parallel kernels")
    ap.add_argument("--states-every", type=int, help="the wy form's tiles per stored start state (1 or 2)")
    ap.add_argument("--walk-tiles", type=int,
                    help="the wy form's tiles a step of the forward walk (2 or 4: the merge, and the walks over merged "
                         "tiles with and without gradients)")
    ap.add_argument("--stages", type=int, help="software-pipelining stages instead of the level's")
    ap.add_argument("--backward-precision", choices=["ieee", "tf32"],
                    help="tl.dot precision of the backward kernels (but the wy walk) instead of the level's")
    ap.add_argument("--stream", action="store_true",
                    help="MLP memories: the streamed kernels (state in global memory) even for a state that fits on "
                         "chip (a larger one streams anyway, as on a GPU)")
    ap.add_argument("--hidden-block", type=int, help="hidden units per block of the streamed kernels")
    ap.add_argument("--slices", type=int, help="programs per head of the streamed forward (as on a GPU with few heads)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="the inputs' dtype (bfloat16: the kernels' dots in tf32, as a bf16 model runs them)")
    args = ap.parse_args()
    os.environ.setdefault("NLC_CACHE", tempfile.mkdtemp(prefix="nlc-compile-"))
    overrides = {"tile": args.tile, "block_v": args.block_v, "tile_columns": args.tile_columns, "warps": args.warps,
                 "tile_warps": args.tile_warps, "states_every": args.states_every, "walk_tiles": args.walk_tiles,
                 "stages": args.stages,
                 "backward_precision": args.backward_precision, "stream": args.stream or None,
                 "hidden_block": args.hidden_block, "slices": args.slices}
    if args.spec:
        levels = spec_levels(args.spec)
    else:
        names = args.configs or [c for c in CONFIGS if not c.startswith("tiny")]
        levels = [(n, CONFIGS[n][0], standard_objective(CONFIGS[n][1])) for n in names]
    for name, cfg, objective in levels:
        report(name, cfg, objective, args.arch, overrides, getattr(torch, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
