"""Options for the whole suite, so that a machine lent for a few minutes at a time (a GPU) can run it in
several calls and account for each part: `--shard I/N` runs the I-th (from 0) of N parts of the collected
tests, every N-th test in collection order; `--skip-passed FILE` (repeatable) leaves out the tests that
an earlier run's verbose output (`pytest -v`, with or without xdist) says passed or skipped, so that a
run cut off by its time limit can be finished."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the test kits shared by every folder (tiny_specs)


def pytest_addoption(parser):
    parser.addoption("--shard", default=None, metavar="I/N",
                     help="run the I-th (0-based) of N parts of the collected tests: every N-th test")
    parser.addoption("--skip-passed", action="append", default=[], metavar="FILE",
                     help="deselect the tests that FILE, an earlier run's `pytest -v` output, names as "
                          "passed or skipped (repeatable: the tests any FILE names)")


def shard_of(text: str) -> tuple[int, int]:
    """(I, N) of 'I/N', 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--shard takes I/N, e.g. 0/3; got {text!r}") from None
    if not 0 <= index < count:
        raise pytest.UsageError(f"--shard {text}: I must be at least 0 and less than N")
    return index, count


# a test's outcome in `pytest -v` output: "[gw3] [ 10%] PASSED tests/a.py::t[x y]" under xdist, else
# "tests/a.py::t[x y] SKIPPED (reason)  [ 10%]" (an id alone on a line is not an outcome: xdist lists
# the tests it schedules so, and --durations names tests whatever their outcome)
_OUTCOMES = (re.compile(r"^(?:\[gw\d+\] \[\s*\d+%\] )?(?:PASSED|SKIPPED) (?P<id>[^\s:]+::.*?)\s*$"),
             re.compile(r"^(?P<id>[^\s:]+::.*?) (?:PASSED|SKIPPED)(?: \(.*\))?(?:\s+\[\s*\d+%\])?\s*$"))


def passed_ids(text: str) -> set[str]:
    """The ids of the tests that `pytest -v` output names as passed or skipped."""
    found = set()
    for line in text.splitlines():
        for pattern in _OUTCOMES:
            match = pattern.match(line)
            if match:
                found.add(match.group("id"))
                break
    return found


def _deselect(config, items, keep) -> None:
    dropped = [item for position, item in enumerate(items) if not keep(position, item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for position, item in enumerate(items) if keep(position, item)]


def pytest_collection_modifyitems(config, items):
    done = set()
    for skip in config.getoption("--skip-passed"):
        try:
            done |= passed_ids(Path(skip).read_text())
        except OSError as e:
            raise pytest.UsageError(f"--skip-passed {skip}: {e.strerror}") from None
    if done:
        _deselect(config, items, lambda _, item: item.nodeid not in done)
    text = config.getoption("--shard")
    if text:
        index, count = shard_of(text)
        _deselect(config, items, lambda position, _: position % count == index)


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
