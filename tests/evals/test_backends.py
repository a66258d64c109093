"""`--backend` of the commands that use a trained run (generate, learn, eval): the token-by-token
reference gives the chunked path's numbers to float32's precision, and the triton backend, which has no
kernels to run on a CPU without the interpreter, falls back to the chunked path with one warning per
level, to the same bits. On a GPU the triton backend runs its kernels: tests/evals/test_on_a_gpu.py."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from nldsl.runtime import BACKENDS

BACKEND_NAMES = ("chunked", "reference", "triton")


@pytest.fixture()
def no_kernels(monkeypatch):
    """A CPU without the Triton interpreter: the triton backend falls back (its warnings given anew)."""
    from nldsl.runtime.triton import backend

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(backend, "_WARNED", set())


def test_the_command_line_offers_the_runtimes_backends():
    from nldsl.cli_common import BACKEND

    option = BACKEND(lambda: None).__click_params__[0]
    assert set(option.type.choices) == set(BACKENDS) == set(BACKEND_NAMES)


def test_eval_on_each_backend(tiny_hope_run, invoke, tmp_path, no_kernels):
    docs, outputs = {}, {}
    for name in BACKEND_NAMES:
        out = tmp_path / f"{name}.json"
        outputs[name] = invoke("eval", tiny_hope_run, "--task", "ppl", "--max-tokens", 200, "--seq", 64,
                               "--backend", name, "--out", out).output
        docs[name] = json.loads(out.read_text())
    assert {name: doc["backend"] for name, doc in docs.items()} == {name: name for name in BACKEND_NAMES}
    chunked = docs["chunked"]["results"]
    assert docs["reference"]["results"]["loss_nats"] == pytest.approx(chunked["loss_nats"], rel=1e-5)
    assert docs["triton"]["results"] == chunked
    fallbacks = [line for line in outputs["triton"].splitlines() if line.startswith("warning: memory level")]
    assert fallbacks and all("TRITON_INTERPRET=1 is not set" in line for line in fallbacks)
    assert len(fallbacks) == len(set(fallbacks))   # one line a level
    assert "warning:" not in outputs["chunked"] + outputs["reference"]


def test_generate_on_each_backend(tiny_hope_run, invoke, no_kernels):
    text = {name: invoke("generate", tiny_hope_run, "--prompt", "The ", "--max-new-tokens", 12,
                         "--temperature", 0, "--backend", name).stdout
            for name in BACKEND_NAMES}
    assert all(t.startswith("The ") and len(t) > len("The \n") for t in text.values())
    assert text["triton"] == text["chunked"]


def test_learn_on_each_backend(tiny_hope_run, invoke, tmp_path, no_kernels):
    data = tmp_path / "notes.txt"
    data.write_text("The lantern festival of Zorbia is held every spring on the Maroon.\n" * 3, encoding="utf-8")
    memories = {}
    for name in BACKEND_NAMES:
        path = tmp_path / f"{name}.mem"
        invoke("learn", tiny_hope_run, "--data", data, "--memory", path, "--seq", 32, "--backend", name)
        memories[name] = load_file(str(path))
    chunked = memories["chunked"]
    assert chunked and all(m.keys() == chunked.keys() for m in memories.values())
    for key, value in chunked.items():
        assert torch.equal(memories["triton"][key], value), key
        assert torch.allclose(memories["reference"][key].to(value.dtype), value, rtol=1e-4, atol=1e-5), key


@pytest.fixture()
def compiled_calls(monkeypatch):
    """The names of the tile steps the chunked path runs through a CompiledStep, in call order; with
    `compiled_calls.eager()`, each then runs its eager function instead of compiling (a test of the
    plumbing that takes seconds)."""
    from nldsl.runtime.memory import compiled

    original = compiled.CompiledStep.__call__

    class Calls(list):
        run = staticmethod(original)

        def eager(self):
            self.run = lambda step, *args, **kwargs: step.fn(*args, **kwargs)

    calls = Calls()

    def counted(step, *args, **kwargs):
        calls.append(step.fn.__name__)
        return calls.run(step, *args, **kwargs)

    monkeypatch.setattr(compiled.CompiledStep, "__call__", counted)
    return calls


def test_compile_reaches_the_chunked_loops_of_learn_and_generate(tiny_hope_run, invoke, tmp_path, compiled_calls):
    """`--compile` of learn and generate runs the tile steps through CompiledStep, and only with the flag
    (here each runs its eager function, so that the test takes seconds: the compiled steps' numbers are
    test_memory_compiled_steps.py's and the next test's)."""
    compiled_calls.eager()
    data = tmp_path / "notes.txt"
    data.write_text("The lantern festival of Zorbia is held every spring on the Maroon.\n", encoding="utf-8")
    memories = {}
    for flag in ((), ("--compile",)):
        path = tmp_path / f"notes{len(flag)}.mem"
        before = len(compiled_calls)
        invoke("learn", tiny_hope_run, "--data", data, "--memory", path, "--seq", 32, *flag)
        assert (len(compiled_calls) > before) == bool(flag)
        memories[flag] = load_file(str(path))
    assert memories[()].keys() == memories[("--compile",)].keys()
    for key, value in memories[()].items():
        assert torch.equal(memories[("--compile",)][key], value), key
    text = {}
    for flag in ((), ("--compile",)):
        before = len(compiled_calls)
        text[flag] = invoke("generate", tiny_hope_run, "--prompt", "The lantern ", "--max-new-tokens", 4,
                            "--temperature", 0, *flag).stdout
        assert (len(compiled_calls) > before) == bool(flag)
    assert text[("--compile",)] == text[()]
    output = invoke("generate", tiny_hope_run, "--prompt", "The ", "--max-new-tokens", 2, "--backend", "reference",
                    "--compile").output
    assert output.count("warning: --compile (compile=True) has no effect on the reference backend") == 1


@pytest.mark.slow
def test_eval_compiled_gives_the_eager_numbers(tiny_hope_run, invoke, tmp_path, compiled_calls):
    """`nlc eval --compile` runs its tile steps compiled by torch.compile, to the eager numbers up to
    rounding, and says so in its results."""
    docs = {}
    for flag in ((), ("--compile",)):
        out = tmp_path / f"ppl{len(flag)}.json"
        invoke("eval", tiny_hope_run, "--task", "ppl", "--max-tokens", 130, "--seq", 64, "--out", out, *flag)
        docs[flag] = json.loads(out.read_text())
        assert bool(compiled_calls) == bool(flag)
    assert set(compiled_calls) == {"_tile_step"}
    assert (docs[()]["compile"], docs[("--compile",)]["compile"]) == (False, True)
    eager, compiled = docs[()]["results"], docs[("--compile",)]["results"]
    assert compiled["tokens"] == eager["tokens"]
    assert compiled["loss_nats"] == pytest.approx(eager["loss_nats"], rel=1e-5)
