"""Edge routes for the layered drawing: smooth paths that never cross a box they do not connect.

An edge between neighbouring columns is one cubic Bézier curve from a side of its source box to a side
of its target box. An edge that skips columns passes each column in between horizontally, through the
free space above, between or below that column's boxes (the gap nearest to the straight line between
its ends). An edge inside one column loops out on the side of that column that fewer other edges use.
Where several edges leave or enter the same side of a box, their ends are spread along that side,
ordered by the height of the other end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from nldsl.render.doc import Edge

Point = tuple[float, float]
Segment = tuple[Point, Point, Point, Point]  # cubic Bézier: start, control, control, end

BOX_CLEARANCE = 9.0  # how close a passing edge may come to a box above or below it
LANE = 5.0  # vertical distance between edges that pass a column through the same gap
LOOP_BULGE_MAX = 120.0
LOOP_REACH = 0.75 * LOOP_BULGE_MAX  # how far a loop's curve can reach out from its column


@dataclass(frozen=True)
class Rect:
    name: str
    column: int
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Route:
    edge: Edge
    segments: tuple[Segment, ...]

    @property
    def start(self) -> Point:
        return self.segments[0][0]

    @property
    def end(self) -> Point:
        return self.segments[-1][3]


def route_edges(
    edges: Sequence[Edge],
    rects: dict[str, Rect],
    columns: Sequence[tuple[float, float]],
    top: float,
    bottom: float,
) -> tuple[Route, ...]:
    """Route every edge. ``columns`` are (x, width) per column; edges stay within [top, bottom]."""
    loops = loop_sides(edges, {name: rect.column for name, rect in rects.items()})
    sides = [_sides(rects[edge.src], rects[edge.dst], loops) for edge in edges]
    anchors = _ports(edges, sides, rects)
    passes = _passes(edges, rects, columns, anchors, top, bottom)
    routes = []
    for i, edge in enumerate(edges):
        start, end = anchors[(i, 0)], anchors[(i, 1)]
        if sides[i][0] == sides[i][1]:
            routes.append(Route(edge, (_loop(start, end, sides[i][0]),)))
            continue
        forward = sides[i][0] == "right"
        waypoints = [start]
        for column, y in passes[i]:
            x, w = columns[column]
            waypoints += [(x, y), (x + w, y)] if forward else [(x + w, y), (x, y)]
        waypoints.append(end)
        hops = zip(waypoints, waypoints[1:], strict=False)
        routes.append(Route(edge, tuple(_smooth(p, q) for p, q in hops)))
    return tuple(routes)


def sample(segments: Sequence[Segment], steps: int = 24) -> list[Point]:
    """Points along a path of cubic Bézier segments."""
    out = []
    for (x0, y0), (x1, y1), (x2, y2), (x3, y3) in segments:
        for i in range(steps + 1):
            t = i / steps
            a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t**3
            out.append((a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3))
    return out


def loop_sides(edges: Sequence[Edge], column_of: dict[str, int]) -> dict[int, str]:
    """The side of each column on which its inner edges loop: the side fewer other edges use."""
    used: Counter[tuple[int, str]] = Counter()
    for edge in edges:
        a, b = column_of[edge.src], column_of[edge.dst]
        if a < b:
            used[(a, "right")] += 1
            used[(b, "left")] += 1
        elif a > b:
            used[(a, "left")] += 1
            used[(b, "right")] += 1
    return {c: "left" if used[(c, "left")] < used[(c, "right")] else "right" for c in set(column_of.values())}


def _sides(src: Rect, dst: Rect, loops: dict[int, str]) -> tuple[str, str]:
    if src.column < dst.column:
        return ("right", "left")
    if src.column > dst.column:
        return ("left", "right")
    return (loops[src.column], loops[src.column])


def _ports(
    edges: Sequence[Edge], sides: list[tuple[str, str]], rects: dict[str, Rect]
) -> dict[tuple[int, int], Point]:
    """The attachment point of end 0 (source) and end 1 (target) of every edge."""
    ends: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    for i, (edge, (src_side, dst_side)) in enumerate(zip(edges, sides, strict=True)):
        src, dst = rects[edge.src], rects[edge.dst]
        ends.setdefault((edge.src, src_side), []).append((dst.y + dst.h / 2, i, 0))
        ends.setdefault((edge.dst, dst_side), []).append((src.y + src.h / 2, i, 1))
    anchors = {}
    for (name, side), shared in ends.items():
        rect = rects[name]
        x = rect.x + rect.w if side == "right" else rect.x
        for slot, (_, i, end) in enumerate(sorted(shared)):
            anchors[(i, end)] = (x, rect.y + rect.h * (0.1 + 0.8 * (slot + 1) / (len(shared) + 1)))
    return anchors


def _passes(
    edges: Sequence[Edge],
    rects: dict[str, Rect],
    columns: Sequence[tuple[float, float]],
    anchors: dict[tuple[int, int], Point],
    top: float,
    bottom: float,
) -> dict[int, list[tuple[int, float]]]:
    """For every edge, the (column, y) at which it crosses each column strictly between its ends."""
    gaps = {column: _gaps(rects, column, top, bottom) for column in range(len(columns))}
    wanted: dict[tuple[int, int], list[tuple[float, int]]] = {}  # (column, gap) -> [(y, edge)]
    for i, edge in enumerate(edges):
        a, b = rects[edge.src].column, rects[edge.dst].column
        (sx, sy), (ex, ey) = anchors[(i, 0)], anchors[(i, 1)]
        for column in range(min(a, b) + 1, max(a, b)):
            x, w = columns[column]
            ideal = sy + (ey - sy) * ((x + w / 2 - sx) / (ex - sx))
            gap, y = min(
                ((g, min(max(ideal, lo), hi)) for g, (lo, hi) in enumerate(gaps[column])),
                key=lambda choice: (abs(choice[1] - ideal), choice[0]),
            )
            wanted.setdefault((column, gap), []).append((y, i))
    passes: dict[int, list[tuple[int, float]]] = {i: [] for i in range(len(edges))}
    for (column, gap), crossings in sorted(wanted.items()):
        lo, hi = gaps[column][gap]
        for y, i in _spread(sorted(crossings), lo, hi):
            passes[i].append((column, y))
    for i, crossing in passes.items():
        a, b = rects[edges[i].src].column, rects[edges[i].dst].column
        crossing.sort(reverse=a > b)  # in the order the edge meets the columns
    return passes


def _gaps(rects: dict[str, Rect], column: int, top: float, bottom: float) -> list[tuple[float, float]]:
    """Free vertical intervals of a column: above its first box, between boxes, below its last."""
    boxes = sorted((r for r in rects.values() if r.column == column), key=lambda r: r.y)
    bounds = [top] + [v for r in boxes for v in (r.y - BOX_CLEARANCE, r.y + r.h + BOX_CLEARANCE)] + [bottom]
    pairs = [(bounds[k], bounds[k + 1]) for k in range(0, len(bounds), 2)]
    return [(lo, hi) for lo, hi in pairs if hi >= lo] or [(top, bottom)]


def _spread(crossings: list[tuple[float, int]], lo: float, hi: float) -> list[tuple[float, int]]:
    """Keep edges that pass through one gap at least LANE apart, inside [lo, hi] where possible."""
    lane = min(LANE, (hi - lo) / max(len(crossings) - 1, 1))
    ys: list[float] = []
    for y, _ in crossings:
        ys.append(max(y, ys[-1] + lane) if ys else y)
    overflow = ys[-1] - hi if ys else 0.0
    if overflow > 0:
        ys = [max(lo, y - overflow) for y in ys]
    return [(y, i) for y, (_, i) in zip(ys, crossings, strict=True)]


def _smooth(p: Point, q: Point) -> Segment:
    """A curve from p to q that leaves and arrives horizontally."""
    half = (q[0] - p[0]) / 2
    return (p, (p[0] + half, p[1]), (q[0] - half, q[1]), q)


def _loop(start: Point, end: Point, side: str) -> Segment:
    """Both ends on the same side of one column: bulge out on that side."""
    bulge = min(LOOP_BULGE_MAX, 36 + 0.3 * abs(end[1] - start[1])) * (1 if side == "right" else -1)
    return (start, (start[0] + bulge, start[1]), (end[0] + bulge, end[1]), end)
