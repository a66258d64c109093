"""A whole training step of a spec (default examples/hope.nl) on the triton backend against the chunked
PyTorch backend, on the same device.

    python benchmarks/gpu/train_step.py                          # on a GPU: B=8, T=512, float32
    python benchmarks/gpu/train_step.py --batch 16 --seq 1024 --dtype bfloat16
    python benchmarks/gpu/train_step.py --graphs                 # on a GPU: also both with CUDA graphs
    python benchmarks/gpu/train_step.py --tiny                   # any machine: B=1, T=16, the interpreter on a CPU

A step is what `nlc train` runs: `nldsl.runtime.train.NestedLoop.step` on one (B, T+1) batch, i.e. the
sequence cut at every CMS window end, each segment's forward with the in-context memories, the loss,
backward, the CMS levels whose windows close, then the outer optimizer. Both backends get the same
initial weights (one seed) and the same batch; they are warmed up, then timed round-robin (one step
of each per round, the device synchronised around each step); tokens/s is B·T over the median step
time. The script prints the card, both rates and their ratio, the first step's loss on each backend
(they start from the same weights, so they agree to float32 rounding), which memory levels run
generated kernels and which fall back to the chunked path (and why), how many fused prologue kernels
(convolution, gates, norms) one step launches, and how many aten operators that run a kernel one step
issues on each backend (one more step, counted: a small model's GPU step is bound by issuing them).
With --graphs, on a GPU, each backend also runs as `nlc train --cuda-graphs` does (runtime/train/graphs.py:
a segment whose key recurs is replayed as a CUDA graph; the second step captures, so such a loop warms
up at least two steps), with its losses checked against the same backend's eager loop step by step.

Without a GPU the script runs on the CPU under the Triton interpreter (TRITON_INTERPRET=1) at tiny
shapes, to show that the harness works end to end; interpreter times are not speed figures, and the
output says that it made no GPU figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

from timing import profile_table  # benchmarks/gpu/timing.py

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

GPU_SHAPE = (8, 512)   # (batch, tokens)
TINY_SHAPE = (1, 16)   # one 16-token CMS window of hope.nl


def build(spec: str, backend: str, device: torch.device, dtype: torch.dtype, seed: int, workdir: str,
          graphs: bool = False):
    """The compiled spec on `backend` as `nlc train` loads it, and its NestedLoop (replaying its segments as
    CUDA graphs with `graphs`)."""
    from nldsl.compiler import _import_package, compile_spec, write_package
    from nldsl.diagnostics import SpecError
    from nldsl.runtime import set_backend
    from nldsl.runtime.optim import make_optimizer
    from nldsl.runtime.train import NestedLoop

    fe, files = compile_spec(spec)
    if files is None:
        raise SpecError(fe.diagnostics)
    package = write_package(files, workdir, "model", force=True)
    module = _import_package(package)
    torch.manual_seed(seed)
    model = set_backend(module.Model(), backend).to(device=device, dtype=dtype)
    info = json.loads((package / "levels.json").read_text())["runtime"]
    capture = None
    if graphs:
        from nldsl.runtime.train.graphs import CudaGraphs
        capture = CudaGraphs()
    return model, NestedLoop(model, info, make_optimizer, graphs=capture)


def level_report(model, device: torch.device, dtype: torch.dtype) -> list[tuple[str, str]]:
    """(memory level, 'generated kernels' or the reason it falls back to the chunked path)."""
    from nldsl.runtime import MemoryLevel
    from nldsl.runtime.triton import triton_unavailable
    from nldsl.runtime.triton.registry import kernels_for

    probe = torch.zeros(1, device=device, dtype=dtype)
    rows, seen = [], set()
    for module in model.modules():
        if not isinstance(module, MemoryLevel) or module.level_name in seen:
            continue
        seen.add(module.level_name)
        reason = triton_unavailable(probe)
        if reason is None:
            kernels, reason = kernels_for(module.cfg, module.objective, module.level_name)
            reason = reason if kernels is None else ""
        rows.append((module.level_name, "generated kernels" if not reason else f"falls back: {reason}"))
    return rows


# aten operators that run no kernel: views and allocations
_NO_KERNEL = {"view", "_unsafe_view", "reshape", "expand", "as_strided", "transpose", "t", "permute", "select",
              "slice", "unsqueeze", "squeeze", "detach", "alias", "split", "split_with_sizes", "unbind", "narrow",
              "diagonal", "unflatten", "view_as", "empty", "empty_like", "empty_strided", "new_empty",
              "new_empty_strided", "lift_fresh", "_local_scalar_dense"}


def operators_per_step(loop, batch) -> int:
    """aten operators of one step that run a kernel (no views, no allocations, not counting the generated
    kernels themselves). On a GPU each is a launch from Python, and the step of a model this small is
    bound by issuing them, not by the arithmetic. Under the interpreter the tensors it copies in and out
    of a kernel are not counted."""
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    from nldsl.runtime.triton import backend as triton_backend

    interpreting = triton_backend.interpreting()
    count = 0

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal count
            if func.__name__.split(".")[0] not in _NO_KERNEL and not (
                    interpreting and any("interpreter" in f.filename for f in traceback.extract_stack())):
                count += 1
            return func(*args, **(kwargs or {}))

    with Count():
        loop.step(batch)
    return count


def timed(loop, batch, device) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    loss = loop.step(batch).loss
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, loss


def check_counts(ap, args, positive: tuple) -> None:
    """Refuse (argparse's usage error) the options of `positive` below 1 and --warmup below 0."""
    for name in positive:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        ap.error("--warmup must be at least 0")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="examples/hope.nl")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int, help="tokens per sequence (default 512 on a GPU)")
    ap.add_argument("--steps", type=int, help="timed rounds (default 5 on a GPU, 1 with --tiny)")
    ap.add_argument("--warmup", type=int, help="untimed steps per backend first (default 2 on a GPU, 1 with --tiny)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (implied without a GPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--graphs", action="store_true",
                    help="on a GPU, also time each backend with its segments replayed as CUDA graphs")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one more step of each backend: GPU kernels and the operators' CPU time")
    args = ap.parse_args(argv)
    check_counts(ap, args, ("batch", "seq", "steps"))

    from nldsl.diagnostics import SpecError
    from nldsl.runtime.triton import TritonFallbackWarning
    from nldsl.runtime.triton import backend as triton_backend

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    tiny = args.tiny or not cuda
    if not cuda and args.dtype != "float32":
        print("the Triton interpreter runs float32 only; using float32")
        args.dtype = "float32"
    dtype = getattr(torch, args.dtype)
    batch_size, seq = TINY_SHAPE if tiny else GPU_SHAPE
    batch_size, seq = args.batch or batch_size, args.seq or seq
    steps = args.steps or (1 if tiny else 5)
    warmup = args.warmup if args.warmup is not None else (1 if tiny else 2)
    card = torch.cuda.get_device_name(device) if cuda else "no GPU (CPU, Triton interpreter)"
    interpreting = triton_backend.interpreting()

    print(f"spec {args.spec}; device: {card}; B={batch_size}, T={seq}, {args.dtype}; "
          f"{warmup} warm-up step(s), {steps} timed round(s)")
    if interpreting:
        print("TRITON_INTERPRET=1: the kernels run in the Triton interpreter; its times are not speed figures")
    if args.graphs and not cuda:
        print("--graphs: CUDA graphs need a GPU; timing the eager loops only")
    variants = [(b, b, False) for b in ("chunked", "triton")]
    graphed_loops = args.graphs and cuda
    if graphed_loops:
        variants += [(f"{b}+graphs", b, True) for b in ("chunked", "triton")]

    with tempfile.TemporaryDirectory(prefix="nlc-train-step-") as workdir:
        try:
            loops = {}
            for name, backend, graphed in variants:
                loops[name] = build(args.spec, backend, device, dtype, args.seed, os.path.join(workdir, name), graphed)
        except SpecError as e:
            print(f"{args.spec}: the spec does not compile:", file=sys.stderr)
            for d in e.diagnostics:
                print(f"  {d.code}: {d.message}", file=sys.stderr)
            return 1
        vocab = loops["chunked"][0].vocab_size
        gen = torch.Generator().manual_seed(args.seed)
        batch = torch.randint(0, vocab, (batch_size, seq + 1), generator=gen).to(device)

        levels = level_report(loops["triton"][0], device, dtype)
        from nldsl.runtime.triton import prologue

        first_loss, times, losses = {}, {b: [] for b in loops}, {b: [] for b in loops}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TritonFallbackWarning)
            # a graphed loop captures in its second step: every loop warms up as long, so that each round
            # finds them all at the same step
            warm = max(warmup, 2) if graphed_loops else warmup
            prologue_per_step = {}
            for backend, (_, loop) in loops.items():
                launches_before = dict(prologue.LAUNCHES)
                for i in range(warm):
                    t, loss = timed(loop, batch, device)
                    first_loss.setdefault(backend, loss)
                    losses[backend].append(loss)
                    print(f"  warm-up {backend:14s} step {i + 1}: {t:8.3f} s  loss {loss:.4f}")
                if backend == "triton":   # the eager loop: every launch goes through Python
                    prologue_per_step = {k: (prologue.LAUNCHES[k] - launches_before[k]) // max(warm, 1)
                                         for k in launches_before}
            for r in range(steps):
                for backend, (_, loop) in loops.items():
                    t, loss = timed(loop, batch, device)
                    first_loss.setdefault(backend, loss)
                    times[backend].append(t)
                    losses[backend].append(loss)
                    print(f"  round {r + 1} {backend:14s}: {t:8.3f} s  loss {loss:.4f}")
            operators = {backend: operators_per_step(loop, batch) for backend, (_, loop) in loops.items()}
            if args.profile:
                for backend, (_, loop) in loops.items():
                    print(f"  profile of one {backend} step:")
                    print(profile_table(lambda: loop.step(batch)), flush=True)
        fell_back = sorted({str(w.message) for w in caught if issubclass(w.category, TritonFallbackWarning)})

    rate = {b: batch_size * seq / statistics.median(ts) for b, ts in times.items()}
    ratio = rate["triton"] / rate["chunked"]
    print()
    print("memory levels on the triton backend:")
    for name, how in levels:
        print(f"  {name:32s} {how}")
    expected = {f"memory level {name}: triton backend falls back to the chunked path: {how[len('falls back: '):]}"
                for name, how in levels if how.startswith("falls back: ")}
    for message in fell_back:
        if message not in expected:
            print(f"  warning during the run: {message}")
    fused = {k: v for k, v in prologue_per_step.items() if v} if warmup else {}
    print("fused prologue kernels per step: " + (", ".join(f"{k} {v}" for k, v in fused.items()) or "none"))
    print(f"first-step loss: chunked {first_loss['chunked']:.6f}, triton {first_loss['triton']:.6f}")
    print("aten operators that run a kernel, per step (besides the generated kernels): "
          + ", ".join(f"{b} {n:,d}" for b, n in operators.items()))
    print()
    print(f"| backend | tokens/s | median step (s) |   ({card})")
    print("|---|---|---|")
    for b in loops:
        print(f"| {b} | {rate[b]:,.0f} | {statistics.median(times[b]):.3f} |")
    print(f"triton / chunked: {ratio:.2f}x")
    graphed = {}
    for name in (n for n in loops if n.endswith("+graphs")):
        eager = name[:-len("+graphs")]
        graphed[name] = {"against_eager": rate[name] / rate[eager], "against_chunked": rate[name] / rate["chunked"],
                         "largest_loss_difference": max(abs(a - b) for a, b in zip(losses[name], losses[eager])),
                         "counts": dict(loops[name][1].graphs.counts)}
        g = graphed[name]
        print(f"{name} / {eager}: {g['against_eager']:.2f}x; / chunked: {g['against_chunked']:.2f}x; losses of the "
              f"same steps differ by at most {g['largest_loss_difference']:.1e}; segments {g['counts']}")
    if interpreting:
        print("These figures come from the Triton interpreter on a CPU: they are not speed figures, "
              "so there are no GPU figures from this run.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"spec": args.spec, "device": card, "interpreter": interpreting, "batch": batch_size,
                       "seq": seq, "dtype": args.dtype, "tokens_per_s": rate, "ratio": ratio,
                       "step_s": times, "first_loss": first_loss,
                       "levels": [{"level": n, "status": s} for n, s in levels],
                       "fallback_warnings": fell_back, "prologue_launches_per_step": fused,
                       "aten_kernel_operators_per_step": operators, "graphs": graphed}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
