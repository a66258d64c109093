"""`nlc train --compile`: the run records the option, its levels run compiled tile steps, and it trains
to the losses of the eager run (up to rounding). Compiling takes tens of seconds, hence `slow`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nldsl.cli import main
from nldsl.doctor import BUILTIN_SPEC
from nldsl.runtime.train import TrainConfig, Trainer

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_with_compiled_steps_matches_the_eager_run(tmp_path):
    args = ["--steps", "2", "--batch", "2", "--seq", "24", "--eval-every", "2", "--checkpoint-every", "2"]
    result = CliRunner().invoke(main, ["train", str(BUILTIN_SPEC), *args, "--out", str(tmp_path / "compiled"),
                                       "--compile"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["compile"] is True
    eager = Trainer(TrainConfig(str(BUILTIN_SPEC), steps=2, batch=2, seq=24, out=str(tmp_path / "eager"),
                                eval_every=2, checkpoint_every=2))
    eager.train()
    assert not any(getattr(m, "compile_steps", False) for m in eager.model.modules())
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-5)


def test_a_compiled_run_resumes_exactly(tmp_path):
    def config(out, steps):
        return TrainConfig(str(BUILTIN_SPEC), steps=steps, batch=2, seq=24, out=str(tmp_path / out), eval_every=2,
                           checkpoint_every=2, compile=True)

    Trainer(config("straight", 4)).train()
    Trainer(config("resumed", 2)).train()
    Trainer(config("resumed", 4), resume=True).train()
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
