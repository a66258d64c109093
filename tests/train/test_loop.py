"""The nested loop honours every clock, resumes bit-exactly after SIGKILL, and stops on divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nldsl.runtime.train import Diverged, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
HOPE = str(ROOT / "examples" / "hope.nl")


def _config(tmp_path, spec=HOPE, **kw):
    base = dict(spec=spec, steps=4, batch=2, seq=32, out=str(tmp_path / "run"), checkpoint_every=2, eval_every=2,
                eval_batches=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def test_every_level_updates_as_often_as_its_clock_says(tmp_path):
    steps, seq = 4, 32
    trainer = Trainer(_config(tmp_path, steps=steps, seq=seq))
    trainer.train()
    counts = {name: st.updates for name, st in trainer.loop.stats.items()}
    tokens = steps * seq  # per row: the CMS chain of hope.nl persists, so windows run along each row's stream
    expected = {
        "selfmod_titans.mem_k": tokens, "selfmod_titans.mem_v": tokens, "selfmod_titans.mem_eta": tokens,
        "selfmod_titans.mem_alpha": tokens, "selfmod_titans.mem": tokens,
        "continuum.fast": tokens // 16, "continuum.mid": tokens // 64, "continuum.slow": tokens // 256,
        "pretrain": steps,
    }
    assert counts == expected
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"loss", "bits_per_byte", "lr", "tokens", "tokens_per_s", "peak_memory_mb", "levels"} <= set(records[0])
    assert {"val_loss", "val_bits_per_byte"} <= set(records[1])  # --eval-every 2
    peaks = [r["peak_memory_mb"] for r in records]
    assert peaks[0] > 10 and peaks == sorted(peaks)  # a peak: it never falls
    assert all(r["levels"]["continuum.fast"]["norm"] > 0 for r in records[1:])
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    assert (tmp_path / "run" / "update_norms.png").stat().st_size > 0


def test_the_token_rate_leaves_out_validation_and_checkpoints(tmp_path, monkeypatch):
    """tokens/s is the rate of the training steps: a validation or a checkpoint in between (here each
    taking 1,000 seconds of a fake clock, a step 2) does not lower the figures of the steps after it."""
    from nldsl.runtime.train import run

    now = [0.0]
    monkeypatch.setattr(run, "_clock", lambda: now[0])
    trainer = Trainer(_config(tmp_path, steps=4, seq=16, checkpoint_every=1, eval_every=1))

    def taking(seconds, fn):
        def timed(*args, **kwargs):
            now[0] += seconds
            return fn(*args, **kwargs)
        return timed

    monkeypatch.setattr(trainer.loop, "step", taking(2.0, trainer.loop.step))
    monkeypatch.setattr(trainer.loop, "evaluate", taking(1000.0, trainer.loop.evaluate))
    monkeypatch.setattr(trainer, "checkpoint", taking(1000.0, trainer.checkpoint))
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["tokens_per_s"] for r in records] == [2 * 16 / 2.0] * 4  # batch 2 × 16 tokens a step, 2 s each


@pytest.mark.parametrize("bptt", ["truncated", "full"])
def test_training_leaves_no_autograd_graph_alive(tmp_path, bptt):
    """After the fit checks, the steps, a validation and a checkpoint, no graph is left: one left alive
    holds a segment's activations for the run, and on a GPU breaks `--cuda-graphs`' capture."""
    from cuda_graph_standin import graph_ids, graphs_alive
    from tiny_specs import cms_memory_spec

    spec = tmp_path / "tiny.nl"
    spec.write_text(cms_memory_spec(bptt).replace("vocab   = 16", "vocab   = 256"))
    before = graph_ids()                  # what earlier tests in this process keep
    trainer = Trainer(_config(tmp_path, spec=str(spec), steps=2, seq=16, checkpoint_every=1, eval_every=1))
    assert graphs_alive(before) == []
    trainer.train()
    assert graphs_alive(before) == []


@pytest.mark.parametrize("bptt", ["truncated", "full"])
def test_a_step_reads_the_device_once(tmp_path, monkeypatch, bptt):
    """Every loss, update and memory state a step checks is read in one synchronisation at its end: on a
    GPU each read waits for the device (hope.nl's step read it 120 times). Here 4 segments and 6 CMS
    steps; the embedding's check of token ids, which a CUDA device skips, left out."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from nldsl.runtime.layers import Embedding
    from tiny_specs import build_loop, cms_memory_spec

    _, loop, _ = build_loop(tmp_path, cms_memory_spec(bptt), dtype=torch.float32)
    monkeypatch.setattr(Embedding, "forward", torch.nn.Embedding.forward)
    batches = iter(torch.randint(0, 16, (2, 2, 17), generator=torch.Generator().manual_seed(0)))
    loop.step(next(batches))
    reads = []

    class Reads(TorchDispatchMode):   # item(), float(), bool() of a tensor
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.startswith("_local_scalar_dense"):
                reads.append("scalar")
            return func(*args, **(kwargs or {}))

    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append("tolist") or tolist(t))
    with Reads():
        result = loop.step(next(batches))
    assert len(result.cms_steps) == 6 and result.outer_stepped
    assert reads == ["tolist"]


def test_cms_levels_step_only_at_window_ends(tmp_path):
    trainer = Trainer(_config(tmp_path, steps=1, seq=48))
    fast = dict(trainer.loop.own.cms[0].params)
    slow = dict(trainer.loop.own.cms[2].params)
    before_fast = {n: p.detach().clone() for n, p in fast.items()}
    before_slow = {n: p.detach().clone() for n, p in slow.items()}
    trainer.train()
    assert any(not torch.equal(p.detach(), before_fast[n]) for n, p in fast.items())
    assert all(torch.equal(p.detach(), before_slow[n]) for n, p in slow.items())  # 48 < 256: no window closed
    assert all(p.grad is not None for p in slow.values())  # ... but its window's gradient is accumulating


def _run_cli(args, env):
    return subprocess.Popen([sys.executable, "-m", "nldsl.cli", "train", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_sigkill_is_bit_exact(tmp_path):
    env = {**os.environ, "NLC_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    common = ["examples/hope.nl", "--steps", "4", "--batch", "2", "--seq", "24", "--checkpoint-every", "2",
              "--eval-every", "2"]
    straight = _run_cli(common + ["--out", str(tmp_path / "straight")], env)
    assert straight.wait(timeout=600) == 0, straight.stdout.read()

    killed_dir = tmp_path / "killed"
    proc = _run_cli(common + ["--out", str(killed_dir)], env)
    deadline = time.time() + 600
    while time.time() < deadline:
        ckpt = killed_dir / "checkpoint.json"
        if ckpt.exists() and json.loads(ckpt.read_text())["step"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = json.loads((killed_dir / "checkpoint.json").read_text())["step"]
    assert step_at_kill in (2, 4)
    resumed = _run_cli(["examples/hope.nl", "--steps", "4", "--resume", str(killed_dir)], env)
    out = resumed.stdout.read()
    if step_at_kill == 4:  # killed after its last checkpoint: there is nothing left to train
        assert resumed.wait(timeout=600) == 1 and "nothing to train" in out, out
    else:
        assert resumed.wait(timeout=600) == 0, out

    def losses(run):
        return [(r["step"], r["loss"], r.get("val_loss")) for r in
                map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert losses(killed_dir) == losses(tmp_path / "straight")
    a = load_file(str(tmp_path / "straight" / json.loads((tmp_path / "straight" / "checkpoint.json").read_text())["weights"]))
    b = load_file(str(killed_dir / json.loads((killed_dir / "checkpoint.json").read_text())["weights"]))
    assert a.keys() == b.keys()
    for key in a:
        if key != "rng.torch":
            assert torch.equal(a[key], b[key]), key


def test_a_non_finite_update_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    trainer = Trainer(_config(tmp_path, steps=2))
    trainer.train()
    ckpt = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert ckpt["step"] == 2
    cfg = _config(tmp_path, steps=4)
    resumed = Trainer(cfg, resume=True)
    name, param = resumed.loop.own.cms[0].params[0]
    param.register_hook(lambda g: g * float("nan"))
    with pytest.raises(Diverged) as info:
        resumed.train()
    assert info.value.level == "continuum.fast"
    assert info.value.step == 3
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["step"] == 2
    load_file(str(tmp_path / "run" / ckpt["weights"]))  # the last good weights are intact


def test_a_step_size_beyond_float32_stops_the_run_as_diverged(tmp_path):
    """adamw's first step takes lr / (1 - beta1): an lr the checks accept (below float32's largest
    number) can still give a step size beyond it, which torch refuses with an error; the loop reports
    it as the divergence it is, naming the level, not as an internal error."""
    from tiny_specs import tiny_spec

    spec = tmp_path / "huge_lr.nl"
    spec.write_text(tiny_spec().replace("adamw(lr = 1e-3)", "adamw(lr = 1e38)"))
    with pytest.raises(Diverged) as info:
        Trainer(_config(tmp_path, spec=str(spec), steps=1)).train()
    assert info.value.level == "pretrain"
    assert info.value.step == 1
    assert "overflows float32" in str(info.value)
