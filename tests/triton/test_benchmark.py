"""benchmarks/gpu/kernels_vs_fla.py runs end to end on a CPU (Triton interpreter, tiny shapes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the full bf16 benchmark")
def test_the_gpu_benchmark_runs_under_the_interpreter_and_says_there_are_no_gpu_figures(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", NLC_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, "benchmarks/gpu/kernels_vs_fla.py", "--json", str(out),
                             "--walk-tiles", "1,2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no GPU figures from this run" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    assert all(r["error_vs_chunked"] <= 5e-3 for r in rows)
    # the backward kernels against the chunked path's gradients, in every forward + backward row
    # a row per shape, mode and walk (single or merged tiles), each checked against the chunked path
    assert sorted((r["tokens"], r["mode"], r["walk_tiles"]) for r in rows) == sorted(
        (tokens, mode, walk) for tokens in (40, 23) for mode in ("fwd", "fwd+bwd") for walk in (1, 2))
    assert [r["mode"] for r in rows if "grad_error_vs_chunked" in r] == ["fwd+bwd"] * 4
    assert all(r["grad_error_vs_chunked"] <= 5e-3 for r in rows if r["mode"] == "fwd+bwd")
    if "fla present" not in result.stdout:
        assert "fla absent" in result.stdout and not any("fla_ms" in r for r in rows)
