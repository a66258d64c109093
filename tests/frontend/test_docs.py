"""The documentation says what the checker does: every whole spec shown in README.md and docs/ checks
without errors, and the key tables of docs/language.md §12 list exactly the keys nldsl/schema.py
accepts for each kind of declaration."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from nldsl import schema
from nldsl.pipeline import check_text

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def fenced_specs() -> list[tuple[str, str]]:
    """(where, text) of every fenced block that is a whole spec: it starts with the version line and
    elides nothing (`...`)."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
            body = match.group(1)
            if body.startswith("nl 1") and "..." not in body:
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{path.relative_to(ROOT)}:{line}", body))
    return found


@pytest.mark.parametrize("where, text", [pytest.param(w, t, id=w) for w, t in fenced_specs()])
def test_every_spec_in_the_docs_checks(where, text):
    # a spec that imports a library is checked beside the examples' libraries
    diagnostics = check_text(text, str(ROOT / "examples" / "doc_snippet.nl"))
    errors = [f"{d.code} {d.span.line if d.span else ''}: {d.message}" for d in diagnostics if d.is_error]
    assert not errors, f"{where}: " + "; ".join(errors)


def test_the_docs_show_specs():
    assert len(fenced_specs()) >= 2


# the headings of docs/language.md §12's tables and the schema's kinds
TABLES = {"memory": "memory", "attention": "attention", "cms": "cms", "cms member": "cms_level",
          "level": "level", "optimizer": "optimizer"}


def documented_keys() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    section = text.split("## 12.", 1)[1].split("\n## ", 1)[0]
    keys: dict[str, set[str]] = {}
    kind = None
    for line in section.splitlines():
        heading = re.match(r"\*\*([a-z ]+)\*\*", line)
        if heading:
            kind = TABLES[heading.group(1)]
            keys[kind] = set()
        row = re.match(r"\| `([a-z_]+)` \|", line)
        if row and kind is not None:
            keys[kind].add(row.group(1))
    return keys


def test_the_key_tables_are_the_schemas_keys():
    documented = documented_keys()
    assert set(documented) == set(schema.KEYS)
    for kind, keys in schema.KEYS.items():
        assert documented[kind] == set(keys), kind
