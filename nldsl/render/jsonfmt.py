"""The level-graph document as JSON, exactly as given (key order kept) plus a trailing newline."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nldsl.render.doc import load


def render_json(doc: Mapping[str, Any]) -> str:
    load(doc)  # refuse documents that do not follow the schema
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"
