"""Runs shared by the generation, memory-file and evaluation tests: tiny models, trained a few steps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# examples/hope.nl shrunk to a width of 32, one layer and CMS clocks of 16/32/64 tokens, so that a
# few training steps and a few hundred learned tokens run in seconds
TINY_HOPE = [("dim      = 128", "dim      = 32"), ("heads    = 4", "heads    = 2"), ("layers   = 2", "layers   = 1"),
             ("context  = 512", "context  = 64"), ("clock every 256 tokens", "clock every 64 tokens"),
             ("clock every 64 tokens", "clock every 32 tokens"), ("clock every 16 tokens", "clock every 16 tokens")]

# examples/deltanet.nl shrunk, with its memory kept across sequences (`state persist`)
PERSIST_DELTANET = [("dim      = 128", "dim      = 32"), ("heads    = 4", "heads    = 2"),
                    ("layers   = 2", "layers   = 1"), ("context  = 256", "context  = 32"),
                    ("      init      zero\n", "      init      zero\n      state     persist\n")]


def derived_spec(example: str, edits: list, path: Path) -> Path:
    text = (EXAMPLES / example).read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, f"examples/{example} no longer contains {old!r}: update the test's edits"
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return path


def train_run(spec: Path, out: Path, *, steps: int, seq: int, batch: int, dtype: str = "float32",
              data: str | None = None) -> Path:
    from nldsl.runtime.train import TrainConfig, Trainer

    cfg = TrainConfig(spec=str(spec), data=data, steps=steps, batch=batch, seq=seq, out=str(out), dtype=dtype,
                      checkpoint_every=steps, eval_every=steps, eval_batches=1)
    Trainer(cfg, log=lambda msg: None).train()
    return out


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    saved = {k: os.environ.get(k) for k in ("NLC_CACHE", "MPLBACKEND")}
    os.environ["NLC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["MPLBACKEND"] = "Agg"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_hope_spec(tmp_path_factory):
    """examples/hope.nl shrunk (TINY_HOPE)."""
    return derived_spec("hope.nl", TINY_HOPE, tmp_path_factory.mktemp("tiny_hope_spec") / "tiny_hope.nl")


@pytest.fixture(scope="session")
def tiny_hope_run(tmp_path_factory, tiny_hope_spec):
    """The tiny HOPE trained 12 steps on the bundled corpus (float32)."""
    return train_run(tiny_hope_spec, tmp_path_factory.mktemp("tiny_hope") / "run", steps=12, seq=64, batch=4)


@pytest.fixture(scope="session")
def persist_run(tmp_path_factory):
    """A tiny DeltaNet whose memory persists across sequences, trained 2 steps."""
    base = tmp_path_factory.mktemp("persist")
    spec = derived_spec("deltanet.nl", PERSIST_DELTANET, base / "persist_deltanet.nl")
    return train_run(spec, base / "run", steps=2, seq=16, batch=2)


@pytest.fixture(scope="session")
def example_runs(tmp_path_factory):
    """examples/hope.nl and examples/transformer.nl as they are, trained one short float64 step."""
    base = tmp_path_factory.mktemp("examples")
    return {name: train_run(EXAMPLES / f"{name}.nl", base / name, steps=1, seq=16, batch=1, dtype="float64")
            for name in ("hope", "transformer")}


@pytest.fixture(scope="session")
def invoke():
    """Run an `nlc` command line (its arguments as strings) and hold it to exit 0 without a traceback."""
    from click.testing import CliRunner

    from nldsl.cli import main

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        return result
    return run


@pytest.fixture()
def runner():
    from click.testing import CliRunner

    return CliRunner()
