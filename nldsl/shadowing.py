"""NL0112: names that shadow a builtin or an outer definition.

Inside a block a name resolves to, in order: the block's parameters, its bindings, its levels, the
model's constants, the builtins, then blocks and cms chains (nldsl/values.py). So

- a block or cms chain named like a builtin value function (`linear`, `sigmoid`, ...) can never be
  called from a block (the builtin wins): an error. Network combinators (`embed`, `residual`, ...)
  are not value functions, and a block of that name is called as usual;
- a memory or attention level named like a builtin function hides it in its block (`sigmoid(q)` reads
  the level): a warning;
- a block parameter or binding named like a model constant hides the constant in its block: a
  warning (a parameter meant to override a constant is better given its own name).
"""

from __future__ import annotations

from . import ast
from .diagnostics import Label, Sink, error, warning

VALUE_FUNCTIONS = ("linear", "conv", "l2norm", "rmsnorm", "layernorm", "silu", "gelu", "relu", "tanh",
                   "sigmoid", "softplus", "exp", "log", "abs", "sqrt", "self", "min", "max")


def model_shadowing(program, sink: Sink) -> None:
    """Blocks and cms chains named like a builtin."""
    for sym in program.of_kind("block", "cms"):
        if sym.name in VALUE_FUNCTIONS:
            what = "block" if sym.kind == "block" else "cms chain"
            sink.add(error("NL0112", f"the {what} `{sym.name}` has the name of a builtin function", sym.span,
                           "shadows a builtin",
                           help=f"`{sym.name}(...)` always means the builtin; rename the {what}, "
                                f"e.g. `{sym.name}_block`"))


def block_shadowing(node: ast.Block, const_spans: dict, sink: Sink) -> None:
    """A block's parameters, bindings and levels that hide a model constant or a builtin."""
    for prm in node.params[1:]:
        _hides_constant(prm.name, prm.span, "parameter", const_spans, sink)
    for stmt in node.body:
        if isinstance(stmt, ast.Assign):
            _hides_constant(stmt.name, stmt.name_span, "binding", const_spans, sink)
        elif isinstance(stmt, ast.Decl) and stmt.kind in ("memory", "attention"):
            for ident in stmt.names:
                if ident.name in VALUE_FUNCTIONS:
                    sink.add(warning("NL0112", f"the {stmt.kind} level `{ident.name}` hides the builtin "
                                     f"`{ident.name}` in the block `{node.name}`", ident.span, "shadows a builtin",
                                     help=f"in this block `{ident.name}(...)` reads the level; give it another name"))


def _hides_constant(name: str, span, what: str, const_spans: dict, sink: Sink) -> None:
    if name in const_spans:
        sink.add(warning("NL0112", f"the {what} `{name}` hides the model constant `{name}` in its block", span,
                         f"shadows `{name}`", labels=[Label(const_spans[name], "the model constant")],
                         help=f"give the {what} its own name; inside the block `{name}` means this {what}"))
