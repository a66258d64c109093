"""The fused prologue kernels (runtime/triton/prologue.py) against the PyTorch ops they replace: short
causal convolution + activation + per-head l2norm, bounded gates, L2Norm and RMSNorm, outputs and gradients
(inputs, carried cache, conv weights and bias, norm weights), and a compiled example whose prologue
and memory run on the triton backend against the chunked one."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the fused kernels cannot run")

import torch  # noqa: E402

from nldsl.compiler import load  # noqa: E402
from nldsl.runtime import BoundedGate, L2Norm, MemoryLevel, RMSNorm, ShortConv, l2norm, set_backend  # noqa: E402
from nldsl.runtime.triton import TritonFallbackWarning  # noqa: E402
from nldsl.runtime.triton import prologue  # noqa: E402
from triton_testkit import OUTPUT_RATIO, compare_model_runs, ratio  # noqa: E402

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]
TIGHT = 1e-5  # float32, the same sums in nearly the same order
# the kernels run natively on a GPU, under the interpreter on a CPU (conftest.py sets TRITON_INTERPRET=1)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def launches(name: str) -> int:
    return prologue.LAUNCHES[name]


def conv_case(width, window, bias, batch, tokens, with_cache, seed=0):
    torch.manual_seed(seed)
    conv = ShortConv(width, window, bias=bias).to(DEVICE)
    if bias:
        with torch.no_grad():
            conv.bias.normal_()
    x = torch.randn(batch, tokens, width, device=DEVICE, requires_grad=True)
    cache = torch.randn(batch, window - 1, width, device=DEVICE, requires_grad=True) if with_cache else None
    return conv, x, cache


def conv_run(conv, x, cache, backend, act, heads):
    conv.backend = backend
    y, new_cache = conv(x, cache, act=act, l2norm_heads=heads)
    weights = torch.linspace(-1.0, 2.0, y.numel(), device=DEVICE).reshape(y.shape)
    loss = (y * weights).sum() + (new_cache * new_cache).sum()
    leaves = [t for t in (x, cache, conv.weight, conv.bias) if t is not None]
    return y, new_cache, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("width, window, heads, act, bias, batch, tokens, with_cache", [
    (12, 4, 3, "silu", True, 2, 23, True),      # l2norm per head of 4, T not a multiple of the tile
    (8, 4, 2, "identity", False, 2, 13, False),  # HOPE's q: l2norm(conv(..)), no cache yet
    (40, 4, None, "silu", True, 2, 17, True),    # v: silu(conv(..)); channels over several tiles
    (24, 3, 4, "sigmoid", False, 3, 9, True),
    (6, 2, 2, "tanh", True, 1, 30, False),       # a head of 3 channels (tile padded to 4)
    (16, 4, None, "softplus", False, 2, 2, True),  # fewer tokens than the window: the cache shifts
    (10, 1, 5, "relu", True, 2, 11, True),       # window 1: no cache at all
    (8, 4, 2, "silu", False, 2, 1, True),        # one token with a carried cache (decoding)
])
def test_fused_conv_act_norm_matches_the_pytorch_ops(width, window, heads, act, bias, batch, tokens, with_cache):
    conv, x, cache = conv_case(width, window, bias, batch, tokens, with_cache)
    before = (launches("conv_fwd"), launches("conv_bwd"))
    y, c1, grads = conv_run(conv, x, cache, "triton", act, heads)
    assert (launches("conv_fwd"), launches("conv_bwd")) == (before[0] + 1, before[1] + 1)
    y0, c0, grads0 = conv_run(conv, x, cache, "chunked", act, heads)
    assert y.shape == y0.shape and ratio(y0, y) <= TIGHT
    assert torch.equal(c0, c1)
    assert len(grads) == len(grads0)
    for g0, g in zip(grads0, grads):
        assert g0.shape == g.shape and ratio(g0, g) <= TIGHT


def test_a_fused_conv_run_in_pieces_equals_one_run():
    conv, x, _ = conv_case(12, 4, True, 2, 19, False)
    conv.backend = "triton"
    with torch.no_grad():
        whole, _ = conv(x, None, act="silu", l2norm_heads=3)
        a, cache = conv(x[:, :2], None, act="silu", l2norm_heads=3)
        b, cache = conv(x[:, 2:11], cache, act="silu", l2norm_heads=3)
        c, _ = conv(x[:, 11:], cache, act="silu", l2norm_heads=3)
    assert ratio(whole, torch.cat([a, b, c], dim=1)) <= TIGHT


@pytest.mark.parametrize("act, scale, shift", [("sigmoid", 0.25, 0.0), ("sigmoid", 0.5, 0.5),
                                               ("softplus", -1.0, 0.0), ("tanh", -0.1, 1.0)])
def test_fused_bounded_gate_matches_the_pytorch_chain(act, scale, shift):
    torch.manual_seed(1)
    gate = BoundedGate(act, scale=scale, shift=shift)
    z = (3 * torch.randn(2, 37, 4, device=DEVICE)).requires_grad_(True)
    dy = torch.randn(2, 37, 4, device=DEVICE)
    before = (launches("gate_fwd"), launches("gate_bwd"))
    gate.backend = "triton"
    y = gate(z)
    (dz,) = torch.autograd.grad(y, z, dy)
    assert (launches("gate_fwd"), launches("gate_bwd")) == (before[0] + 1, before[1] + 1)
    gate.backend = "chunked"
    y0 = gate(z)
    (dz0,) = torch.autograd.grad(y0, z, dy)
    assert ratio(y0, y) <= TIGHT and ratio(dz0, dz) <= TIGHT


def test_the_pytorch_gate_is_the_specs_expression_bit_for_bit():
    z = torch.randn(3, 11, 4)
    assert torch.equal(BoundedGate("sigmoid", scale=0.5, shift=0.5)(z), 0.5 + 0.5 * torch.sigmoid(z))
    assert torch.equal(BoundedGate("sigmoid", scale=-0.1, shift=1.0)(z), 1.0 - 0.1 * torch.sigmoid(z))
    assert torch.equal(BoundedGate("softplus", scale=-1.0)(z), -1.0 * torch.nn.functional.softplus(z))


@pytest.mark.parametrize("width, shape", [(24, (2, 7)), (128, (3, 5)), (5, (11,))])
def test_fused_rmsnorm_matches_the_pytorch_ops(width, shape):
    torch.manual_seed(2)
    norm = RMSNorm(width).to(DEVICE)
    with torch.no_grad():
        norm.weight.add_(0.3 * torch.randn(width, device=DEVICE))
    x = torch.randn(*shape, width, device=DEVICE, requires_grad=True)
    dy = torch.randn(*shape, width, device=DEVICE)
    before = (launches("rms_fwd"), launches("rms_bwd"))
    norm.backend = "triton"
    y = norm(x)
    gx, gw = torch.autograd.grad(y, (x, norm.weight), dy)
    assert (launches("rms_fwd"), launches("rms_bwd")) == (before[0] + 1, before[1] + 1)
    norm.backend = "chunked"
    y0 = norm(x)
    gx0, gw0 = torch.autograd.grad(y0, (x, norm.weight), dy)
    assert ratio(y0, y) <= TIGHT and ratio(gx0, gx) <= TIGHT and ratio(gw0, gw) <= TIGHT


@pytest.mark.parametrize("heads, shape", [(4, (2, 9, 32)), (3, (2, 5, 12)), (2, (7, 10))])
def test_fused_l2norm_matches_the_pytorch_ops(heads, shape):
    torch.manual_seed(3)
    norm = L2Norm(heads)
    x = torch.randn(*shape, device=DEVICE, requires_grad=True)
    dy = torch.randn(*shape, device=DEVICE)
    before = (launches("l2_fwd"), launches("l2_bwd"))
    norm.backend = "triton"
    y = norm(x)
    (gx,) = torch.autograd.grad(y, x, dy)
    assert (launches("l2_fwd"), launches("l2_bwd")) == (before[0] + 1, before[1] + 1)
    y0 = l2norm(x, heads)
    (gx0,) = torch.autograd.grad(y0, x, dy)
    assert ratio(y0, y) <= TIGHT and ratio(gx0, gx) <= TIGHT


class _Unread(torch.autograd.Function):
    """Passes `used` on and reads nothing of `unread`: no gradient for it, as any backward gives none
    to an input it does not read."""

    @staticmethod
    def forward(ctx, used, unread):
        return used.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


@pytest.mark.parametrize("layer", ["conv", "rmsnorm", "gate", "l2norm"])
def test_a_fused_layer_whose_output_gets_no_gradient_gives_its_inputs_none(layer):
    """As the PyTorch ops do: zeros would reach the parameters before the layer (on triton only)."""
    conv, x, cache = conv_case(8, 4, True, 2, 9, True)
    norm = RMSNorm(8).to(DEVICE)
    fused = {"conv": lambda t: conv(t, cache, act="silu", l2norm_heads=2)[0], "rmsnorm": norm,
             "gate": BoundedGate("sigmoid", scale=0.5, shift=0.5), "l2norm": L2Norm(2)}[layer]
    for backend in ("chunked", "triton"):
        conv.backend = norm.backend = backend
        if layer != "conv":
            fused.backend = backend
        before = sum(prologue.LAUNCHES.values())
        u = x.detach().clone().requires_grad_(True)
        x.grad = conv.weight.grad = norm.weight.grad = None
        _Unread.apply(x * 2, fused(u)).sum().backward()
        assert (sum(prologue.LAUNCHES.values()) > before) == (backend == "triton")
        assert torch.equal(x.grad, torch.full_like(x, 2.0)), backend
        assert u.grad is None and conv.weight.grad is None and norm.weight.grad is None, backend


def test_other_backends_and_a_cpu_without_the_interpreter_run_the_pytorch_ops(monkeypatch):
    conv, x, cache = conv_case(8, 4, False, 2, 9, True)
    conv, x, cache = conv.cpu(), x.detach().cpu(), cache.detach().cpu()
    norm, gate, l2 = RMSNorm(8), BoundedGate("sigmoid", scale=0.5), L2Norm(2)
    before = dict(prologue.LAUNCHES)
    for backend in ("chunked", "reference"):
        conv.backend = norm.backend = gate.backend = l2.backend = backend
        conv(x, cache, act="silu", l2norm_heads=2), norm(x), gate(x), l2(x)
    conv.backend = "triton"
    conv(x, cache, act="gelu")  # no fused gelu: the PyTorch ops
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    conv.backend = norm.backend = gate.backend = l2.backend = "triton"
    conv(x, cache, act="silu", l2norm_heads=2), norm(x), gate(x), l2(x)
    assert prologue.LAUNCHES == before


def test_an_empty_call_passes_the_cache_on():
    conv, x, cache = conv_case(8, 4, True, 2, 0, True)
    conv.backend = "triton"
    y, new_cache = conv(x, cache, act="silu", l2norm_heads=2)
    assert y.shape == (2, 0, 8) and torch.equal(new_cache, cache)


def test_bad_conv_options_are_refused_with_a_message():
    conv, x, cache = conv_case(8, 4, False, 1, 5, True)
    for backend in ("chunked", "triton"):
        conv.backend = backend
        with pytest.raises(ValueError, match="unknown activation"):
            conv(x, cache, act="swish")
        with pytest.raises(ValueError, match="does not split into 3 heads"):
            conv(x, cache, l2norm_heads=3)


def test_set_backend_reaches_the_prologue_layers():
    model = load(ROOT / "examples/gated_deltanet.nl", backend="triton")
    layers = [m for m in model.modules() if isinstance(m, (ShortConv, BoundedGate, RMSNorm))]
    assert {type(m) for m in layers} == {ShortConv, BoundedGate, RMSNorm}
    assert {m.backend for m in layers} == {"triton"}
    assert {m.backend for m in set_backend(model, "chunked").modules() if m in layers} == {"chunked"}


def _train_step(model, tokens):
    logits, _ = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, model.vocab_size), tokens[:, 1:].reshape(-1))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return logits.detach(), grads


def test_gated_deltanet_with_a_fused_prologue_matches_chunked():
    torch.manual_seed(0)
    model = load(ROOT / "examples/gated_deltanet.nl", backend="triton").to(DEVICE)
    tokens = torch.randint(0, model.vocab_size, (2, 11), device=DEVICE)
    before = dict(prologue.LAUNCHES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonFallbackWarning)
        logits, grads = _train_step(model, tokens)
    # 2 layers × 3 convolutions, 2 layers × 1 bounded gate (g), 2 × 3 + 1 RMS norms; forward and backward
    ran = {name: prologue.LAUNCHES[name] - before[name] for name in before}
    assert ran == {"conv_fwd": 6, "conv_bwd": 6, "gate_fwd": 2, "gate_bwd": 2, "rms_fwd": 7, "rms_bwd": 7,
                   "l2_fwd": 0, "l2_bwd": 0}
    logits0, grads0 = _train_step(set_backend(model, "chunked"), tokens)
    compare_model_runs((logits0, grads0), (logits, grads))
    convs = [n for n in grads0 if n.endswith("_conv.weight")]
    assert len(convs) == 6 and all(ratio(grads0[n], grads[n]) <= OUTPUT_RATIO for n in convs)


def test_hope_with_a_fused_prologue_matches_chunked():
    """HOPE's q convolution + l2norm, its k and v l2norms, its η and α gates (their gradients reach the
    loss once a sequence passes the 16-token chunk of its memory `mem`) and its RMS norms fused, its
    memories on the chunked path: the prologue alone makes the difference, so it must be float32
    rounding."""
    torch.manual_seed(0)
    model = load(ROOT / "examples/hope.nl", backend="triton").to(DEVICE)
    for module in model.modules():
        if isinstance(module, MemoryLevel):
            module.backend = "chunked"
    tokens = torch.randint(0, model.vocab_size, (2, 21), device=DEVICE)
    before = dict(prologue.LAUNCHES)
    logits, grads = _train_step(model, tokens)
    ran = {name: prologue.LAUNCHES[name] - before[name] for name in before}
    # 2 layers: 1 convolution, 2 gates and 2 l2norms (k, v) × 3 segments of the self-modifying group,
    # 2 + 2 + 1 RMS norms
    assert ran == {"conv_fwd": 2, "conv_bwd": 2, "gate_fwd": 12, "gate_bwd": 12, "rms_fwd": 5, "rms_bwd": 5,
                   "l2_fwd": 12, "l2_bwd": 12}
    logits0, grads0 = _train_step(set_backend(model, "chunked"), tokens)
    assert ratio(logits0, logits) <= TIGHT
    assert set(grads) == set(grads0)
    for name in grads0:
        assert ratio(grads0[name], grads[name]) <= 1e-4, name
    assert any(name.endswith("eta_gate") for name, _ in model.named_modules())
    assert any(name.endswith("eta.weight") for name in grads0)
