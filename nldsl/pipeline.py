"""The front end as a short list of named passes, each inspectable with `--dump`.

    read → parse → resolve → elaborate (constants, names, dimensions) → check → graph → check_graph

`run_front_end` stops after the first pass that reports errors and returns every diagnostic so far.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import ast
from .diagnostics import Diagnostic, SpecError, error

MAX_SHOWN = 8_000_000  # bytes of an unreadable file kept to show the offending line

PASSES = ("parse", "resolve", "elaborate", "check", "graph", "check_graph")


@dataclass
class FrontEnd:
    """Everything the front end produced for one spec (what `--dump` prints)."""

    file: str
    text: str = ""
    module: Optional[ast.Module] = None
    program: object = None
    model: object = None  # ir.ModelIR
    graph: object = None  # networkx.MultiDiGraph
    diagnostics: list = field(default_factory=list)
    sources: dict = field(default_factory=dict)
    reached: str = ""

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def read_source(path: str) -> str:
    """The text of a spec file, or SpecError(NL0001) for a missing, unreadable or non-UTF-8 file."""
    p = Path(path)
    span = ast.Span(path, 1, 1, 1, 2)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise SpecError([error("NL0001", f"`{path}` is a directory", span, help="give a .nl file")]) from None
    except FileNotFoundError:
        raise SpecError([error("NL0001", f"no such file `{path}`", span, "not found",
                               help="check the path; a relative path starts from the current directory")]) from None
    except OSError as e:
        raise SpecError([error("NL0001", f"cannot read `{path}`: {e.strerror}", span, "unreadable",
                               help="check the file's permissions")]) from None
    return decode(data, path)


def decode(data: bytes, path: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        line_start = data.rfind(b"\n", 0, e.start) + 1
        col = len(data[line_start : e.start].decode("utf-8", "replace")) + 1  # in characters, as the parser counts
        raise SpecError([error("NL0001", f"the file is not UTF-8 text (byte 0x{data[e.start]:02x})",
                               ast.Span(path, line, col, line, col + 1), "invalid byte",
                               help="save the spec as UTF-8")]) from None


def run_front_end(text: str, file: str, until: str = "check_graph", read=read_source) -> FrontEnd:
    """Run the passes in order up to `until`; never raises for problems in the spec."""
    from .checks import check_graph, check_model
    from .elaborate import elaborate
    from .graph import build_graph
    from .parser import parse
    from .resolve import resolve

    fe = FrontEnd(file, text, sources={file: text})

    def step(name, fn):
        if not fe.ok:
            return None
        try:
            out = fn()
        except SpecError as e:
            fe.diagnostics.extend(d for d in e.diagnostics if d not in fe.diagnostics)
            return None
        except RecursionError:
            fe.diagnostics.append(error("NL0005", "the spec is nested too deeply", ast.Span(file, 1, 1, 1, 2)))
            return None
        fe.reached = name
        return out

    fe.module = step("parse", lambda: parse(text, file))
    if until == "parse" or (fe.module is not None and is_library(fe.module)):
        if fe.module is not None and until != "parse":  # a library: check that its imports resolve
            from .diagnostics import Sink
            from .resolve import load_imports

            sink = Sink()
            load_imports(fe.module, read, sink, fe.sources)
            fe.diagnostics.extend(sink.items)
            fe.reached = "resolve"
        return fe
    fe.program = step("resolve", lambda: resolve(fe.module, read, text, fe.sources))
    if until == "resolve":
        return fe
    result = step("elaborate", lambda: elaborate(fe.program))
    if result is not None:
        fe.model, warnings = result
        fe.diagnostics.extend(warnings)
    if until == "elaborate":
        return fe
    checked = step("check", lambda: check_model(fe.model))
    if checked is not None:  # a memory kind instantiated n times reports its problems once
        fe.diagnostics.extend(d for i, d in enumerate(checked) if d not in checked[:i] and d not in fe.diagnostics)
    if until == "check" or not fe.ok:
        return fe
    fe.graph = step("graph", lambda: build_graph(fe.model))
    if until == "graph":
        return fe
    extra = step("check_graph", lambda: check_graph(fe.graph, fe.model))
    if extra is not None:
        fe.diagnostics.extend(extra)
    return fe


def is_library(module: ast.Module) -> bool:
    """A file of shared definitions (blocks, kinds, constants) and no model: imported, not compiled."""
    kinds = {type(i) for i in module.items}
    return ast.Model not in kinds and bool(kinds - {ast.Import})


def check_text(text: str, file: str = "<string>") -> list[Diagnostic]:
    """Every diagnostic for a spec given as text (imports are read relative to `file`)."""
    return run_front_end(text, file).diagnostics


def check_file(path: str) -> FrontEnd:
    try:
        text = read_source(path)
    except SpecError as e:
        fe = FrontEnd(path)
        fe.diagnostics.extend(e.diagnostics)
        try:  # show the offending line of a file that is not UTF-8
            fe.sources[path] = Path(path).read_bytes()[:MAX_SHOWN].decode("utf-8", "replace")
        except OSError:
            pass
        return fe
    return run_front_end(text, path)
