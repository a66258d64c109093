"""Pass 6: the level graph (networkx MultiDiGraph) and its JSON document.

Nodes are levels (memories, attention, cms members, the outer level, optimizer levels) labelled with
clock, parameter count, state size and update cost per token. Edges are `flow` (one level's output is
another's key, value, gate or input), `teach` (a level's loss drives another's update; an optimizer steps
the level it serves) and `meta` (a level learns another's initial state). The graph also carries the
read/write dependency graph of one tick (`graph.graph["tick"]`) for the cycle check.
"""

from __future__ import annotations

import networkx as nx

from . import ir
from .dims import Unknowns, Widths
from .stats import level_stats, outer_params

SCHEMA = "nlc.graph/1"
KIND_ORDER = {"attention": 0, "memory": 1, "cms": 2, "optimizer": 3, "outer": 4}


def deps(value, bindings: dict) -> set:
    """Levels whose reads a value depends on (following the block's bindings)."""
    return {v.level for v in ir.walk(value, bindings) if isinstance(v, ir.Read)}


def _reads(value, bindings):
    """Every Read reachable from a value, following bindings."""
    return [v for v in ir.walk(value, bindings) if isinstance(v, ir.Read)]


def _uses_input(value, bindings) -> bool:
    return any(isinstance(v, ir.Input) for v in ir.walk(value, bindings))


def widths(model: ir.ModelIR) -> Widths:
    unknowns = {lv.name: Unknowns(lv.heads, lv.dk, lv.dv) for lv in model.memories + model.attentions}
    bindings = {(b.name, k): v for b in model.blocks for k, v in b.bindings}
    return Widths(model.dim, bindings, unknowns)


def build_graph(model: ir.ModelIR) -> nx.MultiDiGraph:
    g = nx.MultiDiGraph(model=model.name)
    blocks = {b.name: b for b in model.blocks}
    w = widths(model)
    for lv in model.levels:
        g.add_node(lv.name, **level_stats(model, lv, w))
    g.nodes[model.outer.name]["params"] = outer_params(model, w)
    _optimizer_nodes(g, model)
    tick = nx.DiGraph()
    for lv in model.memories + model.attentions:
        bindings = dict(blocks[lv.block].bindings)
        writes = [(role, v) for role, v in lv.flows if role != "query"]
        for role, v in writes:
            target = v.args[0] if isinstance(v, ir.Op) and v.fn == "self" else v
            for src in sorted(deps(target, bindings)):
                g.add_edge(src, lv.name, kind="flow", label=role)
                if role != "context":  # read at the segment start: the state before this segment's writes
                    tick.add_edge(("read", src), ("write", lv.name))
        if lv.kind == "attention" or lv.read == "after":
            tick.add_edge(("write", lv.name), ("read", lv.name))
        if lv.kind == "memory" and lv.init_by is not None:
            g.add_edge(lv.init_by, lv.name, kind="meta", label="initial state")
    for b in model.blocks:
        bindings = dict(b.bindings)
        for value in [v for _, v in b.bindings] + [b.output]:
            for read in _reads(value, bindings):
                for src in sorted(deps(read.query, bindings)) if read.query is not None else ():
                    if not g.has_edge(src, read.level) or all(d["label"] != "query" for d in g.get_edge_data(src, read.level).values()):
                        g.add_edge(src, read.level, kind="flow", label="query")
                    tick.add_edge(("read", src), ("read", read.level))
    for chain in model.cms:
        for a, b in zip(chain.members, chain.members[1:]):
            if chain.variant == "sequential":
                g.add_edge(a.name, b.name, kind="flow", label="x")
        for m in chain.members:
            learner = chain.initial_learner(m, model.outer.name)
            if learner is not None:
                g.add_edge(learner, m.name, kind="meta", label="initial state")
            if m.clock.unit != "never":
                g.add_edge(chain.taught_by, m.name, kind="teach", label="lm loss")
    _stage_flows(g, model, blocks)
    g.graph["tick"] = tick
    return g


def optimizer_node(owner: str, opt: ir.Optimizer) -> str:
    """Each level has its own optimizer level (a declared optimizer is a template: one state per user)."""
    return f"{owner}.{opt.name if opt.declared else opt.kind}"


def _optimizer_nodes(g, model: ir.ModelIR):
    from .stats import optimizer_stats

    members = [m for c in model.cms for m in c.members if m.clock.unit != "never"]
    for owner, opt in [(model.outer.name, model.outer.optimizer)] + [(m.name, m.optimizer) for m in members]:
        name = optimizer_node(owner, opt)
        g.add_node(name, **optimizer_stats(model, opt, [owner], g))
        g.add_edge(owner, name, kind="flow", label="gradients")
        g.add_edge(name, owner, kind="teach", label="step")


def _stage_io(net, model, blocks):
    """(input levels, output levels) of a network stage."""
    if isinstance(net, ir.BlockCall) and net.block in blocks:
        b = blocks[net.block]
        bindings = dict(b.bindings)
        outs = deps(b.output, bindings)
        ins = set()
        for lvname in b.levels:
            lv = model.level(lvname)
            if lv is None:
                continue
            if any(_uses_input(v, bindings) for _, v in lv.flows):
                ins.add(lvname)
        for value in [v for _, v in b.bindings] + [b.output]:
            for read in _reads(value, bindings):
                if read.query is not None and _uses_input(read.query, bindings):
                    ins.add(read.level)
        return ins, outs
    if isinstance(net, ir.CmsCall):
        chain = next((c for c in model.cms if c.name == net.cms), None)
        if chain is None:
            return set(), set()
        names = [m.name for m in chain.members]
        if chain.variant == "independent":
            return set(names), set(names)
        return {names[0]}, {names[-1]}
    if isinstance(net, ir.Residual):
        return _stage_io(net.inner, model, blocks)
    if isinstance(net, ir.Seq):
        ios = [_stage_io(s, model, blocks) for s in net.stages]
        ios = [io for io in ios if io[0] or io[1]]
        return (ios[0][0], ios[-1][1]) if ios else (set(), set())
    if isinstance(net, ir.Stack):
        return _stage_io(net.inner, model, blocks)
    return set(), set()


def _stage_flows(g, model, blocks):
    def visit(net):
        if isinstance(net, ir.Seq):
            ios = [_stage_io(s, model, blocks) for s in net.stages]
            ios = [io for io in ios if io[0] or io[1]]
            for (_, outs), (ins, _) in zip(ios, ios[1:]):
                for a in sorted(outs):
                    for b in sorted(ins):
                        g.add_edge(a, b, kind="flow", label="x")
            for s in net.stages:
                visit(s)
        elif isinstance(net, (ir.Residual, ir.Stack)):
            visit(net.inner)

    visit(model.network)


def _clock_key(data, context):
    c = data["clock"]
    if c["unit"] == "never":
        return (float("inf"), KIND_ORDER[data["kind"]])
    period = c["period"] * (context if c["unit"] == "steps" else 1)
    return (period, 0 if data["kind"] in ("attention", "memory") else 1)


def to_doc(g: nx.MultiDiGraph, model: ir.ModelIR, source: str, diagnostics=()) -> dict:
    """The JSON document of the level graph (schema `nlc.graph/1`, see docs/graph-schema.md)."""
    keys = {n: _clock_key(d, model.context)[0] for n, d in g.nodes(data=True)}
    tiers = sorted(set(keys.values()))
    order = sorted(g.nodes(data=True), key=lambda nd: (_clock_key(nd[1], model.context), KIND_ORDER[nd[1]["kind"]], nd[0]))
    levels = []
    for name, d in order:
        entry = {k: v for k, v in d.items() if k != "span"}
        entry["name"] = name
        entry["rank"] = tiers.index(keys[name])
        entry["line"], entry["col"] = d["span"].line, d["span"].col
        levels.append(_ordered(entry))
    edges = [{"src": a, "dst": b, "kind": d["kind"], "label": d["label"]}
             for a, b, d in sorted(g.edges(data=True), key=lambda e: (e[2]["kind"], e[0], e[1], e[2]["label"]))]
    return {
        "schema": SCHEMA,
        "model": model.name,
        "source": source,
        "levels": levels,
        "edges": edges,
        "diagnostics": {"errors": sum(x.is_error for x in diagnostics),
                        "warnings": sum(x.severity == "warning" for x in diagnostics)},
    }


_FIELDS = ("name", "kind", "type", "clock", "clock_text", "params", "state_size", "state_text", "update_cost",
           "heads", "replicas", "rank", "line", "col", "notes")


def _ordered(entry: dict) -> dict:
    out = {k: entry[k] for k in _FIELDS if k in entry}
    out.update({k: v for k, v in entry.items() if k not in out})
    return out
