"""The canonical formatter: `nlc fmt`. An AST (with its comments) back to `.nl` source text.

Layout rules:

* two spaces of indentation per brace level, one statement per line, nothing is ever wrapped;
* spaces around binary operators, `->`, `=` (bindings, keyword arguments, parameter defaults) and
  the `:` of a declaration; `, ` after commas; no space before `(`;
* parentheses only where operator precedence needs them (the AST has no parenthesis nodes);
* numbers exactly as written (`Number.text`), strings re-escaped (`\\\\`, `\\"`, `\\n`, `\\t`);
* a body whose only statement is simple (no body of its own) stays on one line,
  `{ clock every 16 tokens }`, when the whole declaration was on one line in the source; every
  other non-empty body is expanded; an empty body without comments is written `{}`;
* at the top level and in a model body, a statement whose body is expanded is separated from its
  neighbours by a blank line (one is inserted after the previous statement when the source had
  none); elsewhere a run of blank lines in the source becomes one blank line, and blank lines
  right after `{` or before `}` are dropped;
* the names of consecutive bindings, and the keys of consecutive properties, are padded into a
  column; a blank line or a statement of another kind ends the column;
* comments are kept in order. An own-line comment stays above the statement that follows it;
  a trailing comment stays at the end of its statement's line (after `{` for a comment on the
  header line of a body, after `}` for one on the closing line). Comments from inside a
  statement that spanned several lines move above it, except the last one, which trails it when
  it was a trailing comment. Trailing comments of consecutive one-line statements (no blank line
  or own-line comment between them) start in the same column.

`format_source(format_source(s)) == format_source(s)`, and `parse(format_source(s))` equals
`parse(s)` up to spans. Comments are placed by the line numbers in the spans; a module without
spans (built by hand) is laid out with every body expanded. `format_module` raises ValueError for
an AST no source could produce: a phrase of several words with a word that is not a name, call,
number or string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import ast
from .parser import parse

INDENT = "  "

_BINARY_PREC = {"+": 2, "-": 2, "*": 3, "/": 3, "%": 3, "**": 5}
_ATOM = 6
_WORDS = (ast.Name, ast.Call, ast.Number, ast.String)


def format_source(text: str, file: str = "<string>") -> str:
    """Parse `text` and return it formatted; raises SpecError when it does not parse."""
    return format_module(parse(text, file))


def format_module(module: ast.Module) -> str:
    """The canonical text of `module`, comments included."""
    return _Formatter().module(module)


# ---------------------------------------------------------------- expressions


def _prec(e) -> int:
    if isinstance(e, ast.Pipe):
        return 1
    if isinstance(e, ast.BinOp):
        return _BINARY_PREC[e.op]
    if isinstance(e, ast.UnaryOp):
        return 4
    return _ATOM


def format_expr(e, min_prec: int = 1) -> str:
    """`e` as source text, in parentheses when its precedence is below `min_prec`."""
    if isinstance(e, ast.Number):
        text = e.text
    elif isinstance(e, ast.String):
        text = quote(e.value)
    elif isinstance(e, ast.Name):
        text = ".".join(e.parts)
    elif isinstance(e, ast.Call):
        args = [format_expr(a) for a in e.args] + [f"{k.name} = {format_expr(k.value)}" for k in e.kwargs]
        text = f"{format_expr(e.func)}({', '.join(args)})"
    elif isinstance(e, ast.BinOp):
        p = _BINARY_PREC[e.op]
        # `**` is right-associative and its left operand is an atom; the others are left-associative
        left, right = (_ATOM, 4) if e.op == "**" else (p, p + 1)
        text = f"{format_expr(e.left, left)} {e.op} {format_expr(e.right, right)}"
    elif isinstance(e, ast.UnaryOp):
        text = e.op + format_expr(e.operand, 4)
    elif isinstance(e, ast.Pipe):
        text = " -> ".join(format_expr(s, 2) for s in e.stages)
    elif isinstance(e, ast.TupleExpr):
        items = [format_expr(x) for x in e.items]
        text = f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    elif isinstance(e, ast.ListExpr):
        text = f"[{', '.join(format_expr(x) for x in e.items)}]"
    else:
        raise TypeError(f"not an expression: {type(e).__name__}")
    return f"({text})" if _prec(e) < min_prec else text


def quote(value: str) -> str:
    """A string literal whose value is `value`."""
    body = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{body}"'


def format_phrase(p: ast.Phrase) -> str:
    if len(p.words) == 1:
        return format_expr(p.words[0])
    for w in p.words:
        if not isinstance(w, _WORDS):
            raise ValueError(f"a {type(w).__name__} cannot be a word of a phrase of several words")
    return " ".join(format_expr(w) for w in p.words)


# ---------------------------------------------------------------- statements


def _body(s):
    return s.body if isinstance(s, (ast.Model, ast.Block, ast.Decl)) else None


def _header_end(s) -> int:
    """The last source line of a statement's header (the line of its `{`, in all usual cases)."""
    if isinstance(s, ast.Model):
        return s.name_span.end_line
    if isinstance(s, ast.Block):
        return max([s.name_span.end_line] + [p.span.end_line for p in s.params])
    if isinstance(s, ast.Decl):
        lines = [i.span.end_line for i in s.names]
        return max(lines + ([s.type.span.end_line] if s.type is not None else []))
    return s.span.end_line


def _header(s) -> str:
    if isinstance(s, ast.Model):
        return f"model {s.name}"
    if isinstance(s, ast.Block):
        params = [p.name if p.default is None else f"{p.name} = {format_expr(p.default)}" for p in s.params]
        return f"block {s.name}({', '.join(params)})"
    head = f"{s.kind} {', '.join(i.name for i in s.names)}"
    return head if s.type is None else f"{head} : {format_phrase(s.type)}"


def _key(s) -> Optional[tuple[str, str]]:
    """(column kind, padded word) for statements whose first word is aligned into a column."""
    if isinstance(s, ast.Assign):
        return "assign", s.name
    if isinstance(s, ast.Prop):
        return "prop", s.key
    return None


def _simple(s, pad: int = 0) -> str:
    """A statement that has no body, on one line."""
    if isinstance(s, ast.Version):
        return f"nl {format_expr(s.number)}"
    if isinstance(s, ast.Import):
        return f"import {quote(s.path)}" + ("" if s.alias is None else f" as {s.alias}")
    if isinstance(s, ast.Assign):
        return f"{s.name.ljust(pad)} = {format_expr(s.value)}"
    if isinstance(s, ast.Prop):
        if not s.values:
            return s.key
        return f"{s.key.ljust(pad)} {', '.join(format_phrase(v) for v in s.values)}"
    if isinstance(s, ast.Return):
        return f"return {format_expr(s.value)}"
    if isinstance(s, ast.Decl) and s.body is None:
        return _header(s)
    raise TypeError(f"not a simple statement: {type(s).__name__}")


def _is_trailing(c: ast.Comment, s) -> bool:
    return c.line == s.span.end_line or not c.own_line


@dataclass
class _Row:
    depth: int
    text: str  # "" for a blank line
    comment: Optional[str] = None
    section: Optional[int] = None  # rows of one section align their trailing comments


class _Formatter:
    def __init__(self):
        self.rows: list[_Row] = []
        self.section = 0

    def module(self, m: ast.Module) -> str:
        stmts = ([m.version] if m.version is not None else []) + list(m.items)
        comments = sorted(m.comments, key=lambda c: (c.line, c.col))
        self.sequence(stmts, comments, 0, separate=True)
        return self.text()

    # ---- layout of a sequence of statements (the file, or one body)
    def sequence(self, stmts, comments, depth: int, separate: bool) -> None:
        leading = [[] for _ in stmts]
        inner = [[] for _ in stmts]
        tail = []
        for c in comments:
            for i, s in enumerate(stmts):
                if s.span.line <= c.line <= s.span.end_line:
                    inner[i].append(c)
                    break
                if c.line < s.span.line:
                    leading[i].append(c)
                    break
            else:
                tail.append(c)

        expanded = [self.expanded(s, inner[i]) for i, s in enumerate(stmts)]
        blanks = []  # per statement: blank line before each leading comment and before the statement
        prev = None
        for i, s in enumerate(stmts):
            marks = []
            for line in [c.line for c in leading[i]] + [s.span.line]:
                marks.append(prev is not None and line > prev + 1)
                prev = line
            if separate and i > 0 and (expanded[i - 1] or expanded[i]) and not any(marks):
                marks[0] = True
            blanks.append(marks)
            prev = s.span.end_line
        pads = self.columns(stmts, blanks)

        for i, s in enumerate(stmts):
            new_section = i == 0 or expanded[i - 1] or expanded[i] or any(blanks[i]) or leading[i]
            for c, blank in zip(leading[i], blanks[i]):
                self.blank(blank)
                self.rows.append(_Row(depth, c.text))
            self.blank(blanks[i][-1])
            if new_section:
                self.section += 1
            self.statement(s, inner[i], depth, pads[i], expanded[i])
        for c in tail:
            self.blank(prev is not None and c.line > prev + 1)
            self.rows.append(_Row(depth, c.text))
            prev = c.line

    def columns(self, stmts, blanks) -> list[int]:
        """The width each binding name or property key is padded to."""
        pads = [0] * len(stmts)
        run: list[int] = []

        def flush():
            widths = [len(_key(stmts[j])[1]) for j in run
                      if not (isinstance(stmts[j], ast.Prop) and not stmts[j].values)]
            for j in run:
                pads[j] = max(widths, default=0)
            run.clear()

        for i, s in enumerate(stmts):
            key = _key(s)
            if run and (key is None or key[0] != _key(stmts[run[0]])[0] or any(blanks[i])):
                flush()
            if key is not None:
                run.append(i)
        flush()
        return pads

    def blank(self, wanted: bool) -> None:
        if wanted and self.rows and self.rows[-1].text != "":
            self.rows.append(_Row(0, ""))

    # ---- one statement
    def expanded(self, s, comments) -> bool:
        """Whether `s` is written over several lines (its body opened up)."""
        body = _body(s)
        if body is None:
            return False
        inside = [c for c in comments if _header_end(s) < c.line < s.span.end_line]
        if not body or inside:
            return bool(inside)
        return len(body) != 1 or _body(body[0]) is not None or not 0 < s.span.line == s.span.end_line

    def statement(self, s, comments, depth: int, pad: int, expanded: bool) -> None:
        if not expanded:
            trailing = comments[-1] if comments and _is_trailing(comments[-1], s) else None
            above = comments[:-1] if trailing else comments
            if above:
                self.section += 1
            for c in above:
                self.rows.append(_Row(depth, c.text))
            self.rows.append(_Row(depth, self.one_line(s, pad), trailing and trailing.text, self.section))
            return
        head_end, end = _header_end(s), s.span.end_line
        closing = [c for c in comments if c.line == end]
        header = [c for c in comments if c.line <= head_end and c.line != end]
        inside = [c for c in comments if head_end < c.line < end]
        opening = None
        if header and (header[-1].line == head_end or not header[-1].own_line):
            opening = header.pop()
        for c in header:
            self.rows.append(_Row(depth, c.text))
        self.rows.append(_Row(depth, _header(s) + " {", opening and opening.text))
        self.sequence(list(s.body), inside, depth + 1, separate=isinstance(s, ast.Model))
        for c in closing[:-1]:  # more than one only for spans that do not come from the parser
            self.rows.append(_Row(depth + 1, c.text))
        self.rows.append(_Row(depth, "}", closing[-1].text if closing else None))

    def one_line(self, s, pad: int) -> str:
        body = _body(s)
        if body is None:
            return _simple(s, pad)
        if not body:
            return _header(s) + " {}"
        return f"{_header(s)} {{ {self.one_line(body[0], 0)} }}"

    # ---- rows to text
    def text(self) -> str:
        widths: dict[int, int] = {}
        for r in self.rows:
            if r.comment is not None and r.section is not None:
                width = len(INDENT * r.depth + r.text)
                widths[r.section] = max(widths.get(r.section, 0), width)
        lines = []
        for r in self.rows:
            line = INDENT * r.depth + r.text if r.text else ""
            if r.comment is not None:
                line = line.ljust(widths.get(r.section, 0)) + "  " + r.comment
            lines.append(line + "\n")
        return "".join(lines)
