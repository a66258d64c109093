"""``nldsl.render.render``: the format dispatcher, the JSON format, and a cheap import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nldsl.render import FORMATS, GraphDocError, render


def test_formats():
    assert FORMATS == ("text", "json", "dot", "mermaid", "html")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_every_sample(any_doc, fmt):
    out = render(any_doc, fmt)
    assert isinstance(out, str) and out.endswith("\n")
    for item in any_doc["levels"]:
        assert item["name"] in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_graph_renders(fmt):
    empty = {"schema": "nlc.graph/1", "model": "empty", "source": "", "levels": [], "edges": []}
    out = render(empty, fmt)
    assert out.endswith("\n")
    assert ("empty" in out) == (fmt != "mermaid")  # Mermaid output carries no title


def test_the_default_format_is_text(tiny_doc):
    assert render(tiny_doc) == render(tiny_doc, "text")


def test_an_unknown_format_names_the_known_ones(tiny_doc):
    with pytest.raises(ValueError, match="unknown graph format 'svg'; expected one of text, json, dot"):
        render(tiny_doc, "svg")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_malformed_document_is_refused_by_every_format(tiny_doc, fmt):
    tiny_doc["edges"][0]["src"] = "ghost"
    with pytest.raises(GraphDocError, match="unknown level 'ghost'"):
        render(tiny_doc, fmt)


def test_json_is_the_document_with_its_key_order(hope_doc):
    out = render(hope_doc, "json")
    assert json.loads(out) == hope_doc
    assert list(json.loads(out)) == ["schema", "model", "source", "levels", "edges", "diagnostics"]
    assert out.endswith("}\n") and out.startswith('{\n  "schema": "nlc.graph/1",')


def test_tiny_json_golden(tiny_doc, check_golden):
    check_golden("tiny.json", render(tiny_doc, "json"))


def test_importing_the_renderers_is_cheap():
    code = (
        "import sys, nldsl.render; print(sorted(m for m in ('torch', 'rich', 'jinja2') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_renderer_imports_torch():
    code = (
        "import sys, nldsl.render as r\nfor fmt in r.FORMATS: r.renderer(fmt)\nprint('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
