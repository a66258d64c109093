"""Pass 2: imports and the symbol table.

Loads every imported file (relative to the importing file), detects import cycles, and builds the
table of top-level definitions visible to the model: blocks, memory and attention kinds, optimizers,
cms chains, levels and constants, each under its (possibly `alias.`-qualified) name. Duplicate
definitions are reported with both places.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import ast, schema
from .diagnostics import Label, SpecError, Sink, error


@dataclass(frozen=True)
class Symbol:
    name: str  # as visible in the model, possibly qualified ("lib.selfmod")
    node: object  # ast.Block | ast.Decl | ast.Assign
    kind: str  # block | memory | attention | cms | level | optimizer | const
    span: ast.Span


@dataclass(frozen=True)
class Program:
    main: ast.Module
    model: ast.Model
    symbols: tuple[Symbol, ...]  # top-level and model-level definitions, in source order
    sources: tuple[tuple[str, str], ...]  # every file read: (name, text)

    def lookup(self, name: str) -> Optional[Symbol]:
        for s in self.symbols:
            if s.name == name:
                return s
        return None

    def of_kind(self, *kinds: str) -> tuple[Symbol, ...]:
        return tuple(s for s in self.symbols if s.kind in kinds)


Reader = Callable[[str], str]  # path → text, raising SpecError on failure


def _symbols_of(items, prefix: str, sink: Sink) -> list[Symbol]:
    out: list[Symbol] = []
    for item in items:
        if isinstance(item, ast.Block):
            out.append(Symbol(prefix + item.name, item, "block", item.name_span))
        elif isinstance(item, ast.Decl):
            for ident in item.names:
                out.append(Symbol(prefix + ident.name, item, item.kind, ident.span))
        elif isinstance(item, ast.Assign):
            out.append(Symbol(prefix + item.name, item, "const", item.name_span))
    return out


def _check_duplicates(symbols: list[Symbol], sink: Sink) -> list[Symbol]:
    seen: dict[str, Symbol] = {}
    kept = []
    for s in symbols:
        first = seen.get(s.name)
        if first is not None and first.span == s.span:
            continue  # one definition reached through two imports (a diamond), not a duplicate
        if first is not None:
            sink.add(error("NL0102", f"`{s.name}` is defined more than once", s.span, "defined again here",
                           labels=[Label(first.span, "first defined here")],
                           help="rename one of them; names are shared by blocks, levels and constants"))
            continue
        seen[s.name] = s
        kept.append(s)
    return kept


def load_imports(module: ast.Module, read: Reader, sink: Sink, sources: dict, stack=()) -> list[Symbol]:
    """Symbols brought in by `module`'s imports (recursively), qualified by their aliases."""
    out: list[Symbol] = []
    here = os.path.normpath(module.file)
    for imp in (i for i in module.items if isinstance(i, ast.Import)):
        path = str(Path(module.file).parent / imp.path) if module.file not in ("<string>", "-") else imp.path
        key = os.path.normpath(path)  # `lib/../lib/a.nl` is `lib/a.nl`: cycles are found by name
        if key in stack or key == here:
            chain = (stack[stack.index(key):] if key in stack else ()) + (here, key)
            sink.add(error("NL0007", "import cycle: " + " → ".join(f"`{f}`" for f in chain), imp.span,
                           "the cycle closes here", help="move the shared definitions into a third file"))
            continue
        try:
            text = read(path)
        except SpecError as e:
            sink.add(error("NL0007", f"cannot import `{imp.path}`", imp.span, "imported here",
                           notes=[d.message for d in e.diagnostics][:3],
                           help="import paths are relative to the importing file"))
            continue
        from .parser import parse

        try:
            lib = parse(text, key)
        except SpecError as e:
            sources[key] = text
            sink.extend(e.diagnostics)
            continue
        sources[key] = text
        _repeated_arguments(lib, sink)
        models = [i for i in lib.items if isinstance(i, ast.Model)]
        if models:
            sink.add(error("NL0007", f"`{imp.path}` defines a model; only libraries can be imported", imp.span,
                           "imported here", labels=[Label(models[0].name_span, "the model")],
                           help="move the shared definitions out of the model to the top level of a library file"))
            continue
        prefix = f"{imp.alias}." if imp.alias else ""
        nested = load_imports(lib, read, sink, sources, stack + (here,))
        if prefix:
            nested = [Symbol(prefix + s.name, s.node, s.kind, s.span) for s in nested]
        out.extend(nested)
        out.extend(_symbols_of(lib.items, prefix, sink))
    return out


def resolve(module: ast.Module, read: Reader, text: str, sources: dict | None = None) -> Program:
    """Build the Program: the model and every definition it can see. Raises SpecError on errors.

    `sources` (file → text) receives every file read, also when resolving fails, so that
    diagnostics in imported files can show their lines."""
    sink = Sink()
    sources = {} if sources is None else sources
    sources[module.file] = text
    if module.version is not None:
        num = module.version.number
        if not (isinstance(num, ast.Number) and num.text == "1"):
            sink.add(error("NL0006", "unsupported language version", module.version.span,
                           "this compiler reads version 1", help="write `nl 1` as the first line"))
    imported = load_imports(module, read, sink, sources)
    models = [i for i in module.items if isinstance(i, ast.Model)]
    if not models:
        span = module.items[0].span if module.items else ast.Span(module.file, 1, 1, 1, 2)
        sink.add(error("NL0105", "this file defines no model", span, "",
                       help="a spec needs `model NAME { ... }`; a file of shared definitions is imported"))
        raise SpecError(sink.items)
    for extra in models[1:]:
        sink.add(error("NL0105", "a spec defines one model", extra.name_span, "second model",
                       labels=[Label(models[0].name_span, "first model")],
                       help="put each model in its own file; share definitions through `import`"))
    model = models[0]
    _repeated_arguments(module, sink)
    _model_statements(model, text, sink)
    local = _symbols_of(module.items, "", sink) + _symbols_of(model.body, "", sink)
    symbols = _check_duplicates(imported + local, sink)
    if sink.has_errors:
        raise SpecError(sink.items)
    return Program(module, model, tuple(symbols), tuple(sources.items()))


def _nodes(root):
    """Every AST node below `root`, without recursion (expressions may be nested deeply)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            stack.extend(reversed(node))
        elif dataclasses.is_dataclass(node) and not isinstance(node, (ast.Span, ast.Comment)):
            yield node
            stack.extend(getattr(node, f.name) for f in reversed(dataclasses.fields(node)))


def _repeated_arguments(module: ast.Module, sink: Sink) -> None:
    """A keyword argument given twice in one call, a parameter declared twice by one block (NL0102)."""
    for node in _nodes(module.items):
        if isinstance(node, ast.Call):
            first: dict[str, ast.KwArg] = {}
            for kw in node.kwargs:
                if kw.name in first:
                    sink.add(error("NL0102", f"`{node.func.id}` is given the argument `{kw.name}` twice", kw.span,
                                   "given again here", labels=[Label(first[kw.name].span, "first given here")],
                                   help=f"give `{kw.name}` once; remove one of the two"))
                else:
                    first[kw.name] = kw
        elif isinstance(node, ast.Block):
            seen: dict[str, ast.Param] = {}
            for prm in node.params:
                if prm.name in seen:
                    sink.add(error("NL0102", f"the block `{node.name}` declares the parameter `{prm.name}` twice",
                                   prm.span, "declared again here", labels=[Label(seen[prm.name].span, "first declared here")],
                                   help="give each parameter its own name"))
                else:
                    seen[prm.name] = prm


def _model_statements(model: ast.Model, text: str, sink: Sink) -> None:
    """A model body holds bindings and declarations: a property or a `return` there is an error (NL0108)."""
    for stmt in model.body:
        if isinstance(stmt, ast.Prop):
            sink.add(error("NL0108", f"`{stmt.key} ...` is a property; a model body holds bindings `name = ...` "
                                     "and declarations", stmt.span, "not a binding",
                           help=_property_help(stmt, text)))
        elif isinstance(stmt, ast.Return):
            sink.add(error("NL0108", "`return` belongs in a block, not in the model", stmt.span, "not in a block",
                           help="the model's output is its `network = ...` binding"))


def _property_help(prop: ast.Prop, text: str) -> str:
    if len(prop.values) == 1 and len(prop.values[0].words) == 1:
        value = prop.values[0].span
        lines = text.split("\n")
        if value.line == value.end_line and 0 < value.line <= len(lines):
            return f"did you mean `{prop.key} = {lines[value.line - 1][value.col - 1: value.end_col - 1]}`?"
    if any(prop.key in keys for keys in schema.KEYS.values()):
        return (f"`{prop.key}` is a property of a declaration: write it inside the `{{ ... }}` of a level, "
                "memory, attention or cms chain")
    return f"did you mean `{prop.key} = ...`?"
