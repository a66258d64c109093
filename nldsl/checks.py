"""Pass 5 and 7: semantic checks over the model IR and over the level graph.

`check_model` looks at each level alone (rule combinations, gates and their ranges, clocks, chunk-parallel
forms, stability); `check_graph` looks at relations (flow cycles within one tick, levels that never update
and own nothing). Both return diagnostics and never raise.
"""

from __future__ import annotations

import networkx as nx

from . import ir, schema
from .contexts import attention_checks
from .diagnostics import Diagnostic, Label, error, warning
from .network_shape import network_checks
from .ranges import INF, interval, number_text, text

NEEDS = {  # rule → gates it reads
    "retain": ("retain",),
    "gd": ("lr",),
    "momentum": ("lr", "momentum"),
    "delta": ("lr",),
    "dgd": ("lr", "retain"),
}
WRITES = schema.GRADIENT_RULES  # the rules that take a gradient of the objective write the values
QUADRATIC = ("l2", "sq", "mse", "dot")


def _bindings(model: ir.ModelIR, block: str) -> dict:
    for b in model.blocks:
        if b.name == block:
            return dict(b.bindings)
    return {}


def _gate(mem: ir.Memory, role: str):
    v = mem.flow(role)
    if role == "retain" and v is None and mem.flow("log_retain") is not None:
        return ir.Op("exp", (mem.flow("log_retain"),), (), mem.flow("log_retain").span)
    return v


def chunk_form(mem: ir.Memory) -> tuple[str, str]:
    """How a memory level can be computed in parallel (semantics.md §2.4): (form, reason)."""
    kinds = {r.kind for r in mem.rules}
    if mem.chunk > 1:
        return "dual", f"gradients at the anchor of each {mem.chunk}-token chunk: the dual form"
    if mem.clip is not None and kinds & set(WRITES):
        return "sequential", "chunk 1 with `clip`: the clipped gradient is not linear in the state"
    if mem.family == "linear" and mem.objective.name in QUADRATIC and kinds <= {"retain", "gd", "delta", "dgd"}:
        return "wy", "transitions aI − b k kᵀ: the WY/UT form over free tiles"
    if "momentum" in kinds:
        return "sequential", "chunk 1 with momentum: exact parallel forms exist but no template yet"
    if mem.family == "mlp":
        return "sequential", "chunk 1 with an MLP memory: only the token-by-token form is exact"
    return "sequential", f"chunk 1 with the non-quadratic objective `{mem.objective.name}`: only the sequential form is exact"


UNREAD_HELP = {
    "lr": "add a rule that takes a gradient (`gd`, `momentum`, `delta` or `dgd`) to `update`, or remove this line",
    "retain": "add `retain` to `update` (e.g. `update retain, gd`), or use `dgd`; or remove this line",
    "momentum": "add `momentum` to `update` (e.g. `update retain, momentum`), or remove this line",
}


def _unread_gates(mem: ir.Memory) -> list[Diagnostic]:
    """A gate that no rule of the update reads: most likely a rule left out of `update`."""
    read = {gate for r in mem.rules for gate in NEEDS[r.kind]}
    update = ", ".join(r.kind for r in mem.rules)
    out = []
    for role in ("lr", "retain", "log_retain", "momentum"):
        gate = role.removeprefix("log_")
        if mem.flow(role) is not None and gate not in read:
            out.append(warning("NL0509", f"no rule of `{mem.name}` reads its `{role}` gate (its update is `{update}`)",
                               mem.flow(role).span, "never read", help=UNREAD_HELP[gate]))
    return out


def _never_writes(mem: ir.Memory) -> list[Diagnostic]:
    """An update with no rule that takes a gradient (`retain`, `delta`: they only decay or erase the
    state), so the memory never writes its values, nor reads its keys under `retain` alone; most likely
    the rule that writes was left out."""
    kinds = [r.kind for r in mem.rules]
    if not kinds or any(kind in WRITES for kind in kinds):
        return []
    unread = "key and values are" if set(kinds) == {"retain"} else "values are"
    return [warning("NL0510", f"`{mem.name}` never writes: no rule of its update (`{', '.join(kinds)}`) takes a "
                    f"gradient, so its {unread} never read", mem.rules[0].span, "no rule writes",
                    help="add a rule that writes to `update`: `gd`, `momentum` or `dgd` (`delta` only erases)")]


def _self_rewarding(mem: ir.Memory) -> list[Diagnostic]:
    """`dot` with a self-generated target v̂ = M(v): the step ascends ⟨M(k), M(v)⟩, which the memory raises
    by growing, and every gain raises the next target. A linear memory scales its state by I + η v kᵀ
    (geometric growth wherever v·k > 0), an MLP feeds its own weights back faster than that."""
    if mem.objective.name != "dot" or not mem.self_target:
        return []
    return [warning("NL0511", f"`{mem.name}` learns `dot` towards its own output: ⟨M(k), M(v)⟩ has no maximum, "
                    "so the memory can grow without bound", mem.objective.span, "no maximum",
                    labels=[Label(mem.flow("value").span, "a target the memory makes")],
                    help="use `l2` (HOPE's choice) or `mse` with `self(...)`, or a fixed target with `dot`")]


def _memory_checks(model: ir.ModelIR, mem: ir.Memory, w) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    kinds = [r.kind for r in mem.rules]
    bindings = _bindings(model, mem.block)
    if "retain" in kinds and "dgd" in kinds:
        r = next(r for r in mem.rules if r.kind == "retain")
        out.append(error("NL0502", "`retain` with `dgd` applies the retention α twice", r.span,
                         "remove this", help="dgd already scales the state by α: W ← W(αI − η k kᵀ) − η∇ℓ"))
    momenta = [r for r in mem.rules if r.kind == "momentum"]
    for r in momenta[1:]:
        out.append(error("NL0502", "a memory has one momentum state, so it takes one `momentum` rule",
                         r.span, "second momentum", labels=[Label(momenta[0].span, "first momentum")],
                         help="keep one `momentum`; its gate sets how much of the past it keeps"))
    for r in mem.rules:
        if r.at == "current" and mem.chunk > 1:
            out.append(error("NL0503", f"a gradient at the current state needs chunk 1 (this memory has chunk {mem.chunk})",
                             r.span, "at current", help="use `at anchor`, or `chunk 1`"))
    seen = set()
    for r in mem.rules:
        for gate in NEEDS[r.kind]:
            if _gate(mem, gate) is None and gate not in seen:
                seen.add(gate)
                out.append(error("NL0104", f"the rule `{r.kind}` needs the gate `{gate}`", r.span,
                                 f"reads {gate}", help={"lr": "e.g. `lr 0.1` or `lr sigmoid(linear(x, heads))`",
                                                        "retain": "e.g. `retain sigmoid(linear(x, heads))`",
                                                        "momentum": "e.g. `momentum 0.9`"}[gate]))
    out.extend(_unread_gates(mem))
    out.extend(_never_writes(mem))
    out.extend(_self_rewarding(mem))
    if mem.flow("retain") is not None and mem.flow("log_retain") is not None:
        out.append(error("NL0109", "give `retain` or `log_retain`, not both", mem.flow("log_retain").span,
                         "the retention again, in log space", labels=[Label(mem.flow("retain").span, "the retention")],
                         help="`log_retain` is log α; keep the one that is more convenient"))
    if mem.clock.unit == "tokens" and mem.clock.period != 1:
        out.append(error("NL0301", "an in-context memory updates every token", mem.clock.span,
                         help=f"to take gradients at a coarser point use `chunk {mem.clock.period}`"))
    if mem.chunk > model.context:
        out.append(warning("NL0304", f"chunk {mem.chunk} is longer than the context ({model.context} tokens)",
                           mem.span, help="every token of a sequence then reads the initial state"))
    out.extend(_gate_checks(mem, bindings))
    out.extend(_vector_flows(model, mem, bindings))
    out.extend(_gate_widths(model, mem, w))
    if mem.objective.name == "custom":
        out.extend(_custom_objective(model, mem))
    if mem.clock.unit == "never" and mem.init_by is None:
        out.append(warning("NL0402", f"`{mem.name}` never updates and owns nothing", mem.span,
                           help="give it a clock, or let the outer level learn its state with `init by`"))
    delta_like = {"delta", "dgd"} & set(kinds) or (
        mem.family == "linear" and mem.objective.name in ("l2", "sq", "mse")
        and any(r.at == "current" for r in mem.rules))
    if delta_like and not _normalised(mem.flow("key"), bindings):
        out.append(warning("NL0506", "delta-style rules expect unit-norm keys", mem.flow("key").span,
                           "not l2-normalised", help="write `key l2norm(...)`; with ‖k‖ > 1 the state can grow"))
    form, reason = chunk_form(mem)
    if form == "sequential":
        at_current = any(r.at == "current" for r in mem.rules)
        out.append(warning("NL0505", f"`{mem.name}` has no exact chunk-parallel form: {reason}", mem.span,
                           help="it runs token by token (correct but slow); "
                           + ("gradients `at anchor` with `chunk N` (N > 1) would make it parallel"
                              if at_current else "`chunk N` with N > 1 makes it parallel")))
    return out


def _gate_widths(model: ir.ModelIR, mem: ir.Memory, w) -> list[Diagnostic]:
    """`w`: the model's Widths (graph.widths), built once per model: it indexes every binding."""
    w.block = mem.block
    out = []
    for role in ("lr", "retain", "log_retain", "momentum"):
        v = mem.flow(role)
        width = w.of(v) if v is not None else None
        if width not in (None, 1, mem.heads):
            out.append(error("NL0403", f"the gate `{role}` of `{mem.name}` has width {width}; a gate is one "
                             f"number per head ({mem.heads})", v.span, f"width {width}",
                             help=f"project it to the head count: `sigmoid(linear(x, {'heads' if mem.heads > 1 else 1}))`"))
    return out


def _custom_objective(model: ir.ModelIR, mem: ir.Memory) -> list[Diagnostic]:
    from nldsl.codegen.symbolic import NotDifferentiable, derivative, from_ast
    from nldsl.schema import OBJECTIVE_FUNCTIONS

    try:
        derivative(from_ast(mem.objective.expr, dict(model.constants)))
    except NotDifferentiable as e:
        return [error("NL0508", f"the custom objective of `{mem.name}` cannot be differentiated: {e}", e.span,
                      help="write it in `r` with numbers, constants, + - * / ** and "
                           f"{', '.join(OBJECTIVE_FUNCTIONS)}")]
    return []


def _vector_flows(model: ir.ModelIR, mem: ir.Memory, bindings) -> list[Diagnostic]:
    """Keys, values and the queries of reads are vectors of the tokens: one that is only numbers (`key
    3`, `mem(0.5)`) would reach the memory as a number and fail when the model runs."""
    value = mem.flow("value")
    flows = [("key", mem.flow("key")), ("value", value.args[0] if isinstance(value, ir.Op) and value.fn == "self" else value)]
    flows += [("query", read.query) for read in _reads_of(model, mem.name)]
    out = []
    for role, v in flows:
        if v is not None and _constant(v, bindings):
            out.append(error("NL0403", f"the {role} of `{mem.name}` is a number; a {role} is a vector computed from "
                                       "the tokens", v.span, "a number",
                             help="compute it from the block's input, e.g. `l2norm(linear(x, dim))`"))
    return out


def _reads_of(model: ir.ModelIR, level: str) -> list:
    found = []
    for block in model.blocks:
        for _, v in block.bindings + (("return", block.output),):
            found += [n for n in ir.walk(v) if isinstance(n, ir.Read) and n.level == level]
    return found


def _constant(value, bindings) -> bool:
    """`value` is made of numbers only: nothing in it comes from the tokens."""
    return not any(isinstance(n, (ir.Input, ir.Read, ir.Apply)) or (isinstance(n, ir.Ref) and n.name not in bindings)
                   for n in ir.walk(value, bindings))


def _normalised(value, bindings) -> bool:
    while isinstance(value, ir.Ref):
        value = bindings.get(value.name)
    return isinstance(value, ir.Op) and value.fn == "l2norm"


def _gate_checks(mem: ir.Memory, bindings) -> list[Diagnostic]:
    out = []
    ranges = {}
    for role, lo_ok, hi_ok, want in (("lr", 0.0, INF, "[0, ∞)"), ("retain", 0.0, 1.0, "(0, 1]"),
                                     ("momentum", 0.0, 1.0, "[0, 1]")):
        v = _gate(mem, role)
        if v is None:
            continue
        r = interval(v, bindings)
        ranges[role] = r
        if isinstance(v, ir.Const) and not (lo_ok <= v.value <= hi_ok):
            out.append(error("NL0205", f"`{role}` = {v.value:g} is outside {want}", v.span, f"outside {want}",
                             help={"lr": "a write rate is ≥ 0", "retain": "a retention α is in (0, 1]: 1 keeps everything",
                                   "momentum": "a momentum β is in [0, 1]"}[role]))
            continue
        outside = r[0] < lo_ok or r[1] > hi_ok
        unbounded = INF in (abs(r[0]), abs(r[1]))
        if outside or unbounded:
            what = f"ranges over {text(r)}" + (f", outside {want}" if outside else "")
            out.append(warning("NL0504", f"the gate `{role}` of `{mem.name}` "
                               + (f"is unbounded: it {what}" if unbounded else what),
                               v.span, f"in {text(r)}",
                               help="squash it: `sigmoid(...)` for (0, 1), `c * sigmoid(...)` for (0, c)"))
    slope = {"l2": 1.0, "sq": 2.0, "mse": 2.0 / mem.dv, "dot": 0.0}.get(mem.objective.name)
    if "dgd" in [r.kind for r in mem.rules] and slope is not None and "lr" in ranges and "retain" in ranges:
        # along a unit key, dgd scales the state by α − (1 + a)·η, a the objective's gradient slope
        eta_hi, alpha_lo = ranges["lr"][1], ranges["retain"][0]
        bound = "α/2" if slope == 1.0 else f"α/{1 + slope:g}"
        if not eta_hi <= alpha_lo / (1 + slope):
            out.append(warning("NL0507", f"DGD with unit-norm keys and objective `{mem.objective.name}` is stable "
                               f"only for η ≤ {bound}",
                               mem.flow("lr").span, f"η can reach {number_text(eta_hi)}",
                               labels=[Label(_gate(mem, "retain").span, f"α can be as low as {alpha_lo:g}")],
                               help="bound η, e.g. `lr 0.25 * sigmoid(...)` with `retain 0.5 + 0.5 * sigmoid(...)`"))
    if {"delta", "dgd"} & {r.kind for r in mem.rules} and mem.chunk > 1 and "retain" in ranges and ranges["retain"][0] <= 0:
        out.append(warning("NL0504", "the retention α can reach 0, where the chunked delta form divides by α",
                           _gate(mem, "retain").span, help="keep α > 0, e.g. `retain 0.01 + 0.99 * sigmoid(...)`"))
    return out


def _cms_checks(model: ir.ModelIR, chain: ir.Cms) -> list[Diagnostic]:
    out = []
    for m in chain.members:
        period = m.clock.in_tokens(model.context)
        if m.clock.unit == "never":
            continue
        if m.clock.period == 1:
            out.append(warning("NL0305", f"`{m.name}` updates every token: one backward pass per token", m.clock.span,
                               help="a period of 16 tokens or more keeps training fast"))
        if period > model.context:
            if chain.lifetime == "reset":
                out.append(warning("NL0303", f"`{m.name}` never completes a window inside a sequence: its period "
                                   f"({m.clock.period} tokens) is longer than the context ({model.context}); only "
                                   "the end-of-sequence flush updates it",
                                   m.clock.span, help="shorten the period, or `state persist` to carry windows across sequences"))
            else:
                out.append(warning("NL0303", f"`{m.name}` spans sequences: its period ({m.clock.period} tokens) is "
                                   f"longer than the context ({model.context}), so its windows cross outer steps",
                                   m.clock.span, help="this is intended for a slow, persistent level"))
    if chain.variant == "nested":
        for a, b in zip(chain.members, chain.members[1:]):
            if a.clock.in_tokens(model.context) < b.clock.in_tokens(model.context):
                out.append(error("NL0302", f"`{a.name}` learns the initial state of `{b.name}` but ticks faster",
                                 a.clock.span, f"{a.clock.text}", labels=[Label(b.clock.span, b.clock.text)],
                                 help="in a nested chain each level is at least as slow as the next"))
    return out


def check_model(model: ir.ModelIR) -> list[Diagnostic]:
    from .graph import widths

    out: list[Diagnostic] = network_checks(model)
    w = widths(model)
    for mem in model.memories:
        out.extend(_memory_checks(model, mem, w))
    for att in model.attentions:
        if att.window is not None and att.window >= model.context:
            out.append(warning("NL0304", f"the window of `{att.name}` ({att.window}) covers the whole context",
                               att.span, help="drop `window` for full causal attention"))
        out.extend(attention_checks(model, att, w))
    for chain in model.cms:
        out.extend(_cms_checks(model, chain))
    return out


def check_graph(graph: nx.MultiDiGraph, model: ir.ModelIR) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    tick = graph.graph.get("tick")
    if tick is not None:
        try:
            cycle = nx.find_cycle(tick)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            names = [f"{phase} of {lvl}" for (phase, lvl), _ in cycle]
            first = model.level(cycle[0][0][1])
            out.append(error("NL0401", "a cycle among flows within one tick: " + " → ".join(names + [names[0]]),
                             first.span if first else model.span, "part of the cycle",
                             help="read one of these memories `before write` or `at anchor` to break the cycle"))
    for name, data in graph.nodes(data=True):
        if data.get("kind") == "cms" and not data.get("state_size") and data["clock"]["unit"] == "never":
            out.append(warning("NL0402", f"`{name}` never updates and owns nothing", data["span"]))
    return out
