"""No Lark object crosses the parser's boundary, and every span lies inside its file."""

from __future__ import annotations

import dataclasses

import pytest
from lark import Token, Tree

from fmt_testkit import EXAMPLES, example_id
from nldsl import ast
from nldsl.parser import parse

SNIPPETS = [
    "nl 1\n",
    'import "lib/a.nl"\nimport "b.nl" as b\n',
    "x = (a, [b, -c ** 2], f(y = 1)) -> g\n",
    "block f(x, y = 2) { return x }\nmemory m, n : mlp(depth = 2) per head {\n  clock every 1 token\n}\n",
    "model m {\n  # comment\n  level l : outer { update adamw(lr = 3e-3) }\n  flag\n}\n",
]


def nodes(root):
    """Every value reachable from `root` through dataclass fields and tuples (iteratively)."""
    stack = [root]
    while stack:
        value = stack.pop()
        yield value
        if isinstance(value, (tuple, list)):
            stack.extend(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            stack.extend(getattr(value, f.name) for f in dataclasses.fields(value))


def check_boundary(text: str, file: str) -> None:
    module = parse(text, file)
    last_line = text.count("\n") + 1
    for value in nodes(module):
        lark_object = isinstance(value, (Token, Tree)) or type(value).__module__.startswith("lark")
        assert not lark_object, f"a Lark {type(value).__name__} in the AST: {value!r}"
        if isinstance(value, ast.Span):
            assert value.file == file
            assert 1 <= value.line <= value.end_line <= last_line, value
            if value.line == value.end_line:
                assert 1 <= value.col < value.end_col, value
        if isinstance(value, ast.Comment):
            assert 1 <= value.line <= last_line and value.col >= 1, value
    for comment in module.comments:
        assert text.split("\n")[comment.line - 1][comment.col - 1:].rstrip() == comment.text


@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_examples(path):
    check_boundary(path.read_text(encoding="utf-8"), example_id(path))


@pytest.mark.parametrize("text", SNIPPETS)
def test_snippets(text):
    check_boundary(text, "snippet.nl")


def test_version_is_a_number():
    version = parse("nl 1\n").version
    assert isinstance(version.number, ast.Number) and version.number.text == "1"


def test_import_without_alias():
    (item,) = parse('import "lib/a.nl"\n').items
    assert item == ast.Import("lib/a.nl", None, item.span)


def test_comment_own_line_counts_lines_like_the_lexer():
    # str.splitlines() would also break at the form feed and at U+2028, shifting every later line
    text = 'x = "a\x0cb\u2028c"\n  # own line\ny = 1  # trailing\n'
    own, trailing = parse(text).comments
    assert (own.line, own.own_line) == (2, True)
    assert (trailing.line, trailing.own_line) == (3, False)
