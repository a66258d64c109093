"""State as an artifact: `nlc learn` keeps what the persistent levels learn in a memory file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from nldsl.cli import main
from nldsl.runtime.continual import Learner, MemoryFileError, apply_memory, expand_state, read_memory
from nldsl.runtime.data import EOS, ByteTokenizer, load_documents, split
from nldsl.runtime.evals.common import mean_loss
from nldsl.runtime.generate import load_run

FACTS = (
    "The capital of Zorbia is Quentaville. The river that runs through Quentaville is the Maroon.\n"
    "Zorbia's national bird is the blue heron, and its currency is the glint. Every spring the\n"
    "people of Zorbia hold a lantern festival on the banks of the Maroon.\n"
)

# How much a memory learned on FACTS may raise the loss on unrelated text (nats per token).
UNRELATED_BOUND = 0.05
# How much lower the loss on FACTS must be with that memory (nats per token).
FACTS_GAIN = 0.05


def ppl(runner, run_dir, data, memory=None, out=None):
    args = ["eval", str(run_dir), "--task", "ppl", "--data", str(data), "--out", str(out)]
    result = runner.invoke(main, args + (["--memory", str(memory)] if memory else []))
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())["results"]["loss_nats"]


def test_learning_facts_lowers_their_loss_and_spares_unrelated_text(tiny_hope_run, runner, tmp_path):
    facts = tmp_path / "facts.txt"
    facts.write_text(FACTS, encoding="utf-8")
    _, held_out = split(load_documents())
    unrelated = tmp_path / "unrelated.txt"
    unrelated.write_text(held_out[0][1][:1200], encoding="utf-8")
    memory = tmp_path / "zorbia.mem"

    result = runner.invoke(main, ["learn", str(tiny_hope_run), "--data", str(facts), "--memory", str(memory),
                                  "--passes", "2"])
    assert result.exit_code == 0, result.output
    assert "continuum.fast" in result.output and memory.is_file()

    facts_without = ppl(runner, tiny_hope_run, facts, out=tmp_path / "a.json")
    facts_with = ppl(runner, tiny_hope_run, facts, memory, out=tmp_path / "b.json")
    other_without = ppl(runner, tiny_hope_run, unrelated, out=tmp_path / "c.json")
    other_with = ppl(runner, tiny_hope_run, unrelated, memory, out=tmp_path / "d.json")
    assert facts_with < facts_without - FACTS_GAIN, (facts_without, facts_with)
    assert other_with < other_without + UNRELATED_BOUND, (other_without, other_with)
    # what the memory holds is about the facts: they gain more than the unrelated text
    assert facts_without - facts_with > other_without - other_with

    # the file: CMS members of the persistent chain, and a manifest naming the spec and the text
    doc = read_memory(memory, load_run(tiny_hope_run))
    manifest = json.loads((tiny_hope_run / "model" / "manifest.json").read_text())
    assert doc.manifest["spec_sha256"] == manifest["spec_sha256"]
    assert doc.manifest["levels"]["cms"] == ["continuum.fast", "continuum.mid", "continuum.slow"]
    assert doc.manifest["position"] == 2 * len(FACTS.encode())  # every token of the text read twice
    assert [s["name"] for s in doc.manifest["sources"]] == ["facts.txt"]
    assert doc.cms and all(".chain." in name for name in doc.cms)

    # generation applies it too: the greedy continuation is computed with the learned CMS members
    plain = runner.invoke(main, ["generate", str(tiny_hope_run), "--prompt", "The capital of Zorbia is",
                                 "--temperature", "0", "--max-new-tokens", "20"])
    with_memory = runner.invoke(main, ["generate", str(tiny_hope_run), "--prompt", "The capital of Zorbia is",
                                       "--temperature", "0", "--max-new-tokens", "20", "--memory", str(memory)])
    assert plain.exit_code == 0 and with_memory.exit_code == 0, with_memory.output
    assert with_memory.stdout.startswith("The capital of Zorbia is")


def test_learning_in_two_calls_equals_learning_once(tiny_hope_run, runner, tmp_path):
    text = tmp_path / "short.txt"
    text.write_text(FACTS[:90], encoding="utf-8")
    once, twice = tmp_path / "once.mem", tmp_path / "twice.mem"
    assert runner.invoke(main, ["learn", str(tiny_hope_run), "--data", str(text), "--memory", str(once),
                                "--passes", "2", "--seq", "32"]).exit_code == 0
    for _ in range(2):
        result = runner.invoke(main, ["learn", str(tiny_hope_run), "--data", str(text), "--memory", str(twice),
                                      "--seq", "32"])
        assert result.exit_code == 0, result.output
    run = load_run(tiny_hope_run)
    a, b = read_memory(once, run), read_memory(twice, run)
    assert a.position == b.position == 2 * 90
    assert len(b.manifest["sources"]) == 2
    assert set(a.cms) == set(b.cms) and set(a.grads) == set(b.grads) and a.grads  # 182 tokens: open windows
    for name in a.cms:
        assert torch.allclose(a.cms[name], b.cms[name], rtol=0, atol=1e-6), name
    for name in a.grads:
        assert torch.allclose(a.grads[name], b.grads[name], rtol=0, atol=1e-5), name


def test_a_memory_of_another_spec_is_refused(tiny_hope_run, persist_run, runner, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(FACTS[:40], encoding="utf-8")
    memory = tmp_path / "hope.mem"
    learned = runner.invoke(main, ["learn", str(tiny_hope_run), "--data", str(text), "--memory", str(memory)])
    assert learned.exit_code == 0, learned.output
    before = memory.read_bytes()
    for args in (["generate", str(persist_run), "--prompt", "x", "--memory", str(memory)],
                 ["eval", str(persist_run), "--task", "ppl", "--data", str(text), "--memory", str(memory)],
                 ["learn", str(persist_run), "--data", str(text), "--memory", str(memory)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, result.output
        assert "fits only the spec it was made for" in result.output and "Traceback" not in result.output
    assert memory.read_bytes() == before

    # the same spec over other weights is accepted, with a warning
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_hope_run, retrained, ignore=shutil.ignore_patterns("evals"))
    weights = retrained / json.loads((retrained / "checkpoint.json").read_text())["weights"]
    from safetensors.torch import load_file

    tensors = load_file(str(weights))
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.5
    save_file(tensors, str(weights))
    result = runner.invoke(main, ["generate", str(retrained), "--prompt", "x", "--max-new-tokens", "2",
                                  "--memory", str(memory)])
    assert result.exit_code == 0 and "learned over other weights" in result.output


def test_a_file_that_is_not_a_memory_is_refused(tiny_hope_run, runner, tmp_path):
    plain = tmp_path / "plain.mem"
    save_file({"x": torch.zeros(2)}, str(plain))
    garbage = tmp_path / "garbage.mem"
    garbage.write_bytes(b"not a safetensors file at all")
    for path, message in ((plain, "not an nlc memory file"), (garbage, "not a memory file")):
        result = runner.invoke(main, ["generate", str(tiny_hope_run), "--prompt", "x", "--memory", str(path)])
        assert result.exit_code == 1 and message in result.output, result.output
    with pytest.raises(MemoryFileError):
        read_memory(tmp_path / "missing.mem")


def test_a_text_with_nothing_in_it_is_refused(tiny_hope_run, runner, tmp_path):
    """Empty text (a file, or a folder with no text files) is a user's mistake: exit 1 with one line."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "folder").mkdir()
    for data in (tmp_path / "empty.txt", tmp_path / "folder"):
        result = runner.invoke(main, ["learn", str(tiny_hope_run), "--data", str(data), "--memory",
                                      str(tmp_path / "m.mem")])
        assert result.exit_code == 1 and "error: no documents in" in result.output, result.output
        assert "internal" not in result.output and not (tmp_path / "m.mem").exists()



def test_learning_that_diverges_is_an_error_and_leaves_the_memory_file(tiny_hope_run, runner, tmp_path, monkeypatch):
    """A level whose in-context learning goes non-finite (its spec's learning rate, not a bug in nlc) stops
    `nlc learn` and `nlc eval --task forgetting` as it stops `nlc train`: exit 1 naming the level and a
    help line, the memory file as it was and no results written."""
    text = tmp_path / "t.txt"
    text.write_text(FACTS, encoding="utf-8")
    memory = tmp_path / "m.mem"
    assert runner.invoke(main, ["learn", str(tiny_hope_run), "--data", str(text), "--memory", str(memory)]).exit_code == 0
    before = memory.read_bytes()

    start = Learner.__init__

    def diverging(self, run, *args, **kwargs):  # every CMS gradient NaN: the first window to close steps to NaN
        start(self, run, *args, **kwargs)
        for name, p in run.model.named_parameters():
            if ".chain." in name:
                p.register_hook(lambda g: g * float("nan"))

    monkeypatch.setattr(Learner, "__init__", diverging)
    result = runner.invoke(main, ["learn", str(tiny_hope_run), "--data", str(text), "--memory", str(memory)])
    assert result.exit_code == 1, result.output
    assert ("error: learning diverged: non-finite parameters after the update in level `continuum.fast` in window 1"
            in result.output)
    assert "m.mem was not written and is unchanged" in result.output and "= help:" in result.output
    assert "internal" not in result.output and memory.read_bytes() == before

    out = tmp_path / "forgetting.json"
    result = runner.invoke(main, ["eval", str(tiny_hope_run), "--task", "forgetting", "--data", str(text),
                                  "--data-b", str(text), "--max-tokens", "64", "--out", str(out)])
    assert result.exit_code == 1 and "error: learning diverged" in result.output, result.output
    assert "internal" not in result.output and not out.exists()

def test_a_model_without_persistent_levels_has_nothing_to_learn(example_runs, runner, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello", encoding="utf-8")
    result = runner.invoke(main, ["learn", str(example_runs["transformer"]), "--data", str(text),
                                  "--memory", str(tmp_path / "m.mem")])
    assert result.exit_code == 1 and "no persistent level" in result.output
    assert not (tmp_path / "m.mem").exists()


def test_a_persistent_memory_keeps_its_state(persist_run, runner, tmp_path):
    """A memory under `state persist` carries its fast weights into the file, as the stream of windows left them."""
    text = "Quentaville lies on the Maroon."
    data = tmp_path / "t.txt"
    data.write_text(text, encoding="utf-8")
    memory = tmp_path / "delta.mem"
    result = runner.invoke(main, ["learn", str(persist_run), "--data", str(data), "--memory", str(memory),
                                  "--seq", "8"])
    assert result.exit_code == 0, result.output
    run = load_run(persist_run)
    doc = read_memory(memory, run)
    assert doc.manifest["levels"] == {"cms": [], "memories": ["delta_block.fast"]} and not doc.cms
    (key, state), = doc.states.items()
    tokens = ByteTokenizer().encode(text) + [EOS]
    assert state.position == len(tokens) - 1
    carried = {}  # the nested loop's stream: windows of 8 tokens, the persistent memory's state carried
    for start in range(0, len(tokens) - 1, 8):
        _, out = run.model(torch.tensor([tokens[start:start + 9][:-1]]), carried)
        carried = {key: out[key]}
    for name, value in carried[key].params.items():
        assert torch.allclose(state.params[name], value, rtol=0, atol=1e-6), name
    assert any(not torch.allclose(v, torch.zeros_like(v)) for v in state.params.values())  # `init zero`: it wrote

    start = apply_memory(run, doc)
    probe = ByteTokenizer().encode(" The Maroon")
    fresh = mean_loss(run.model, probe, 8)
    remembered = mean_loss(run.model, probe, 8, state=start)
    assert fresh != remembered  # the remembered state is used ...
    batched, _ = run.model(torch.tensor([probe, probe]), expand_state(start, 2))
    single, _ = run.model(torch.tensor([probe]), start)
    assert torch.allclose(batched[0], single[0], atol=1e-6) and torch.allclose(batched[1], single[0], atol=1e-6)

    learner = Learner(run, doc)  # ... and learning more goes on from it
    learner.learn(probe)
    assert learner.memory().position == state.position + len(probe)
