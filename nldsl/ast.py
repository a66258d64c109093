"""The abstract syntax tree of a `.nl` file: frozen dataclasses with spans, nothing from Lark.

The AST is a faithful picture of what was written; it gives no meaning to property keys or words.
Meaning is given by the passes that follow (`nldsl.resolve`, `nldsl.elaborate`). Every node carries a
`Span`; `strip_spans` (used by the formatter's round-trip tests) compares trees without them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True, order=True)
class Span:
    """A region of a source file; lines and columns start at 1, `end_col` is exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NO_SPAN = Span("<builtin>", 0, 0, 0, 0)


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Number:
    value: Union[int, float]
    text: str
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Name:
    """A possibly dotted name: `x`, `lib.selfmod`."""

    parts: tuple[str, ...]
    span: Span

    @property
    def id(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class KwArg:
    name: str
    value: "Expr"
    span: Span


@dataclass(frozen=True)
class Call:
    func: Name
    args: tuple["Expr", ...]
    kwargs: tuple[KwArg, ...]
    span: Span

    def kwarg(self, name: str):
        for kw in self.kwargs:
            if kw.name == name:
                return kw.value
        return None


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / % **
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class UnaryOp:
    op: str  # - or +
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class Pipe:
    """`a -> b -> c`: function composition, applied left to right."""

    stages: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class TupleExpr:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span


Expr = Union[Number, String, Name, Call, BinOp, UnaryOp, Pipe, TupleExpr, ListExpr]


# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Phrase:
    """One comma-separated value of a property: one expression or several words side by side."""

    words: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Prop:
    key: str
    key_span: Span
    values: tuple[Phrase, ...]
    span: Span


@dataclass(frozen=True)
class Assign:
    name: str
    name_span: Span
    value: Expr
    span: Span


@dataclass(frozen=True)
class Return:
    value: Expr
    span: Span


@dataclass(frozen=True)
class Ident:
    name: str
    span: Span


@dataclass(frozen=True)
class Decl:
    """`memory a, b : mlp(depth = 2) per head { ... }` and its siblings attention/cms/level/optimizer."""

    kind: str
    names: tuple[Ident, ...]
    type: Union[Phrase, None]
    body: Union[tuple["Stmt", ...], None]
    span: Span


@dataclass(frozen=True)
class Param:
    name: str
    default: Union[Expr, None]
    span: Span


@dataclass(frozen=True)
class Block:
    name: str
    name_span: Span
    params: tuple[Param, ...]
    body: tuple["Stmt", ...]
    span: Span


@dataclass(frozen=True)
class Model:
    name: str
    name_span: Span
    body: tuple["Stmt", ...]
    span: Span


@dataclass(frozen=True)
class Import:
    path: str
    alias: Union[str, None]
    span: Span


@dataclass(frozen=True)
class Version:
    number: Expr
    span: Span


@dataclass(frozen=True)
class Comment:
    text: str  # including the leading '#'
    line: int
    col: int
    own_line: bool  # True when nothing but whitespace precedes it on its line


Stmt = Union[Assign, Prop, Decl, Return, Block]
Item = Union[Import, Model, Block, Decl, Assign]


@dataclass(frozen=True)
class Module:
    file: str
    version: Union[Version, None]
    items: tuple[Item, ...]
    comments: tuple[Comment, ...]


AST_NODES = (
    Number, String, Name, KwArg, Call, BinOp, UnaryOp, Pipe, TupleExpr, ListExpr, Phrase, Prop,
    Assign, Return, Ident, Decl, Param, Block, Model, Import, Version, Module,
)


def strip_spans(node):
    """A copy of `node` with every span replaced by NO_SPAN and comments dropped (for comparisons)."""
    if isinstance(node, tuple):
        return tuple(strip_spans(x) for x in node)
    if isinstance(node, Span):
        return NO_SPAN
    if isinstance(node, Module):
        return Module("", strip_spans(node.version), strip_spans(node.items), ())
    if dataclasses.is_dataclass(node):
        return dataclasses.replace(
            node, **{f.name: strip_spans(getattr(node, f.name)) for f in dataclasses.fields(node)}
        )
    return node


def walk(node):
    """Yield `node` and every AST node below it, depth first."""
    if isinstance(node, tuple):
        for x in node:
            yield from walk(x)
        return
    if not dataclasses.is_dataclass(node) or isinstance(node, (Span, Comment)):
        return
    yield node
    for f in dataclasses.fields(node):
        yield from walk(getattr(node, f.name))


def replace_names(node, fn):
    """`node` with every `Name` below it replaced by fn(name) (which may return it unchanged)."""
    if isinstance(node, tuple):
        return tuple(replace_names(x, fn) for x in node)
    if isinstance(node, Name):
        return fn(node)
    if not dataclasses.is_dataclass(node) or isinstance(node, (Span, Comment)):
        return node
    return dataclasses.replace(node, **{f.name: replace_names(getattr(node, f.name), fn)
                                        for f in dataclasses.fields(node) if f.init})
