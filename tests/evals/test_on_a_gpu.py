"""A run trained on a card, used as a user would: generated from, learned into and evaluated there on the
triton backend and on the CPU, its memory file read on the other device, resumed on the CPU and
exported. Runs where CUDA is; the same commands on a CPU are tested beside (test_generate.py,
test_memory.py, test_evals.py, test_backends.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch


pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory, tiny_hope_spec, invoke):
    """The tiny HOPE trained 4 steps on the card with its generated kernels."""
    base = tmp_path_factory.mktemp("cuda_run")
    invoke("train", tiny_hope_spec, "--device", "cuda", "--backend", "triton", "--steps", 4, "--seq", 64,
           "--batch", 2, "--checkpoint-every", 2, "--eval-every", 2, "--out", base / "run")
    return base / "run"


def ppl(invoke, run, out, *more):
    invoke("eval", run, "--task", "ppl", "--max-tokens", 256, "--seq", 64, "--out", out, *more)
    return json.loads(out.read_text())["results"]["loss_nats"]


def test_a_run_from_the_card_scores_alike_on_the_card_and_the_cpu(cuda_run, invoke, tmp_path):
    on_cpu = ppl(invoke, cuda_run, tmp_path / "cpu.json")
    assert ppl(invoke, cuda_run, tmp_path / "cuda.json", "--device", "cuda") == pytest.approx(on_cpu, rel=1e-4)
    kernels = ppl(invoke, cuda_run, tmp_path / "triton.json", "--device", "cuda", "--backend", "triton")
    assert kernels == pytest.approx(on_cpu, rel=1e-4)


def test_generating_on_the_card_runs_the_kernels(cuda_run, invoke):
    result = invoke("generate", cuda_run, "--prompt", "The ", "--max-new-tokens", 16, "--device", "cuda",
                    "--backend", "triton")
    assert result.stdout.startswith("The ") and len(result.stdout) > len("The \n")
    assert "warning:" not in result.output     # no level fell back to the chunked path


def test_a_memory_learned_on_the_card_is_read_and_extended_on_the_cpu(cuda_run, invoke, tmp_path):
    data = tmp_path / "notes.txt"
    data.write_text("The lantern festival of Zorbia is held every spring on the Maroon.\n" * 4, encoding="utf-8")
    memory = tmp_path / "notes.mem"
    invoke("learn", cuda_run, "--data", data, "--memory", memory, "--seq", 32, "--device", "cuda",
           "--backend", "triton")
    on_cpu = ppl(invoke, cuda_run, tmp_path / "cpu.json", "--data", data, "--memory", memory)
    on_card = ppl(invoke, cuda_run, tmp_path / "cuda.json", "--data", data, "--memory", memory, "--device", "cuda",
                  "--backend", "triton")
    assert on_card == pytest.approx(on_cpu, rel=1e-4)
    invoke("learn", cuda_run, "--data", data, "--memory", memory, "--seq", 32)   # on the CPU
    assert ppl(invoke, cuda_run, tmp_path / "again.json", "--data", data, "--memory", memory) < on_cpu


def test_a_run_from_the_card_resumes_on_the_cpu_as_on_the_card(cuda_run, invoke, tmp_path):
    losses = {}
    for device in ("cpu", "cuda"):
        run = tmp_path / f"on-{device}"
        shutil.copytree(cuda_run, run)
        result = invoke("train", "--resume", run, "--steps", 6, "--device", device)
        if device == "cpu":
            assert "note: --device cpu from here on" in result.output
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[device] = [r["loss"] for r in records if "loss" in r and r["step"] > 4]
    assert len(losses["cpu"]) == 2
    assert losses["cpu"] == pytest.approx(losses["cuda"], rel=1e-3)


def test_a_run_from_the_card_exports(cuda_run, invoke, tmp_path):
    pytest.importorskip("transformers")
    invoke("export", cuda_run, "--hf", tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file()
