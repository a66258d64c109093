"""Renderers for the level-graph document (schema ``nlc.graph/1``).

``render(doc, fmt)`` turns the document the front end builds into text (a tree and a table), JSON,
Graphviz DOT, Mermaid or a self-contained HTML page. Importing this package is cheap: each renderer
and its dependencies (rich, jinja2) are imported on first use, and nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

from nldsl.render.doc import SCHEMA, GraphDocError

# format -> (module, function)
_RENDERERS = {
    "text": ("nldsl.render.text", "render_text"),
    "json": ("nldsl.render.jsonfmt", "render_json"),
    "dot": ("nldsl.render.dot", "render_dot"),
    "mermaid": ("nldsl.render.mermaid", "render_mermaid"),
    "html": ("nldsl.render.html", "render_html"),
}
FORMATS = tuple(_RENDERERS)


def renderer(fmt: str) -> Callable[[Mapping[str, Any]], str]:
    try:
        module, function = _RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown graph format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    return getattr(import_module(module), function)


def render(doc: Mapping[str, Any], fmt: str = "text") -> str:
    """Render a level-graph document in one of FORMATS; raises GraphDocError for a malformed one."""
    return renderer(fmt)(doc)


__all__ = ["FORMATS", "SCHEMA", "GraphDocError", "render", "renderer"]
