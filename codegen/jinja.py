"""The one Jinja2 environment of the code generator: templates in files, StrictUndefined, no autoescape."""

from __future__ import annotations

import functools
from importlib import resources

import jinja2


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(
        lambda name: resources.files("nldsl.codegen").joinpath("templates", name).read_text(encoding="utf-8"))
    return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
