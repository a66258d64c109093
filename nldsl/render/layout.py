"""A small layered layout for the level graph: one column per clock tier, fastest on the left.

Pure geometry, no markup: boxes for levels, cubic Bézier routes for edges, positions for column
headers and the legend. Text is drawn in a monospace font, so its width is estimated from the number
of characters (east-Asian wide characters count twice). Everything is deterministic.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from nldsl.render.doc import EDGE_KINDS, GraphDoc, Level
from nldsl.render.routing import LOOP_REACH, Rect, Route, loop_sides, route_edges, sample
from nldsl.render.style import EDGE_STYLES, KIND_STYLES, kind_class

FONT_SIZE = 12
CHAR_WIDTH = 7.4  # monospace advance at 12px is ~7.2px; a little slack
LINE_HEIGHT = 16
PAD_X = 12
PAD_Y = 10
MIN_BOX_WIDTH = 160
ROW_GAP = 28
COLUMN_GAP = 170
MARGIN = 24
HEADER_HEIGHT = 40
CHANNEL = 22  # free band above and below the boxes where long edges may pass
LEGEND_HEIGHT = 64
LEGEND_SWATCH = 28  # a kind's colour swatch, or an edge sample, before its text
LEGEND_EDGE_SAMPLE = 48
LEGEND_SPACING = 24
ORDER_SWEEPS = 4
BOX_HEIGHT = PAD_Y * 2 + LINE_HEIGHT * 3


@dataclass(frozen=True)
class Box:
    name: str
    kind: str
    lines: tuple[str, ...]  # name, kind summary, clock
    column: int
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Column:
    index: int
    label: str
    x: float
    w: float


@dataclass(frozen=True)
class LegendItem:
    category: str  # "kind" (a colour swatch) or "edge" (a line sample)
    key: str  # the level kind or edge kind
    label: str
    x: float  # relative to the legend's origin
    y: float


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    columns: tuple[Column, ...]
    boxes: tuple[Box, ...]
    routes: tuple[Route, ...]
    legend_y: float
    legend: tuple[LegendItem, ...]


def text_width(text: str) -> float:
    cells = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        cells += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return cells * CHAR_WIDTH


def box_lines(level: Level) -> tuple[str, ...]:
    summary = level.kind
    if level.heads:
        summary += f" · {level.heads} head{'s' if level.heads != 1 else ''}"
    if level.replicas and level.replicas > 1:
        summary += f" · ×{level.replicas}"
    return (level.name, summary, level.clock.text)


def layout(graph: GraphDoc) -> Layout:
    """Place every level of the document and route every edge."""
    lines = {level.name: box_lines(level) for level in graph.levels}
    order = _order_columns(graph)
    # Inner edges of the first column may loop out on its left: leave them room.
    column_of = graph.tier_of()
    loops_left = loop_sides(graph.edges, column_of).get(0) == "left" and any(
        column_of[edge.src] == column_of[edge.dst] == 0 for edge in graph.edges
    )
    columns = _place_columns(graph, order, lines, MARGIN + (LOOP_REACH if loops_left else 0))
    tallest = max((len(names) for names in order), default=0)
    body_top = MARGIN + HEADER_HEIGHT + CHANNEL
    body_bottom = body_top + _stack_height(tallest)
    boxes = _place_boxes(graph, columns, order, lines, body_top, tallest)

    rects = {name: Rect(name, b.column, b.x, b.y, b.w, b.h) for name, b in boxes.items()}
    spans = [(column.x, column.w) for column in columns]
    routes = route_edges(graph.edges, rects, spans, body_top - CHANNEL, body_bottom + CHANNEL)

    legend, legend_w = _legend(graph)
    right = columns[-1].x + columns[-1].w if columns else 0.0
    # Loops of edges inside the last column bulge out to its right: keep them on the canvas too.
    curves = [x for route in routes for x, _ in sample(route.segments)]
    right = max([right, MARGIN + max(MIN_BOX_WIDTH, legend_w), *curves])
    legend_y = body_bottom + CHANNEL + 30
    return Layout(
        width=right + MARGIN,
        height=legend_y + LEGEND_HEIGHT + MARGIN,
        columns=tuple(columns),
        boxes=tuple(boxes[level.name] for level in graph.levels),
        routes=routes,
        legend_y=legend_y,
        legend=legend,
    )


def _stack_height(count: int) -> float:
    return count * BOX_HEIGHT + max(count - 1, 0) * ROW_GAP


def _place_columns(
    graph: GraphDoc, order: list[list[str]], lines: dict[str, tuple[str, ...]], left: float
) -> list[Column]:
    """Columns left to right from ``left``, each as wide as its widest box or header."""
    columns = []
    x = float(left)
    for tier, names in zip(graph.tiers, order, strict=True):
        header = f"tier {tier.index}: {tier.label}"
        w = max([MIN_BOX_WIDTH, text_width(header)] + [_box_width(lines[name]) for name in names])
        columns.append(Column(index=tier.index, label=header, x=x, w=w))
        x += w + COLUMN_GAP
    return columns


def _place_boxes(
    graph: GraphDoc,
    columns: list[Column],
    order: list[list[str]],
    lines: dict[str, tuple[str, ...]],
    top: float,
    tallest: int,
) -> dict[str, Box]:
    """Boxes top to bottom in each column; shorter columns are centred on the tallest."""
    kinds = {level.name: level.kind for level in graph.levels}
    boxes = {}
    for column, names in zip(columns, order, strict=True):
        y = top + (_stack_height(tallest) - _stack_height(len(names))) / 2
        for name in names:
            boxes[name] = Box(name, kinds[name], lines[name], column.index, column.x, y, column.w, BOX_HEIGHT)
            y += BOX_HEIGHT + ROW_GAP
    return boxes


def _legend(graph: GraphDoc) -> tuple[tuple[LegendItem, ...], float]:
    """Two rows: the level kinds present (colour swatches), then the edge kinds present."""
    kinds = {kind_class(level.kind) for level in graph.levels}
    edge_kinds = {edge.kind for edge in graph.edges}
    items = []
    x = 0.0
    for kind in [*KIND_STYLES, "other"]:
        if kind in kinds:
            items.append(LegendItem("kind", kind, kind, x, 0))
            x += LEGEND_SWATCH + text_width(kind) + LEGEND_SPACING
    widest = x
    x = 0.0
    for kind in EDGE_KINDS:
        if kind in edge_kinds:
            label = f"{kind}: {EDGE_STYLES[kind].meaning}"
            items.append(LegendItem("edge", kind, label, x, 30))
            x += LEGEND_EDGE_SAMPLE + text_width(label) + LEGEND_SPACING
    return tuple(items), max(widest, x) - LEGEND_SPACING


def _box_width(lines: tuple[str, ...]) -> float:
    return max(text_width(line) for line in lines) + 2 * PAD_X


def _order_columns(graph: GraphDoc) -> list[list[str]]:
    """Level names per column, ordered to reduce crossings: each column is sorted by the mean position
    of its neighbours in other columns (barycentre heuristic), sweeping left to right and back a few
    times. Levels without such neighbours, and ties, keep their place."""
    column_of = graph.tier_of()
    neighbours: dict[str, list[str]] = {level.name: [] for level in graph.levels}
    for edge in graph.edges:
        if column_of[edge.src] != column_of[edge.dst]:
            neighbours[edge.src].append(edge.dst)
            neighbours[edge.dst].append(edge.src)
    order = [[level.name for level in tier.levels] for tier in graph.tiers]
    for sweep in range(ORDER_SWEEPS):
        columns = range(len(order)) if sweep % 2 == 0 else reversed(range(len(order)))
        for column in columns:
            position = _relative_positions(order)
            keys = {
                name: (_mean([position[other] for other in neighbours[name]], position[name]), index)
                for index, name in enumerate(order[column])
            }
            order[column].sort(key=keys.__getitem__)
    return order


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _relative_positions(order: list[list[str]]) -> dict[str, float]:
    """Vertical centre of every name in [0, 1], columns centred on each other."""
    tallest = max((len(names) for names in order), default=1)
    positions = {}
    for names in order:
        offset = (tallest - len(names)) / 2
        for i, name in enumerate(names):
            positions[name] = (offset + i + 0.5) / tallest
    return positions
