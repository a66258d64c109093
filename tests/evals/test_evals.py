"""`nlc eval`: the generated tasks are what they claim, scoring is right on oracles, the CLI reports."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nldsl.cli import main
from nldsl.runtime.data import ByteTokenizer
from nldsl.runtime.evals import task_options
from nldsl.runtime.evals.common import window_losses
from nldsl.runtime.evals.mqar import KEYS, VALUES, MqarOptions, make_mqar, run_mqar
from nldsl.runtime.evals.niah import DIGITS, FILLER, NiahOptions, make_prompt, run_niah
from nldsl.runtime.evals.ppl import PplOptions, run_ppl
from nldsl.runtime.generate import load_run
from tiny_specs import short_documents


class InductionOracle(nn.Module):
    """Predicts the token that followed the last earlier occurrence of the current n-token context."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, tokens, state=None):
        logits = torch.zeros(*tokens.shape, 256)
        for b, row in enumerate(tokens.tolist()):
            for t in range(self.n - 1, len(row)):
                context = row[t - self.n + 1:t + 1]
                for j in range(t - 1, self.n - 2, -1):
                    if row[j - self.n + 1:j + 1] == context:
                        logits[b, t, row[j + 1]] = 1.0
                        break
        return logits, state


# ---------------------------------------------------------------- mqar


def test_mqar_examples_ask_every_key_once_after_its_pairs():
    opts = MqarOptions(pairs=6, length=48, examples=20, seed=3)
    data = make_mqar(opts)
    assert data.tokens.shape == data.targets.shape == (20, 48)
    for row, target, gap in zip(data.tokens.tolist(), data.targets.tolist(), data.gaps.tolist()):
        keys, values = row[0:12:2], row[1:12:2]
        assert len(set(keys)) == 6 and all(chr(k) in KEYS for k in keys) and all(chr(v) in VALUES for v in values)
        asked = [t for t in range(48) if target[t] != -100]
        assert sorted(row[t] for t in asked) == sorted(keys) and all(t >= 12 and (t - 12) % 2 == 0 for t in asked)
        for t in asked:
            i = keys.index(row[t])
            assert target[t] == values[i] and gap[t] == t - 2 * i
        assert all(chr(row[t]) == " " for t in range(12, 48) if t not in asked)
    assert torch.equal(make_mqar(opts).tokens, data.tokens)
    assert not torch.equal(make_mqar(MqarOptions(pairs=6, length=48, examples=20, seed=4)).tokens, data.tokens)
    with pytest.raises(ValueError, match="no room"):
        make_mqar(MqarOptions(pairs=8, length=30))


def test_mqar_gaps_follow_a_power_law():
    near = make_mqar(MqarOptions(pairs=4, length=400, examples=50, power_a=0.01)).gaps
    flat = make_mqar(MqarOptions(pairs=4, length=400, examples=50, power_a=1.0)).gaps
    assert near[near >= 0].float().median() < flat[flat >= 0].float().median() / 2


def test_mqar_scores_an_oracle_perfectly_and_a_constant_model_never():
    opts = MqarOptions(pairs=5, length=40, examples=6, batch=4)
    perfect = run_mqar(SimpleNamespace(model=InductionOracle(1)), None, opts)
    assert perfect["accuracy"] == 1.0 and perfect["example_accuracy"] == 1.0 and perfect["queries"] == 30
    assert sum(b["queries"] for b in perfect["by_gap"].values()) == 30
    blind = run_mqar(SimpleNamespace(model=InductionOracle(40)), None, opts)
    assert blind["accuracy"] == 0.0


# ---------------------------------------------------------------- niah


def test_niah_prompts_have_their_length_and_put_the_needle_at_its_depth():
    tok = ByteTokenizer()
    positions = []
    for depth in (0.0, 0.5, 1.0):
        prompt = make_prompt(300, depth, "48213")
        assert len(prompt) == 300 and tok.decode(prompt[-DIGITS:]) == "48213"
        text = tok.decode(prompt)
        assert text.endswith("What is the pass key? The pass key is 48213") and text.count("48213") == 3
        positions.append(text.index("The pass key is"))
    assert positions[0] == 0 and positions[0] < positions[1] < positions[2]
    assert tok.decode(make_prompt(300, 0.0, "11111")).split("pass key. ", 1)[1].startswith(FILLER)
    with pytest.raises(ValueError):
        make_prompt(40, 0.5, "12345")


def test_niah_scores_an_oracle_perfectly(tmp_path):
    from nldsl.runtime.evals.niah import heatmap

    result = run_niah(SimpleNamespace(model=InductionOracle(8)), None,
                      NiahOptions(lengths=[150, 200], depths=[0.0, 1.0], trials=2))
    assert [(c["length"], c["depth"]) for c in result["cells"]] == [(150, 0.0), (150, 1.0), (200, 0.0), (200, 1.0)]
    assert result["accuracy"] == 1.0 and all(c["digit_accuracy"] == 1.0 for c in result["cells"])
    png = heatmap(result, tmp_path / "niah.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- ppl and the command


def test_window_losses_score_every_token_once(tiny_hope_run):
    model = load_run(tiny_hope_run, dtype="float64").model
    tokens = ByteTokenizer().encode("Alice was beginning to get very tired of sitting by her sister.")
    total, count = window_losses(model, tokens, seq=16, batch=3)
    assert count == len(tokens) - 1
    direct = 0.0
    for start in range(0, len(tokens) - 1, 16):
        window = torch.tensor([tokens[start:start + 17]])
        logits, _ = model(window[:, :-1])
        direct += float(F.cross_entropy(logits[0], window[0, 1:], reduction="sum"))
    assert math.isclose(total, direct, rel_tol=1e-9)


def test_ppl_scores_an_aligned_run_document_by_document(tiny_hope_run, tmp_path):
    """A run trained with --documents aligned is scored as it trained: each document from its start,
    after a separator, its bytes and the closing separator predicted."""
    model = load_run(tiny_hope_run, dtype="float64").model
    docs = short_documents(tmp_path / "docs", count=5)
    run = SimpleNamespace(model=model, context=64, config={"documents": "aligned"})
    result = run_ppl(run, None, PplOptions(data=str(docs), batch=2))
    direct, count = 0.0, 0
    for path in sorted(docs.iterdir()):
        ids = [0] + list(path.read_bytes()) + [0]
        logits, _ = model(torch.tensor([ids[:-1]]))
        direct += float(F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="sum"))
        count += len(ids) - 1
    assert result["layout"] == "aligned" and result["tokens"] == count
    assert math.isclose(result["loss_nats"], direct / count, rel_tol=1e-9)
    cut = run_ppl(run, None, PplOptions(data=str(docs), batch=2, max_tokens=count // 2))
    assert cut["tokens"] == count // 2
    packed = run_ppl(SimpleNamespace(model=model, context=64, config={}), None, PplOptions(data=str(docs)))
    assert packed["layout"] == "packed" and packed["tokens"] == count - 1  # one stream: its first byte unpredicted


def test_task_options_prefer_the_task_prefixed_name():
    opts = task_options("mqar", {"mqar_pairs": 3, "seed": 9, "niah_trials": 7, "batch": None})
    assert (opts.pairs, opts.seed, opts.batch) == (3, 9, MqarOptions().batch)
    with pytest.raises(ValueError):
        task_options("bleu")


@pytest.mark.parametrize("task,args", [
    ("ppl", ["--max-tokens", "300", "--seq", "64"]),
    ("mqar", ["--mqar-pairs", "4", "--mqar-length", "32", "--mqar-examples", "4"]),
    ("niah", ["--niah-lengths", "150", "--niah-depths", "0,1", "--niah-trials", "1"]),
    ("forgetting", ["--max-tokens", "96", "--seq", "32"]),
])
def test_cli_eval_prints_a_table_and_writes_json(tiny_hope_run, runner, tmp_path, task, args):
    result = runner.invoke(main, ["eval", str(tiny_hope_run), "--task", task, "--out", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    assert f"{task} — hope (step 12)" in result.stdout
    doc = json.loads((tmp_path / f"{task}.json").read_text())
    assert doc["task"] == task and doc["step"] == 12 and doc["memory"] is None
    r = doc["results"]
    if task == "ppl":
        assert r["tokens"] == 300 and math.isclose(r["bits_per_byte"], r["loss_nats"] / math.log(2))
        assert 0 < r["bits_per_byte"] < 8
    elif task == "mqar":
        assert r["queries"] == 16 and 0.0 <= r["accuracy"] <= 1.0
    elif task == "niah":
        assert len(r["cells"]) == 2 and (tmp_path / "niah.png").stat().st_size > 0
    else:
        assert r["tokens_a"] == r["tokens_b"] == 96 and r["segment_a"] != r["segment_b"]
        assert r["loss_a_after_a"] < r["loss_a_before"]  # the persistent CMS chain learned A
        assert math.isclose(r["forgetting"], r["loss_a_after_b"] - r["loss_a_after_a"])


def test_cli_eval_writes_into_the_run_by_default(tiny_hope_run, runner):
    result = runner.invoke(main, ["eval", str(tiny_hope_run), "--task", "mqar", "--mqar-pairs", "2",
                                  "--mqar-length", "8", "--mqar-examples", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tiny_hope_run / "evals" / "mqar.json").read_text())["options"]["pairs"] == 2
    bad = runner.invoke(main, ["eval", str(tiny_hope_run), "--task", "mqar", "--mqar-pairs", "9",
                               "--mqar-length", "20"])
    assert bad.exit_code == 1 and "no room" in bad.output
    bad = runner.invoke(main, ["eval", str(tiny_hope_run), "--task", "niah", "--niah-lengths", "1k"])
    assert bad.exit_code == 1 and "comma-separated numbers" in bad.output
