"""Graphviz DOT rendering: one cluster per clock tier (fastest first), edge styles by kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nldsl.render.doc import Edge, Level, load
from nldsl.render.style import EDGE_STYLES, kind_style

FONT = "Helvetica"


def quote(text: str) -> str:
    """A DOT double-quoted string whose label text is exactly ``text``.

    Graphviz reads ``\\"`` as a quote and, inside labels, ``\\\\`` as one backslash and ``\\n`` as a line
    break; every other backslash sequence (``\\N``, ``\\G``, ``\\l``...) would be expanded, so backslashes
    are always doubled first.
    """
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{body}"'


def render_dot(doc: Mapping[str, Any]) -> str:
    graph = load(doc)
    title = graph.model + (f"  ({graph.source})" if graph.source else "")
    lines = [
        f"digraph {quote(graph.model or 'nlc')} {{",
        f"  graph [rankdir=LR, newrank=true, fontname={quote(FONT)}, fontsize=12, "
        f"labelloc=t, label={quote(title)}];",
        f"  node [shape=box, style={quote('rounded,filled')}, fontname={quote(FONT)}, fontsize=10];",
        f"  edge [fontname={quote(FONT)}, fontsize=9];",
    ]
    for tier in graph.tiers:
        lines.append(f"  subgraph {quote(f'cluster_tier{tier.index}')} {{")
        lines.append(f"    label={quote(f'tier {tier.index}: {tier.label}')};")
        lines.append(f"    style={quote('rounded,dashed')}; color={quote('#94a3b8')};")
        lines.extend(f"    {_node(level)}" for level in tier.levels)
        lines.append("  }")
    # Invisible edges between the tiers keep them in clock order, fastest on the left; an edge from a
    # slower tier to a faster one (meta, teach) is drawn but does not take part in that ordering.
    firsts = [tier.levels[0].name for tier in graph.tiers]
    for left, right in zip(firsts, firsts[1:], strict=False):
        lines.append(f"  {quote(left)} -> {quote(right)} [style=invis];")
    tier_of = graph.tier_of()
    for edge in graph.edges:
        lines.append(f"  {_edge_line(edge, backward=tier_of[edge.src] > tier_of[edge.dst])}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node(level: Level) -> str:
    style = kind_style(level.kind)
    second = level.kind + (f" · {level.type}" if level.type else "")
    label = "\n".join([level.name, second, level.clock.text])
    attrs = [
        f"label={quote(label)}",
        f"fillcolor={quote(style.fill)}",
        f"color={quote(style.stroke)}",
        f"fontcolor={quote(style.ink)}",
    ]
    return f"{quote(level.name)} [{', '.join(attrs)}];"


def _edge_line(edge: Edge, backward: bool) -> str:
    style = EDGE_STYLES[edge.kind]
    attrs = [
        f"style={style.dot_style}",
        f"color={quote(style.colour)}",
        f"fontcolor={quote(style.colour)}",
        f"class={quote(edge.kind)}",
    ]
    if edge.label:
        attrs.insert(0, f"label={quote(edge.label)}")
    if backward:
        attrs.append("constraint=false")
    return f"{quote(edge.src)} -> {quote(edge.dst)} [{', '.join(attrs)}];"
