"""A compiled Titans memory layer against titans-pytorch's NeuralMemory, forward + backward on the CPU.

    pip install titans-pytorch==0.5.5          # the optional `bench` extra: pip install -e .[bench]
    python benchmarks/peer_titans.py [--batch 2] [--tokens 2048] [--repeats 1] [--threads N] [--no-memory]
                                     [--no-flops] [--keep-freed-memory] [--profile]

The peer is `titans_pytorch.NeuralMemory(dim=256, heads=4, chunk_size=64)` with its defaults: dim_head
defaults to dim, so each of the 4 heads has a depth-2 GELU MLP 256 → 1024 → 256 (MemoryMLP with
expansion 4), wrapped in a LayerNorm with a learned gain plus a residual; q, k, v are linear maps of the
RMS-normed input to 4 × 256; the inner loss is the mse weighted by a sigmoid rate; momentum and decay
gates come from each chunk's mean input. Ours is benchmarks/titans_peer.nl compiled by nlc: the same
per-head MLP weights (printed below: titans-pytorch stores them (in, out), nlc (out, in)), the same
projections, sigmoid rate, momentum and retention gates per token, chunk 64, the chunked backend. The
LayerNorm inside the memory and the retrieval gate of titans-pytorch are not in ours (see the spec).
Nor is the point where gradients are taken: titans-pytorch (with its default batch_size, None) takes
every chunk's gradient at the weights the call starts from, in one batched call, and applies momentum
and decay to them with scans afterwards; nlc takes each chunk's gradient at that chunk's anchor, the
state the previous chunks left (docs/semantics.md §2), as the Titans paper's chunked training does
(∇ℓ(M_t'; x_i) with t' = t − mod(t, b)). The FLOPs per chunk are the same; ours must run the chunks
one after another.

Timing: both layers in this process on the same float32 input (B, T, 256), interleaved, after one
warm-up at 128 tokens; the figure is the wall time of forward + backward of `out.square().mean()`, the
best of --repeats, with the process CPU time beside it. Memory: each layer again in a fresh subprocess;
the figure is the peak resident set size of that process during forward + backward (the kernel's
high-water mark VmHWM, reset just before the step; not getrusage's ru_maxrss, which a child process
inherits from its parent across exec) minus its resident size just before, i.e. what the operating
system had to provide for the activations, the autograd graph and the gradients; the ratio of the two
is printed. The last line is `speedup_vs_titans_pytorch: X`, the peer's time over ours (above 1: ours
is faster). `--profile` adds torch.profiler's top operators of ours at 256 tokens.

FLOP budget (skip with --no-flops): each layer's matmul FLOPs for one forward + backward (counted by
torch.utils.flop_counter in one more call), the rate it reached, and `bound`: the speedup ours would
show if it ran at this machine's matmul peak with nothing else to do. The two layers do about the same
FLOPs, so no implementation of ours can beat the peer by more than the peer's own distance from peak.

The allocator matters more than the layers: titans-pytorch materialises per-chunk weights in tensors of
hundreds of MB, and glibc's malloc hands blocks that large back to the kernel when they are freed, so
every call faults all of their pages in again (zeroed): with the default malloc most of the peer's time
is page faults (system time). `--keep-freed-memory` has malloc keep and reuse freed memory (mallopt;
glibc only), which removes that cost for both layers from their second call on: compare both runs.
Prints figures; asserts nothing but the matching weight shapes.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from flops import matmul_flops, matmul_peak

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "benchmarks" / "titans_peer.nl"
DIM, HEADS, CHUNK = 256, 4, 64


def build_ours():
    os.environ.setdefault("NLC_CACHE", tempfile.mkdtemp(prefix="nlc-bench-"))
    import nldsl

    torch.manual_seed(0)
    return nldsl.load(SPEC, backend="chunked").neural_memory


def build_peer():
    from titans_pytorch import NeuralMemory

    torch.manual_seed(0)
    return NeuralMemory(dim=DIM, heads=HEADS, chunk_size=CHUNK)


def run_ours(layer, x):
    return layer(x, {})


def run_peer(layer, x):
    return layer(x)[0]


LAYERS = {"nlc (titans_peer.nl)": (build_ours, run_ours), "titans-pytorch 0.5.5": (build_peer, run_peer)}


def memory_shapes(name: str, layer) -> list[tuple[int, int]]:
    """Per-head weight matrices of the memory MLP as (in, out)."""
    if name.startswith("nlc"):
        return [tuple(reversed(tuple(p.shape[1:]))) for n, p in layer.mem.named_parameters()]
    return [tuple(p.shape[1:]) for p in layer.memory_model_parameters if p.dim() == 3]


def inputs(batch: int, tokens: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, tokens, DIM, generator=gen)


def step(run, layer, x) -> tuple[float, float]:
    layer.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    out = run(layer, x)
    out.square().mean().backward()
    return time.perf_counter() - wall, time.process_time() - cpu


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(name: str, batch: int, tokens: int) -> None:
    """One forward + backward in this (fresh) process; prints the peak memory figures as JSON."""
    build, run = LAYERS[name]
    layer, x = build(), inputs(batch, tokens)
    step(run, layer, inputs(batch, 128))  # the same warm-up as the timing run
    reset_peak()
    before = rss_bytes()
    seconds, _ = step(run, layer, x)
    print(json.dumps({"before": before, "peak": peak_rss_bytes(), "seconds": seconds}))


def reset_peak() -> None:
    """Start the process's high-water mark of resident memory afresh (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """The process's own peak resident set size since reset_peak (VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve blocks of up to 1 GiB from its heap and to keep freed memory for reuse
    instead of handing it back to the kernel (which then faults every page of the next large tensor in
    again, zeroed). The same setting applies to both layers. False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 2 ** 30)) and bool(libc.mallopt(m_trim_threshold, 2 ** 31 - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP budget")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's; 1 avoids thread hand-offs on a busy machine)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="set glibc's malloc to reuse freed large blocks (see keep_freed_memory)")
    parser.add_argument("--child", choices=sorted(LAYERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keep_freed_memory and not keep_freed_memory():
        sys.exit("--keep-freed-memory: this C library is not glibc or refused the setting")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.batch, args.tokens)
        return
    try:
        import titans_pytorch  # noqa: F401
    except ImportError:
        sys.exit("titans-pytorch is not installed: pip install titans-pytorch==0.5.5")

    allocator = "malloc keeps freed memory" if args.keep_freed_memory else "default malloc"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {allocator}; B={args.batch}, "
          f"T={args.tokens}, dim {DIM}, {HEADS} heads, chunk {CHUNK}, float32, forward + backward")
    layers = {name: build() for name, (build, _) in LAYERS.items()}
    shapes = {name: memory_shapes(name, layer) for name, layer in layers.items()}
    for name, layer in layers.items():
        params = sum(p.numel() for p in layer.parameters() if p.requires_grad)
        print(f"  {name}: per-head memory weights (in, out) {shapes[name]}, {params:,} parameters in the layer")
    assert len(set(map(tuple, shapes.values()))) == 1, "the per-head memory weights differ"
    extra = [tuple(p.shape[1:]) for p in layers["titans-pytorch 0.5.5"].memory_model_parameters if p.dim() != 3]
    print(f"  titans-pytorch's memory also holds a LayerNorm gain per head: {extra}")

    x = inputs(args.batch, args.tokens)
    for name, (_, run) in LAYERS.items():
        step(run, layers[name], inputs(args.batch, 128))
    times = {name: [] for name in LAYERS}
    for _ in range(args.repeats):
        for name, (_, run) in LAYERS.items():
            times[name].append(step(run, layers[name], x))
            print(f"  {name}: {times[name][-1][0]:.2f} s wall, {times[name][-1][1]:.2f} s CPU", flush=True)
    best = {name: min(t) for name, t in times.items()}

    memory = {}
    if not args.no_memory:
        for name in LAYERS:
            threads = ["--threads", str(args.threads)] if args.threads else []
            threads += ["--keep-freed-memory"] if args.keep_freed_memory else []
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--batch", str(args.batch),
                                   "--tokens", str(args.tokens), *threads], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"  {name}: memory run failed:\n{proc.stderr[-2000:]}")
                continue
            memory[name] = json.loads(proc.stdout.strip().splitlines()[-1])

    print()
    print(f"{'layer':<24}{'fwd+bwd wall s':>16}{'CPU s':>10}{'peak extra RSS MiB':>20}")
    for name in LAYERS:
        wall, cpu = best[name]
        mib = f"{(memory[name]['peak'] - memory[name]['before']) / 2**20:,.0f}" if name in memory else "-"
        print(f"{name:<24}{wall:>16.2f}{cpu:>10.2f}{mib:>20}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        layer, run = layers["nlc (titans_peer.nl)"], run_ours
        small = inputs(args.batch, 256)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(run, layer, small)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    if not args.no_flops:
        peak = matmul_peak()
        gflop = {name: matmul_flops(lambda: step(run, layers[name], x)) / 1e9 for name, (_, run) in LAYERS.items()}
        ours_name, peer_name = list(LAYERS)
        print(f"\nmatmul FLOPs of one forward + backward (this machine's matmul peak: {peak:.0f} GFLOP/s)")
        for name in LAYERS:
            print(f"  {name:<24}{gflop[name]:8.1f} GFLOP  {gflop[name] / best[name][0]:6.1f} GFLOP/s")
        print(f"  bound: at peak, ours would take {gflop[ours_name] / peak:.2f} s, a speedup of at most "
              f"{best[peer_name][0] / (gflop[ours_name] / peak):.1f}x over this run of titans-pytorch")

    if len(memory) == len(LAYERS):
        extra = {name: m["peak"] - m["before"] for name, m in memory.items()}
        ratio = extra["nlc (titans_peer.nl)"] / extra["titans-pytorch 0.5.5"]
        print(f"peak memory, ours / titans-pytorch: {ratio:.2f}")
    ours, peer = best["nlc (titans_peer.nl)"][0], best["titans-pytorch 0.5.5"][0]
    print(f"speedup_vs_titans_pytorch: {peer / ours:.2f}")


if __name__ == "__main__":
    main()
