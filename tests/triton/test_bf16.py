"""Low precision. On a GPU: the generated kernels with bf16 inputs (states, gates' products and norms in
float32 inside the kernels) against the float64 reference, within the bf16 ratios of docs/semantics.md
§6, at head width 32 to 64 and 77 to 100 tokens. The reference sees the same bf16-rounded inputs, so
what is measured is the kernels' arithmetic, not the rounding of their inputs. Without a GPU the same
cases run in bf16 at tiny sizes under the interpreter (its bf16 tl.dot is wrong, but the kernels convert
bf16 inputs to float32 as they load them, so none runs; its conversions to bf16 round to the nearest, as a
GPU's do: conftest.py), which keeps this file's logic and the kernels'
bf16 inputs and outputs tested everywhere. And whole compiled models under bf16 autocast (CUDA, or the CPU's
autocast under the interpreter), where the triton backend must be no less accurate than the chunked
PyTorch path under the same autocast."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402

from nldsl.compiler import load  # noqa: E402
from nldsl.runtime import MemoryConfig, MemoryLevel, Rule, set_backend, standard_objective  # noqa: E402
from nldsl.runtime.triton import TritonFallbackWarning  # noqa: E402
from nldsl.runtime.triton.registry import kernels_for  # noqa: E402
from triton_testkit import (ANCHOR_RATIO, DEVICE, OUTPUT_RATIO, Case, compare, emulate_tensor_cores, model_run,  # noqa: E402
                            ratio, run_forward, run_path, run_reference)

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]
GPU = DEVICE.type == "cuda"
WIDTH = 64 if GPU else 8


def linear(rules, chunk, read="after", self_target=False, dim=WIDTH):
    return MemoryConfig("linear", dim, dim, rules=tuple(Rule(*r) if isinstance(r, tuple) else Rule(r) for r in rules),
                        read=read, chunk=chunk, self_target=self_target)


def mlp(rules, chunk, read="after", self_target=False, dim=WIDTH // 2, hidden=WIDTH, bias=False):
    return MemoryConfig("mlp", dim, dim, depth=2, hidden=hidden, act="silu", residual=True, bias=bias,
                        rules=tuple(Rule(r) for r in rules), read=read, chunk=chunk, self_target=self_target)


def cases(width: int, chunk: int) -> dict:
    return {
        "gated_deltanet": (linear(["retain", ("gd", "current")], chunk=1, dim=width), "l2"),
        "deltanet_wy": (linear(["delta", "gd"], chunk=1, dim=width), "dot"),
        "titans_linear": (linear(["retain", "momentum"], chunk=chunk, read="anchor", dim=width), "l2"),
        "ttt_linear": (linear(["gd"], chunk=chunk, dim=width), "l2"),
        "hope_matrix": (linear(["dgd"], chunk=chunk, read="anchor", self_target=True, dim=width), "l2"),
        "titans_mlp": (mlp(["retain", "momentum"], chunk=chunk, read="anchor", dim=width // 2, hidden=width), "mse"),
        "ttt_mlp": (mlp(["gd"], chunk=chunk, dim=width // 2, hidden=width), "l2"),
        "titans_mlp_bias": (mlp(["retain", "momentum"], chunk=chunk, dim=width // 2, hidden=width, bias=True), "mse"),
        "hope_mlp_dgd": (mlp(["dgd"], chunk=chunk, read="anchor", self_target=True, dim=width // 2, hidden=width),
                         "l2"),
    }


CASES = cases(WIDTH, 16 if GPU else 4)
SIZES = [(100, None), (77, 5)] if GPU else [(13, 3), (37, None)]   # (tokens, carried-in position)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("tokens, position", SIZES)
def test_low_precision_kernels_match_the_float64_reference(name, tokens, position):
    cfg, objective = CASES[name]
    objective = standard_objective(objective)
    found, reason = kernels_for(cfg, objective, f"low.{name}")
    assert found is not None, reason
    dtype = torch.bfloat16
    case = Case(cfg, objective, batch=2, heads=4 if GPU else 2, tokens=tokens, position=position, seed=tokens,
                eta_max=0.2 if cfg.family == "mlp" else 0.4, dtype=dtype)
    tri = run_path(case, "triton", found)
    assert tri.y.dtype == dtype and tri.y.device.type == DEVICE.type
    compare(run_reference(case), tri, f"{name}: {dtype} triton vs float64 reference")


@pytest.mark.parametrize("name", ["gated_deltanet", "deltanet_wy"])
@pytest.mark.parametrize("settings", [{"tile": 32}, {"walk_precision": "bf16"}, {"backward_precision": "tf32"},
                                      {"states_every": 2}],
                         ids=["tile32", "walk-bf16", "backward-tf32", "states-every-2"])
def test_low_precision_wy_kernels_at_other_settings(name, settings):
    """The wy form's kernels at settings that are not the default, bf16 against the float64 reference,
    forward and backward: 32-token tiles (on a GPU the walks then take fewer rows and the tile-parallel
    kernels 8 warps), walks that multiply in bf16, and the tile-parallel backward on tf32 tensor cores
    (both on a GPU only; the interpreter multiplies in float32), and every second tile's start state
    stored in bf16, the others made again by the backward walk."""
    cfg, objective = CASES[name]
    objective = standard_objective(objective)
    found, reason = kernels_for(cfg, objective, f"low.other.{name}")
    assert found is not None, reason
    found = dataclasses.replace(found, **settings)
    tokens, position = SIZES[1]
    case = Case(cfg, objective, batch=2, heads=4 if GPU else 2, tokens=tokens, position=position, seed=3,
                eta_max=0.4, dtype=torch.bfloat16)
    compare(run_reference(case), run_path(case, "triton", found), f"{name}: bf16 triton at {settings}")


@pytest.mark.parametrize("name", ["gated_deltanet", "deltanet_wy"])
@pytest.mark.parametrize("walk_tiles", [2, 4])
def test_low_precision_forward_over_merged_tiles(name, walk_tiles):
    """A bf16 forward without gradients that walks several tiles a step (their terms merged, in bf16
    where they are stored so): the float64 reference's outputs and state, from a carried-in state."""
    cfg, objective = CASES[name]
    objective = standard_objective(objective)
    found, reason = kernels_for(cfg, objective, f"low.merged.{name}")
    assert found is not None, reason
    found = dataclasses.replace(found, walk_tiles=walk_tiles, launches={n: 0 for n in found.launches})
    tokens, position = (100, 5) if GPU else (37, 3)
    case = Case(cfg, objective, batch=2, heads=4 if GPU else 2, tokens=tokens, position=position, seed=4,
                eta_max=0.4, dtype=torch.bfloat16)
    compare(run_reference(case), run_forward(case, found), f"{name}: bf16, {walk_tiles} tiles a step", grads=False)
    assert found.launches["merge"] == 1


@pytest.mark.skipif(GPU, reason="on a GPU the test above runs on its tensor cores")
@pytest.mark.parametrize("name, streamed", [("hope_matrix", False), ("gated_deltanet", False), ("deltanet_wy", False),
                                             ("hope_mlp_dgd", False), ("hope_mlp_dgd", True), ("titans_mlp_bias", False),
                                             ("titans_mlp_bias", True)])
def test_tf32_tensor_cores_keep_bf16_kernels_within_the_contract(monkeypatch, name, streamed):
    """The test above at a GPU's sizes, with tl.dot in tf32 as a tensor core computes it (the operands
    truncated to tf32). A carried state accumulates truncation's one-sided error (HOPE's matrix memory
    reached 5.7e-3 on an H100); the kernels round their operands to the nearest tf32 first. The wy form's
    walks (Gated DeltaNet, DeltaNet) multiply in bf16, as on a GPU (WALK_PRECISION). `streamed`:
    the MLP's kernels with its state in global memory, blocks of 16 hidden units, the forward split over
    two programs per head."""
    emulate_tensor_cores(monkeypatch)
    cfg, objective = cases(64, 16)[name]
    objective = standard_objective(objective)
    found, reason = kernels_for(cfg, objective, f"tf32.{name}")
    assert found is not None, reason
    if streamed:
        found = dataclasses.replace(found, stream=True, hidden_block=16, slices=2)
    case = Case(cfg, objective, batch=2, heads=4, tokens=77, position=5, seed=77,
                eta_max=0.2 if cfg.family == "mlp" else 0.4, dtype=torch.bfloat16)
    tri = run_path(case, "triton", found)
    assert found.precision(torch.bfloat16) == "tf32"
    compare(run_reference(case), tri, f"{name}: bf16 triton on emulated tf32 tensor cores vs float64 reference")


@pytest.mark.parametrize("spec", ["examples/gated_deltanet.nl", "examples/titans.nl", "examples/hope.nl"])
def test_a_model_under_bf16_autocast_is_as_accurate_on_triton_as_on_chunked(spec):
    """Errors against the float32 chunked model: triton under autocast within the §6 ratios, or at
    most 1.5 times the chunked path's own error under the same autocast."""
    torch.manual_seed(0)
    tokens = 64 if GPU else 16
    model = load(ROOT / spec, backend="chunked")
    logits32, grads32 = model_run(model, tokens=tokens)
    runs = {}
    for backend in ("chunked", "triton"):
        set_backend(model, backend)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16), warnings.catch_warnings():
            warnings.simplefilter("error" if spec.endswith("gated_deltanet.nl") else "ignore", TritonFallbackWarning)
            runs[backend] = model_run(model, tokens=tokens)
    assert {m.backend for m in model.modules() if isinstance(m, MemoryLevel)} == {"triton"}
    (lc, gc), (lt, gt) = runs["chunked"], runs["triton"]
    assert ratio(logits32, lt) <= max(OUTPUT_RATIO, 1.5 * ratio(logits32, lc))
    for name in grads32:
        assert ratio(grads32[name], gt[name]) <= max(ANCHOR_RATIO, 1.5 * ratio(grads32[name], gc[name])), name
