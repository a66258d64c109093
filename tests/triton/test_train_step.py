"""benchmarks/gpu/train_step.py runs a whole hope.nl training step on both backends end to end on a CPU
(Triton interpreter, tiny shapes), reports every memory level's kernels or fallback reason, and says
that its figures are not speed figures."""
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
SCRIPT = "benchmarks/gpu/train_step.py"
HOPE_LEVELS = {f"selfmod_titans.{m}" for m in ("mem_k", "mem_v", "mem_eta", "mem_alpha", "mem")}


def run_script(tmp_path, *args):
    env = dict(os.environ, TRITON_INTERPRET="1", NLC_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script times real training steps")
def test_the_training_step_benchmark_runs_under_the_interpreter(tmp_path):
    out = tmp_path / "step.json"
    result = run_script(tmp_path, "--tiny", "--graphs", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not speed figures" in result.stdout and "no GPU figures from this run" in result.stdout
    assert "--graphs: CUDA graphs need a GPU; timing the eager loops only" in result.stdout
    assert "triton / chunked:" in result.stdout
    row = json.loads(out.read_text())
    assert row["interpreter"] and row["batch"] == 1 and row["seq"] == 16
    assert all(rate > 0 for rate in row["tokens_per_s"].values()) and set(row["tokens_per_s"]) == {"chunked", "triton"}
    assert row["graphs"] == {}
    assert {r["level"] for r in row["levels"]} == HOPE_LEVELS
    for r in row["levels"]:
        assert r["status"] == "generated kernels" or (r["status"].startswith("falls back: ") and len(r["status"]) > 20)
        assert (r["level"] in result.stdout) and (r["status"] in result.stdout)
    # every fallback warning the run gave names a level the table reports as falling back
    falling = {r["level"] for r in row["levels"] if r["status"] != "generated kernels"}
    assert all(any(f"memory level {name}:" in w for name in falling) for w in row["fallback_warnings"])
    # the prologue ran fused: hope.nl's q convolution and RMS norms, forward and backward, each step
    launches = row["prologue_launches_per_step"]
    assert launches["conv_fwd"] == launches["conv_bwd"] == 2 and launches["rms_fwd"] == launches["rms_bwd"] == 5
    assert launches["gate_fwd"] > 0
    # the kernels replace the memory levels' operators: fewer aten kernels per step on the triton backend
    operators = row["aten_kernel_operators_per_step"]
    assert 0 < operators["triton"] < operators["chunked"]
    assert f"chunked {operators['chunked']:,d}, triton {operators['triton']:,d}" in result.stdout
    # same weights, same batch: the first steps agree
    loss = row["first_loss"]
    assert abs(loss["chunked"] - loss["triton"]) <= 1e-4 * abs(loss["chunked"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_on_a_gpu_graphed_steps_give_the_eager_losses(tmp_path):
    out = tmp_path / "step.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, SCRIPT, "--graphs", "--batch", "2", "--seq", "64", "--steps", "2",
                             "--json", str(out)], cwd=ROOT, env=dict(env, NLC_CACHE=str(tmp_path / "cache")),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    graphs = json.loads(out.read_text())["graphs"]
    assert set(graphs) == {"chunked+graphs", "triton+graphs"}
    for name, g in graphs.items():
        assert g["counts"]["replayed"] > 0 and g["largest_loss_difference"] <= 1e-4, (name, g)


def test_bad_input_gets_a_message_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.nl"
    bad.write_text("nl 1\nmodel broken {\n  dim =\n}\n", encoding="utf-8")
    result = run_script(tmp_path, "--spec", str(bad))
    assert result.returncode == 1 and "does not compile" in result.stderr and "Traceback" not in result.stderr
    result = run_script(tmp_path, "--batch", "0")
    assert result.returncode == 2 and "--batch must be at least 1" in result.stderr
