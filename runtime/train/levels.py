"""Which parameters each level owns, and the clocks the loop must honour (from levels.json).

A CMS member `chain.member` owns the parameters of every module path `…<chain>.chain.<member>.…`
(one per replica); members that never tick (`clock never`) are frozen MLPs trained by the outer level,
which owns every other parameter: projections, embeddings, norms, gate parameters and the initial
states of the in-context memories. A member that is reset (semantics §5) has a learned initial state
under `…<chain>.chain.init.<member>.…`: a parameter of the previous member in a nested chain, of the
outer level under `reset per sequence`; `CmsLevel.initial` pairs each weight with its initial value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from torch import nn


@dataclass
class CmsLevel:
    name: str  # chain.member
    period: int
    optimizer: dict  # {"kind", "args", "name"}
    lr: float
    lifetime: str  # persist | reset
    flush: str  # partial | drop
    params: list = field(default_factory=list)  # [(qualified name, Parameter)]
    initial_learner: Optional[str] = None  # the level that learns its initial state, None: never reset
    initial: list = field(default_factory=list)  # [(weight, its learned initial value)] when reset


@dataclass
class Ownership:
    outer: list  # [(name, Parameter)]
    cms: list  # [CmsLevel]
    memories: list  # [{"name", "lifetime", ...}] from levels.json


def _py(name: str) -> str:
    """The attribute name generated code uses for a spec name (mirrors codegen.names.py for plain names)."""
    from nldsl.codegen.names import py

    return py(name)


def ownership(model: nn.Module, info: dict) -> Ownership:
    from nldsl.codegen.names import cms_member

    cms: list[CmsLevel] = []
    claimed: set[str] = set()
    named = dict(model.named_parameters())
    for chain in info["cms"]:
        chain_attr = re.escape(_py(chain["name"]))
        for lv in chain["levels"]:
            if lv["unit"] != "tokens":
                continue
            member = re.escape(cms_member(lv["name"].split(".", 1)[1]))
            pattern = re.compile(rf"(^|\.)({chain_attr}(_\d+)?\.chain\.)({member}\.)")
            params = [(n, p) for n, p in named.items() if pattern.search(n)]
            claimed.update(n for n, _ in params)
            learner = lv.get("initial_learner")
            initial = [(p, named[pattern.sub(r"\1\2init.\4", n, count=1)]) for n, p in params] if learner else []
            cms.append(CmsLevel(lv["name"], lv["period"], lv["optimizer"], lv["lr"], chain["lifetime"],
                                chain["flush"], params, learner, initial))
    by_name = {lv.name: lv for lv in cms}
    inverse = {id(p0): n for n, p0 in named.items()}
    for lv in cms:   # an initial state learned by another CMS member is that member's parameter
        if lv.initial_learner in by_name:
            owned = [(inverse[id(p0)], p0) for _, p0 in lv.initial]
            by_name[lv.initial_learner].params.extend(owned)
            claimed.update(n for n, _ in owned)
    outer = [(n, p) for n, p in named.items() if n not in claimed]
    return Ownership(outer, cms, info["memories"])


def memory_lifetime(state_key: str, memories: list) -> str:
    """'persist' or 'reset' for a carried-state key such as 'layer.0.selfmod_titans.mem'."""
    for m in memories:
        if state_key == m["name"] or state_key.endswith("." + m["name"]):
            return m["lifetime"]
    return "reset"


def longest_segment(info: dict, length: int) -> int:
    """The most tokens whose activations a training step of `length` tokens keeps at once: the whole
    sequence under `bptt full` (its graph spans every segment), else its longest segment, which the
    shortest CMS window bounds (the loop cuts at every window's end)."""
    if info["outer"]["bptt"] == "full":
        return length
    periods = [lv["period"] for chain in info["cms"] for lv in chain["levels"] if lv["unit"] == "tokens"]
    return min([length, *periods])


def window_ends(position: int, length: int, period: int) -> list[int]:
    """Offsets r in 1..length at which a window of `period` tokens closes, counting from `position`."""
    first = period - position % period
    return list(range(first, length + 1, period))
