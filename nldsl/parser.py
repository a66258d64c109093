"""Pass 1: source text → AST. The only module that touches Lark; no Lark object leaves it.

`parse(text, file)` returns a `Module` or raises `SpecError` with every syntax Diagnostic of the file:
after an error the parser resynchronises at the next statement (the statement in error is blanked out,
its braces kept, and the text parsed again), so unrelated errors each get one diagnostic and an error
never causes follow-on ones. Comments are collected by a lexer callback (for the formatter) and
newlines inside brackets are dropped by a small post-lexer so that argument lists may wrap.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .diagnostics import Label, SpecError, error

MAX_BYTES = 4_000_000
MAX_NESTING = 64
MAX_SYNTAX_ERRORS = 20

_OPEN = {"LPAR", "LSQB"}
_CLOSE = {"RPAR", "RSQB"}


class _TooDeep(Exception):
    def __init__(self, token: Token):
        self.token = token


class _PostLexer:
    """Drops newlines inside () and [] and merges runs of newlines; bounds bracket nesting."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        braces = 0
        prev_nl = False
        for tok in stream:
            if tok.type == "_NL":
                if depth > 0 or prev_nl:
                    continue
                prev_nl = True
                yield tok
                continue
            prev_nl = False
            if tok.type in _OPEN or tok.type == "LBRACE":
                depth += tok.type in _OPEN
                braces += tok.type == "LBRACE"
                if depth + braces > MAX_NESTING:
                    raise _TooDeep(tok)
            elif tok.type in _CLOSE:
                depth = max(0, depth - 1)
            elif tok.type == "RBRACE":
                braces = max(0, braces - 1)
            yield tok


@functools.lru_cache(maxsize=None)
def grammar_text() -> str:
    return resources.files("nldsl.grammar").joinpath("nl.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _parser() -> Lark:
    options = dict(parser="lalr", strict=True, propagate_positions=True, postlex=_PostLexer(),
                   lexer_callbacks={"COMMENT": _Comments.collect}, maybe_placeholders=True)
    cache = _cache_file()
    if cache is not None:
        try:
            return Lark(grammar_text(), cache=cache, **options)
        except Exception:  # noqa: BLE001 - an unreadable or stale cache only costs the build below
            pass
    return Lark(grammar_text(), **options)


def _cache_file() -> str | None:
    """The parse tables, cached in the user's own nlc cache folder (never a shared temporary one).

    Building the LALR tables takes longer than checking a typical spec; the file name carries the
    grammar's and Lark's versions, so a changed grammar never reads stale tables. NLC_NO_CACHE=1
    turns the cache off.
    """
    import hashlib
    import os

    import lark

    if os.environ.get("NLC_NO_CACHE"):
        return None
    from .cachedir import cache_dir

    root = str(cache_dir())
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError:
        return None
    key = hashlib.sha256((grammar_text() + lark.__version__).encode()).hexdigest()[:16]
    return os.path.join(root, f"grammar-{key}.lark-tables")


class _Comments:
    """Lark lexer callbacks are global to a parser; parsing is not re-entrant, so a stack suffices."""

    stack: list[list[Token]] = []

    @classmethod
    def collect(cls, tok: Token) -> Token:
        if cls.stack:
            cls.stack[-1].append(tok)
        return tok


def _span(file: str, meta) -> ast.Span:
    if getattr(meta, "empty", False):
        return ast.Span(file, 0, 0, 0, 0)
    return ast.Span(file, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(file: str, tok: Token) -> ast.Span:
    return ast.Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds AST nodes. No checks here: every judgement belongs to a later pass."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _s(self, meta):
        return _span(self.file, meta)

    # ---- file structure
    def start(self, meta, children):
        version = children[0] if children and isinstance(children[0], ast.Version) else None
        items = tuple(c for c in children if not isinstance(c, ast.Version))
        return ast.Module(self.file, version, items, ())

    def version(self, meta, children):
        return ast.Version(self.number(meta, children), self._s(meta))

    def import_stmt(self, meta, children):
        path, alias = children[0], (children[1] if len(children) > 1 else None)
        return ast.Import(_unquote(path), str(alias) if alias is not None else None, self._s(meta))

    def model(self, meta, children):
        name, body = children
        return ast.Model(str(name), _tok_span(self.file, name), body, self._s(meta))

    def block(self, meta, children):
        name, params, body = children
        return ast.Block(str(name), _tok_span(self.file, name), params or (), body, self._s(meta))

    def params(self, meta, children):
        return tuple(children)

    def param(self, meta, children):
        name = children[0]
        default = children[1] if len(children) > 1 else None
        return ast.Param(str(name), default, self._s(meta))

    def decl(self, meta, children):
        kind, names = children[0], children[1]
        typ = next((c for c in children[2:] if isinstance(c, ast.Phrase)), None)
        body = next((c for c in children[2:] if isinstance(c, tuple)), None)
        return ast.Decl(kind, names, typ, body, self._s(meta))

    def decl_kind(self, meta, children):
        return str(children[0])

    def names(self, meta, children):
        return tuple(ast.Ident(str(t), _tok_span(self.file, t)) for t in children)

    def body(self, meta, children):
        return tuple(children)

    def assign(self, meta, children):
        name, value = children
        return ast.Assign(str(name), _tok_span(self.file, name), value, self._s(meta))

    def prop(self, meta, children):
        key = children[0]
        return ast.Prop(str(key), _tok_span(self.file, key), tuple(children[1:]), self._s(meta))

    def return_stmt(self, meta, children):
        return ast.Return(children[0], self._s(meta))

    def phrase(self, meta, children):
        return ast.Phrase(tuple(children), self._s(meta))

    # ---- expressions
    def pipe(self, meta, children):
        return ast.Pipe(tuple(children), self._s(meta))

    def _bin(op):  # noqa: N805 - a small factory for the five binary operators
        def rule(self, meta, children):
            return ast.BinOp(op, children[0], children[1], self._s(meta))

        return rule

    add, sub, mul, div, mod, pow = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("%"), _bin("**")

    def neg(self, meta, children):
        return ast.UnaryOp("-", children[0], self._s(meta))

    def pos(self, meta, children):
        return ast.UnaryOp("+", children[0], self._s(meta))

    def tuple(self, meta, children):
        return ast.TupleExpr(tuple(c for c in children if c is not None), self._s(meta))

    def list(self, meta, children):
        return ast.ListExpr(tuple(c for c in children if c is not None), self._s(meta))

    def number(self, meta, children):
        text = str(children[0])
        is_int = text.isdigit()
        try:
            value = int(text) if is_int else float(text)
        except (ValueError, OverflowError):
            value = float("inf")
        return ast.Number(value, text, _tok_span(self.file, children[0]))

    def string(self, meta, children):
        return ast.String(_unquote(children[0]), _tok_span(self.file, children[0]))

    def dotted(self, meta, children):
        return ast.Name(tuple(str(t) for t in children), self._s(meta))

    def call(self, meta, children):
        func, args = children
        args = args or ()
        pos = tuple(a for a in args if not isinstance(a, ast.KwArg))
        kws = tuple(a for a in args if isinstance(a, ast.KwArg))
        return ast.Call(func, pos, kws, self._s(meta))

    def args(self, meta, children):
        return tuple(children)

    def kwarg(self, meta, children):
        name, value = children
        return ast.KwArg(str(name), value, self._s(meta))


def _unquote(tok) -> str:
    body = str(tok)[1:-1]
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


_FRIENDLY = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "a new line",
    "LBRACE": "`{`", "RBRACE": "`}`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`",
    "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`", "DOT": "`.`", "$END": "the end of the file",
    "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`", "PERCENT": "`%`", "__ANON_0": "`->`",
}


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line"
    return f"`{tok}`"


def _expected_text(expected) -> str:
    names = sorted({_FRIENDLY.get(e, f"`{e.lower()}`" if e.isupper() and len(e) < 10 else _FRIENDLY.get(e, e))
                    for e in expected})
    names = [n for n in names if not n.startswith("`__")]
    if not names:
        return ""
    if len(names) > 6:
        names = names[:6] + ["…"]
    return "expected " + ", ".join(names)


_OPERATORS = {"STAR", "SLASH", "PERCENT", "PLUS", "MINUS", "__ANON_0"}


def _syntax_help(err: UnexpectedInput, text: str) -> str:
    if isinstance(err, UnexpectedToken):
        tok = err.token
        before = _source_lines(text)[tok.line - 1][: tok.column - 1] if tok.line else ""
        if tok.type == "LPAR" and before[-1:] == " " and before.rstrip()[-1:].isalnum():
            return ("in a property with several words, arithmetic and parentheses go inside a call "
                    "or a named constant: `every period tokens` with `period = 4 * 16`")
        if tok.type in _OPERATORS and "NAME" in err.expected:
            # an operator is only refused after a word when the words form a several-word phrase
            return ("in a property with several words, arithmetic goes inside a call or a named "
                    "constant: `every period tokens` with `period = 4 * 16`")
        if re.search(r"\bevery\s+-", before) and str(tok) in ("token", "tokens", "step", "steps"):
            return "a period is a positive number: `every 16 tokens`"
        if tok.type == "LBRACE":
            return "a block `{` opens only after a declaration header such as `memory m : linear`"
        if tok.type == "EQUAL":
            return "bindings are `name = expression`, one per line; keyword arguments go inside calls"
        if tok.type == "COLON":
            return "`name : type` is written after a declaration keyword: memory, attention, cms, level, optimizer"
        if tok.type == "_NL":
            return ("the line ends in the middle of an expression: finish it on this line (a line "
                    "continues only inside parentheses or brackets)")
        if tok.type in ("RPAR", "RSQB", "COMMA"):
            return "a value is missing here: write one, or remove the separator before it"
    return "compare the line with the construct's form in docs/language.md"


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse `.nl` source text into a Module, or raise SpecError with a syntax diagnostic."""
    if len(text) > MAX_BYTES:
        raise SpecError([error("NL0005", f"the spec is {len(text)} characters long; the limit is {MAX_BYTES}",
                               ast.Span(file, 1, 1, 1, 2), help="split it into files joined by `import`")])
    comments: list[Token] = []
    _Comments.stack.append(comments)
    try:
        tree = _parse_all(text, file)
    finally:
        _Comments.stack.pop()
    try:
        module = _ToAst(file).transform(tree)
    except RecursionError:
        raise SpecError([_too_deep(tree, file)]) from None
    except VisitError as e:  # only a bug in _ToAst can get here
        if isinstance(e.orig_exc, RecursionError):
            raise SpecError([_too_deep(tree, file)]) from None
        raise e.orig_exc from None
    return ast.Module(file, module.version, module.items, _comment_nodes(comments, text))


_STATEMENTS = {"assign", "prop", "return_stmt", "param", "version"}


def _too_deep(tree, file: str):
    """NL0005 at the expression that is nested too deeply: the expression of the statement that holds
    the deepest point of the parse tree (found without recursion)."""
    nodes = [(tree, -1, 0)]  # (node, index of its parent, depth)
    stack, deepest = [0], 0
    while stack:
        i = stack.pop()
        node, _, depth = nodes[i]
        if depth > nodes[deepest][2]:
            deepest = i
        if isinstance(node, Tree):
            for child in node.children:
                nodes.append((child, i, depth + 1))
                stack.append(len(nodes) - 1)
    path, i = [], deepest
    while i >= 0:
        path.append(nodes[i][0])
        i = nodes[i][1]
    path.reverse()
    statement = next((k for k, n in enumerate(path[:-1]) if isinstance(n, Tree) and n.data in _STATEMENTS), None)
    at = _node_span(file, path[statement + 1]) if statement is not None else None
    at = at or _node_span(file, path[-1]) or ast.Span(file, 1, 1, 1, 2)
    span = ast.Span(file, at.line, at.col, at.line, at.col + 1 if at.end_line != at.line else at.end_col)
    return error("NL0005", "this expression is nested too deeply to be read", span, "too deep",
                 help="name intermediate values with `x = ...`")


def _node_span(file: str, node):
    if isinstance(node, Token):
        return _tok_span(file, node) if node.line is not None else None
    meta = getattr(node, "meta", None)
    if meta is None or getattr(meta, "empty", True):
        return None
    return _span(file, meta)


def _parse_all(text: str, file: str):
    """The parse tree of `text`, or SpecError with one diagnostic per syntax error of the file."""
    diagnostics, current, blanked, stubborn = [], text, set(), set()
    for _ in range(3 * MAX_SYNTAX_ERRORS):
        try:
            tree = _parser().parse(current)
        except _TooDeep as e:
            diagnostics.append(error("NL0005", f"brackets nested more than {MAX_NESTING} deep",
                                     _tok_span(file, e.token), "too deep", help="name intermediate values with `x = ...`"))
            break
        except UnexpectedInput as e:
            diag = _syntax_diagnostic(e, current, file)
            if diag.span.line not in blanked:
                diagnostics.append(diag)
            at_end = isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END")
            if at_end or len(diagnostics) >= MAX_SYNTAX_ERRORS:
                break
            lines = _statement_lines(current, diag.span.line)
            if diag.span.line in blanked:  # the placeholder itself does not fit here: drop its braces too
                stubborn.update(lines)
            current = _blank(current, lines, keep_braces=not (set(lines) & stubborn))
            blanked.update(lines)
            continue
        if not diagnostics:
            return tree
        break
    raise SpecError(diagnostics)


def _depths(lines: list[str]) -> list[int]:
    """The depth of () and [] at the start of each line (strings and comments skipped)."""
    out, depth = [], 0
    for line in lines:
        out.append(depth)
        for ch in _code_chars(line):
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth = max(0, depth - 1)
    return out


def _code_chars(line: str):
    """The characters of a line outside strings and comments."""
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == "#":
            return
        if ch == '"':
            i += 1
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
            continue
        yield ch
        i += 1


def _statement_lines(text: str, line: int) -> range:
    """The lines (1-based) of the statement holding `line`: a call or list wrapped over several lines
    counts as one statement."""
    lines = _source_lines(text)
    if not lines:
        return range(line, line + 1)
    depths = _depths(lines) + [0]
    line = min(max(line, 1), len(lines))
    start = line
    while start > 1 and depths[start - 1] > 0:
        start -= 1
    end = line
    while end < len(lines) and depths[end] > 0:
        end += 1
    return range(start, end + 1)


def _blank(text: str, region: range, keep_braces: bool = True) -> str:
    """`text` with the lines of `region` emptied. Their braces are kept balanced: a `{` they open
    becomes the header of an empty placeholder declaration, a `}` they close stays."""
    lines = text.split("\n")
    opened = 0
    for n in region if keep_braces else ():
        for ch in _code_chars(lines[n - 1]):
            opened += (ch == "{") - (ch == "}")
    first = region.start - 1
    indent = lines[first][: len(lines[first]) - len(lines[first].lstrip(" \t"))]
    for n in region:
        lines[n - 1] = ""
    lines[first] = indent + ("level _ { " * opened if opened > 0 else "} " * -opened).rstrip()
    return "\n".join(lines)


def _source_lines(text: str) -> list[str]:
    """The lines as the lexer counts them: split at "\n" only (str.splitlines also splits at \f, \x85...)."""
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return lines


def _comment_nodes(tokens, text: str) -> tuple[ast.Comment, ...]:
    lines = _source_lines(text)
    out = []
    for t in tokens:
        before = lines[t.line - 1][: t.column - 1] if t.line - 1 < len(lines) else ""
        out.append(ast.Comment(str(t).rstrip(), t.line, t.column, before.strip() == ""))
    return tuple(out)


def _syntax_diagnostic(e: UnexpectedInput, text: str, file: str):
    line = getattr(e, "line", 1) or 1
    col = getattr(e, "column", 1) or 1
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else "?"
        name = f"U+{ord(ch):04X}" if not ch.isprintable() or ch in " \t" else f"`{ch}`"
        span = ast.Span(file, line, col, line, col + 1)
        if ch == ">" and text[e.pos_in_stream - 1:e.pos_in_stream] == "-":  # `->` where no pipeline can stand
            return error("NL0003", "unexpected `->`", ast.Span(file, line, col - 1, line, col + 1),
                         "a pipeline cannot stand here",
                         help="a pipeline is the value of a binding: `name = a -> b` (e.g. `layer = rmsnorm -> mix`)")
        return error("NL0002", f"unexpected character {name}", span, "not part of the language",
                     help=_char_help(ch))
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = _source_lines(text)
        last = len(lines)
        span = ast.Span(file, last, len(lines[-1]) + 1, last, len(lines[-1]) + 2)
        expected = _expected_text(getattr(e, "expected", ()))
        opener = _unclosed(text, file)
        if opener is not None:
            ch, where, suspect = opener
            labels = [Label(span, expected or "the file ends here")]
            if suspect is not None and ch == "{":
                labels.insert(0, Label(suspect, "perhaps this `{` is the one left open: "
                                                "its `}` is not indented like its line"))
            return error("NL0004", f"the file ends before this `{ch}` is closed", where,
                         f"unclosed `{ch}`", labels=labels, help=f"add the missing `{_PAIRS[ch]}`")
        return error("NL0004", "the file ends in the middle of a construct", span, expected,
                     help="check for a missing `}` or `)`")
    tok = e.token
    span = _tok_span(file, tok) if tok.line is not None else ast.Span(file, line, col, line, col + 1)
    return error("NL0003", f"unexpected {_describe(tok)}", span, _expected_text(e.expected),
                 help=_syntax_help(e, text))


_PAIRS = {"(": ")", "[": "]", "{": "}"}


def _unclosed(text: str, file: str):
    """The innermost bracket still open at the end of `text` (strings and comments skipped), as
    (bracket, span, suspect): `suspect` is the span of a `{` that was closed by a `}` indented
    differently from the line that opened it, which is usually the one really left open."""
    stack, suspect = [], None
    line, col, i, n = 1, 1, 0, len(text)
    indent = lambda ln: len(ln) - len(ln.lstrip(" \t"))  # noqa: E731
    lines = text.split("\n")
    while i < n:
        ch = text[i]
        if ch == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if ch == '"':
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            col += j - i
            i = j
            if i < n and text[i] == '"':
                i, col = i + 1, col + 1
            continue
        if ch in _PAIRS:
            stack.append((ch, line, col))
        elif ch in ")]}" and stack and _PAIRS[stack[-1][0]] == ch:
            _, oline, ocol = stack.pop()
            here = lines[line - 1]
            if ch == "}" and here[: col - 1].strip() == "" and indent(here) != indent(lines[oline - 1]):
                suspect = suspect or ast.Span(file, oline, ocol, oline, ocol + 1)
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1
        i += 1
    if not stack:
        return None
    ch, line, col = stack[-1]
    return ch, ast.Span(file, line, col, line, col + 1), suspect


def _char_help(ch: str) -> str:
    if ch in "‘’“”":
        return "use plain ASCII quotes `\"`"
    if ch in "×·−":
        return "use ASCII operators: `*` for multiplication, `-` for minus"
    if ch == ";":
        return "statements end at a new line; `;` is not used"
    if ch == "'":
        return "strings use double quotes"
    if ch == '"':
        return "this string is not closed before the end of its line"
    return "names are ASCII letters, digits and `_`; comments start with `#`"
