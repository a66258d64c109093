"""tanh, softplus and power as the kernels compute them (runtime/triton/elementwise.py): tanh and softplus
within a few float32 roundings of the value at every magnitude, where 2σ(2x) − 1 and log(1 + e^x) lose
all relative precision near 0 and far below it, and the fused prologue keeping that precision on small
values, which a norm after it brings back to full size; a fractional power torch's, 0 included, with no
log of 0 evaluated."""
from __future__ import annotations

import warnings

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the kernels cannot run")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from nldsl.runtime import BoundedGate, ShortConv  # noqa: E402
from nldsl.runtime.triton.elementwise import power, softplus, tanh  # noqa: E402

pytestmark = pytest.mark.triton
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ULPS = 8 * torch.finfo(torch.float32).eps  # a few roundings of float32, relative


def exp_bound(x: torch.Tensor) -> torch.Tensor:
    """A few roundings, plus what a GPU's e^x loses: Triton takes it as 2^(x log2 e), and rounding that
    argument to float32 costs up to |x| 2^-24 of the result, relatively (4.8e-6 at x = -80; the
    interpreter's numpy exp rounds once)."""
    return ULPS + x.double().abs() * torch.finfo(torch.float32).eps / 2


@triton.jit
def _apply(x, y, N, FN: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    u = tl.load(x + i, mask=ok, other=0.0)
    out = tanh(u) if FN == 0 else softplus(u)
    tl.store(y + i, out, mask=ok)


def kernel_values(fn: int, x: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x)
    _apply[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), FN=fn, BLOCK=256)
    return y


def magnitudes() -> torch.Tensor:
    """Float32 values from 1e-30 to 80 in both signs, zero, and the edges of each branch."""
    steps = torch.logspace(-30, 1.9, 4001, dtype=torch.float64)
    edges = torch.tensor([0.0, 0.4999999, 0.5, 0.5000001, 17.0, 17.5, 18.0, 20.0, 40.0], dtype=torch.float64)
    both = torch.cat([steps, -steps, edges, -edges])
    return both.float().to(DEVICE)


def relative_error(values: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return (values.double() - exact).abs() / exact.abs().clamp_min(torch.finfo(torch.float32).tiny)


def test_tanh_keeps_relative_precision_at_every_magnitude():
    x = magnitudes()
    exact = torch.tanh(x.double())
    error = relative_error(kernel_values(0, x), exact)
    assert float(error.max()) <= ULPS, f"worst at x = {float(x[error.argmax()]):.3g}: {float(error.max()):.2e}"


def test_softplus_keeps_relative_precision_at_every_magnitude():
    x = magnitudes()
    exact = torch.nn.functional.softplus(x.double(), threshold=1000.0)
    excess = relative_error(kernel_values(1, x), exact) - exp_bound(x)
    worst = int(excess.argmax())
    assert float(excess[worst]) <= 0, f"worst at x = {float(x[worst]):.3g}: {float(excess[worst]):.2e} beyond the bound"


def test_a_fused_tanh_conv_of_small_values_matches_the_pytorch_ops_relatively():
    """The conv's tanh output of inputs near 1e-4, relative to its size (an absolute comparison would see
    nothing), outputs and gradients."""
    torch.manual_seed(0)
    conv = ShortConv(16, window=2).to(DEVICE)
    x = (1e-4 * torch.randn(2, 9, 16, device=DEVICE)).requires_grad_(True)
    weights = torch.linspace(-1.0, 2.0, 2 * 9 * 16, device=DEVICE).reshape(2, 9, 16)
    runs = {}
    for backend in ("chunked", "triton"):
        conv.backend = backend
        y, _ = conv(x, None, act="tanh")
        runs[backend] = (y.detach(), *torch.autograd.grad((y * weights).sum(), [x, conv.weight]))
    for expected, actual in zip(runs["chunked"], runs["triton"]):
        assert float((actual - expected).norm() / expected.norm()) <= 1e-6


def test_a_fused_softplus_gate_far_below_zero_matches_the_pytorch_chain_relatively():
    """-softplus(z) for z down to −40 (a log retention near 0): the PyTorch chain's value, relatively."""
    gate = BoundedGate("softplus", scale=-1.0, shift=0.0)
    z = torch.linspace(-40.0, -10.0, 301, device=DEVICE)
    gate.backend = "chunked"
    expected = gate(z)
    gate.backend = "triton"
    assert bool((relative_error(gate(z), expected.double()) <= exp_bound(z)).all())


@triton.jit
def _power(x, y, N, P: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    tl.store(y + i, power(tl.load(x + i, mask=ok, other=1.0), P), mask=ok)


@pytest.mark.parametrize("p", [1.5, 0.5, -0.5, 2.5])
def test_power_of_a_float_exponent_is_torchs_including_at_zero(p):
    """x ** p of the objectives' derivatives (lp with a fractional p): 0 ** p and every other value as
    torch computes them, without a log of 0."""
    x = torch.cat([torch.zeros(3), torch.logspace(-12, 12, 301)]).to(DEVICE)
    y = torch.empty_like(x)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "divide by zero", RuntimeWarning)
        _power[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), P=p, BLOCK=256)
    exact = x.double() ** p
    assert torch.equal(y[x == 0].double(), exact[x == 0])  # 0 for p > 0, inf for p < 0
    # exp(p log x) carries log's rounding times |p log x|, up to 70 here: within 1e-5 (84 roundings)
    assert float(relative_error(y[x > 0], exact[x > 0]).max()) <= 1e-5
