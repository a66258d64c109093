"""Compiled models with MLP memories on the triton backend (under the Triton interpreter): the fused
levels run the generated kernels with no fallback and agree with the chunked backend; a level with no
fused form (HOPE's self-modifying dgd memories) falls back with one warning naming it and the reason."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402

from nldsl.compiler import load  # noqa: E402
from nldsl.runtime import MemoryLevel, set_backend  # noqa: E402
from nldsl.runtime.triton import TritonFallbackWarning  # noqa: E402
from nldsl.runtime.triton.launch_mlp import MlpLevelKernels  # noqa: E402
from nldsl.runtime.triton.registry import kernels_for  # noqa: E402
from specs import memory_spec  # noqa: E402
from triton_testkit import DEVICE, ratio, OUTPUT_RATIO, compare_model_runs, model_run  # noqa: E402

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("spec", ["examples/titans.nl", "examples/ttt_mlp.nl"])
def test_a_compiled_mlp_memory_example_on_the_triton_backend_matches_chunked(spec):
    torch.manual_seed(0)
    model = load(ROOT / spec, backend="triton")
    levels = [m for m in model.modules() if isinstance(m, MemoryLevel)]
    for lv in levels:
        found, reason = kernels_for(lv.cfg, lv.objective, lv.level_name)
        assert isinstance(found, MlpLevelKernels), reason
    before = {id(lv): kernels_for(lv.cfg, lv.objective, lv.level_name)[0].launches["bwd"] for lv in levels}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonFallbackWarning)
        run = model_run(model, tokens=20)
    after = {id(lv): kernels_for(lv.cfg, lv.objective, lv.level_name)[0].launches["bwd"] for lv in levels}
    assert all(after[i] > before[i] for i in before)
    compare_model_runs(model_run(set_backend(model, "chunked"), tokens=20), run)


def test_an_mlp_memory_with_a_custom_objective_runs_on_its_packages_kernels(tmp_path):
    spec = tmp_path / "custom_mlp.nl"
    spec.write_text(memory_spec(name="custom_mlp", objective="custom(sqrt(1 + r * r) - 1)", update="retain, gd",
                                read="before write", kind="mlp(depth = 2, hidden = 16, act = silu, residual = true)"),
                    encoding="utf-8")
    torch.manual_seed(0)
    model = load(spec, backend="triton")
    (lv,) = [m for m in model.modules() if isinstance(m, MemoryLevel)]
    found, reason = kernels_for(lv.cfg, lv.objective, lv.level_name)
    assert isinstance(found, MlpLevelKernels), reason
    assert found.fwd.fn.__module__.endswith(".kernels")  # the compiled package's kernels.py
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonFallbackWarning)
        run = model_run(model, tokens=10)
    compare_model_runs(model_run(set_backend(model, "chunked"), tokens=10), run)


def test_a_level_without_a_fused_form_falls_back_with_one_line(tmp_path):
    spec = tmp_path / "deep.nl"
    spec.write_text(memory_spec(name="deep_mlp", update="gd", kind="mlp(depth = 3, hidden = 16, act = silu)"),
                    encoding="utf-8")
    torch.manual_seed(0)
    model = load(spec, backend="triton")
    with pytest.warns(TritonFallbackWarning, match=r"memory level mix\.mem: .*depth 3 has no fused kernel") as got:
        logits, _ = model_run(model, tokens=10)
        model_run(model, tokens=10)
    assert len([w for w in got if issubclass(w.category, TritonFallbackWarning)]) == 1
    logits0, _ = model_run(set_backend(model, "chunked"), tokens=10)
    assert ratio(logits0, logits) <= OUTPUT_RATIO  # the level ran on the chunked path (the prologue may be fused)


def test_on_a_gpu_a_head_too_large_for_the_registers_streams_its_state(monkeypatch):
    """titans-pytorch's default head (256 -> 1024 -> 256) runs the streamed forward on a GPU for a forward
    without gradients and a batch's state up to STREAMED_FORWARD_FLOATS, else the chunked path (measured
    faster), saying why; titans.nl's heads run the on-chip kernels; a package without the streamed kernel
    says why the level falls back."""
    import dataclasses
    from types import SimpleNamespace

    from nldsl.runtime.memory import MemoryConfig, Rule, standard_objective
    from nldsl.runtime.triton.launch_mlp import STREAMED_FORWARD_FLOATS

    def lmm(width, hidden):
        cfg = MemoryConfig("mlp", width, width, depth=2, hidden=hidden, act="gelu", residual=True,
                           rules=(Rule("retain"), Rule("momentum")), read="anchor", chunk=64)
        found, reason = kernels_for(cfg, standard_objective("mse"), f"blk.mem{width}")
        assert found is not None, reason
        return found

    gpu_tensor = SimpleNamespace(is_cuda=True, shape=(2, 4, 2048, 256))   # B = 2, 4 heads: 4.2 M values
    wide_batch = SimpleNamespace(is_cuda=True, shape=(8, 4, 2048, 256))   # B = 8: 16.8 M
    peer, titans = lmm(256, 1024), lmm(32, 64)  # rendered under the interpreter
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert not peer.streams(gpu_tensor)  # the interpreter has no register file
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert 2 * 4 * 1024 * 512 <= STREAMED_FORWARD_FLOATS < 8 * 4 * 1024 * 512
    assert peer.streams(gpu_tensor) and peer.unfit(gpu_tensor) is None
    assert peer.hidden_block == 16  # blocks of 16 x 256 values of W1 and W2
    assert not peer.streams(gpu_tensor, grad=True)
    assert "with gradients the streamed kernels ran slower" in peer.unfit(gpu_tensor, grad=True)
    assert not peer.streams(wide_batch) and "this call: 16777216" in peer.unfit(wide_batch)
    forced = dataclasses.replace(peer, stream=True)
    assert forced.streams(wide_batch, grad=True) and forced.unfit(wide_batch, grad=True) is None
    assert not titans.streams(gpu_tensor) and titans.unfit(gpu_tensor, grad=True) is None  # titans.nl's heads
    assert not peer.streams(SimpleNamespace(is_cuda=False, shape=(2, 4)))
    assert peer.unfit(SimpleNamespace(is_cuda=False, shape=(2, 4)), grad=True) is None
    reason = dataclasses.replace(peer, fwd_streamed=None).unfit(gpu_tensor)
    assert reason and "W1 1024x256" in reason and "does not fit on chip" in reason


def test_the_backend_asks_for_the_streamed_kernels_with_the_calls_need_of_gradients(monkeypatch):
    """run_memory passes the call's need of gradients (grad mode, and any input or state that requires
    one) to the level's choice, which falls back with one line where the streamed kernels are slower."""
    torch.manual_seed(0)
    model = load(ROOT / "examples/titans.nl", backend="triton").to(DEVICE)
    (lv,) = [m for m in model.modules() if isinstance(m, MemoryLevel)][:1]
    found, _ = kernels_for(lv.cfg, lv.objective, lv.level_name)
    asked = []

    def unfit(like, grad=False):
        asked.append(grad)
        return "measured slower" if grad else None

    monkeypatch.setattr(found, "unfit", unfit)
    with torch.no_grad():
        model(torch.randint(0, model.vocab_size, (2, 10), device=DEVICE))
    assert asked and not any(asked)
    asked.clear()
    with pytest.warns(TritonFallbackWarning, match=r"falls back to the chunked path: measured slower"):
        model_run(model, tokens=10)
    assert asked and all(asked)
