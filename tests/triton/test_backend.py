"""`MemoryLevel.backend = 'triton'`: compiled models run their memories on the generated kernels
(here under the Triton interpreter), agree with the chunked backend, and fall back to it with one
warning naming the level and the reason where the kernels cannot run."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from nldsl.cli import main  # noqa: E402
from nldsl.compiler import load, load_block  # noqa: E402
from nldsl.runtime import BACKENDS, MemoryConfig, MemoryLevel, Rule, set_backend, standard_objective  # noqa: E402
from nldsl.runtime.triton import TritonFallbackWarning  # noqa: E402
from nldsl.runtime.triton.registry import kernels_for  # noqa: E402
from specs import memory_spec  # noqa: E402
from triton_testkit import DEVICE, FLOAT32_RATIO, OUTPUT_RATIO, compare_model_runs, model_run, ratio  # noqa: E402

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]


def level(cfg, objective="l2", name="blk.mem", heads=2):
    torch.manual_seed(0)
    lv = MemoryLevel(cfg, standard_objective(objective), heads, name=name)
    with torch.no_grad():
        for p in lv.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return lv.to(DEVICE)


def inputs(cfg, heads=2, tokens=10, seed=1, device=DEVICE):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, tokens, heads * cfg.dk, generator=gen) * cfg.dk ** -0.5
    k = torch.randn(2, tokens, heads * cfg.dk, generator=gen) * cfg.dk ** -0.5
    v = torch.randn(2, tokens, heads * cfg.dv, generator=gen)
    gates = {"lr": 0.3 * torch.rand(2, tokens, heads, generator=gen),
             "retain": 0.7 + 0.3 * torch.rand(2, tokens, heads, generator=gen),
             "momentum": 0.8 * torch.rand(2, tokens, heads, generator=gen)}
    return q.to(device), k.to(device), v.to(device), {n: g.to(device) for n, g in gates.items()}


def run_level(lv, cfg, backend):
    lv.backend = backend
    device = next(lv.parameters()).device
    q, k, v, gates = (x.requires_grad_(True) if isinstance(x, torch.Tensor) else x for x in inputs(cfg, device=device))
    gates = {n: g.requires_grad_(True) for n, g in gates.items() if n in ("lr", "retain", "momentum")}
    y, state = lv(q, k, v, gates)
    loss = (y * torch.linspace(-1, 1, y.shape[-1], device=y.device)).sum() + sum(p.sum() for p in state.params.values())
    loss.backward()
    grads = {"q": q.grad, "k": k.grad, "v": v.grad, **{n: g.grad for n, g in gates.items()}}
    grads.update({n: p.grad.clone() for n, p in lv.named_parameters()})
    lv.zero_grad()
    return y, state, grads


CFG = MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("momentum")), chunk=4, read="anchor")


def test_the_triton_backend_is_a_backend():
    assert "triton" in BACKENDS
    assert "triton" in CliRunner().invoke(main, ["train", "--help"]).output


def test_a_memory_level_runs_its_kernels_and_matches_chunked():
    lv = level(CFG)
    found, _ = kernels_for(CFG, lv.objective, "blk.mem")
    before = dict(found.launches)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonFallbackWarning)
        y, state, grads = run_level(lv, CFG, "triton")
    assert found.launches["fwd"] == before["fwd"] + 1 and found.launches["bwd"] == before["bwd"] + 1
    y0, state0, grads0 = run_level(lv, CFG, "chunked")
    assert ratio(y0, y) <= FLOAT32_RATIO
    assert ratio(state0.params["W"], state.params["W"]) <= FLOAT32_RATIO
    for name in grads0:
        assert ratio(grads0[name], grads[name]) <= FLOAT32_RATIO, name


def test_without_the_interpreter_on_a_cpu_it_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    lv = level(CFG, name="blk.cpu").cpu()
    with pytest.warns(TritonFallbackWarning, match=r"memory level blk\.cpu: .*TRITON_INTERPRET=1 is not set") as got:
        y, _, _ = run_level(lv, CFG, "triton")
        run_level(lv, CFG, "triton")
    assert len([w for w in got if issubclass(w.category, TritonFallbackWarning)]) == 1
    y0, _, _ = run_level(lv, CFG, "chunked")
    assert torch.equal(y, y0)


def test_an_mlp_memory_without_a_fused_form_falls_back_and_says_why():
    cfg = MemoryConfig("mlp", 8, 8, depth=3, hidden=8, rules=(Rule("gd"),), chunk=4, residual=True)
    lv = level(cfg, name="blk.deep")
    with pytest.warns(TritonFallbackWarning, match=r"memory level blk\.deep: .*MLP memory of depth 3 has no fused kernel"):
        y, _, _ = run_level(lv, cfg, "triton")
    y0, _, _ = run_level(lv, cfg, "chunked")
    assert torch.equal(y, y0)


@pytest.mark.parametrize("cfg", [
    MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("gd")), chunk=4, clip=0.3),
    MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("momentum")), chunk=1, clip=0.3),
    MemoryConfig("mlp", 8, 8, depth=2, hidden=8, rules=(Rule("retain"), Rule("momentum")), chunk=4, clip=0.3),
], ids=["linear-dual", "linear-step", "mlp"])
def test_a_memory_with_clip_runs_its_kernels(cfg):
    lv = level(cfg, name="blk.clipped")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonFallbackWarning)
        y, _, grads = run_level(lv, cfg, "triton")
    kernels, _ = kernels_for(cfg, standard_objective("l2"), "blk.clipped")
    assert sum(kernels.launches.values()) > 0
    y0, _, grads0 = run_level(lv, cfg, "chunked")
    unclipped, _, _ = run_level(level(dataclasses.replace(cfg, clip=None), name="blk.clipped"), cfg, "chunked")
    assert ratio(y, y0) < FLOAT32_RATIO and ratio(y0, unclipped) > 100 * FLOAT32_RATIO  # the bound bites
    for name, want in grads0.items():
        assert (want is None) == (grads[name] is None) and (want is None or ratio(grads[name], want) < FLOAT32_RATIO)


@pytest.mark.parametrize("spec", ["examples/gated_deltanet.nl", "examples/ttt_linear.nl"])
def test_a_compiled_example_on_the_triton_backend_matches_chunked(spec):
    torch.manual_seed(0)
    model = load(ROOT / spec, backend="triton")
    assert {m.backend for m in model.modules() if isinstance(m, MemoryLevel)} == {"triton"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonFallbackWarning)
        run = model_run(model)
    compare_model_runs(model_run(set_backend(model, "chunked")), run)


def test_a_block_alone_runs_its_memories_on_the_kernels():
    """`nldsl.load_block(..., backend='triton')`: the block's memory and prologue on the generated
    kernels, outputs and every gradient (the input's too) as on the chunked path."""
    torch.manual_seed(0)
    layer = load_block(ROOT / "examples/gated_deltanet.nl", "gdn_block", backend="triton").to(DEVICE)
    assert {m.backend for m in layer.modules() if isinstance(m, MemoryLevel)} == {"triton"}
    x = torch.randn(2, 10, layer.width_in, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    runs = []
    for backend in ("chunked", "triton"):
        set_backend(layer, backend)
        xb = x.clone().requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("error", TritonFallbackWarning)
            y, _ = layer(xb)
        (y * torch.linspace(-1, 1, y.shape[-1], device=y.device)).sum().backward()
        runs.append((y.detach(), {"x": xb.grad, **{n: p.grad.clone() for n, p in layer.named_parameters()}}))
        layer.zero_grad()
    (y0, grads0), (y1, grads1) = runs
    assert ratio(y0, y1) < FLOAT32_RATIO
    for name, want in grads0.items():
        assert ratio(want, grads1[name]) < FLOAT32_RATIO, name


@pytest.mark.parametrize("kind", ["linear", "mlp(depth = 2, hidden = 16, act = silu)"])
@pytest.mark.parametrize("spec, unread", [("gate_never_read.nl", "mix.alpha.weight"),
                                          ("memory_never_writes.nl", "mix.v.weight"),
                                          ("memory_only_erases.nl", "mix.v.weight")])
def test_what_no_rule_reads_gets_no_gradient_on_any_backend(kind, spec, unread, tmp_path):
    """A gate that no rule reads, and the values of a memory that never writes (`retain` or `delta`
    alone): the kernels would give them zeros, and AdamW would decay their projections on triton only;
    the memory level cuts them out of the graph, so no backend gives them a gradient, through the fused
    gate too."""
    text = (ROOT / "tests/errors" / spec).read_text(encoding="utf-8")
    text = text.replace("linear per head {", f"{kind} per head {{\n      chunk 4")
    text = text.replace("alpha = sigmoid(", "alpha = 0.5 + 0.5 * sigmoid(")  # a fused gate on triton
    (tmp_path / "unread.nl").write_text(text, encoding="utf-8")
    torch.manual_seed(0)
    model = load(tmp_path / "unread.nl", backend="triton")
    fused = kind == "linear" or spec == "gate_never_read.nl"  # an MLP that never writes has no kernels
    with warnings.catch_warnings():
        warnings.simplefilter("error" if fused else "ignore", TritonFallbackWarning)
        run = model_run(model)
    compare_model_runs(model_run(set_backend(model, "chunked")), run)
    compare_model_runs(model_run(set_backend(model, "reference")), run)
    assert unread in dict(model.named_parameters()) and unread not in run[1]


@pytest.mark.parametrize("loss", ["sqrt(1 + r * r) - 1", "softplus(r) ** 2 - r"])
def test_a_custom_objective_runs_on_its_packages_kernels(loss, tmp_path):
    """The objective's derivative is generated into the package's kernels (the second one's calls the
    kernels' softplus) and agrees with the chunked path's torch code."""
    spec = tmp_path / "custom.nl"
    spec.write_text(memory_spec(name="custom_memory", objective=f"custom({loss})",
                                update="retain, gd", read="before write"), encoding="utf-8")
    torch.manual_seed(0)
    model = load(spec, backend="triton")
    (lv,) = [m for m in model.modules() if isinstance(m, MemoryLevel)]
    found, reason = kernels_for(lv.cfg, lv.objective, lv.level_name)
    assert found is not None, reason
    assert found.fwd.fn.__module__.endswith(".kernels")  # the compiled package's kernels.py
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonFallbackWarning)
        run = model_run(model)
    compare_model_runs(model_run(set_backend(model, "chunked")), run)


def test_a_memory_stack_runs_its_first_members_kernels_for_every_members_heads():
    """HOPE's four generator memories run as one stack: one launch of the generated kernels with the heads of
    all four, equal to the four levels run on the chunked path."""
    from nldsl.runtime import MemoryStack

    cfg = MemoryConfig("mlp", 8, 8, depth=2, hidden=8, residual=True, rules=(Rule("dgd"),), chunk=4, read="anchor",
                       self_target=True)
    levels = [level(cfg, name=f"blk.stack{i}") for i in range(3)]
    for i, lv in enumerate(levels):
        with torch.no_grad():
            for p in lv.parameters():
                p.add_(0.1 * i)
    q, k, v, gates = inputs(cfg, device=next(levels[0].parameters()).device)
    gates = {n: gates[n] for n in ("lr", "retain")}
    found, _ = kernels_for(cfg, levels[0].objective, "blk.stack0")
    before = found.launches["fwd"]
    stack = MemoryStack(*levels)
    set_backend(torch.nn.ModuleList(levels), "triton")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonFallbackWarning)
        outputs, state = stack(q, k, v, gates)
    assert found.launches["fwd"] == before + 1
    set_backend(torch.nn.ModuleList(levels), "chunked")
    for lv, y, s in zip(levels, outputs, stack.split_state(state)):
        y0, s0 = lv(q, k, v, gates)
        assert ratio(y0, y) <= OUTPUT_RATIO
        assert ratio(s0.params["W1"], s.params["W1"]) <= OUTPUT_RATIO


POISONED = {
    "titans linear (dual form)": CFG,
    "gated deltanet (wy form)": MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("gd", at="current"))),
    "titans mlp": MemoryConfig("mlp", 8, 8, depth=2, hidden=8, residual=True, rules=(Rule("retain"), Rule("momentum")),
                               chunk=4),
    "hope mlp": MemoryConfig("mlp", 8, 8, depth=2, hidden=8, residual=True, rules=(Rule("dgd"),), chunk=4,
                             read="anchor", self_target=True),
}


@pytest.mark.parametrize("name", list(POISONED))
def test_the_kernels_write_every_element_of_the_buffers_they_are_given_uninitialised(name, monkeypatch):
    """The launchers allocate outputs and gradients with torch.empty where a kernel writes them in full (no
    zero fill: one launch less each on a GPU). With every such buffer filled with NaN first, forward and
    backward still equal the chunked path's."""
    cfg = POISONED[name]
    lv = level(cfg, name=f"blk.poison_{len(name)}")
    y0, state0, grads0 = run_level(lv, cfg, "chunked")
    real_empty, real_empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: real_empty(*a, **kw).fill_(float("nan")))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: real_empty_like(*a, **kw).fill_(float("nan")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonFallbackWarning)
        y, state, grads = run_level(lv, cfg, "triton")
    assert ratio(y0, y) <= FLOAT32_RATIO
    for key in state0.params:
        assert ratio(state0.params[key], state.params[key]) <= FLOAT32_RATIO, key
    for key in grads0:
        if grads0[key] is None:   # a gate the rules do not read: no gradient, or zeros
            assert grads[key] is None or not grads[key].any(), key
            continue
        assert torch.isfinite(grads[key]).all(), key
        assert ratio(grads0[key], grads[key]) <= FLOAT32_RATIO, key


def test_a_memory_stack_that_falls_back_names_every_member(monkeypatch):
    from nldsl.runtime import MemoryStack

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    levels = [level(CFG, name=f"blk.cpu_stack{i}").cpu() for i in range(2)]
    set_backend(torch.nn.ModuleList(levels), "triton")
    q, k, v, gates = inputs(CFG, device=torch.device("cpu"))
    with pytest.warns(TritonFallbackWarning) as got:
        MemoryStack(*levels)(q, k, v, gates)
    named = sorted(str(w.message).split(":")[0] for w in got if issubclass(w.category, TritonFallbackWarning))
    assert named == ["memory level blk.cpu_stack0", "memory level blk.cpu_stack1"]


def test_kernels_launch_on_the_device_of_their_inputs():
    """Triton launches on the current CUDA device; a forward on cuda:1 makes cuda:1 current for its
    launches (checked without a GPU: the guard is made, not entered)."""
    from types import SimpleNamespace

    from nldsl.runtime.triton.backend import on_device

    guard = on_device(SimpleNamespace(is_cuda=True, device=torch.device("cuda", 1)))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(on_device(torch.zeros(1)), torch.cuda.device)
