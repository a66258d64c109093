"""Shared helpers for the front-end tests: the example files and the formatter's round-trip check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import strategies as st

from nldsl import ast
from nldsl.fmt import format_source
from nldsl.parser import parse

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.nl"))

KEYWORDS = frozenset(
    "nl import as model block memory attention cms level optimizer return".split()
)

# number literals as the grammar writes them, ASCII digits only, kept short
NUMBER_RE = r"([0-9]{1,3}\.[0-9]{0,2}|\.[0-9]{1,2}|[0-9]{1,4})([eE][+-]?[0-9]{1,2})?"


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


# ---------------------------------------------------------------- ASTs that a parse could produce
# (spans are NO_SPAN; a phrase of several words holds only names, calls, numbers and strings)

names = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
number_texts = st.from_regex(NUMBER_RE, fullmatch=True)
S = ast.NO_SPAN


def number(text: str) -> ast.Number:
    return ast.Number(int(text) if text.isdigit() else float(text), text, S)


dotted = st.lists(names, min_size=1, max_size=2).map(lambda p: ast.Name(tuple(p), S))
atoms = st.one_of(dotted, number_texts.map(number), st.text(max_size=6).map(lambda v: ast.String(v, S)))


def _extend(inner):
    ops = st.sampled_from(["+", "-", "*", "/", "%", "**"])
    binop = st.builds(lambda op, left, right: ast.BinOp(op, left, right, S), ops, inner, inner)
    unary = st.builds(lambda op, x: ast.UnaryOp(op, x, S), st.sampled_from(["-", "+"]), inner)
    pipe = st.lists(inner, min_size=2, max_size=3).map(lambda xs: ast.Pipe(tuple(xs), S))
    kwargs = st.lists(st.builds(lambda n, v: ast.KwArg(n, v, S), names, inner), max_size=2)
    args = st.lists(inner, max_size=2)
    call = st.builds(lambda f, a, k: ast.Call(f, tuple(a), tuple(k), S), dotted, args, kwargs)
    tup = st.lists(inner, max_size=3).map(lambda xs: ast.TupleExpr(tuple(xs), S))
    lst = st.lists(inner, max_size=3).map(lambda xs: ast.ListExpr(tuple(xs), S))
    return st.one_of(binop, unary, pipe, call, tup, lst)


exprs = st.recursive(atoms, _extend, max_leaves=8)
simple_calls = st.builds(lambda f, a: ast.Call(f, tuple(a), (), S), dotted, st.lists(atoms, max_size=2))
words = st.one_of(atoms, simple_calls)
phrases = st.one_of(
    exprs.map(lambda e: ast.Phrase((e,), S)),
    st.lists(words, min_size=2, max_size=4).map(lambda ws: ast.Phrase(tuple(ws), S)),
)
assigns = st.builds(lambda n, v: ast.Assign(n, S, v, S), names, exprs)
props = st.builds(lambda k, vs: ast.Prop(k, S, tuple(vs), S), names, st.lists(phrases, max_size=3))
returns = exprs.map(lambda e: ast.Return(e, S))
kinds = st.sampled_from(["memory", "attention", "cms", "level", "optimizer"])
idents = st.lists(names.map(lambda n: ast.Ident(n, S)), min_size=1, max_size=3).map(tuple)
params = st.lists(st.builds(lambda n, d: ast.Param(n, d, S), names, st.none() | exprs), max_size=3).map(tuple)


def _statements(inner):
    body = st.lists(inner, max_size=3).map(tuple)
    decl = st.builds(lambda k, ns, t, b: ast.Decl(k, ns, t, b, S),
                     kinds, idents, st.none() | phrases, st.none() | body)
    block = st.builds(lambda n, p, b: ast.Block(n, S, p, b, S), names, params, body)
    return st.one_of(decl, block)


statements = st.recursive(st.one_of(assigns, props, returns), _statements, max_leaves=6)
bodies = st.lists(statements, max_size=4).map(tuple)
items = st.one_of(
    assigns,
    st.builds(lambda p, a: ast.Import(p, a, S), st.text(max_size=8), st.none() | names),
    st.builds(lambda n, b: ast.Model(n, S, b, S), names, bodies),
    statements.filter(lambda s: isinstance(s, (ast.Decl, ast.Block))),
)
modules = st.builds(
    lambda v, its: ast.Module("", v, tuple(its), ()),
    st.none() | st.just(ast.Version(number("1"), S)),
    st.lists(items, max_size=4),
)
