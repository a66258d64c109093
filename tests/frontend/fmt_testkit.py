"""Shared helpers for the front-end tests: the example files and the formatter's round-trip check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nldsl import ast
from nldsl.fmt import format_source
from nldsl.parser import parse

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.nl"))

KEYWORDS = frozenset(
    "nl import as model block memory attention cms level optimizer return".split()
)


def example_id(path: Path) -> str:
    return path.relative_to(ROOT / "examples").as_posix()


def shape(node) -> list:
    """A flat, span-free description of an AST, built without recursion (ASTs may be deep)."""
    out = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, tuple):
            out.append(("tuple", len(n)))
            stack.extend(reversed(n))
        elif isinstance(n, ast.Span):
            out.append("span")
        elif isinstance(n, ast.Module):
            out.append("module")
            stack.extend([n.items, n.version])
        elif dataclasses.is_dataclass(n):
            out.append(type(n).__name__)
            stack.extend(reversed([getattr(n, f.name) for f in dataclasses.fields(n)]))
        else:
            out.append((type(n).__name__, n))
    return out


def comment_texts(module: ast.Module) -> list[str]:
    return [c.text for c in module.comments]


def assert_round_trip(text: str, file: str = "spec.nl") -> str:
    """Format `text` (which must parse) and check the formatter's three properties; returns the output."""
    before = parse(text, file)
    out = format_source(text, file)
    after = parse(out, file)
    assert shape(after) == shape(before), f"formatting changed the meaning of\n{text}\n----- into\n{out}"
    assert comment_texts(after) == comment_texts(before), f"comments changed:\n{text}\n----- into\n{out}"
    again = format_source(out, file)
    assert again == out, f"not idempotent:\n{out}\n----- became\n{again}"
    return out
