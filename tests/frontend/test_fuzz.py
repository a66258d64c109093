"""Fuzzing the front end: grammar-generated specs and mutated examples.

Whatever the input, `parse` returns a Module or raises SpecError (never another exception), and the
diagnostics of a SpecError render. Generated specs that parse also survive the formatter's round trip.
"""

from __future__ import annotations

import importlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

from fmt_testkit import EXAMPLES, KEYWORDS, NUMBER_RE, assert_round_trip
from nldsl import ast
from nldsl.diagnostics import Diagnostic, SpecError, render_all
from nldsl.parser import grammar_text, parse

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def parse_or_diagnose(text: str, file: str = "fuzz.nl"):
    """Parse `text`; on SpecError check that its diagnostics are well formed and render. None then."""
    try:
        module = parse(text, file)
    except SpecError as e:
        check_diagnostics(e.diagnostics, text, file)
        return None
    assert isinstance(module, ast.Module)
    return module


def check_diagnostics(diags, text: str, file: str) -> None:
    assert diags, "a SpecError without diagnostics"
    last_line = text.count("\n") + 1
    for d in diags:
        assert isinstance(d, Diagnostic)
        if d.span.file == file:
            assert 1 <= d.span.line <= last_line, d
    sources = {file: text}
    for style in ("full", "concise", "json"):
        assert isinstance(render_all(diags, sources, style), str)


# ---------------------------------------------------------------- (a) generated from the grammar

names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
numbers = st.from_regex(NUMBER_RE, fullmatch=True)
strings = st.from_regex(r'"([^"\\\n]|\\.){0,6}"', fullmatch=True)


def _padded(strategy):
    """Tokens that the lexer would glue to a neighbouring keyword get a space on each side."""
    return strategy.map(lambda s: f" {s} ")


GENERATED = from_lark(
    Lark(grammar_text(), parser="lalr"),
    start="start",
    explicit={
        "NAME": _padded(names),
        "NUMBER": _padded(numbers),
        "STRING": _padded(strings),
        "_NL": st.sampled_from(["\n", "\n\n", "  # trailing\n", "\n  # own line\n\n", "\r\n"]),
        # ignored tokens are inserted between any two symbols: a comment there usually ends its
        # statement too early, which is what the "parses or raises SpecError" branch is for
        "COMMENT": st.sampled_from(["", "", "", "# c\n"]),
        "__IGNORE_0": st.sampled_from([" ", "\t", "  "]),
    },
)


@settings(FUZZ, max_examples=150)
@given(GENERATED)
def test_generated_specs_parse_and_format(text):
    module = parse_or_diagnose(text)
    if module is not None:
        assert_round_trip(text, "fuzz.nl")


def test_generation_mostly_yields_valid_specs():
    """A guard on the generator above: if it never produced a parsable spec, the test would be empty."""
    parsed = []

    @settings(FUZZ, max_examples=40)
    @given(GENERATED)
    def collect(text):
        parsed.append(parse_or_diagnose(text) is not None)

    collect()
    assert sum(parsed) >= len(parsed) // 4


# ---------------------------------------------------------------- (b) mutated examples

JUNK_LINES = [
    "x = " + "(" * 70 + "1" + ")" * 70,
    "x = " + "(" * 2000,
    "x = " + "[" * 30 + "]" * 30,
    "x = " + "-" * 3000 + "a",
    "x = a" + " + a" * 3000,
    "x = a" + " ** a" * 600,
    "x = a" + " -> a" * 3000,
    "model m {" * 80 + "}" * 80,
    "block b() {\n" * 40 + "}\n" * 40,
    "x = f(" + "a, " * 2000 + ")",
    "café = 1",
    "memory 名前 : mlp",
    "x\u0301 = 2",
    "x = \u00d7 y",
    "s = \u201cquoted\u201d",
    "x = 1; y = 2",
    "\ufeffnl 1",
    "x = \"unterminated",
    "x = \"a\x00b\"",
    "# comment with \x0c form feed and \x85 next line and \u2028 separator",
    "\t\f  \\",
    "\r",
    "}",
    "{",
    "nl 1",
    "return x",
    "import \"a.nl\" as",
]


def _mutate(text: str, data) -> str:
    lines = text.split("\n")
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        n = len(lines)
        i = data.draw(st.integers(0, max(n - 1, 0)), label="line")
        op = data.draw(st.sampled_from(
            ["delete", "insert", "swap", "duplicate", "unicode", "truncate", "junk", "rename", "line"]
        ), label="op")
        if op == "delete" and n > 1:
            del lines[i]
        elif op == "insert":
            lines.insert(i, data.draw(st.text(max_size=30), label="new line"))
        elif op == "swap":
            j = data.draw(st.integers(0, max(n - 1, 0)), label="other line")
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "unicode":
            at = data.draw(st.integers(0, len(lines[i])), label="column")
            chars = data.draw(st.text(min_size=1, max_size=4), label="chars")
            lines[i] = lines[i][:at] + chars + lines[i][at:]
        elif op == "truncate":
            joined = "\n".join(lines)
            lines = joined[: data.draw(st.integers(0, len(joined)), label="length")].split("\n")
        elif op == "junk":
            junk = data.draw(st.binary(min_size=1, max_size=16), label="bytes").decode("latin-1")
            lines.insert(i, junk)
        elif op == "rename":
            letter = data.draw(st.sampled_from(["é", "名", "m\u0301", "µ"]), label="letter")
            lines[i] = lines[i].replace("m", letter)
        else:
            lines.insert(i, data.draw(st.sampled_from(JUNK_LINES), label="junk line"))
    return "\n".join(lines)


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_mutated_examples_parse_or_raise_spec_error(data):
    path = data.draw(st.sampled_from(EXAMPLES), label="example")
    text = _mutate(path.read_text(encoding="utf-8"), data)
    module = parse_or_diagnose(text, str(path.name))
    if module is not None:
        assert_round_trip(text, path.name)


def test_end_of_file_error_points_inside_the_file():
    # the form feed, U+2028 and U+0085 are line breaks for str.splitlines() but not for the lexer
    text = "# a\x0cb\u2028c\x85d\nmodel m {\n"
    with pytest.raises(SpecError) as info:
        parse(text, "eof.nl")
    (diag,) = info.value.diagnostics
    assert diag.span.line <= text.count("\n") + 1
    check_diagnostics(info.value.diagnostics, text, "eof.nl")


def test_rendered_source_line_is_the_line_of_the_error():
    text = "# a form feed \x0c in a comment\nx = )\n"
    with pytest.raises(SpecError) as info:
        parse(text, "ff.nl")
    assert "x = )" in render_all(info.value.diagnostics, {"ff.nl": text})


@pytest.mark.parametrize("line", JUNK_LINES)
def test_junk_lines(line):
    parse_or_diagnose(line + "\n")
    parse_or_diagnose("nl 1\nmodel m {\n  " + line + "\n}\n")


def _check_text():
    try:
        pipeline = importlib.import_module("nldsl.pipeline")
    except ImportError:
        return None
    return getattr(pipeline, "check_text", None)


def test_mutated_examples_through_the_pipeline():
    check_text = _check_text()
    if check_text is None:
        pytest.skip("nldsl.pipeline.check_text is not there yet")

    @settings(FUZZ, max_examples=40)
    @given(data=st.data())
    def run(data):
        path = data.draw(st.sampled_from(EXAMPLES), label="example")
        text = _mutate(path.read_text(encoding="utf-8"), data)
        file = str(path)
        diags = check_text(text, file)
        assert all(isinstance(d, Diagnostic) for d in diags)
        sources = {file: text}
        for style in ("full", "concise", "json"):
            assert isinstance(render_all(diags, sources, style), str)

    run()
