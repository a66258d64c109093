"""Timing and comparison helpers shared by the GPU benchmarks (importable when a script runs from
benchmarks/gpu/, which Python puts first on the path)."""
from __future__ import annotations

import statistics
import time

import torch


def time_call(fn, repeats: int, warmup: int, synchronise: bool = False) -> float:
    """Median milliseconds of fn() (CUDA events on a GPU, wall clock otherwise). On a GPU the calls run
    back to back, each between two events, and the host waits once at the end (as
    triton.testing.do_bench does): the host's work for a call overlaps the device's work for the one
    before, so a call costs its device time, or its host time where that is longer. `synchronise` waits
    for every call before issuing the next: each call then also pays the time its host work takes to
    reach the device."""
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        events = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
            if synchronise:
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        return statistics.median(start.elapsed_time(end) for start, end in events)
    times = []
    for _ in range(repeats):
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


def profile(fn, calls: int = 1, rows: int = 12) -> tuple[str, float]:
    """Where one call of fn() spends its time (torch.profiler, `calls` calls): on a GPU each CUDA kernel's
    device time, largest first; and on any device the operators' own CPU time (what issuing them costs,
    which bounds a small model's GPU step). Returns the table and the device time of one call in
    milliseconds (the sum of its kernels; 0 without a GPU)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize()
    events = list(prof.key_averages())
    lines, device_ms = [], 0.0
    if cuda:
        kernels = sorted((e for e in events if e.device_time_total > 0 and e.device_type.name == "CUDA"),
                         key=lambda e: e.device_time_total, reverse=True)
        total = sum(e.device_time_total for e in kernels)
        device_ms = total / calls / 1e3
        lines.append(f"    GPU time per call {device_ms:.3f} ms, largest kernels:")
        lines += [f"      {e.key[:60]:<60} {e.device_time_total / calls / 1e3:9.3f} ms {100 * e.device_time_total / total:5.1f}%"
                  f"  x{e.count // calls}" for e in kernels[:rows]]
    ops = sorted((e for e in events if e.self_cpu_time_total > 0), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    lines.append(f"    CPU time per call {total / calls / 1e3:.3f} ms (operators' own), largest:")
    lines += [f"      {e.key[:60]:<60} {e.self_cpu_time_total / calls / 1e3:9.3f} ms {100 * e.self_cpu_time_total / total:5.1f}%"
              f"  x{e.count // calls}" for e in ops[:rows]]
    return "\n".join(lines), device_ms


def profile_table(fn, calls: int = 1, rows: int = 12) -> str:
    """The table of `profile`."""
    return profile(fn, calls, rows)[0]
