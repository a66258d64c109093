"""Sample level-graph documents (schema nlc.graph/1) for the renderer tests.

Built by hand so the renderers can be tested without the front end: a HOPE-like model with eleven
levels over five clock tiers, a two-level model, and one whose labels try to break every format.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"


def clock(unit: str, period: int | None, chunk: int | None = None) -> dict[str, Any]:
    return {"period": period, "unit": unit, "chunk": chunk}


def level(name: str, kind: str, type_: str, clk: dict[str, Any], clock_text: str, rank: int,
          params: int, state_size: int | None, state_text: str, update_cost: int | None,
          heads: int | None = None, replicas: int | None = 1, line: int = 1,
          notes: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "name": name, "kind": kind, "type": type_, "clock": clk, "clock_text": clock_text,
        "params": params, "state_size": state_size, "state_text": state_text,
        "update_cost": update_cost, "heads": heads, "replicas": replicas, "rank": rank,
        "line": line, "col": 3, "notes": list(notes),
    }


def edge(src: str, dst: str, kind: str, label: str) -> dict[str, str]:
    return {"src": src, "dst": dst, "kind": kind, "label": label}


MLP = "mlp(depth=2, hidden=64, act=silu, residual)"
TOKEN16 = clock("tokens", 1, 16)


def _hope() -> dict[str, Any]:
    memories = [
        level(f"selfmod_titans.{m}", "memory", MLP, TOKEN16, "every 1 token, chunk 16", 0,
              33024, 8192, "8.2k", 16640, heads=4, replicas=4, line=20 + i,
              notes=("reads k from selfmod_titans.mem_k",) if m != "mem_k" else ())
        for i, m in enumerate(["mem_alpha", "mem_eta", "mem_k", "mem_v"])
    ]
    levels = [
        level("selfmod_titans.mem", "memory", MLP, clock("tokens", 1, 64), "every 1 token, chunk 64", 0,
              33024, 8192, "8.2k", 16640, heads=4, replicas=4, line=30),
        *memories,
        level("swa", "attention", "sliding window attention(window=512)", clock("tokens", 1), "every 1 token",
              0, 262144, None, "2·dim per token", 2048, heads=4, replicas=4, line=34),
        level("continuum.fast", "cms", "mlp(hidden=1024)", clock("tokens", 16), "every 16 tokens", 1,
              526336, None, "", 1579008, replicas=4, line=40),
        level("continuum.mid", "cms", "mlp(hidden=1024)", clock("tokens", 256), "every 256 tokens", 2,
              526336, None, "", 1579008, replicas=4, line=41),
        level("continuum.slow", "cms", "mlp(hidden=1024)", clock("tokens", 4096), "every 4096 tokens", 3,
              526336, None, "", 1579008, replicas=4, line=42),
        level("pretrain", "outer", "next_token, adamw(lr=3e-4), clip(1.0)", clock("steps", 1), "every 1 step",
              4, 1245184, None, "", None, line=12),
        level("pretrain.adamw", "optimizer", "adamw(betas=(0.9, 0.95))", clock("steps", 1), "every 1 step",
              4, 0, 6_500_000, "2 moments per parameter", None, line=15),
    ]
    names = ["mem_alpha", "mem_eta", "mem_k", "mem_v"]
    edges = [
        edge("selfmod_titans.mem_k", "selfmod_titans.mem", "flow", "key"),
        edge("selfmod_titans.mem_v", "selfmod_titans.mem", "flow", "value"),
        edge("selfmod_titans.mem_eta", "selfmod_titans.mem", "flow", "write rate η"),
        edge("selfmod_titans.mem_alpha", "selfmod_titans.mem", "flow", "retention α"),
        edge("selfmod_titans.mem", "continuum.fast", "flow", "memory read"),
        edge("swa", "continuum.fast", "flow", "attended"),
        edge("continuum.fast", "continuum.mid", "flow", "hidden"),
        edge("continuum.mid", "continuum.slow", "flow", "hidden"),
        *[edge("pretrain", f"selfmod_titans.{n}", "meta", "initial state") for n in names + ["mem"]],
        *[edge("pretrain", f"continuum.{c}", "teach", "lm loss") for c in ("fast", "mid", "slow")],
        edge("pretrain", "pretrain.adamw", "flow", "gradients"),
    ]
    return {
        "schema": "nlc.graph/1",
        "model": "hope",
        "source": "examples/hope.nl",
        "levels": levels,
        "edges": edges,
        "diagnostics": {"errors": 0, "warnings": 1},
    }


def _tiny() -> dict[str, Any]:
    return {
        "schema": "nlc.graph/1",
        "model": "tiny",
        "source": "tiny.nl",
        "levels": [
            level("mem", "memory", "linear", clock("tokens", 1, None), "every 1 token", 0,
                  0, 4096, "4.1k", 8192, heads=2, line=3),
            level("outer", "outer", "next_token, sgd(lr=0.1)", clock("steps", 1), "every 1 step", 1,
                  1_200_000, None, "", None, line=8),
        ],
        "edges": [edge("outer", "mem", "meta", "initial state")],
        "diagnostics": {"errors": 0, "warnings": 0},
    }


# Labels and types that try to escape from a quoted string, a tag, a comment or a Mermaid label.
HOSTILE = [
    'say "hi" <b>bold</b> & \'quote\'',
    "</script><script>alert(1)</script>",
    '"]; evil -> x; x [label="',
    'back\\slash \\N \\G \\l end\\',
    "two\nlines",
    "#quot; #35; %% not a comment `tick` |pipe| {brace} [bracket] (paren)",
    "unicode: αβγ → ∑ 日本語 🙂",
    "--> -.-> ==> end subgraph",
    "[bold]not markup[/bold]",
]


def _hostile() -> dict[str, Any]:
    doc = _tiny()
    doc["model"] = 'model "<x>" & co'
    doc["source"] = "specs/<odd> & \"name\".nl"
    doc["levels"][0]["type"] = HOSTILE[0]
    doc["levels"][0]["notes"] = HOSTILE[:]
    doc["levels"][1]["type"] = HOSTILE[1]
    doc["levels"][1]["state_text"] = HOSTILE[6]
    doc["edges"] = [edge("outer", "mem", "meta", label) for label in HOSTILE]
    doc["edges"].append(edge("mem", "outer", "flow", HOSTILE[2]))
    return doc


@pytest.fixture
def hope_doc() -> dict[str, Any]:
    return _hope()


@pytest.fixture
def tiny_doc() -> dict[str, Any]:
    return _tiny()


@pytest.fixture
def hostile_doc() -> dict[str, Any]:
    return _hostile()


@pytest.fixture
def hostile_labels() -> list[str]:
    return copy.deepcopy(HOSTILE)


@pytest.fixture(params=["hope", "tiny", "hostile"])
def any_doc(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"hope": _hope, "tiny": _tiny, "hostile": _hostile}[request.param]()


@pytest.fixture
def check_golden() -> Callable[[str, str], None]:
    """Compare output with tests/render/golden/<name>. To accept new output on purpose, run the tests
    with NLC_REGEN=1 and review the diff."""

    def check(name: str, actual: str) -> None:
        path = GOLDEN_DIR / name
        if os.environ.get("NLC_REGEN") == "1":
            GOLDEN_DIR.mkdir(exist_ok=True)
            path.write_text(actual, encoding="utf-8")
            return
        if not path.exists():
            raise AssertionError(f"missing golden file {name}; run with NLC_REGEN=1 to create it")
        expected = path.read_text(encoding="utf-8")
        if actual != expected:
            diff = "".join(
                difflib.unified_diff(
                    expected.splitlines(keepends=True),
                    actual.splitlines(keepends=True),
                    fromfile=f"golden/{name}",
                    tofile="rendered",
                )
            )
            raise AssertionError(f"output differs from golden/{name}:\n{diff}")

    return check
