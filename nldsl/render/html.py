"""One self-contained HTML page: an inline SVG drawing of the level graph plus tables of its levels
and edges. No network access, no external scripts, styles or fonts, no system Graphviz.

The page carries a small inline script that checks the drawing once the browser has laid it out
(every level group has a non-empty box and shows its name, no text overflows its box, no two boxes
overlap) and writes the result as JSON into ``<pre id="verdict">``; the browser tests read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from nldsl.render.doc import GraphDoc, Level, human_count, load, plural
from nldsl.render.layout import layout
from nldsl.render.style import EDGE_STYLES, KIND_STYLES, OTHER_KIND, kind_class
from nldsl.render.svg import draw

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class LevelRow:
    name: str
    kind: str
    kind_class: str
    type: str
    clock: str
    params: str
    state: str
    update_cost: str
    heads: str
    replicas: str
    declared_at: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class EdgeRow:
    src: str
    dst: str
    kind: str
    label: str


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(doc: Mapping[str, Any]) -> str:
    graph = load(doc)
    title = f"{graph.model or 'level graph'} — level graph"
    kind_colours = {**KIND_STYLES, "other": OTHER_KIND}
    return (
        _environment()
        .get_template("graph.html.jinja")
        .render(
            title=title,
            model=graph.model,
            source=graph.source,
            summary=_summary(graph),
            drawing=draw(layout(graph), title),
            levels=[_level_row(level) for level in graph.levels],
            edges=[EdgeRow(e.src, e.dst, e.kind, e.label) for e in graph.edges],
            kind_colours=kind_colours,
            edge_colours={kind: style.colour for kind, style in EDGE_STYLES.items()},
        )
    )


def _summary(graph: GraphDoc) -> str:
    return " · ".join(
        [
            plural(len(graph.levels), "level"),
            plural(len(graph.tiers), "clock tier"),
            plural(len(graph.edges), "edge"),
            plural(graph.errors, "error"),
            plural(graph.warnings, "warning"),
        ]
    )


def _level_row(level: Level) -> LevelRow:
    if level.line is None:
        declared = ""
    elif level.col is None:
        declared = str(level.line)
    else:
        declared = f"{level.line}:{level.col}"
    return LevelRow(
        name=level.name,
        kind=level.kind,
        kind_class=kind_class(level.kind),
        type=level.type,
        clock=level.clock.text,
        params=human_count(level.params),
        state=level.state_display,
        update_cost=human_count(level.update_cost),
        heads="" if level.heads is None else str(level.heads),
        replicas="" if level.replicas is None else str(level.replicas),
        declared_at=declared,
        notes=level.notes,
    )
