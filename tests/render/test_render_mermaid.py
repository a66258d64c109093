"""The Mermaid renderer: flowchart LR, one subgraph per clock tier, labels written as entity codes."""

from __future__ import annotations

import re

import pytest

from nldsl.render.mermaid import label, render_mermaid

LABEL = re.compile(r'"([^"]*)"')
KINDS = "(memory|attention|cms|outer|optimizer|other)"
COLOUR = "#[0-9a-f]{6}"

# Every line, once its quoted labels are replaced by Q, has one of these shapes.
SKELETON = [
    r"flowchart LR",
    r"  subgraph T\d+\[Q\]",
    r"    direction TB",
    r"    L\d+\[Q\]",
    r"  end",
    r"  L\d+ (-->|-\.->)(\|Q\|)? L\d+",
    rf"  classDef {KINDS} fill:{COLOUR},stroke:{COLOUR},color:{COLOUR}",
    rf"  class L\d+(,L\d+)* {KINDS}",
    r"  linkStyle \d+(,\d+)* stroke:#[0-9a-f]{6}(,stroke-dasharray:[0-9 ]+)?",
]


def shown(body: str) -> str:
    """The text Mermaid shows for a label body: entity codes decoded, <br/> as a line break."""
    assert not re.search(r'["<>&`|\\]', body.replace("<br/>", "")), body
    assert not re.search(r"#(?!\d+;)", body), f"bare # in {body!r}"
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), body.replace("<br/>", "\n"))


def test_every_line_has_a_known_shape_even_with_hostile_labels(any_doc):
    for line in render_mermaid(any_doc).splitlines():
        masked = LABEL.sub("Q", line)
        assert any(re.fullmatch(shape, masked) for shape in SKELETON), line


def test_hostile_labels_come_out_exactly(hostile_doc, hostile_labels):
    texts = [shown(m.group(1)) for m in LABEL.finditer(render_mermaid(hostile_doc))]
    for text in hostile_labels:
        assert text in texts, text


@pytest.mark.parametrize("text", ['"', "#", "#35;", "<br/>", "a|b", "`x`", "back\\", "αβ 🙂", "x\ny"])
def test_label_round_trips(text):
    quoted = label(text)
    assert quoted.startswith('"') and quoted.endswith('"') and quoted.count('"') == 2
    assert shown(quoted[1:-1]) == text


def test_subgraphs_follow_the_clock_tiers(hope_doc):
    text = render_mermaid(hope_doc)
    titles = re.findall(r'subgraph T(\d+)\["([^"]*)"\]', text)
    assert titles == [
        ("0", "tier 0: every 1 token"),
        ("1", "tier 1: every 16 tokens"),
        ("2", "tier 2: every 256 tokens"),
        ("3", "tier 3: every 4096 tokens"),
        ("4", "tier 4: every 1 step"),
    ]
    last = text.split("subgraph T4")[1].split("  end")[0]
    assert "pretrain<br/>outer<br/>every 1 step" in last


def test_edges_and_their_styles(hope_doc):
    lines = render_mermaid(hope_doc).splitlines()
    edges = [line for line in lines if re.fullmatch(r"  L\d+ \S+ L\d+", LABEL.sub("Q", line))]
    assert len(edges) == len(hope_doc["edges"])
    kinds = [e["kind"] for e in hope_doc["edges"]]
    for line, kind in zip(edges, kinds, strict=True):
        assert ("-.->" in line) == (kind in ("teach", "meta"))
    link_styles = dict(re.findall(r"  linkStyle ([\d,]+) (\S+)", "\n".join(lines)))
    teach = ",".join(str(i) for i, kind in enumerate(kinds) if kind == "teach")
    meta = ",".join(str(i) for i, kind in enumerate(kinds) if kind == "meta")
    assert link_styles[teach] == "stroke:#c2410c,stroke-dasharray:7"  # dashed
    assert link_styles[meta] == "stroke:#7c3aed,stroke-dasharray:2"  # dotted


def test_rendering_is_deterministic(any_doc):
    assert render_mermaid(any_doc) == render_mermaid(any_doc)


def test_tiny_golden(tiny_doc, check_golden):
    check_golden("tiny.mmd", render_mermaid(tiny_doc))
