"""The Graphviz DOT renderer: clusters per clock tier, edge styles by kind, exact escaping."""

from __future__ import annotations

import re
import shutil
import subprocess
from xml.etree import ElementTree

import pytest

from nldsl.render.dot import quote, render_dot

QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')

# Every line of the output, once its quoted strings are replaced by Q, has one of these shapes.
SKELETON = [
    r"digraph Q \{",
    r"  graph \[rankdir=LR, newrank=true, fontname=Q, fontsize=12, labelloc=t, label=Q\];",
    r"  node \[shape=box, style=Q, fontname=Q, fontsize=10\];",
    r"  edge \[fontname=Q, fontsize=9\];",
    r"  subgraph Q \{",
    r"    label=Q;",
    r"    style=Q; color=Q;",
    r"    Q \[label=Q, fillcolor=Q, color=Q, fontcolor=Q\];",
    r"  \}",
    r"  Q -> Q \[(label=Q, )?style=(solid|dashed|dotted), color=Q, fontcolor=Q, class=Q"
    r"(, constraint=false)?\];",
    r"  Q -> Q \[style=invis\];",
    r"\}",
]


def label_text(body: str) -> str:
    """What Graphviz shows for a quoted string: \\" is a quote, \\\\ a backslash, \\n a line break.
    Any other backslash sequence would be expanded by Graphviz, so it must not occur."""
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            assert nxt in '"\\n', f"unexpected escape \\{nxt} in {body!r}"
            out.append({'"': '"', "\\": "\\", "n": "\n"}[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def skeleton(dot: str) -> list[str]:
    return [QUOTED.sub("Q", line) for line in dot.splitlines()]


def test_every_line_has_a_known_shape_even_with_hostile_labels(any_doc):
    for line in skeleton(render_dot(any_doc)):
        assert any(re.fullmatch(shape, line) for shape in SKELETON), line


def test_hostile_labels_come_out_exactly(hostile_doc, hostile_labels):
    dot = render_dot(hostile_doc)
    shown = [label_text(m.group(1)) for m in QUOTED.finditer(dot)]
    for label in hostile_labels:
        assert label in shown, label
    assert 'model "<x>" & co  (specs/<odd> & "name".nl)' in shown


@pytest.mark.parametrize("text", ["plain", 'q"uote', "back\\slash", "end\\", "\\N\\G\\l", "a\nb", "日本 🙂"])
def test_quote_round_trips(text):
    quoted = quote(text)
    assert quoted.startswith('"') and quoted.endswith('"')
    assert QUOTED.fullmatch(quoted)
    assert label_text(quoted[1:-1]) == text


def test_one_cluster_per_tier_in_clock_order(hope_doc):
    dot = render_dot(hope_doc)
    clusters = re.findall(r'subgraph "cluster_tier(\d+)" \{\n    label="([^"]*)"', dot)
    assert clusters == [
        ("0", "tier 0: every 1 token"),
        ("1", "tier 1: every 16 tokens"),
        ("2", "tier 2: every 256 tokens"),
        ("3", "tier 3: every 4096 tokens"),
        ("4", "tier 4: every 1 step"),
    ]
    block = dot.split('subgraph "cluster_tier4"')[1].split("  }")[0]
    assert '"pretrain" [' in block and '"pretrain.adamw" [' in block


def test_edge_style_follows_its_kind(hope_doc):
    dot = render_dot(hope_doc)
    assert '"pretrain" -> "continuum.mid" [label="lm loss", style=dashed' in dot
    assert '"pretrain" -> "selfmod_titans.mem_k" [label="initial state", style=dotted' in dot
    assert '"selfmod_titans.mem_k" -> "selfmod_titans.mem" [label="key", style=solid' in dot
    assert dot.count("class=") == len(hope_doc["edges"])
    assert dot.count("[style=invis]") == 4  # one between each pair of neighbouring tiers
    # only edges from a slower tier to a faster one leave the ranking alone
    backward = [line for line in dot.splitlines() if "constraint=false" in line]
    assert len(backward) == 8 and all(line.startswith('  "pretrain" -> "') for line in backward)


def test_rendering_is_deterministic(any_doc):
    assert render_dot(any_doc) == render_dot(any_doc)


def test_tiny_golden(tiny_doc, check_golden):
    check_golden("tiny.dot", render_dot(tiny_doc))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_graphviz_draws_the_labels_exactly(hostile_doc, hostile_labels):
    result = subprocess.run(
        ["dot", "-Tsvg"], input=render_dot(hostile_doc), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    svg = ElementTree.fromstring(result.stdout)
    texts = {"".join(node.itertext()) for node in svg.iter("{http://www.w3.org/2000/svg}text")}
    for label in hostile_labels:
        for line in label.split("\n"):
            assert line in texts, line
    assert {"mem", "outer"} <= texts
