"""benchmarks/gpu/titans_vs_titans_pytorch.py runs end to end on a CPU (Triton interpreter, tiny size)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")
pytest.importorskip("titans_pytorch", reason="titans-pytorch is not installed: nothing to compare against")

import torch  # noqa: E402

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the full comparison")
@pytest.mark.parametrize("stream", [False, True], ids=["on-chip", "streamed"])
def test_the_titans_benchmark_runs_under_the_interpreter_and_says_there_are_no_gpu_figures(tmp_path, stream):
    env = dict(os.environ, TRITON_INTERPRET="1", NLC_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, "benchmarks/gpu/titans_vs_titans_pytorch.py", "--json", str(out)]
                            + (["--stream"] if stream else []),
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no GPU figures from this run" in result.stdout
    assert ("backward: the streamed kernel" if stream else "backward: Triton backward kernel") in result.stdout
    assert ("streamed, 1 program(s) per head forward" in result.stdout) == stream
    rows = json.loads(out.read_text())["rows"]
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    assert all("ours_ms" in r and "peer_ms" in r and "chunked_ms" in r and r["speedup"] > 0 for r in rows)
    assert all(r["streamed"] == stream and not r["fallback"] for r in rows)
    checked = [r["error_vs_chunked"] for r in rows if r["mode"] == "fwd+bwd"]
    assert checked and all(e <= 5e-3 for e in checked)
