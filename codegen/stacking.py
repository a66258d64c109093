"""Which members of a self-modifying group run as one `rt.MemoryStack` (runtime/memory_stack.py).

Members stack when nothing but their names and states tells them apart: the same constructor
arguments (configuration, objective, heads, initial state learned or zero) and the same inputs (query,
keys, values and gates of their update, and the query and mode of their read). HOPE's M_k, M_v, M_eta
and M_alpha are such siblings. Inputs are compared as spec expressions, not as the text of a span:
two memories declared apart but fed the same expression stack too.
"""

from __future__ import annotations

import dataclasses

from nldsl import ir


def plain(value):
    """An IR value without its spans, for comparing expressions wherever they were written."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (f.name for f in dataclasses.fields(value) if f.name != "span")
        return (type(value).__name__,) + tuple(plain(getattr(value, name)) for name in fields)
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


def _inputs(bl, lv: ir.Memory) -> tuple:
    site = bl.reads.get(lv.name)
    read = None if site is None or site.query is None else plain(site.query)
    update = tuple((role, plain(v)) for role, v in lv.flows if role != "query")
    query = site.query if site is not None and site.query is not None else (lv.flow("query") or lv.flow("key"))
    return read, plain(query), update


def member_stacks(bl, members: list) -> list[list]:
    """The group's members (memories: a group holds no attention) in runs that compute alike, in the
    group's order (singletons included)."""
    runs: dict[tuple, list] = {}
    for lv in members:
        runs.setdefault((bl.memory_args(lv), _inputs(bl, lv)), []).append(lv)
    return list(runs.values())
