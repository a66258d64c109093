"""The level-graph document (schema ``nlc.graph/1``) as frozen dataclasses, and its clock tiers.

The front end emits the document as a plain dict (so it can be written as JSON). Every renderer reads it
through :func:`load` (the JSON one only to check it), which checks the structure, fills optional fields
and cleans display strings (newlines normalised, control characters dropped) in one place.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

SCHEMA = "nlc.graph/1"
LEVEL_KINDS = ("memory", "attention", "cms", "outer", "optimizer")
EDGE_KINDS = ("flow", "teach", "meta")
CLOCK_UNITS = ("tokens", "steps", "never")


class GraphDocError(ValueError):
    """The document does not follow the ``nlc.graph/1`` schema."""


@dataclass(frozen=True)
class Clock:
    unit: str  # tokens | steps | never
    period: int | None  # None for never
    chunk: int | None
    text: str  # e.g. "every 1 token, chunk 16"

    @property
    def sort_key(self) -> tuple[int, float]:
        unit_order = CLOCK_UNITS.index(self.unit) if self.unit in CLOCK_UNITS else len(CLOCK_UNITS)
        return (unit_order, float("inf") if self.period is None else float(self.period))

    @property
    def cadence(self) -> str:
        """The clock without its chunk: what every level of one tier shares."""
        return cadence_phrase(self.unit, self.period)


@dataclass(frozen=True)
class Level:
    name: str
    kind: str
    type: str
    clock: Clock
    rank: int
    params: int | None = None
    state_size: int | None = None
    state_text: str = ""
    update_cost: int | None = None
    heads: int | None = None
    replicas: int | None = None
    line: int | None = None
    col: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def state_display(self) -> str:
        if self.state_text:
            return self.state_text
        return human_count(self.state_size)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: str  # flow | teach | meta
    label: str = ""


@dataclass(frozen=True)
class Tier:
    """Levels that share a clock cadence; index 0 is the fastest tier of the document."""

    index: int
    rank: int
    label: str
    levels: tuple[Level, ...]


@dataclass(frozen=True)
class GraphDoc:
    model: str
    source: str
    levels: tuple[Level, ...]
    edges: tuple[Edge, ...]
    errors: int = 0
    warnings: int = 0

    def level(self, name: str) -> Level:
        for level in self.levels:
            if level.name == name:
                return level
        raise KeyError(name)

    def incoming(self, name: str) -> tuple[Edge, ...]:
        return tuple(edge for edge in self.edges if edge.dst == name)

    @cached_property
    def tiers(self) -> tuple[Tier, ...]:
        groups: dict[tuple[int, tuple[int, float]], list[Level]] = {}
        for level in self.levels:
            groups.setdefault((level.rank, level.clock.sort_key), []).append(level)
        return tuple(
            Tier(index=i, rank=key[0], label=_tier_label(groups[key]), levels=tuple(groups[key]))
            for i, key in enumerate(sorted(groups))
        )

    def tier_of(self) -> dict[str, int]:
        return {level.name: tier.index for tier in self.tiers for level in tier.levels}


def _tier_label(levels: list[Level]) -> str:
    """The full clock text when every level of the tier has the same one, else the shared cadence."""
    texts = {level.clock.text for level in levels}
    return texts.pop() if len(texts) == 1 else levels[0].clock.cadence


def clean_text(value: object) -> str:
    """Text safe to place in any output: newlines normalised to ``\\n``, tabs to spaces, and other
    control characters and lone surrogates dropped."""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    return "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cs"))


def human_count(value: int | float | None) -> str:
    """33024 -> '33.0k', 1_200_000 -> '1.2M', 512 -> '512', None -> '—' (as the graph document writes it)."""
    if value is None:
        return "—"
    if abs(value) < 1000:
        return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
    for scale, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        shown = round(value / scale, 1)
        if abs(shown) < 1000 or suffix == "T":
            return f"{shown:.1f}{suffix}"
    raise AssertionError("unreachable")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def cadence_phrase(unit: str, period: int | None) -> str:
    if unit == "never" or period is None:
        return "never"
    singular = unit[:-1] if unit.endswith("s") else unit
    return f"every {period} {singular if period == 1 else unit}"


def clock_phrase(unit: str, period: int | None, chunk: int | None) -> str:
    text = cadence_phrase(unit, period)
    return f"{text}, chunk {chunk}" if chunk is not None and unit != "never" else text


def load(doc: Mapping[str, Any]) -> GraphDoc:
    """Check a level-graph document and convert it; raise GraphDocError with the offending path."""
    if not isinstance(doc, Mapping):
        raise GraphDocError(f"a level-graph document is a mapping, not {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise GraphDocError(f"schema: expected {SCHEMA!r}, got {doc.get('schema')!r}")
    raw_levels = _sequence(doc, "levels", "levels")
    levels = _with_ranks([_level(item, f"levels[{i}]") for i, item in enumerate(raw_levels)])
    names = [level.name for level in levels]
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise GraphDocError(f"levels: duplicate level names {duplicates}")
    known = set(names)
    edges = []
    for i, item in enumerate(_sequence(doc, "edges", "edges")):
        edge = _edge(item, f"edges[{i}]")
        for end in (edge.src, edge.dst):
            if end not in known:
                raise GraphDocError(f"edges[{i}]: unknown level {end!r}")
        edges.append(edge)
    diagnostics = doc.get("diagnostics") or {}
    return GraphDoc(
        model=clean_text(doc.get("model", "")),
        source=clean_text(doc.get("source", "")),
        levels=tuple(levels),
        edges=tuple(edges),
        errors=_optional_int(diagnostics, "errors", "diagnostics") or 0,
        warnings=_optional_int(diagnostics, "warnings", "diagnostics") or 0,
    )


def _sequence(mapping: Mapping[str, Any], key: str, where: str) -> Sequence[Any]:
    value = mapping.get(key, [])
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise GraphDocError(f"{where}: expected a list")
    return value


def _required_text(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not value:
        raise GraphDocError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return clean_text(value)


def _optional_int(mapping: Mapping[str, Any], key: str, where: str) -> int | None:
    value = mapping.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphDocError(f"{where}.{key}: expected an integer or null, got {value!r}")
    return value


def _clock(item: Mapping[str, Any], where: str) -> Clock:
    raw = item.get("clock")
    if not isinstance(raw, Mapping):
        raise GraphDocError(f"{where}.clock: expected a mapping with unit, period and chunk")
    unit = raw.get("unit")
    if unit not in CLOCK_UNITS:
        raise GraphDocError(f"{where}.clock.unit: expected one of {CLOCK_UNITS}, got {unit!r}")
    period = _optional_int(raw, "period", f"{where}.clock")
    chunk = _optional_int(raw, "chunk", f"{where}.clock")
    text = item.get("clock_text")
    return Clock(
        unit=unit,
        period=period,
        chunk=chunk,
        text=clean_text(text) if text else clock_phrase(unit, period, chunk),
    )


def _level(item: Any, where: str) -> Level:
    if not isinstance(item, Mapping):
        raise GraphDocError(f"{where}: expected a mapping")
    notes = item.get("notes") or ()
    if isinstance(notes, str):
        notes = (notes,)
    return Level(
        name=_required_text(item, "name", where),
        kind=_required_text(item, "kind", where),
        type=clean_text(item.get("type") or ""),
        clock=_clock(item, where),
        rank=_optional_int(item, "rank", where),  # type: ignore[arg-type]  # filled by _with_ranks
        params=_optional_int(item, "params", where),
        state_size=_optional_int(item, "state_size", where),
        state_text=clean_text(item.get("state_text") or ""),
        update_cost=_optional_int(item, "update_cost", where),
        heads=_optional_int(item, "heads", where),
        replicas=_optional_int(item, "replicas", where),
        line=_optional_int(item, "line", where),
        col=_optional_int(item, "col", where),
        notes=tuple(clean_text(note) for note in notes),
    )


def _with_ranks(levels: list[Level]) -> list[Level]:
    """Levels without a rank get one from their clock: the dense order of distinct cadences."""
    cadences = sorted({level.clock.sort_key for level in levels})
    return [
        level if level.rank is not None else replace(level, rank=cadences.index(level.clock.sort_key))
        for level in levels
    ]


def _edge(item: Any, where: str) -> Edge:
    if not isinstance(item, Mapping):
        raise GraphDocError(f"{where}: expected a mapping")
    kind = item.get("kind")
    if kind not in EDGE_KINDS:
        raise GraphDocError(f"{where}.kind: expected one of {EDGE_KINDS}, got {kind!r}")
    return Edge(
        src=_required_text(item, "src", where),
        dst=_required_text(item, "dst", where),
        kind=kind,
        label=clean_text(item.get("label") or ""),
    )
