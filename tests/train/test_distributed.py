"""Data-parallel training over 2 CPU processes (torchrun, gloo) equals training in one process.

A tiny spec (2 layers of a persist memory block and a 2-level persist nested CMS chain, dim 32, context 32;
fsdp shards each layer on its own, and each passes its memory states on to the next) trains for 3
steps with global batch 4 in float64 (so does a variant whose memory resets per sequence, on short
documents in the aligned layout, where each rank holds its own number of targets that count): once
in this process (the reference), then under torchrun with --parallel ddp and fsdp, and from
checkpoints moved between 1 and 2 processes. Parameters must agree across ranks and with the
reference; a checkpoint written by 2 processes must hold what one process would have written, open
CMS windows and carried memory states included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nldsl.runtime.train import TrainConfig, Trainer
from tiny_specs import short_documents

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")]

TINY = """nl 1
model tiny {
  vocab    = 256
  dim      = 32
  heads    = 2
  head_dim = dim / heads
  layers   = 2
  context  = 32

  level pretrain : outer {
    clock     every 1 step
    objective next_token
    update    adamw(lr = 3e-3, betas = (0.9, 0.95), weight_decay = 0.1)
    clip      1.0
  }

  memory lin : linear per head {
    clock     every 1 token
    chunk     8
    key       k
    value     v
    lr        eta
    objective l2
    update    gd
    state     persist
    init      by pretrain
  }

  block mem_block(x) {
    memory mem : lin
    q   = l2norm(linear(x, dim))
    k   = l2norm(linear(x, dim))
    v   = linear(x, dim)
    eta = 0.1 * sigmoid(linear(x, heads))
    return linear(mem(q), dim)
  }

  # 48 does not divide the 32-token step: the slow window is open at the end of step 2. Nested: slow
  # learns fast's initial state and puts fast back to it every 48 tokens.
  cms continuum : nested {
    update momentum(lr = 1e-2, beta = 0.9)
    state  persist
    level slow : mlp(expand = 2) { clock every 48 tokens }
    level fast : mlp(expand = 2) { clock every 8 tokens }
  }

  layer   = residual(rmsnorm -> mem_block) -> residual(rmsnorm -> continuum)
  network = embed(vocab, dim) -> stack(layer, layers) -> rmsnorm -> lm_head(tied = true)
}
"""

# Run under torchrun: each job trains with a Trainer, then every rank dumps its parameters (its own
# shard and the gathered whole) to its own file; jobs that must fail record the error.
DRIVER = """
import json, os, sys
from safetensors.torch import save_file
from nldsl.runtime.train import TrainConfig, Trainer
from nldsl.runtime.train.distributed import ParallelError

comms = []
for job in json.loads(open(sys.argv[1]).read()):
    try:
        trainer = Trainer(TrainConfig(**job["config"]), resume=job["resume"], log=lambda msg: None)
    except ParallelError as e:
        if "error" in job:
            open(job["error"] + "-" + os.environ["RANK"] + ".txt", "w").write(str(e))
            continue
        raise
    comm = trainer.comm
    comms.append(comm)
    trainer.train()
    out = {}
    for name, p in trainer.model.named_parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        out["local." + name] = local.detach().clone().contiguous()
        out["full." + name] = comm.full(p.detach()).clone().contiguous()
    save_file(out, job["dump"] + f"-{comm.rank}.safetensors")
comms[0].close()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)  # as `python -m nldsl.train` does: no interpreter teardown after the process group is gone
"""


def _env(tmp_path):
    return {**os.environ, "NLC_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def _config(tmp_path, spec, out, **kw):
    base = dict(spec=str(spec), steps=3, batch=4, out=str(out), dtype="float64", seed=0, checkpoint_every=2,
                eval_every=3, eval_batches=1)
    base.update(kw)
    return TrainConfig(**base)


def _close(a: torch.Tensor, b: torch.Tensor, what: str):
    assert a.shape == b.shape and a.dtype == b.dtype, what
    if a.is_floating_point():
        err = float((a - b).abs().max()) if a.numel() else 0.0
        assert err <= 1e-10 * max(1.0, float(a.abs().max())), f"{what}: max |diff| {err:.3g}"
    else:
        assert torch.equal(a, b), what


def _params(trainer) -> dict:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def _checkpoint(run: Path) -> tuple[dict, dict]:
    doc = json.loads((run / "checkpoint.json").read_text())
    return doc, load_file(str(run / doc["weights"]))


def _losses(run: Path) -> list:
    return [(r["step"], r["loss"], r.get("val_loss")) for r in
            map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def _same_losses(a: list, b: list):
    """Same training losses; validation losses where both measured one (the reference, run to 2 steps
    first, also measured at step 2)."""
    assert [s for s, *_ in a] == [s for s, *_ in b]
    for (_, la, va), (_, lb, vb) in zip(a, b):
        assert abs(la - lb) <= 1e-12 * max(1.0, abs(la))
        assert va is None or vb is None or abs(va - vb) <= 1e-12 * max(1.0, abs(va))
    assert a[-1][2] is not None and b[-1][2] is not None


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def test_two_processes_train_exactly_as_one(tmp_path):
    spec = tmp_path / "tiny.nl"
    spec.write_text(TINY)
    (tmp_path / "muon.nl").write_text(TINY.replace("update momentum(lr = 1e-2, beta = 0.9)", "update muon(lr = 1e-2)"))
    every2 = tmp_path / "every2.nl"  # the outer level accumulates over 2 steps: open after step 3
    every2.write_text(TINY.replace("clock     every 1 step", "clock     every 2 steps"))
    Trainer(_config(tmp_path, every2, tmp_path / "ref_every2"), log=lambda msg: None).train()
    full = tmp_path / "full.nl"  # bptt full: the step's graph kept across its segments
    full.write_text(TINY.replace("clip      1.0", "clip      1.0\n    bptt      full"))
    ref_full = Trainer(_config(tmp_path, full, tmp_path / "ref_full"), log=lambda msg: None)
    ref_full.train()

    # aligned documents: each rank's rows hold their own number of targets that count, and the outer
    # gradient must still be the mean over the global batch's
    aligned = tmp_path / "aligned.nl"
    aligned.write_text(TINY.replace("state     persist", "state     reset per sequence"))
    docs = short_documents(tmp_path / "docs")
    ref_aligned = Trainer(_config(tmp_path, aligned, tmp_path / "ref_aligned", documents="aligned", data=str(docs)),
                          log=lambda msg: None)
    stream = ref_aligned.stream
    halves = [[int((stream.batch_at(n)[0][rows, 1:] >= 0).sum()) for rows in (slice(0, 2), slice(2, 4))]
              for n in range(3)]
    assert any(a != b for a, b in halves), halves  # the ranks' shares differ
    ref_aligned.train()

    # the reference: one process, batch 4; a copy of its checkpoint after 2 steps (slow window open)
    ref = Trainer(_config(tmp_path, spec, tmp_path / "ref", steps=2), log=lambda msg: None)
    ref.train()
    shutil.copytree(tmp_path / "ref", tmp_path / "ref2")
    ckpt2 = _checkpoint(tmp_path / "ref2")
    assert any(k.startswith("grad.") and ".slow." in k for k in ckpt2[1])  # an open window is saved
    assert any(k.startswith("carried.") for k in ckpt2[1])
    ref.cfg.steps = 3
    ref.train()
    expected = _params(ref)
    expected_losses = _losses(tmp_path / "ref")
    shutil.copytree(tmp_path / "ref2", tmp_path / "resume2")  # to be continued by 2 processes

    # 2 processes (torchrun): ddp, fsdp, ddp resuming the 1-process checkpoint, and two refusals
    def job(name, resume=False, source=spec, **kw):
        out = tmp_path / ("resume2" if resume else name)
        return {"config": asdict(_config(tmp_path, source, out, **kw)), "resume": resume, "dump": str(tmp_path / name)}

    jobs = [job("ddp", parallel="ddp"), job("fsdp", parallel="fsdp"), job("ddp_resumed", resume=True),
            {**job("odd", batch=3), "error": str(tmp_path / "odd")},
            {**job("muon", parallel="fsdp", source=tmp_path / "muon.nl"), "error": str(tmp_path / "muon")},
            job("every2", parallel="fsdp", source=every2), job("fsdp32", parallel="fsdp", dtype="float32"),
            job("full", parallel="ddp", source=full),
            job("aligned", parallel="ddp", source=aligned, documents="aligned", data=str(docs)),
            job("aligned_fsdp", parallel="fsdp", source=aligned, documents="aligned", data=str(docs)),
            {**job("full_fsdp", parallel="fsdp", source=full), "error": str(tmp_path / "full_fsdp")}]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "driver.py").write_text(DRIVER)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(tmp_path / "driver.py"), str(tmp_path / "jobs.json")],
                         cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    references = {"full": _params(ref_full), "aligned": _params(ref_aligned), "aligned_fsdp": _params(ref_aligned)}
    for name in ("ddp", "fsdp", "ddp_resumed", "full", "aligned", "aligned_fsdp"):
        ranks = [load_file(str(tmp_path / f"{name}-{r}.safetensors")) for r in (0, 1)]
        for pname, want in references.get(name, expected).items():
            full0, full1 = ranks[0][f"full.{pname}"], ranks[1][f"full.{pname}"]
            assert torch.equal(full0, full1), f"{name}: ranks disagree on {pname}"
            _close(want, full0, f"{name}: {pname}")
            if "fsdp" not in name:  # replicas: each rank holds the whole, identical parameter
                assert torch.equal(ranks[0][f"local.{pname}"], ranks[1][f"local.{pname}"])
        if name == "fsdp":  # really sharded: each rank holds a part of the embedding
            assert ranks[0]["local.embed.weight"].shape[0] < expected["embed.weight"].shape[0]
    _same_losses(expected_losses, _losses(tmp_path / "ddp"))
    _same_losses(expected_losses, _losses(tmp_path / "fsdp"))
    _same_losses(expected_losses, _losses(tmp_path / "resume2"))
    _same_losses(_losses(tmp_path / "ref_aligned"), _losses(tmp_path / "aligned"))
    # float32 takes other reduction paths in FSDP: it runs, and stays near the float64 run
    ranks = [load_file(str(tmp_path / f"fsdp32-{r}.safetensors")) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0] if k.startswith("full."))
    assert all(abs(a - b) < 1e-4 * a for (_, a, _), (_, b, _) in zip(expected_losses, _losses(tmp_path / "fsdp32")))
    assert "multiple of 2" in (tmp_path / "odd-0.txt").read_text()
    assert "bptt full" in (tmp_path / "full_fsdp-0.txt").read_text()
    assert any(not torch.equal(p, _params(ref_full)[n]) for n, p in expected.items())  # full is not truncated
    refusal = (tmp_path / "muon-1.txt").read_text()
    assert "continuum.slow" in refusal and "muon" in refusal and "--parallel ddp" in refusal
    # a checkpoint written by 2 fsdp processes holds what the single process wrote, the outer level's
    # gradient of an unfinished clock period included
    for one, two in (("ref", "fsdp"), ("ref_every2", "every2")):
        doc, tensors = _checkpoint(tmp_path / two)
        doc1, tensors1 = _checkpoint(tmp_path / one)
        assert doc["step"] == 3 and doc["processes"] == 2 and tensors.keys() == tensors1.keys()
        assert doc["loop"]["accumulated"] == doc1["loop"]["accumulated"]
        for key in tensors1:
            if key != "rng.torch":
                _close(tensors1[key], tensors[key], f"{two}: {key}")
    assert "grad.embed.weight" in tensors  # the every2 run's open outer period


def test_nlc_train_nproc_checkpoint_resumes_in_one_process(tmp_path):
    spec = tmp_path / "tiny.nl"
    spec.write_text(TINY)
    ref = Trainer(_config(tmp_path, spec, tmp_path / "ref", steps=2, eval_batches=4), log=lambda msg: None)
    ref.train()
    ref2 = _checkpoint(tmp_path / "ref")
    ref.cfg.steps = 3
    ref.train()

    run = tmp_path / "two"
    args = [str(spec), "--steps", "2", "--batch", "4", "--dtype", "float64", "--out", str(run),
            "--checkpoint-every", "2", "--eval-every", "3", "--nproc", "2", "--parallel", "fsdp"]
    done = subprocess.run([sys.executable, "-m", "nldsl.cli", "train", *args], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[2 processes, fsdp]" in done.stderr
    doc, tensors = _checkpoint(run)
    assert doc["step"] == 2 and doc["processes"] == 2 and tensors.keys() == ref2[1].keys()
    for key in tensors:  # parameters, optimizer states, the open slow window, every row's memory state
        if key != "rng.torch":
            _close(ref2[1][key], tensors[key], key)
    assert doc["data"] == ref2[0]["data"]
    for key in ("accumulated", "stream_position"):
        assert doc["loop"][key] == ref2[0]["loop"][key]
    counts = {k: n for k, (n, *_) in ref2[0]["loop"]["stats"].items()}
    assert {k: n for k, (n, *_) in doc["loop"]["stats"].items()} == counts

    resumed = Trainer(_config(tmp_path, spec, run, steps=3, eval_batches=4, parallel="fsdp"), resume=True,
                      log=lambda msg: None)
    assert resumed.comm.world == 1
    resumed.train()
    for name, p in resumed.model.named_parameters():
        _close(dict(ref.model.named_parameters())[name].detach(), p.detach(), name)
    _same_losses(_losses(tmp_path / "ref"), _losses(run))


def _processes_naming(text: str) -> list[int]:
    """The processes whose command line holds `text` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stops workers through /proc and prctl")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_nlc_train_nproc_stops_torchrun_and_its_workers(tmp_path, how):
    """A launcher stopped from outside leaves no worker writing the run: SIGTERM is passed on to torchrun,
    and even a SIGKILL of the launcher ends torchrun and, through it, the workers."""
    import signal
    import time

    spec = tmp_path / "tiny.nl"
    spec.write_text(TINY)
    run = tmp_path / f"stopped_{how}"
    args = [str(spec), "--steps", "100000", "--batch", "4", "--out", str(run), "--checkpoint-every", "1",
            "--eval-every", "100000", "--nproc", "2"]
    launcher = subprocess.Popen([sys.executable, "-m", "nldsl.cli", "train", *args], cwd=ROOT, env=_env(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(run.glob("weights-*.safetensors")) and launcher.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint in 240 s"
            time.sleep(0.5)
        assert launcher.poll() is None, launcher.stdout.read()[-3000:]
        assert len(_processes_naming(str(run))) >= 3  # torchrun and two workers (and the launcher)
        launcher.send_signal(getattr(signal, how))
        launcher.wait(timeout=60)
        deadline = time.monotonic() + 60
        while _processes_naming(str(run)):
            assert time.monotonic() < deadline, f"still running after {how}: {_processes_naming(str(run))}"
            time.sleep(0.5)
    finally:
        for pid in _processes_naming(str(run)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launcher.kill()
    output = launcher.stdout.read()
    assert "Traceback" not in output, output[-3000:]
    if how == "SIGTERM":
        assert "stopped by SIGTERM" in output


def test_one_gpu_named_for_every_process_is_refused(monkeypatch):
    """Under torchrun `--device cuda` gives each process the GPU of its local rank; `cuda:1` would put
    every process on one GPU, which NCCL refuses late and obscurely."""
    from nldsl.runtime.train.distributed import DataParallel, ParallelError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ParallelError, match="--device cuda:1 names one GPU for every process"):
        DataParallel("ddp", "cuda:1")
