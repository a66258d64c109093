"""One Diagnostic type and its renderers (full, concise, json).

A pass never raises for a problem in the spec: it returns Diagnostics, which are collected for the
whole file before the pipeline stops. The full renderer draws the source line and a caret in the style
of rustc; the concise one prints `file:line:col: error[CODE]: message`; json is for tools.
"""

from __future__ import annotations

import json
import unicodedata
import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .ast import Span
from .codes import CODES

ERROR = "error"
WARNING = "warning"
NOTE = "note"


@dataclass(frozen=True)
class Label:
    span: Span
    message: str


@dataclass(frozen=True)
class Diagnostic:
    severity: str
    code: str
    message: str
    span: Span
    label: str = ""  # text under the primary caret
    labels: tuple[Label, ...] = ()  # secondary spans
    notes: tuple[str, ...] = ()
    help: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def sort_key(self):
        return (self.span.file, self.span.line, self.span.col, self.code, self.message)


def error(code: str, message: str, span: Span, label: str = "", **kw) -> Diagnostic:
    assert code in CODES, code
    return Diagnostic(ERROR, code, message, span, label, **_tuples(kw))


def warning(code: str, message: str, span: Span, label: str = "", **kw) -> Diagnostic:
    assert code in CODES, code
    return Diagnostic(WARNING, code, message, span, label, **_tuples(kw))


def _tuples(kw):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}


class SpecError(Exception):
    """Raised at the end of a pipeline stage that produced errors; carries every diagnostic so far."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = tuple(diagnostics)
        super().__init__(f"{sum(d.is_error for d in self.diagnostics)} error(s) in the spec")


@dataclass
class Sink:
    """Collects diagnostics during a pass."""

    items: list = field(default_factory=list)

    def add(self, diag: Diagnostic) -> None:
        if diag not in self.items:
            self.items.append(diag)

    def extend(self, diags: Iterable[Diagnostic]) -> None:
        for d in diags:
            self.add(d)

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.items)


# ---------------------------------------------------------------- rendering


def _width(text: str) -> int:
    """Display width of `text` (wide East Asian characters take two cells, combining marks none)."""
    w = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        w += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return w


def _clean(line: str) -> str:
    """The source line as it can be shown safely on a terminal: tabs expanded, controls replaced."""
    out = []
    for ch in line.expandtabs(4):
        cat = unicodedata.category(ch)
        out.append("\ufffd" if cat in ("Cc", "Cf", "Cs", "Co") else ch)
    return "".join(out)


def _line_of(sources: Mapping[str, str], span: Span) -> str | None:
    text = sources.get(span.file)
    if text is None or span.line < 1:
        return None
    lines = text.split("\n")  # the parser counts lines by "\n" only (not by form feeds or U+2028)
    if span.line > len(lines):
        return ""
    return lines[span.line - 1].rstrip("\r")


def _caret_row(line: str, span: Span) -> tuple[str, str]:
    """(padding, carets) for the primary span on its first line."""
    col = max(span.col, 1)
    pad = _width(_clean(line[: col - 1]))
    end = span.end_col if span.end_line == span.line and span.end_col > col else col + 1
    n = max(1, _width(_clean(line[col - 1 : end - 1])))
    return " " * pad, "^" * n


LONGEST_SHOWN = 120  # characters of a source line drawn under a diagnostic; a longer line shows a window


def _window(line: str, col: int) -> tuple[int, str]:
    """(offset, text): the part of a long line around column `col`, cut ends marked `…`; the offset is
    what to subtract from a column of the line to find it in the text."""
    if len(line) <= LONGEST_SHOWN:
        return 0, line
    start = max(0, min(col - 1 - LONGEST_SHOWN // 3, len(line) - LONGEST_SHOWN))
    prefix = "…" if start else ""
    suffix = "…" if start + LONGEST_SHOWN < len(line) else ""
    return start - len(prefix), prefix + line[start:start + LONGEST_SHOWN] + suffix


def render_full(diag: Diagnostic, sources: Mapping[str, str]) -> str:
    """rustc-style: header, location, the source line with a caret, labels, notes and help."""
    out = [f"{diag.severity}[{diag.code}]: {diag.message}"]
    spans = [(diag.span, diag.label, "^")] + [(l.span, l.message, "-") for l in diag.labels]
    gutter = max(len(str(s.line)) for s, _, _ in spans)
    out.append(f"{' ' * gutter}--> {diag.span}")
    shown = None  # (file, line) of the source line drawn last: a label on it gets only a caret row
    for span, text, mark in spans:
        line = _line_of(sources, span)
        if line is None:
            if span is not diag.span:
                out.append(f"{' ' * gutter} = {text} (at {span})")
            continue
        if shown != (span.file, span.line):
            if span is not diag.span and span.file != diag.span.file:
                out.append(f"{' ' * gutter}::: {span}")
            out.append(f"{' ' * gutter} |")
            offset, drawn = _window(line, span.col)
            out.append(f"{span.line:>{gutter}} | {_clean(drawn)}")
            shown = (span.file, span.line)
        col = min(max(span.col - offset, 1), len(drawn) + 1)
        end = min(max(span.end_col - offset, col + 1), len(drawn) + 1) if span.end_line == span.line else span.end_col
        pad, carets = _caret_row(drawn, dataclasses.replace(span, col=col, end_col=end))
        out.append(f"{' ' * gutter} | {pad}{carets.replace('^', mark)} {text}".rstrip())
    out.append(f"{' ' * gutter} |")
    for note in diag.notes:
        out.append(f"{' ' * gutter} = note: {note}")
    if diag.help:
        out.append(f"{' ' * gutter} = help: {diag.help}")
    return "\n".join(out)


def render_concise(diag: Diagnostic) -> str:
    return f"{diag.span}: {diag.severity}[{diag.code}]: {diag.message}"


def to_json(diag: Diagnostic) -> dict:
    def span(s: Span) -> dict:
        return {"file": s.file, "line": s.line, "col": s.col, "end_line": s.end_line, "end_col": s.end_col}

    return {
        "severity": diag.severity,
        "code": diag.code,
        "message": diag.message,
        "span": span(diag.span),
        "label": diag.label,
        "labels": [{"span": span(l.span), "message": l.message} for l in diag.labels],
        "notes": list(diag.notes),
        "help": diag.help,
    }


def render_all(diags: Iterable[Diagnostic], sources: Mapping[str, str], fmt: str = "full") -> str:
    diags = sorted(diags, key=Diagnostic.sort_key)
    if fmt == "json":
        return json.dumps([to_json(d) for d in diags], indent=2)
    if fmt == "concise":
        return "\n".join(render_concise(d) for d in diags)
    return "\n\n".join(render_full(d, sources) for d in diags)


def summary(diags: Iterable[Diagnostic]) -> str:
    diags = list(diags)
    e = sum(d.severity == ERROR for d in diags)
    w = sum(d.severity == WARNING for d in diags)
    parts = []
    if e:
        parts.append(f"{e} error{'s' if e != 1 else ''}")
    if w:
        parts.append(f"{w} warning{'s' if w != 1 else ''}")
    return ", ".join(parts) if parts else "no problems"
