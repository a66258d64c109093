"""The generated Gated DeltaNet kernel against flash-linear-attention's `chunk_gated_delta_rule`.

    python benchmarks/gpu/kernels_vs_fla.py                 # on a GPU: the two shapes below, bf16
    python benchmarks/gpu/kernels_vs_fla.py --peak 989      # the card's dense bf16 peak in TFLOP/s
    python benchmarks/gpu/kernels_vs_fla.py --json out.json
    python benchmarks/gpu/kernels_vs_fla.py --tile 16,32 --stages 1,2    # launch settings side by side

The generated kernel is the one `nlc compile examples/gated_deltanet.nl` emits for its memory level
(retain, then gd at the current state, l2: S_t = α_t S_(t−1)(I − η_t k kᵀ) + η_t v kᵀ, o_t = S_t q_t),
at 16 heads of head dim 128, for B×T = 8×2048 and 1×16384, in bf16, forward and forward + backward
(backward of o·do + the final state). fla's op gets the same inputs in its own layout, (B, T, H, d), made before the timed calls as ours
are (a model projects straight into either): g = log α, beta = η, scale = 1 (no implicit q scaling),
its state S_fla = Sᵀ. Timings are medians over CUDA events after warm-up, the calls issued back to
back (as triton.testing.do_bench issues them: a call costs its device time unless issuing it takes
longer); each row also gives the medians with the host waiting for every call before the next, which
adds the time a call takes to reach the device. `--profile` shows each side's kernels and the ratio of
their GPU times alone (a call that is bound by its host work hides how fast its kernels are). Throughput uses one FLOP model for both kernels (per token and head, chunk
C = 64: 6CK + 4CV + 6KV for the forward, three times that for forward + backward), so the TFLOP/s
are comparable rates, not counted instructions; the share is of the card's dense bf16 peak. Each row also
gives the peak CUDA memory one call allocates above its inputs (ours and fla's).

Every row is also checked against the chunked PyTorch path in float32 on the same inputs: output and
final state, and in forward + backward rows the gradients of q, k, v and the gates (fla's backward is
unverified on Hopper with this Triton, so it cannot serve); the script exits 1 if a row is beyond
docs/semantics.md §6. Without a GPU the script runs the generated kernels end to end under the Triton
interpreter at tiny shapes in float32 (the interpreter has no bf16 tl.dot), skips fla if it is not
installed, and says that it made no GPU figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import os
import sys
import time

import torch

from timing import peak_memory_mb, profile, rel, time_call  # benchmarks/gpu/timing.py

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

from nldsl.runtime.memory import MemoryConfig, MemoryState, Rule, chunked, standard_objective  # noqa: E402

GPU_SHAPES = [(8, 2048), (1, 16384)]          # (batch, tokens)
GPU_HEADS, GPU_DIM = 16, 128
TINY_SHAPES = [(1, 40), (2, 23)]
TINY_HEADS, TINY_DIM = 2, 16
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}  # dense bf16 TFLOP/s


def flops_forward(batch: int, tokens: int, heads: int, dk: int, dv: int, chunk: int = 64) -> float:
    return batch * tokens * heads * (6 * chunk * dk + 4 * chunk * dv + 6 * dk * dv)


def gdn_kernels(dim: int):
    from nldsl.runtime.triton.registry import kernels_for

    cfg = MemoryConfig("linear", dim, dim, rules=(Rule("retain"), Rule("gd", at="current")), chunk=1, read="after")
    found, reason = kernels_for(cfg, standard_objective("l2"), "gdn_block.fast")
    if found is None:
        sys.exit(f"no generated kernel: {reason}")
    return cfg, found


def make_inputs(batch, tokens, heads, dim, dtype, device, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)
    q = torch.nn.functional.normalize(rnd(batch, heads, tokens, dim), dim=-1)
    k = torch.nn.functional.normalize(rnd(batch, heads, tokens, dim), dim=-1)
    v = rnd(batch, heads, tokens, dim)
    eta = torch.sigmoid(rnd(batch, heads, tokens))
    log_alpha = -torch.nn.functional.softplus(rnd(batch, heads, tokens) - 3.0)
    out = {n: t.to(device=device, dtype=dtype) for n, t in dict(q=q, k=k, v=v, eta=eta, log_alpha=log_alpha).items()}
    out["alpha"] = torch.exp(out["log_alpha"].float()).to(dtype)   # ours takes alpha, fla log alpha
    return out


def run_generated(cfg, kernels, x, grad: bool):
    state0 = torch.zeros(x["k"].shape[0], x["k"].shape[1], cfg.dv, cfg.dk, device=x["k"].device, dtype=torch.float32)
    start = MemoryState({"W": state0}, {"W": state0}, None, 0)
    gates = {"eta": x["eta"], "alpha": x["alpha"]}
    y, state = kernels.run(cfg, standard_objective("l2"), x["q"], x["k"], x["v"], gates, start)
    if grad:
        (y.float().square().sum() + state.params["W"].square().sum()).backward()
    return y, state.params["W"]


def lift_fla_hopper_guard() -> bool:
    """fla 0.6 refuses its gated backward on Hopper with Triton 3.4 to 3.7.0: that Triton miscompiles one
    of its kernels (fla issue #640), giving wrong gradients at the same amount of work. The benchmark only
    times that backward (it compares forward outputs), so it lifts the refusal and says so. True if lifted."""
    try:
        from fla.ops.common import chunk_o
    except ImportError:
        return False
    if getattr(chunk_o, "IS_NVIDIA_HOPPER", False) and not getattr(chunk_o, "TRITON_ABOVE_3_7_1", True):
        chunk_o.TRITON_ABOVE_3_7_1 = True
        return True
    return False


def fla_layout(x: dict, grad: bool) -> dict:
    """fla's inputs in its own layout, (B, T, H, ...), made once outside the timed calls (a model that
    calls it projects straight into that layout), with g = log alpha in float32."""
    t = lambda a: a.detach().transpose(1, 2).contiguous()  # noqa: E731  (B, H, T, ...) -> (B, T, H, ...)
    out = {"q": t(x["q"]), "k": t(x["k"]), "v": t(x["v"]), "g": t(x["log_alpha"]).float(), "beta": t(x["eta"])}
    return {n: a.requires_grad_(grad) for n, a in out.items()}


def run_fla(xf, grad: bool):
    """fla's op on fla_layout's inputs: o (B, H, T, dv) and the final state as ours (B, H, dv, dk)."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    o, state = chunk_gated_delta_rule(xf["q"], xf["k"], xf["v"], xf["g"], xf["beta"], scale=1.0,
                                      output_final_state=True)
    if grad:
        (o.float().square().sum() + state.float().square().sum()).backward()
    return o.transpose(1, 2), state.transpose(-1, -2)


def first_call(fn) -> float:
    """Seconds of one synchronised call (the first one compiles, and autotunes where a kernel does)."""
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def write_json(path: str, gpu: bool, rows: list) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"gpu": gpu, "rows": rows}, f, indent=2)


# The launch settings a run can sweep: LevelKernels field -> (how a value is read, what it is). Each flag
# (--tile, --block-v, ...) takes a comma-separated list of values; `default` is the level's own setting.
SWEEPS = {
    "tile": (int, "tokens per tile, e.g. 16,32"),
    "block_v": (int, "rows of W per program, e.g. 16,32 (printed as rows forward walk / other kernels)"),
    "stages": (int, "software-pipelining stages of every kernel, e.g. default,2 (the level's: WALK_STAGES "
                    "and PREP_STAGES)"),
    "backward_precision": (str, "tl.dot precision of the backward kernels, e.g. ieee,tf32"),
    "walk_precision": (str, "tl.dot precision of the wy form's walks for bf16 inputs, e.g. half,tf32 (the "
                            "level's: WALK_PRECISION)"),
    "stored_products": ({"on": True, "off": False}.__getitem__,
                        "whether products of bf16 operands read from memory multiply as stored, e.g. on,off"),
    "tile_columns": (int, "key and value columns per block of the tile-parallel kernels, e.g. 16,default"),
    "warps": (int, "warps per program, e.g. 4,8"),
    "tile_warps": (int, "warps per program of the tile-parallel kernels (prep, prep_bwd), e.g. 1,2,default"),
    "states_every": (int, "tiles per start state the forward walk stores for the backward walk, 1 or 2"),
    "walk_tiles": (int, "tiles a step of the forward walk (their terms merged; the backward walk makes the other "
                        "start states again), 1, 2 or 4"),
}


def variants(kernels, args) -> list:
    """The level's kernels at every combination of the SWEEPS flags' values."""
    choices = [[getattr(kernels, field) if word == "default" else read(word)
                for word in (getattr(args, field) or "default").split(",")]
               for field, (read, _) in SWEEPS.items()]
    return [dataclasses.replace(kernels, **dict(zip(SWEEPS, values)), launches={n: 0 for n in kernels.launches})
            for values in itertools.product(*choices)]


def time_fla(x, grad: bool, flops: float, label: str, repeats: int, warmup: int) -> dict:
    first = first_call(lambda: run_fla(x, grad))
    print(f"  {label}: first call of fla (with its autotuning) {first:.1f} s", flush=True)
    fla_ms = time_call(lambda: run_fla(x, grad), repeats, warmup)
    return {"fla_ms": fla_ms, "fla_sync_ms": time_call(lambda: run_fla(x, grad), repeats, 0, synchronise=True),
            "fla_tflops": flops / fla_ms / 1e9,
            "fla_peak_mb": peak_memory_mb(lambda: run_fla(x, grad))}


GRADIENTS = ("q", "k", "v", "eta", "alpha")


def error_vs_chunked(cfg, kernels, x, grad: bool) -> tuple:
    """The generated kernels against the chunked PyTorch path in float32 on the same inputs, relative:
    (the larger of the output's and the final state's, the largest of the gradients of q, k, v and the
    gates under the timed call's loss, or None without `grad`). The gradients check the backward kernels
    where fla's cannot serve as the reference (its backward is unverified on Hopper with this Triton)."""
    ours = {n: t.detach().requires_grad_(grad and n in GRADIENTS) for n, t in x.items()}
    exact = {n: t.detach().float().requires_grad_(grad and n in GRADIENTS) for n, t in x.items()}
    with torch.enable_grad():
        y, s = run_generated(cfg, kernels, ours, grad)
        y0, s0 = run_generated(cfg, ChunkedPath, exact, grad)
    forward = max(rel(y, y0), rel(s, s0))
    return forward, (max(rel(ours[n].grad, exact[n].grad) for n in GRADIENTS) if grad else None)


class ChunkedPath:
    """The kernels' `run`, computed by the chunked PyTorch path (the reference of error_vs_chunked)."""

    @staticmethod
    def run(cfg, objective, q, k, v, gates, start):
        return chunked(cfg, objective, q, k, v, gates, None, start)


def row_line(row: dict, peak) -> str:
    line = (f"B={row['batch']:<2} T={row['tokens']:<6} {row['mode']:<8} tile {row['tile']:<3} "
            f"rows {row['walk_rows']}/{row['block_v']:<3} cols {row['tile_columns']:<3} warps {row['warps'] or '-'}/{row['tile_warps'] or '-'} "
            f"stages {row['stages']} bwd {row['backward_precision']:<4} walk {row['walk_precision']:<4} "
            f"stored {'on' if row['stored_products'] else 'off'} states every {row['states_every']} "
            f"walk {row['walk_tiles']} tiles a step "
            f"generated {row['generated_ms']:9.3f} ms {row['generated_tflops']:8.3g} TFLOP/s")
    if peak:
        line += f" ({100 * row['generated_share_of_peak']:.1f}% of {peak:g})"
    if "fla_ms" in row:
        line += f" | fla {row['fla_ms']:9.3f} ms {row['fla_tflops']:8.2f} TFLOP/s"
        if peak:
            line += f" ({100 * row['fla_share_of_peak']:.1f}%)"
        line += f" | ours/fla {row['fla_ms'] / row['generated_ms']:.3f}x"
        line += f" (each call synchronised: {row['generated_sync_ms']:.3f} vs {row['fla_sync_ms']:.3f} ms, "
        line += f"{row['fla_sync_ms'] / row['generated_sync_ms']:.3f}x) | rel. diff {row['error_vs_fla']:.1e}"
        line += f" | peak MB ours {row['generated_peak_mb']:.0f}, fla {row['fla_peak_mb']:.0f}"
    if "generated_gpu_ms" in row and "fla_gpu_ms" in row:
        line += (f" | GPU time (the kernels alone) {row['generated_gpu_ms']:.3f} vs {row['fla_gpu_ms']:.3f} ms, "
                 f"{row['fla_gpu_ms'] / row['generated_gpu_ms']:.3f}x")
    if "error_vs_chunked" in row:
        line += f" | rel. diff vs the chunked path in float32: output and state {row['error_vs_chunked']:.1e}"
    if "grad_error_vs_chunked" in row:
        line += f", gradients {row['grad_error_vs_chunked']:.1e}"
    return line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peak", type=float, default=None, help="the card's dense bf16 peak in TFLOP/s")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--shapes", default=None, help="B×T pairs to run, e.g. 8x2048,1x16384 (default: both)")
    ap.add_argument("--modes", default="fwd,fwd+bwd", help="what to time: fwd, fwd+bwd or both (default)")
    for field, (_, what) in SWEEPS.items():
        ap.add_argument("--" + field.replace("_", "-"), default=None, help=f"{what}: the values to try "
                        "(default: the level's)")
    ap.add_argument("--no-fla", action="store_true", help="time the generated kernels only")
    ap.add_argument("--profile", action="store_true",
                    help="also print each kernel's share of a call's GPU time and the operators' CPU time (torch.profiler)")
    args = ap.parse_args()

    gpu = torch.cuda.is_available()
    have_fla = importlib.util.find_spec("fla") is not None and not args.no_fla
    if gpu:
        device, dtype = "cuda", torch.bfloat16
        shapes, heads, dim = GPU_SHAPES, GPU_HEADS, GPU_DIM
        name = torch.cuda.get_device_name()
        peak = args.peak or next((p for k, p in PEAKS.items() if k in name), None)
        repeats, warmup = args.repeats, args.warmup
    else:
        device, dtype = "cpu", torch.float32
        shapes, heads, dim = TINY_SHAPES, TINY_HEADS, TINY_DIM
        name, peak, repeats, warmup = "CPU (Triton interpreter)", None, 1, 0
    if args.shapes:
        shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    cfg, level_kernels = gdn_kernels(dim)
    lifted = have_fla and gpu and lift_fla_hopper_guard()
    print(f"device: {name}; dtype {str(dtype).replace('torch.', '')}; {heads} heads, head dim {dim}; "
          f"fla {'present' if have_fla else 'absent (its columns are skipped)'}")
    print(f"generated kernel: {level_kernels.level} ({level_kernels.form} form; backward: {level_kernels.backward})")
    if lifted:
        print("fla's backward runs with its Hopper guard lifted: this Triton gives it wrong gradients (fla #640) "
              "at the same work, so its fwd+bwd times are timings only")
    rows = []
    for batch, tokens in shapes:
        for mode in [m for m in ("fwd", "fwd+bwd") if m in args.modes.split(",")]:
            grad = mode == "fwd+bwd"
            x = make_inputs(batch, tokens, heads, dim, dtype, device)
            if grad:
                x = {n: t.requires_grad_(True) for n, t in x.items()}
            flops = flops_forward(batch, tokens, heads, dim, dim) * (3 if grad else 1)
            label = f"B={batch} T={tokens} {mode}"
            xf = fla_layout(x, grad) if have_fla and gpu else None
            fla = time_fla(xf, grad, flops, label, repeats, warmup) if xf is not None else {}
            if fla and args.profile:
                table, fla["fla_gpu_ms"] = profile(lambda: run_fla(xf, grad), calls=3)
                print(f"  {label}: fla's kernels\n{table}", flush=True)
            variants_of = variants(level_kernels, args)
            for kernels in variants_of:
                if not grad and kernels.backward_precision != variants_of[0].backward_precision:
                    continue   # the forward does not run the backward kernels
                row = {"batch": batch, "tokens": tokens, "heads": heads, "dim": dim, "mode": mode,
                       "dtype": str(dtype).replace("torch.", ""), "device": name,
                       "tile": kernels.wy_tile(), "block_v": kernels.rows_per_program(),
                       "walk_rows": kernels.rows_per_program(walk=gpu, heads=batch * heads, device=device),
                       "stages": kernels.stages or "default", "warps": kernels.warps, "tile_warps": kernels.tile_warps,
                       "tile_columns": kernels.columns_per_block(kernels.wy_tile()), "backward_precision": kernels.backward_precision,
                       "walk_precision": kernels.walk_precision_of(kernels.precision(dtype), dtype),
                       "stored_products": kernels.stored_products, "states_every": kernels.states_every,
                       "walk_tiles": kernels.walk_tiles, **fla}
                first = first_call(lambda: run_generated(cfg, kernels, x, grad))
                print(f"  {label} tile {row['tile']} rows {row['walk_rows']}/{row['block_v']} stages {row['stages']}: "
                      f"first call of the generated kernels "
                      f"{first:.1f} s", flush=True)
                row["generated_ms"] = time_call(lambda: run_generated(cfg, kernels, x, grad), repeats, warmup)
                row["generated_sync_ms"] = time_call(lambda: run_generated(cfg, kernels, x, grad), repeats, 0,
                                                     synchronise=True)
                row["generated_tflops"] = flops / row["generated_ms"] / 1e9
                row["generated_peak_mb"] = peak_memory_mb(lambda: run_generated(cfg, kernels, x, grad))
                row["error_vs_chunked"], gradients = error_vs_chunked(cfg, kernels, x, grad)
                if gradients is not None:
                    row["grad_error_vs_chunked"] = gradients
                if fla:
                    y, s = run_generated(cfg, kernels, {n: t.detach() for n, t in x.items()}, False)
                    yf, sf = run_fla(fla_layout(x, False), False)
                    row["error_vs_fla"] = max(rel(y, yf), rel(s, sf))
                    row["fla_backward_unverified"] = bool(lifted and grad)
                if peak:
                    row["generated_share_of_peak"] = row["generated_tflops"] / peak
                    if fla:
                        row["fla_share_of_peak"] = row["fla_tflops"] / peak
                if args.profile and gpu:
                    table, row["generated_gpu_ms"] = profile(lambda: run_generated(cfg, kernels, x, grad), calls=3)
                rows.append(row)
                if args.json:  # after every row, so that a run stopped by a time limit keeps its figures
                    write_json(args.json, gpu, rows)
                print(row_line(row, peak), flush=True)
                if args.profile and gpu:
                    print(table, flush=True)
    if not gpu:
        print("no GPU figures from this run: it used the Triton interpreter on a CPU at tiny shapes "
              "(its timings say nothing about GPU speed); run on a GPU for the bf16 comparison with fla")
    # docs/semantics.md §6: outputs and states 5e-3; gradients 5e-3 in float32, bf16's 2e-2 (the gates')
    output_limit, gradient_limit = 5e-3, (2e-2 if gpu else 5e-3)
    beyond = [r for r in rows if r["error_vs_chunked"] > output_limit
              or r.get("grad_error_vs_chunked", 0.0) > gradient_limit]
    if beyond:
        print(f"{len(beyond)} row(s) beyond semantics §6 against the chunked path (outputs and states "
              f"{output_limit:g}, gradients {gradient_limit:g})")
    return 1 if beyond else 0


if __name__ == "__main__":
    sys.exit(main())
