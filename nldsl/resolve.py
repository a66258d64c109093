"""Pass 2: imports and the symbol table.

Loads every imported file (relative to the importing file), detects import cycles, and builds the
table of top-level definitions visible to the model: blocks, memory and attention kinds, optimizers,
cms chains, levels and constants, each under its (possibly `alias.`-qualified) name. Duplicate
definitions are reported with both places.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import ast
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
    local = _symbols_of(module.items, "", sink) + _symbols_of(model.body, "", sink)
    symbols = _check_duplicates(imported + local, sink)
    if sink.has_errors:
        raise SpecError(sink.items)
    return Program(module, model, tuple(symbols), tuple(sources.items()))
