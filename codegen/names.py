"""Python names for spec names: stable, collision-free, never executable text.

Spec identifiers are already `[A-Za-z_][A-Za-z0-9_]*` (the grammar guarantees it); this module only
keeps them from colliding with Python keywords, builtins, torch.nn.Module attributes and the names
generated code uses itself. The same spec name always maps to the same Python name, so state_dict
keys survive recompiles, and different spec names never map to the same Python name (`py` and `camel`
are one-to-one); names the generator makes up itself come from a `Names` scope, which never hands out
a name twice.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re

# The public attributes of torch.nn.Module (class and instance: `training`), written out so that compiling
# never imports torch (it would double the time of `nlc compile`); tests/compile checks that this list
# still covers the installed torch. Names starting with `_` are mangled anyway. `smart_apply` is not
# torch's: transformers sets it on nn.Module when it is imported (an exported model runs with it).
MODULE_ATTRIBUTES = frozenset("""
T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda double
dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half
ipu load_state_dict modules mtia named_buffers named_children named_modules named_parameters parameters
register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook
register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict to
to_empty train training type xpu zero_grad smart_apply
""".split())

_RESERVED = (
    set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | MODULE_ATTRIBUTES
    | {"self", "state", "torch", "nn", "rt", "F", "math", "tokens", "logits", "h", "t", "y", "parts",
       "prefix", "segment", "start", "end", "backend"}
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def py(name: str) -> str:
    """A Python identifier for a spec name (dots become `__`).

    Reserved names, names starting with `_` and names ending with `_` get one more `_`: `print` →
    `print_`, `print_` → `print__`, so two spec names never meet."""
    name = name.replace(".", "__")
    if not _IDENT.match(name):
        raise ValueError(f"not an identifier: {name!r}")
    if name in _RESERVED or name.startswith("_") or name.endswith("_"):
        return name + "_"
    return name


_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*$")


def camel(name: str, suffix: str) -> str:
    """A class name: `selfmod_titans` → `SelfmodTitans` + suffix for lower-case snake names (where the
    capitals mark the word starts, so no two names meet); any other spelling is kept behind `N_`,
    with `_` doubled and `.` written `_0` (`fooBar` → `N_fooBar`, `lib.x_y` → `N_lib_0x__y`)."""
    if _SNAKE.match(name):
        return "".join(p[:1].upper() + p[1:] for p in name.split("_")) + suffix
    if not _IDENT.match(name.replace(".", "_")):
        raise ValueError(f"not an identifier: {name!r}")
    return "N_" + name.replace("_", "__").replace(".", "_0") + suffix


# Attributes of rt.CmsChain itself: a CMS member registered under one of these names would clash.
_CMS_ATTRS = {"agg", "init", "names", "variant", "aggregation", "initial", "VARIANTS", "AGGREGATIONS"}


def cms_member(name: str) -> str:
    """The attribute a CMS member is registered under in rt.CmsChain (its spec name where possible)."""
    p = py(name)
    return p + "_" if p in _CMS_ATTRS else p


class Names:
    """One Python namespace (a class's attributes, a function's locals): hands out unique names.

    `claim(key, base)` returns the name for `key`, the first time `base` if it is free, else `base_2`,
    `base_3`, ...; the same key always gets the same name."""

    def __init__(self, taken=()):
        self.taken = set(taken)
        self.names: dict = {}

    def claim(self, key, base: str) -> str:
        if key in self.names:
            return self.names[key]
        name, n = base, 1
        while name in self.taken or name in _RESERVED:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        self.names[key] = name
        return name

    def fresh(self, base: str) -> str:
        """A new name that no other claim gets."""
        return self.claim(object(), base)


def comment(text: str) -> str:
    """Text safe inside a `#` comment: one line, printable."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text)).replace("\n", " ")


def doc_text(text: str) -> str:
    """Text safe inside a comment or a docstring of generated code (paths written with `/`)."""
    return comment(text).replace("\\", "/").replace('"', "'")


def literal(value) -> str:
    """A Python literal for a number, bool, string or tuple of those (via repr: never raw spec text)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"  # repr gives `inf` / `nan`, which are not Python literals
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise TypeError(f"cannot emit {type(value).__name__}")
