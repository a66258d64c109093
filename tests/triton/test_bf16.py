"""On a GPU: the generated kernels with bf16 inputs (states, gates' products and norms in float32 inside
the kernels) against the float64 reference, within the bf16 ratios of docs/semantics.md §6; and whole
compiled models under bf16 autocast, where the triton backend must be no less accurate than the
chunked PyTorch path under the same autocast. The reference sees the same bf16-rounded inputs, so
what is measured is the kernels' arithmetic, not the rounding of their inputs. Skipped without CUDA
(the Triton interpreter has no bf16 tl.dot)."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402

from nldsl.compiler import load  # noqa: E402
from nldsl.runtime import MemoryConfig, MemoryLevel, Rule, set_backend, standard_objective  # noqa: E402
from nldsl.runtime.triton import TritonFallbackWarning  # noqa: E402
from nldsl.runtime.triton.registry import kernels_for  # noqa: E402
from triton_testkit import ANCHOR_RATIO, OUTPUT_RATIO, Case, compare, model_run, ratio, run_path, run_reference  # noqa: E402

pytestmark = [pytest.mark.triton,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 kernels need a GPU")]
ROOT = Path(__file__).resolve().parents[2]


def linear(rules, chunk, read="after", self_target=False, dim=64):
    return MemoryConfig("linear", dim, dim, rules=tuple(Rule(*r) if isinstance(r, tuple) else Rule(r) for r in rules),
                        read=read, chunk=chunk, self_target=self_target)


def mlp(rules, chunk, read="after", self_target=False, dim=32, hidden=64):
    return MemoryConfig("mlp", dim, dim, depth=2, hidden=hidden, act="silu", residual=True,
                        rules=tuple(Rule(r) for r in rules), read=read, chunk=chunk, self_target=self_target)


CASES = {
    "gated_deltanet": (linear(["retain", ("gd", "current")], chunk=1), "l2"),
    "deltanet_wy": (linear(["delta", "gd"], chunk=1), "dot"),
    "titans_linear": (linear(["retain", "momentum"], chunk=16, read="anchor"), "l2"),
    "ttt_linear": (linear(["gd"], chunk=16), "l2"),
    "hope_matrix": (linear(["dgd"], chunk=16, read="anchor", self_target=True), "l2"),
    "titans_mlp": (mlp(["retain", "momentum"], chunk=16, read="anchor"), "mse"),
    "ttt_mlp": (mlp(["gd"], chunk=16), "l2"),
    "hope_mlp_dgd": (mlp(["dgd"], chunk=16, read="anchor", self_target=True), "l2"),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("tokens, position", [(100, None), (77, 5)])
def test_bf16_kernels_match_the_float64_reference(name, tokens, position):
    cfg, objective = CASES[name]
    objective = standard_objective(objective)
    found, reason = kernels_for(cfg, objective, f"bf16.{name}")
    assert found is not None, reason
    case = Case(cfg, objective, batch=2, heads=4, tokens=tokens, position=position, seed=tokens,
                eta_max=0.2 if cfg.kind == "mlp" else 0.4, dtype=torch.bfloat16)
    tri = run_path(case, "triton", found)
    assert tri.y.dtype == torch.bfloat16 and tri.y.is_cuda
    compare(run_reference(case), tri, f"{name}: bf16 triton vs float64 reference")


@pytest.mark.parametrize("spec", ["examples/gated_deltanet.nl", "examples/titans.nl", "examples/hope.nl"])
def test_a_model_under_bf16_autocast_is_as_accurate_on_triton_as_on_chunked(spec):
    """Errors against the float32 chunked model: triton under autocast within the §6 ratios, or at
    most 1.5 times the chunked path's own error under the same autocast."""
    torch.manual_seed(0)
    model = load(ROOT / spec, backend="chunked")
    logits32, grads32 = model_run(model, tokens=64)
    runs = {}
    for backend in ("chunked", "triton"):
        set_backend(model, backend)
        with torch.autocast("cuda", dtype=torch.bfloat16), warnings.catch_warnings():
            warnings.simplefilter("error" if spec.endswith("gated_deltanet.nl") else "ignore", TritonFallbackWarning)
            runs[backend] = model_run(model, tokens=64)
    assert {m.backend for m in model.modules() if isinstance(m, MemoryLevel)} == {"triton"}
    (lc, gc), (lt, gt) = runs["chunked"], runs["triton"]
    assert ratio(logits32, lt) <= max(OUTPUT_RATIO, 1.5 * ratio(logits32, lc))
    for name in grads32:
        assert ratio(grads32[name], gt[name]) <= max(ANCHOR_RATIO, 1.5 * ratio(grads32[name], gc[name])), name
