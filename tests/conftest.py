"""Options for the whole suite: `--shard I/N` runs the I-th (from 0) of N parts of the collected tests,
every N-th test in collection order, so that a machine lent for a few minutes at a time (a GPU) can run
the suite in several calls and account for each part."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the test kits shared by every folder (tiny_specs)


def pytest_addoption(parser):
    parser.addoption("--shard", default=None, metavar="I/N",
                     help="run the I-th (0-based) of N parts of the collected tests: every N-th test")


def shard_of(text: str) -> tuple[int, int]:
    """(I, N) of 'I/N', 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--shard takes I/N, e.g. 0/3; got {text!r}") from None
    if not 0 <= index < count:
        raise pytest.UsageError(f"--shard {text}: I must be at least 0 and less than N")
    return index, count


def pytest_collection_modifyitems(config, items):
    text = config.getoption("--shard")
    if not text:
        return
    index, count = shard_of(text)
    kept = [item for position, item in enumerate(items) if position % count == index]
    dropped = [item for position, item in enumerate(items) if position % count != index]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


@pytest.fixture()
def torch_compile_fails(monkeypatch):
    """torch.compile gives functions that raise (as where no C++ compiler is found), and the chunked
    path's compiled tile step is a fresh one; yields that step."""
    from nldsl.runtime.memory import compiled, dual

    def broken_compile(fn, **options):
        def call(*args, **kwargs):
            raise RuntimeError("no C++ compiler here")
        return call

    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    step = compiled.CompiledStep(dual._tile_step)
    monkeypatch.setattr(dual, "_COMPILED_TILE_STEP", step)
    yield step
