"""Goldens of the generated code: model.py and plan.txt of four examples, kernels.py of two (a linear
memory's wy-form kernels and an MLP memory's), and the state_dict keys of hope.nl's model (names and
shapes), so that the generated code and checkpoint keys cannot drift silently. Regenerate with `NLC_REGEN=1 pytest tests/compile/test_compile_golden.py` and review the diff.

The spec's sha256 in model.py's docstring is written as <sha256> in the goldens (it changes with every
edit of an example's comments); the hash itself is checked against the manifest here.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path

import pytest
import torch

from compile_testkit import ROOT, compile_ok, in_root
from nldsl.compiler import load

GOLDEN = ROOT / "tests" / "golden" / "compile"
SPECS = ["hope", "titans", "gated_deltanet", "titans_mac"]
REGEN = os.environ.get("NLC_REGEN") == "1"
SHA = re.compile(r"\b[0-9a-f]{64}\b")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    assert path.is_file(), f"missing golden {path.relative_to(ROOT)}; run with NLC_REGEN=1 to write it"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"golden/{name}", "generated", n=2))
        pytest.fail(f"{name} differs from its golden (NLC_REGEN=1 rewrites it):\n{diff[:6000]}")


@pytest.fixture(scope="module")
def compiled():
    with in_root():
        return {name: compile_ok(f"examples/{name}.nl") for name in SPECS}


@pytest.mark.parametrize("name", SPECS)
def test_generated_model_py_matches_its_golden(name, compiled):
    files = compiled[name]
    digest = json.loads(files["manifest.json"])["spec_sha256"]
    assert SHA.findall(files["model.py"]) == [digest]
    check_golden(f"{name}.model.py.golden", files["model.py"].replace(digest, "<sha256>"))


@pytest.mark.parametrize("name", SPECS)
def test_generated_plan_matches_its_golden(name, compiled):
    check_golden(f"{name}.plan.txt.golden", compiled[name]["plan.txt"])


@pytest.mark.parametrize("name", ["gated_deltanet", "titans"])
def test_generated_kernels_match_their_golden(name, compiled):
    check_golden(f"{name}.kernels.py.golden", compiled[name]["kernels.py"])


def test_hope_state_dict_keys_match_their_golden():
    torch.manual_seed(0)
    model = load(ROOT / "examples" / "hope.nl")
    lines = [f"{key} {'x'.join(map(str, value.shape)) or 'scalar'} {str(value.dtype).replace('torch.', '')}"
             for key, value in model.state_dict().items()]
    check_golden("hope.state_dict.golden", "\n".join(lines) + "\n")


def test_goldens_are_not_python_files():
    """Goldens end in .golden so that no tool collects, imports or reformats them."""
    if GOLDEN.is_dir():
        assert all(p.suffix == ".golden" for p in GOLDEN.iterdir() if p.is_file())
        for p in GOLDEN.iterdir():
            assert str(ROOT) not in p.read_text(encoding="utf-8")
    assert Path(__file__).suffix == ".py"
