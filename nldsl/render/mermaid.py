"""Mermaid rendering: ``flowchart LR`` with one subgraph per clock tier, fastest first.

Node and subgraph ids are generated (``L0``, ``T0``...) so level names never meet Mermaid's id syntax;
every piece of text sits in a double-quoted label in which the characters Mermaid or the HTML it
produces could read as syntax are written as Mermaid entity codes (``#34;`` for ``"``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nldsl.render.doc import GraphDoc, load
from nldsl.render.style import EDGE_STYLES, KIND_STYLES, OTHER_KIND, kind_class

# Characters written as entity codes inside a quoted label. '#' first: it starts an entity code.
_ENTITIES = {ch: f"#{ord(ch)};" for ch in '#"&<>`|\\{}[]()'}
_ARROWS = {"flow": "-->", "teach": "-.->", "meta": "-.->"}


def label(text: str) -> str:
    """A double-quoted Mermaid label showing exactly ``text`` (line breaks become ``<br/>``)."""
    lines = ["".join(_ENTITIES.get(ch, ch) for ch in line) for line in text.split("\n")]
    return '"' + "<br/>".join(lines) + '"'


def render_mermaid(doc: Mapping[str, Any]) -> str:
    graph = load(doc)
    ids = {level.name: f"L{i}" for i, level in enumerate(graph.levels)}
    lines = ["flowchart LR"]
    for tier in graph.tiers:
        lines.append(f"  subgraph T{tier.index}[{label(f'tier {tier.index}: {tier.label}')}]")
        lines.append("    direction TB")
        for level in tier.levels:
            text = "\n".join([level.name, level.kind, level.clock.text])
            lines.append(f"    {ids[level.name]}[{label(text)}]")
        lines.append("  end")
    for edge in graph.edges:
        arrow = _ARROWS[edge.kind]
        text = f"|{label(edge.label)}|" if edge.label else ""
        lines.append(f"  {ids[edge.src]} {arrow}{text} {ids[edge.dst]}")
    lines.extend(_styles(graph, ids))
    return "\n".join(lines) + "\n"


def _styles(graph: GraphDoc, ids: dict[str, str]) -> list[str]:
    lines = []
    for kind, box in [*KIND_STYLES.items(), ("other", OTHER_KIND)]:
        members = [ids[level.name] for level in graph.levels if kind_class(level.kind) == kind]
        if members:
            lines.append(f"  classDef {kind} fill:{box.fill},stroke:{box.stroke},color:{box.ink}")
            lines.append(f"  class {','.join(members)} {kind}")
    for kind, line in EDGE_STYLES.items():
        indices = [str(i) for i, edge in enumerate(graph.edges) if edge.kind == kind]
        if indices:
            dash = f",stroke-dasharray:{line.dash}" if line.dash else ""
            lines.append(f"  linkStyle {','.join(indices)} stroke:{line.colour}{dash}")
    return lines
