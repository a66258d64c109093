"""Python names for spec names: stable, collision-free, never executable text.

Spec identifiers are already `[A-Za-z_][A-Za-z0-9_]*` (the grammar guarantees it); this module only
keeps them from colliding with Python keywords, builtins, torch.nn.Module attributes and the names
generated code uses itself. The same spec name always maps to the same Python name, so state_dict
keys survive recompiles.
"""

from __future__ import annotations

import builtins
import keyword
import re

from torch import nn  # noqa: F401  (only to list Module attributes; codegen runs with torch present)

_RESERVED = (
    set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | set(dir(nn.Module))
    | {"self", "state", "torch", "nn", "rt", "F", "math", "tokens", "logits", "h", "t", "y", "parts",
       "prefix", "segment", "start", "end", "backend"}
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def py(name: str) -> str:
    """A Python identifier for a spec name (dots become `__`)."""
    name = name.replace(".", "__")
    if not _IDENT.match(name):
        raise ValueError(f"not an identifier: {name!r}")
    if name in _RESERVED or name.startswith("_"):
        return name + "_"
    return name


def camel(name: str, suffix: str) -> str:
    parts = [p for p in re.split(r"[_.]+", name) if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) + suffix


def comment(text: str) -> str:
    """Text safe inside a `#` comment: one line, printable."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text)).replace("\n", " ")


def literal(value) -> str:
    """A Python literal for a number, bool, string or tuple of those (via repr: never raw spec text)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise TypeError(f"cannot emit {type(value).__name__}")
