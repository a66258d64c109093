"""benchmarks/gpu/compile_report.py compiles a level's generated kernels for sm_90 on a machine without
a GPU (Triton's bundled ptxas) and reports compile time, registers and spills for every launch."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed")

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]


def test_the_compile_report_compiles_every_launch_for_sm90(tmp_path):
    env = dict(os.environ, NLC_CACHE=str(tmp_path), TRITON_CACHE_DIR=str(tmp_path / "triton"))
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "benchmarks/gpu/compile_report.py", "tiny_linear", "tiny_mlp",
                             "--warps", "4"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "compile" in line]
    names = [line.split()[0] for line in lines]
    assert names == ["report__tiny_linear_fwd", "report__tiny_linear_bwd", "report__tiny_mlp_fwd",
                     "report__tiny_mlp_bwd"], result.stdout
    for line in lines:
        assert re.search(r"\d+ registers, \d+ / \d+ bytes spill", line), line
        assert "num_warps=4" in line and "PREC=ieee" in line
