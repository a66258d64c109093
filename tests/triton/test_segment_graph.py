"""benchmarks/gpu/segment_graph.py: a training segment of hope.nl replayed as a CUDA graph against the
same segment run eagerly. Its states pass through flat lists of tensors and back unchanged (sharing
kept); on a CPU the script runs the eager segment of both backends and says it captured nothing; on a
GPU every backend either captures its segment, whose replay then gives the eager segment's loss,
gradients and states, or says why the capture failed."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "benchmarks/gpu/segment_graph.py"
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))

import segment_graph  # noqa: E402
from train_step import build  # noqa: E402

from nldsl.runtime.memory import MemoryState  # noqa: E402


def test_a_state_goes_through_its_flat_tensors_and_back_with_its_sharing_kept():
    with tempfile.TemporaryDirectory() as workdir:
        model, _ = build("examples/hope.nl", "chunked", torch.device("cpu"), torch.float32, 0, workdir)
        tokens = torch.randint(0, model.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            _, state = model(tokens[:, :16], None)
            tensors, layout = segment_graph.flatten(state)
            copies = [t.clone() for t in tensors]
            again = segment_graph.rebuild(layout, copies)
            assert again.keys() == state.keys()
            for name, value in state.items():
                if isinstance(value, MemoryState):
                    other = again[name]
                    assert other.position == value.position
                    for group in segment_graph.GROUPS:
                        mine, theirs = getattr(value, group), getattr(other, group)
                        assert (mine is None) == (theirs is None)
                        for key in mine or {}:
                            assert torch.equal(mine[key], theirs[key])
                    # a memory whose anchor is its state keeps one tensor for both
                    for key in value.params:
                        assert (value.anchor[key] is value.params[key]) == (other.anchor[key] is other.params[key])
            assert len({id(t) for t in tensors}) == len(tensors)
            expected, _ = model(tokens[:, 16:], state)
            got, _ = model(tokens[:, 16:], again)
        assert torch.equal(expected, got)


def run_script(tmp_path, *args):
    env = dict(os.environ, NLC_CACHE=str(tmp_path / "cache"))
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"   # on a GPU the script's kernels are compiled
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_segment_benchmark_replays_what_it_runs_eagerly_or_says_why_not(tmp_path):
    """On a CPU: the eager segment of both backends, and no capture. On a GPU: each backend's replay gives
    the eager segment's loss, gradients and states (or the line says why the capture failed)."""
    gpu = torch.cuda.is_available()
    result = run_script(tmp_path, *(("--repeats", "3", "--batch", "2") if gpu else ("--tiny",)))
    assert result.returncode == 0, result.stdout + result.stderr
    for backend in ("chunked", "triton"):
        assert re.search(rf"{backend} +eager +[0-9.]+ ms a segment of 16 tokens, B={2 if gpu else 1}\b",
                         result.stdout), result.stdout
        if not gpu:
            continue
        line = next(line for line in result.stdout.splitlines() if re.match(rf"\s*{backend} +(graphed|capture)", line))
        if "capture failed: " in line:
            continue   # a finding of the experiment, printed with its reason
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
