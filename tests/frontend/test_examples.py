"""Every example spec checks cleanly, and its level graph matches the goldens in tests/golden/graph/.

For `examples/<name>.nl` (found at test time; `examples/lib/` holds libraries, not models) the test
compares the graph document (`to_doc`, schema `nlc.graph/1`, see docs/graph-schema.md) with
`tests/golden/graph/<name>.json`, and its text rendering with `<name>.txt`. After an intended change,
regenerate them with

    NLC_REGEN=1 python -m pytest tests/frontend/test_examples.py

and review the diff. The document must also be deterministic (same bytes from run to run, whatever
the hash seed) and carry the documented fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nldsl.graph import to_doc
from nldsl.pipeline import check_file
from nldsl.render import render
from nldsl.render.doc import CLOCK_UNITS, EDGE_KINDS, LEVEL_KINDS, load

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "graph"
EXAMPLES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "examples").glob("*.nl"))
REGEN = os.environ.get("NLC_REGEN") == "1"

LEVEL_FIELDS = ("name", "kind", "type", "clock", "clock_text", "params", "state_size", "state_text", "update_cost",
                "heads", "replicas", "rank", "line", "col", "notes")


def graph_doc(example: str) -> tuple[dict, object]:
    """(document, front end) for an example path relative to the repository root."""
    fe = check_file(example)
    errors = [d for d in fe.diagnostics if d.is_error]
    assert not errors, f"{example} has errors:\n" + "\n".join(
        f"{d.span}: {d.code} {d.message}" for d in errors)
    assert fe.graph is not None and fe.model is not None
    return to_doc(fe.graph, fe.model, example, fe.diagnostics), fe


def doc_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def text_rendering(doc: dict) -> str:
    text = render(doc, "text")
    return text if text.endswith("\n") else text + "\n"


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    """Paths in documents and diagnostics are relative to the repository root, as in the goldens."""
    monkeypatch.chdir(ROOT)


def compare_golden(path: Path, actual: str) -> None:
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    if not path.exists():
        pytest.fail(f"missing golden {path.relative_to(ROOT)}; create it with "
                    f"`NLC_REGEN=1 python -m pytest tests/frontend/test_examples.py` and review it")
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, (f"{path.relative_to(ROOT)} differs from the current output; if the change is "
                                f"intended, regenerate with NLC_REGEN=1 and review the diff")


def test_there_are_examples():
    assert "examples/hope.nl" in EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_checks_without_errors(example):
    graph_doc(example)


@pytest.mark.parametrize("example", EXAMPLES)
def test_graph_json_golden(example):
    doc, _ = graph_doc(example)
    compare_golden(GOLDEN / f"{Path(example).stem}.json", doc_json(doc))


@pytest.mark.parametrize("example", EXAMPLES)
def test_graph_text_golden(example):
    doc, _ = graph_doc(example)
    compare_golden(GOLDEN / f"{Path(example).stem}.txt", text_rendering(doc))


def test_no_orphan_goldens():
    stems = {Path(e).stem for e in EXAMPLES}
    orphans = sorted(p.name for p in GOLDEN.glob("*") if p.stem not in stems)
    assert not orphans, f"goldens without an example (delete them): {orphans}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_graph_schema(example):
    doc, fe = graph_doc(example)
    assert list(doc)[:5] == ["schema", "model", "source", "levels", "edges"]
    assert doc["schema"] == "nlc.graph/1"
    assert doc["model"] == fe.model.name and doc["source"] == example
    assert doc["diagnostics"] == {"errors": 0, "warnings": sum(d.severity == "warning" for d in fe.diagnostics)}
    names = [lv["name"] for lv in doc["levels"]]
    assert len(names) == len(set(names)) and set(names) == set(fe.graph.nodes)
    ranks = sorted({lv["rank"] for lv in doc["levels"]})
    assert ranks == list(range(len(ranks)))
    for lv in doc["levels"]:
        assert tuple(lv)[: len(LEVEL_FIELDS)] == LEVEL_FIELDS, lv["name"]
        assert lv["kind"] in LEVEL_KINDS
        assert set(lv["clock"]) == {"period", "unit", "chunk"} and lv["clock"]["unit"] in CLOCK_UNITS
        assert (lv["clock"]["period"] is None) == (lv["clock"]["unit"] == "never")
        for key in ("params", "state_size", "update_cost", "heads", "replicas", "line", "col"):
            assert lv[key] is None or (isinstance(lv[key], int) and lv[key] >= 0), (lv["name"], key)
        assert isinstance(lv["params"], int) and isinstance(lv["notes"], list)
        assert all(isinstance(n, str) for n in lv["notes"])
        assert lv["line"] >= 1 and lv["col"] >= 1
    assert sum(lv["kind"] == "outer" for lv in doc["levels"]) == 1
    for edge in doc["edges"]:
        assert list(edge) == ["src", "dst", "kind", "label"]
        assert edge["src"] in names and edge["dst"] in names and edge["kind"] in EDGE_KINDS
    load(doc)  # what every renderer reads: raises on a malformed document
    json.loads(doc_json(doc))


@pytest.mark.parametrize("example", EXAMPLES)
def test_graph_is_deterministic_in_process(example):
    first, _ = graph_doc(example)
    second, _ = graph_doc(example)
    assert doc_json(first) == doc_json(second)
    assert text_rendering(first) == text_rendering(second)


def test_graph_is_deterministic_across_hash_seeds():
    """Sets and dicts keyed by strings iterate in a seed-dependent order; the document must not."""
    code = ("import json, sys\n"
            "from nldsl.pipeline import check_file\n"
            "from nldsl.graph import to_doc\n"
            "out = {}\n"
            "for ex in sys.argv[1:]:\n"
            "    fe = check_file(ex)\n"
            "    out[ex] = to_doc(fe.graph, fe.model, ex, fe.diagnostics) if fe.graph is not None else None\n"
            "print(json.dumps(out, ensure_ascii=False))\n")
    runs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        proc = subprocess.run([sys.executable, "-c", code, *EXAMPLES], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs.append(proc.stdout)
    assert runs[0] == runs[1]
