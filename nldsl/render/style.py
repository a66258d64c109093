"""Colours and line styles shared by the DOT, Mermaid and SVG renderers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindStyle:
    fill: str
    stroke: str
    ink: str  # text colour


@dataclass(frozen=True)
class EdgeStyle:
    colour: str
    dash: str  # SVG stroke-dasharray; "" for a solid line
    dot_style: str  # Graphviz edge style
    meaning: str


KIND_STYLES = {
    "memory": KindStyle(fill="#dbeafe", stroke="#2563eb", ink="#1e3a8a"),
    "attention": KindStyle(fill="#dcfce7", stroke="#16a34a", ink="#14532d"),
    "cms": KindStyle(fill="#fef3c7", stroke="#d97706", ink="#78350f"),
    "outer": KindStyle(fill="#fee2e2", stroke="#dc2626", ink="#7f1d1d"),
    "optimizer": KindStyle(fill="#ede9fe", stroke="#7c3aed", ink="#4c1d95"),
}
OTHER_KIND = KindStyle(fill="#f3f4f6", stroke="#6b7280", ink="#111827")

EDGE_STYLES = {
    "flow": EdgeStyle(colour="#334155", dash="", dot_style="solid", meaning="reads (context flow)"),
    "teach": EdgeStyle(colour="#c2410c", dash="7 4", dot_style="dashed", meaning="supplies the gradient"),
    "meta": EdgeStyle(colour="#7c3aed", dash="2 3", dot_style="dotted", meaning="learns the initial state"),
}


def kind_style(kind: str) -> KindStyle:
    return KIND_STYLES.get(kind, OTHER_KIND)


def kind_class(kind: str) -> str:
    """A CSS/Mermaid class name for a level kind; unknown kinds share the class ``other``."""
    return kind if kind in KIND_STYLES else "other"
