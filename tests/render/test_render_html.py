"""The HTML renderer and its layout: one self-contained page with an inline SVG drawing and tables."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from xml.etree import ElementTree

import pytest

from nldsl.render.doc import load
from nldsl.render.html import render_html
from nldsl.render.layout import layout
from nldsl.render.routing import sample

SVG = "{http://www.w3.org/2000/svg}"


class Page(HTMLParser):
    """Collects tags with their attributes, and the text of every table cell."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def svg_of(html: str) -> ElementTree.Element:
    match = re.search(r"<svg .*?</svg>", html, re.S)
    assert match, "no inline SVG"
    return ElementTree.fromstring(match.group(0))  # well-formed XML, or this raises


def test_every_level_is_a_labelled_group_in_the_svg(any_doc):
    svg = svg_of(render_html(any_doc))
    groups = [g for g in svg.iter(f"{SVG}g") if "level" in (g.get("class") or "").split()]
    assert [g.get("data-name") for g in groups] == [item["name"] for item in any_doc["levels"]]
    for group, item in zip(groups, any_doc["levels"], strict=True):
        assert group.find(f"{SVG}rect") is not None
        lines = [text.text for text in group.iter(f"{SVG}text")]
        assert lines[0] == item["name"]
        assert lines[1].startswith(item["kind"])
        assert lines[2] == item["clock_text"]
        assert f"kind-{item['kind']}" in group.get("class")


def test_every_edge_is_a_styled_path_with_an_arrowhead(hope_doc):
    svg = svg_of(render_html(hope_doc))
    paths = [p for p in svg.iter(f"{SVG}path") if "edge" in (p.get("class") or "").split()]
    assert [(p.get("data-src"), p.get("data-dst")) for p in paths] == [
        (e["src"], e["dst"]) for e in hope_doc["edges"]
    ]
    dashes = {"flow": None, "teach": "7 4", "meta": "2 3"}
    for path, edge in zip(paths, hope_doc["edges"], strict=True):
        assert path.get("stroke-dasharray") == dashes[edge["kind"]]
        assert path.get("marker-end") == f"url(#arrow-{edge['kind']})"
        number = r"-?[\d.]+"
        point = f"{number},{number}"
        assert re.fullmatch(f"M{point}( C{point} {point} {point})+", path.get("d")), path.get("d")
    markers = {m.get("id") for m in svg.iter(f"{SVG}marker")}
    assert markers == {"arrow-flow", "arrow-teach", "arrow-meta"}


def test_legend_names_the_kinds_and_edge_styles_present(hope_doc, tiny_doc):
    def legend_texts(doc):
        svg = svg_of(render_html(doc))
        legend = next(g for g in svg.iter(f"{SVG}g") if g.get("class") == "legend")
        return [t.text for t in legend.iter(f"{SVG}text")]

    assert legend_texts(hope_doc)[:5] == ["memory", "attention", "cms", "outer", "optimizer"]
    assert [t.split(":")[0] for t in legend_texts(hope_doc)[5:]] == ["flow", "teach", "meta"]
    assert legend_texts(tiny_doc) == ["memory", "outer", "meta: learns the initial state"]


def test_the_page_is_self_contained(any_doc):
    html = render_html(any_doc)
    page = parse(html)
    assert [tag for tag, _ in page.tags if tag in ("link", "img", "iframe", "object", "embed")] == []
    assert all("src" not in attrs and "href" not in attrs for _, attrs in page.tags)
    assert re.findall(r"(?:https?:)?//[\w.-]+", html) == ["http://www.w3.org"]  # the SVG namespace only
    assert "@import" not in html and "@font-face" not in html
    assert re.findall(r"url\(([^)]*)\)", html) == [
        f"#arrow-{k}" for k in re.findall(r"url\(#arrow-(\w+)\)", html)
    ]


def test_hostile_labels_are_text_never_markup(hostile_doc, hostile_labels):
    html = render_html(hostile_doc)
    page = parse(html)
    assert [tag for tag, _ in page.tags].count("script") == 1
    assert [tag for tag, _ in page.tags].count("b") == 0
    for label in hostile_labels:
        assert label in page.cells, label
    assert "say \"hi\" <b>bold</b> & 'quote'" in page.cells  # the type column
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert title == "model &#34;&lt;x&gt;&#34; &amp; co — level graph"
    svg = svg_of(html)
    tips = [t.text for t in svg.iter(f"{SVG}title")]
    assert 'outer → mem (meta: "]; evil -> x; x [label=")' in tips


def test_tables_list_levels_and_edges(hope_doc):
    page = parse(render_html(hope_doc))
    rows = [attrs["data-name"] for tag, attrs in page.tags if tag == "tr" and "data-name" in attrs]
    assert rows == [item["name"] for item in hope_doc["levels"]]
    assert "mlp(depth=2, hidden=64, act=silu, residual)" in page.cells
    assert "526.3k" in page.cells and "2 moments per parameter" in page.cells
    assert "30:3" in page.cells  # declared at line:col
    assert page.cells.count("lm loss") == 3


def test_rendering_is_deterministic(any_doc):
    assert render_html(any_doc) == render_html(any_doc)


@pytest.mark.parametrize("name", ["hope", "tiny", "hostile"])
def test_layout_boxes_do_not_overlap_and_columns_follow_the_tiers(name, request):
    graph = load(request.getfixturevalue(f"{name}_doc"))
    drawn = layout(graph)
    boxes = drawn.boxes
    for i, a in enumerate(boxes):
        assert 0 <= a.x and a.x + a.w <= drawn.width and 0 <= a.y and a.y + a.h <= drawn.height
        for b in boxes[i + 1 :]:
            apart = a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y
            assert apart, (a.name, b.name)
    tier_of = graph.tier_of()
    for a in boxes:
        for b in boxes:
            if tier_of[a.name] < tier_of[b.name]:
                assert a.x + a.w < b.x


@pytest.mark.parametrize("name", ["hope", "tiny", "hostile"])
def test_routes_join_their_boxes_and_avoid_all_others(name, request):
    drawn = layout(load(request.getfixturevalue(f"{name}_doc")))
    boxes = {box.name: box for box in drawn.boxes}
    for route in drawn.routes:
        src, dst = boxes[route.edge.src], boxes[route.edge.dst]
        for (x, y), box in ((route.start, src), (route.end, dst)):
            assert x in (box.x, box.x + box.w) and box.y < y < box.y + box.h
        for x, y in sample(route.segments):
            assert 0 <= x <= drawn.width and 0 <= y <= drawn.height
            for box in drawn.boxes:
                if box.name not in (src.name, dst.name):
                    inside = box.x < x < box.x + box.w and box.y < y < box.y + box.h
                    assert not inside, f"{route.edge.src} -> {route.edge.dst} crosses {box.name}"
