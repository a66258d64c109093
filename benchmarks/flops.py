"""A FLOP budget for the CPU benchmarks: this machine's matmul peak and the matmul FLOPs of a call.

A ratio goal above what the FLOPs allow cannot be met by a faster implementation, only by doing fewer
FLOPs; the benchmarks print this bound beside their timings.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(repeats: int = 5, size: int = 1024) -> float:
    """GFLOP/s of the best of `repeats` size x size float32 matmuls on the current torch threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def matmul_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products that fn() runs (torch.utils.flop_counter: matmuls and convolutions
    only; elementwise work and triangular solves are not counted)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
