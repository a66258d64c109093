"""A budget for the CPU benchmarks: this machine's matmul peak, the matmul FLOPs of a call, and its
kernel floor (every operator it runs, timed alone).

A ratio goal above what the FLOPs allow cannot be met by a faster implementation, only by doing fewer
FLOPs; a goal above what the kernel floor allows cannot be met by removing overhead between the
operators (Python, dispatch), only by faster or fewer operators. The benchmarks print both bounds
beside their timings.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
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


@dataclass(frozen=True)
class KernelFloor:
    """What a call's operators cost with nothing between them: each distinct operator call (same
    operator, shapes, strides, dtypes and other arguments) replayed alone on fresh inputs, hot in cache,
    its best time multiplied by how often the call made it. Views are left out (they launch no work).
    The cost of calling an operator from Python is taken off each. A lower bound on the call's time for
    this decomposition into operators: what removing every cost between the operators (Python,
    dispatch, cold caches) could reach, and no more."""

    total_ms: float
    matmul_ms: float
    operators: int                      # operator calls that ran work (views excluded)
    distinct: int
    unreplayed: int                     # operator calls whose replay failed (counted as 0 ms)
    top: list[tuple[str, int, float]]   # (operator and shapes, calls, ms in all), the costliest first


_MATMULS = {'bmm', 'mm', 'baddbmm', 'addmm', 'addbmm', 'matmul'}


def kernel_floor(fn: Callable[[], object], repeats: int = 5, top: int = 8) -> KernelFloor:
    """Record every operator fn() dispatches, then time each distinct one alone (see KernelFloor)."""
    recorder = _Recorder()
    with recorder:
        fn()
    overhead = _call_overhead(repeats)
    total = matmul = 0.0
    failed = 0
    costs = []
    for (func, args, kwargs), count in recorder.counts.items():
        try:
            ms = max(0.0, _replay(func, args, kwargs, repeats) - overhead) * count * 1e3
        except Exception:           # an operator whose arguments random data cannot satisfy
            failed += count
            continue
        total += ms
        if func.overloadpacket.__name__.rstrip('_') in _MATMULS:
            matmul += ms
        costs.append((f"{func.overloadpacket.__name__} {_shapes(args)}", count, ms))
    costs.sort(key=lambda cost: -cost[2])
    return KernelFloor(total, matmul, sum(recorder.counts.values()), len(recorder.counts), failed, costs[:top])


@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple
    stride: tuple
    dtype: torch.dtype
    device: str

    def make(self) -> torch.Tensor:
        # the storage the layout spans (an expanded tensor's is smaller than its shape), filled with
        # values in (0.5, 1) like the gates (running products of them stay normal numbers), or zeros
        span = 1 + sum((size - 1) * stride for size, stride in zip(self.shape, self.stride)) \
            if all(self.shape) else 0
        storage = torch.empty(span, dtype=self.dtype, device=self.device)
        storage = storage.uniform_(0.5, 1.0) if self.dtype.is_floating_point else storage.zero_()
        return storage.as_strided(self.shape, self.stride)


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not func.is_view:
            self.counts[(func, _freeze(args), _freeze(tuple(kwargs.items())))] += 1
        return func(*args, **kwargs)


def _freeze(value):
    """A hashable stand-in for operator arguments: tensors by their layout, lists as tuples."""
    if isinstance(value, torch.Tensor):
        return _TensorSpec(tuple(value.shape), tuple(value.stride()), value.dtype, value.device.type)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _shapes(args: tuple) -> str:
    """The tensor arguments' shapes, a list of tensors in brackets: '[8, 16, 64] x [8, 64, 256]'."""
    parts = []
    for arg in args:
        if isinstance(arg, _TensorSpec):
            parts.append(str(list(arg.shape)))
        elif isinstance(arg, tuple) and any(isinstance(a, _TensorSpec) for a in arg):
            parts.append(f"[{_shapes(arg)}]")
    return ' x '.join(parts)


def _thaw(value):
    if isinstance(value, _TensorSpec):
        return value.make()
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _replay(func, args: tuple, kwargs: tuple, repeats: int) -> float:
    """Best seconds of func alone on fresh arguments of the recorded layouts (after one warm-up)."""
    call_args, call_kwargs = _thaw(args), {name: _thaw(value) for name, value in kwargs}
    func(*call_args, **call_kwargs)
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        func(*call_args, **call_kwargs)
        best = min(best, time.perf_counter() - start)
    return best


def _call_overhead(repeats: int) -> float:
    """Seconds an operator call from Python costs doing nothing (an alias of a small tensor), taken
    off every replayed call: the floor counts the operators' work only."""
    alias, tensor = torch.ops.aten.alias.default, torch.zeros(4)
    return min(_replay(alias, (_freeze(tensor),), (), repeats) for _ in range(3))
