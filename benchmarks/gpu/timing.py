"""Timing and comparison helpers shared by the GPU benchmarks (importable when a script runs from
benchmarks/gpu/, which Python puts first on the path)."""
from __future__ import annotations

import statistics
import time

import torch


def time_call(fn, repeats: int, warmup: int) -> float:
    """Median milliseconds of fn() (CUDA events on a GPU, wall clock otherwise)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def peak_memory_mb(fn) -> float:
    """Peak CUDA memory allocated during one fn() above what was allocated before it, in MB (0 on a CPU)."""
    if not torch.cuda.is_available():
        return 0.0
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2 ** 20


def rel(a, b) -> float:
    """RMS of a - b relative to the RMS of b."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-12)).item()
