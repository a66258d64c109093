"""Generated whole models on the triton backend: the generated kernels and the fused prologue give the
chunked backend's logits and gradients, whatever the drawn spec holds.

The specs are drawn by the strategies of tests/compile/generated_models.py (every memory family, rule,
objective, read order and head layout, self-modifying groups, attention, convolutions, CMS chains); only
those that check clean are used. Each is built in float32, run on both backends with the same weights
and batch, and held to the float32 bounds of triton_testkit, or, for a model that float32 rounding
alone takes further from its float64 reference run, to twice the chunked path's own error. A level
with no fused form falls back to the chunked path with a warning, as it would for a user; the rest of
the model still runs its kernels.

`NLC_FUZZ_EXAMPLES` sets the number of generated specs and draws them afresh each run (default: the
same 4 every run).
"""
from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402
from hypothesis import assume, given  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))

from drawing import drawing  # noqa: E402
from generated_models import SEARCH, models, write  # noqa: E402
from nldsl.compiler import compile_spec, load, write_package  # noqa: E402
from nldsl.runtime import set_backend  # noqa: E402
from nldsl.runtime.triton import TritonFallbackWarning  # noqa: E402
from triton_testkit import FLOAT32_RATIO, compare_model_runs, float32_error, model_run  # noqa: E402

pytestmark = pytest.mark.triton

GENERATED = drawing(4, phases=SEARCH)


@GENERATED
@given(models())
def test_generated_models_on_the_triton_backend_match_chunked(generated):
    """A generated model gives the chunked backend's logits and every parameter's gradient on the triton
    backend (float32, a batch of 2 rows of its whole context)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = write(Path(tmp), generated.model, generated.library)
        fe, files = compile_spec(str(spec))
        assume(fe.ok and files is not None)
        torch.manual_seed(0)
        model = load(write_package(files, str(Path(tmp) / "build"), "model", force=True), backend="triton")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TritonFallbackWarning)  # a level with no fused form runs chunked
            fused = model_run(model, tokens=generated.sizes.context)
        assume(bool(torch.isfinite(fused[0]).all()))  # an inner learner that diverges within the context
        chunked = model_run(set_backend(model, "chunked"), tokens=generated.sizes.context)
        exact = model_run(set_backend(model, "reference").double(), tokens=generated.sizes.context)
        # a deep drawn model can lose more than FLOAT32_RATIO to float32 rounding on any path; the kernels
        # may then differ from chunked by twice what chunked itself loses against float64
        compare_model_runs(chunked, fused, bound=max(FLOAT32_RATIO, 2 * float32_error(exact, chunked)))
