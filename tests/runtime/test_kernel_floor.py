"""benchmarks/flops.py's kernel floor: every operator of a call recorded, replayed alone and summed."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def kernel_floor(fn, repeats: int):
    """flops.kernel_floor, imported when a test runs: flops imports torch's flop counter, which imports
    Triton, and Triton imported while the suite is collected, before tests/triton sets TRITON_INTERPRET,
    would not interpret the kernels of the Triton tests."""
    from flops import kernel_floor as measure

    return measure(fn, repeats=repeats)


def test_it_counts_each_operator_call_once_and_views_not_at_all():
    a, b = torch.randn(4, 32, 32), torch.randn(4, 32, 32)

    def call():
        c = torch.bmm(a, b)
        d = torch.bmm(c, b).transpose(1, 2)        # a view: no work
        return torch.bmm(d, a) + c

    floor = kernel_floor(call, repeats=2)
    assert floor.operators == 4 and floor.unreplayed == 0
    # the transposed operand is a layout of its own, so three distinct operator calls
    assert floor.distinct == 3
    assert 0 < floor.matmul_ms <= floor.total_ms
    names = [what.split()[0] for what, _, _ in floor.top]
    assert names.count("bmm") == 2 and "add" in names
    twice = [what for what, count, _ in floor.top if count == 2]
    assert twice == ["bmm [4, 32, 32] x [4, 32, 32]"]


def test_expanded_inputs_lists_and_in_place_operators_replay():
    base = torch.randn(1, 8)

    def call():
        wide = base.expand(16, 8)                  # stride 0: its replay must not write to it twice
        out = torch.cat([wide, wide * 2.0], dim=0)
        return out.mul_(0.5).cumprod(0)

    floor = kernel_floor(call, repeats=2)
    assert floor.unreplayed == 0 and floor.operators == 4
    assert any(what.startswith("cat [[16, 8] x [16, 8]]") for what, _, _ in floor.top)
    assert floor.matmul_ms == 0 and floor.total_ms > 0


def test_a_backward_pass_run_by_the_call_is_recorded_too():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(32, 64)

    def forward():
        return (x @ w).square().sum()

    def forward_backward():
        torch.autograd.grad(forward(), [w])

    assert kernel_floor(forward_backward, repeats=1).operators > kernel_floor(forward, repeats=1).operators + 2
