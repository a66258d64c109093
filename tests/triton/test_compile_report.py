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
                             "tiny_mlp_bias", "--warps", "4"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "compile" in line]
    names = [line.split()[0] for line in lines]
    assert names == ["report__tiny_linear_fwd", "report__tiny_linear_bwd", "report__tiny_mlp_fwd",
                     "report__tiny_mlp_bwd", "report__tiny_mlp_bias_fwd", "report__tiny_mlp_bias_bwd"], result.stdout
    for line in lines:
        assert re.search(r"\d+ registers, \d+ / \d+ bytes spill", line), line
        assert "num_warps=4" in line and "PREC=ieee" in line


def test_the_compile_report_compiles_a_walk_over_merged_tiles(tmp_path):
    env = dict(os.environ, NLC_CACHE=str(tmp_path), TRITON_CACHE_DIR=str(tmp_path / "triton"))
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "benchmarks/gpu/compile_report.py", "gdn64", "--walk-tiles", "4"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split()[0] + " " + re.search(r"C=\d+", line).group(): line
             for line in result.stdout.splitlines() if " compile " in line}
    # prep at 16-token tiles, their terms merged four at a time, both forward walks (for training, storing
    # a state a step, and without gradients) over 64-token steps, the backward walk over single tiles
    assert set(lines) == {"report__gdn64_prep C=16", "_nl_merge_tiles C=16", "report__gdn64_fwd C=64",
                          "report__gdn64_bwd C=16", "report__gdn64_prep_bwd C=16"}, result.stdout
    assert "M=4" in lines["_nl_merge_tiles C=16"] and "EVERY=4" in lines["report__gdn64_bwd C=16"]


def test_the_compile_report_covers_every_memory_level_of_a_spec(tmp_path):
    from specs import memory_spec

    spec = tmp_path / "two.nl"
    spec.write_text(memory_spec(name="reported", update="retain, gd", chunk=32), encoding="utf-8")
    env = dict(os.environ, NLC_CACHE=str(tmp_path / "cache"), TRITON_CACHE_DIR=str(tmp_path / "triton"))
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "benchmarks/gpu/compile_report.py", "--spec", str(spec)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[mix.mem] linear dk=8 dv=8 chunk=32 rules=retain,gd: 2 launches" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "compile" in line]
    assert [line.split()[0] for line in lines] == ["mix__mem_fwd", "mix__mem_bwd"]
    assert all("C=16, NSUB=2" in line for line in lines)  # a 32-token chunk as two tiles of 16


@pytest.mark.parametrize("config, slices", [("tiny_mlp2", "1"), ("tiny_mlp2", "2"), ("tiny_mlp_bias", "2")])
def test_the_streamed_mlp_kernels_compile_for_sm90(tmp_path, config, slices):
    """The interpreter is lenient where the compiler is not (a kernel argument shadowed by a local
    compiled nowhere but ran there): the streamed kernels, one program per head and a head split over
    two, compile for sm_90; with biases the forward only (one program per head; its backward is the
    PyTorch walk)."""
    env = dict(os.environ, NLC_CACHE=str(tmp_path), TRITON_CACHE_DIR=str(tmp_path / "triton"))
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "benchmarks/gpu/compile_report.py", config, "--stream",
                             "--slices", slices, "--warps", "4"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "compile" in line]
    if config == "tiny_mlp_bias":
        assert [line.split()[0] for line in lines] == ["report__tiny_mlp_bias_fwd_streamed"], result.stdout
        assert "SPLIT=False" in lines[0]
        return
    expected = ["report__tiny_mlp2_fwd_streamed", "report__tiny_mlp2_bwd_streamed"]
    if slices == "2":
        expected.insert(0, "report__tiny_mlp2_fwd_streamed_out")
    assert [line.split()[0] for line in lines] == expected, result.stdout
    assert all(re.search(r"\d+ registers, \d+ / \d+ bytes spill", line) for line in lines)
    assert ("SPLIT=True" in lines[-2]) == (slices == "2")
