"""SVG drawing of a :class:`~nldsl.render.layout.Layout`: rounded boxes coloured by level kind, curved
edges styled by edge kind with arrowheads, column headers and a legend.

Every piece of text and every attribute value passes through :func:`esc`, so names and labels can hold
any characters. Each level is a ``<g class="level" data-name="...">`` group.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from nldsl.render.doc import EDGE_KINDS
from nldsl.render.layout import (
    FONT_SIZE,
    HEADER_HEIGHT,
    LEGEND_EDGE_SAMPLE,
    LEGEND_SWATCH,
    LINE_HEIGHT,
    MARGIN,
    PAD_X,
    PAD_Y,
    Box,
    Layout,
)
from nldsl.render.routing import Route
from nldsl.render.style import EDGE_STYLES, kind_class, kind_style

FONT_FAMILY = "'DejaVu Sans Mono', 'Liberation Mono', Menlo, Consolas, monospace"


def esc(value: object) -> str:
    return str(escape(str(value)))


def num(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def draw(layout: Layout, title: str) -> Markup:
    w, h = num(layout.width), num(layout.height)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="level-graph" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="{esc(title)}" '
        f'font-family="{esc(FONT_FAMILY)}" font-size="{FONT_SIZE}">',
        f"<title>{esc(title)}</title>",
        _markers(),
        '<rect class="background" x="0" y="0" width="100%" height="100%" fill="#ffffff"/>',
    ]
    parts.extend(_column_header(column.label, column.x, column.w) for column in layout.columns)
    parts.append('<g class="edges">')
    parts.extend(_route(route) for route in layout.routes)
    parts.append("</g>")
    parts.append('<g class="levels">')
    parts.extend(_box(box) for box in layout.boxes)
    parts.append("</g>")
    parts.append(_legend(layout))
    parts.append("</svg>")
    return Markup("\n".join(parts))


def _markers() -> str:
    defs = ["<defs>"]
    for kind in EDGE_KINDS:
        colour = esc(EDGE_STYLES[kind].colour)
        defs.append(
            f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="9.5" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{colour}"/></marker>'
        )
    defs.append("</defs>")
    return "".join(defs)


def _column_header(label: str, x: float, w: float) -> str:
    return (
        f'<text class="tier-label" x="{num(x + w / 2)}" y="{num(MARGIN + HEADER_HEIGHT / 2)}" '
        f'text-anchor="middle" font-weight="bold" fill="#334155">{esc(label)}</text>'
    )


def _route(route: Route) -> str:
    edge = route.edge
    style = EDGE_STYLES[edge.kind]
    (x0, y0) = route.start
    d = f"M{num(x0)},{num(y0)}" + "".join(
        f" C{num(x1)},{num(y1)} {num(x2)},{num(y2)} {num(x3)},{num(y3)}"
        for _, (x1, y1), (x2, y2), (x3, y3) in route.segments
    )
    dash = f' stroke-dasharray="{esc(style.dash)}"' if style.dash else ""
    tip = f"{edge.src} → {edge.dst} ({edge.kind}{': ' + edge.label if edge.label else ''})"
    return (
        f'<path class="edge edge-{edge.kind}" data-src="{esc(edge.src)}" data-dst="{esc(edge.dst)}" '
        f'd="{d}" fill="none" stroke="{esc(style.colour)}" stroke-width="1.6"{dash} '
        f'marker-end="url(#arrow-{edge.kind})"><title>{esc(tip)}</title></path>'
    )


def _box(box: Box) -> str:
    style = kind_style(box.kind)
    texts = []
    for i, line in enumerate(box.lines):
        weight = ' font-weight="bold"' if i == 0 else ""
        y = PAD_Y + LINE_HEIGHT * i + FONT_SIZE
        texts.append(
            f'<text x="{num(PAD_X)}" y="{num(y)}" fill="{esc(style.ink)}"{weight}>{esc(line)}</text>'
        )
    return (
        f'<g class="level kind-{esc(kind_class(box.kind))}" data-name="{esc(box.name)}" '
        f'transform="translate({num(box.x)},{num(box.y)})">'
        f"<title>{esc(box.name)}</title>"
        f'<rect width="{num(box.w)}" height="{num(box.h)}" rx="9" ry="9" fill="{esc(style.fill)}" '
        f'stroke="{esc(style.stroke)}" stroke-width="1.5"/>' + "".join(texts) + "</g>"
    )


def _legend(layout: Layout) -> str:
    parts = [f'<g class="legend" transform="translate({num(MARGIN)},{num(layout.legend_y)})">']
    for item in layout.legend:
        x, y = item.x, item.y
        if item.category == "kind":
            box = kind_style(item.key)
            parts.append(
                f'<rect x="{num(x)}" y="{num(y)}" width="22" height="14" rx="4" '
                f'fill="{esc(box.fill)}" stroke="{esc(box.stroke)}"/>'
                f'<text x="{num(x + LEGEND_SWATCH)}" y="{num(y + 11)}">{esc(item.label)}</text>'
            )
        else:
            style = EDGE_STYLES[item.key]
            dash = f' stroke-dasharray="{esc(style.dash)}"' if style.dash else ""
            parts.append(
                f'<path d="M{num(x)},{num(y + 7)} L{num(x + 40)},{num(y + 7)}" fill="none" '
                f'stroke="{esc(style.colour)}" stroke-width="1.6"{dash} '
                f'marker-end="url(#arrow-{esc(item.key)})"/>'
                f'<text x="{num(x + LEGEND_EDGE_SAMPLE)}" y="{num(y + 11)}">{esc(item.label)}</text>'
            )
    parts.append("</g>")
    return "".join(parts)
