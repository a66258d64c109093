"""Every example trains: 12 outer steps of `nlc train`'s loop at batch 4 x 128 tokens on the bundled
corpus, without a non-finite loss, and its loss falls. The four Titans examples, miras and ttt_mlp once
stopped on a non-finite loss within 2 to 10 such steps (their memories' inner steps were too large)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from nldsl.runtime.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.nl"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def test_the_examples_are_all_here():
    assert len(EXAMPLES) >= 15 and {"hope", "titans", "miras", "ttt_mlp"} <= set(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_trains_without_diverging(tmp_path, name):
    records = []
    cfg = TrainConfig(spec=str(ROOT / "examples" / f"{name}.nl"), steps=12, batch=4, seq=128,
                      out=str(tmp_path / "run"), checkpoint_every=100, eval_every=100, eval_batches=1)
    Trainer(cfg).train(progress=records.append)  # raises Diverged on a non-finite loss
    losses = [r["loss"] for r in records]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert math.isfinite(records[-1]["val_loss"])
