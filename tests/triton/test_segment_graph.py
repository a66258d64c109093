"""benchmarks/gpu/segment_graph.py: a training segment of hope.nl replayed as a CUDA graph, as `nlc train
--cuda-graphs` replays it, against the same segment run eagerly. On a CPU the script runs the eager
segment of both backends and says it captured nothing; on a GPU every backend captures its segment,
whose replay then gives the eager segment's loss, gradients and states."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "benchmarks/gpu/segment_graph.py"


def run_script(tmp_path, *args):
    env = dict(os.environ, NLC_CACHE=str(tmp_path / "cache"))
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"   # on a GPU the script's kernels are compiled
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_segment_benchmark_replays_what_it_runs_eagerly_or_says_why_not(tmp_path):
    """On a CPU: the eager segment of both backends, and no capture. On a GPU: each backend's replay gives
    the eager segment's loss, gradients and states."""
    gpu = torch.cuda.is_available()
    result = run_script(tmp_path, *(("--repeats", "3", "--batch", "2") if gpu else ("--tiny",)))
    assert result.returncode == 0, result.stdout + result.stderr
    for backend in ("chunked", "triton"):
        assert re.search(rf"{backend} +eager +[0-9.]+ ms a segment of 16 tokens, B={2 if gpu else 1}\b",
                         result.stdout), result.stdout
        if not gpu:
            continue
        line = next(line for line in result.stdout.splitlines() if re.match(rf"\s*{backend} +(graphed|capture)", line))
        assert "capture failed: " not in line and "warning" not in line, result.stdout
        found = re.search(r"loss ([0-9.e+-]+), gradients ([0-9.e+-]+), states ([0-9.e+-]+)", line)
        assert found, line
        assert all(float(v) <= 1e-4 for v in found.groups()), line
    assert ("captured nothing and made no GPU figures" in result.stdout) == (not gpu)
    if not gpu:
        assert not re.search(r"(?m)^\s*\w+ +(graphed|capture failed)", result.stdout), result.stdout


def test_bad_input_gets_a_message_not_a_traceback(tmp_path):
    result = run_script(tmp_path, "--batch", "0")
    assert result.returncode == 2 and "--batch must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr
