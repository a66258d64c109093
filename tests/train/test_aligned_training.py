"""`nlc train --documents aligned`: a step's loss and gradient are means over the targets that count,
padding changes nothing, memories that keep their state across batches are refused, and a run keeps
its layout when resumed."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from nldsl.cli import main
from nldsl.runtime.data import IGNORE
from nldsl.runtime.train import TrainConfig, Trainer
from tiny_specs import short_documents, tiny_spec

SGD = tiny_spec().replace("update adamw(lr = 1e-3)", "update sgd(lr = 0.5)")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def trainer(tmp_path, spec_text=SGD, **kw):
    tmp_path.mkdir(exist_ok=True)
    spec = tmp_path / "tiny.nl"
    spec.write_text(spec_text)
    base = dict(spec=str(spec), data=str(short_documents(tmp_path / "docs")), steps=2, batch=4, seq=16,
                out=str(tmp_path / "run"), dtype="float64", documents="aligned", eval_batches=1)
    base.update(kw)
    return Trainer(TrainConfig(**base), log=lambda msg: None)


def row_by_row(model, batch):
    """(summed loss, targets) of each row's real tokens run alone, without its padding."""
    total, count = 0.0, 0
    for row in batch:
        real = row[row != IGNORE]
        logits, _ = model(real[None, :-1])
        total = total + F.cross_entropy(logits[0], real[1:], reduction="sum")
        count += real.numel() - 1
    return total, count


def test_a_step_is_the_mean_over_the_targets_that_count_and_padding_changes_nothing(tmp_path):
    t = trainer(tmp_path)
    batch = t.stream.batch_at(0)[0]
    y = batch[:, 1:]
    assert (y == IGNORE).any() and (y != IGNORE).any()  # the batch is padded
    expected = copy.deepcopy(t.model)
    total, count = row_by_row(expected, batch)
    (total / count).backward()
    loss = float(total.detach()) / count
    with torch.no_grad():
        for p in expected.parameters():
            p -= 0.5 * p.grad  # the outer level: sgd(lr = 0.5)
    result = t.loop.step(next(t.stream), t.stream.last_targets)
    assert result.tokens == count == t.stream.last_targets
    assert abs(result.loss - loss) <= 1e-12 * loss
    for (name, want), got in zip(expected.named_parameters(), t.model.parameters()):
        assert torch.allclose(want, got, rtol=0, atol=1e-12), name


def test_validation_is_the_mean_over_the_targets_that_count(tmp_path):
    t = trainer(tmp_path, eval_batches=2)
    assert len(t.val) == 2 and any((b == IGNORE).any() for b in t.val)
    with torch.no_grad():
        sums = [row_by_row(t.model, b) for b in t.val]
    want = sum(float(s) for s, _ in sums) / sum(c for _, c in sums)
    assert abs(t.loop.evaluate(t.val) - want) <= 1e-12 * want


def test_a_memory_that_keeps_its_state_is_refused(tmp_path):
    spec = tmp_path / "tiny.nl"
    spec.write_text(SGD.replace("  update gd\n", "  update gd\n      state persist\n"))
    result = CliRunner().invoke(main, ["train", str(spec), "--steps", "1", "--batch", "2", "--out", str(tmp_path / "run"),
                                       "--documents", "aligned"])
    assert result.exit_code == 1, result.output
    assert "--documents aligned starts every row afresh, and `mix.m` keeps its state" in result.output
    assert "= help: train it with --documents packed" in result.output


def test_a_run_keeps_its_layout_when_resumed(tmp_path):
    spec, run = tmp_path / "tiny.nl", tmp_path / "run"
    spec.write_text(SGD)
    data = short_documents(tmp_path / "docs")
    base = ["--batch", "2", "--seq", "16", "--data", str(data), "--checkpoint-every", "1"]
    first = CliRunner().invoke(main, ["train", str(spec), "--steps", "2", "--out", str(run), "--documents", "aligned", *base])
    assert first.exit_code == 0, first.output
    assert "documents aligned" in first.output and "of the targets are padding" in first.output
    assert json.loads((run / "config.json").read_text())["documents"] == "aligned"
    assert json.loads((run / "checkpoint.json").read_text())["data"]["layout"] == "aligned"
    refused = CliRunner().invoke(main, ["train", "--resume", str(run), "--steps", "3", "--documents", "packed"])
    assert refused.exit_code == 1
    assert f"--documents packed: {run} was trained with --documents aligned" in refused.output
    resumed = CliRunner().invoke(main, ["train", "--resume", str(run), "--steps", "3"])
    assert resumed.exit_code == 0, resumed.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    # the same three steps in one go
    again = CliRunner().invoke(main, ["train", str(spec), "--steps", "3", "--out", str(tmp_path / "again"),
                                      "--documents", "aligned", *base])
    assert again.exit_code == 0, again.output
    straight = [json.loads(line) for line in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in straight] == [r["loss"] for r in records]
    assert [r["tokens"] for r in straight] == [r["tokens"] for r in records] and min(r["tokens"] for r in records) < 2 * 16
