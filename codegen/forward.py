"""The forward pass of a lowered block: statements scheduled in dependency order, lockstep groups."""

from __future__ import annotations

import math

import networkx as nx

from nldsl import ir
from nldsl.contexts import context_reads
from nldsl.graph import deps

from .blocks import GATE_ROLES, BlockLowering, LoweringError, _direct_reads, _refs
from .names import py
from .stacking import member_stacks


def _closure(bl: BlockLowering, values) -> set:
    """Binding names reachable through refs from some values."""
    out, stack = set(), [r for v in values for r in _refs(v)]
    while stack:
        name = stack.pop()
        if name in out or name not in bl.bindings:
            continue
        out.add(name)
        stack.extend(_refs(bl.bindings[name]))
    return out


def _context_values(lv) -> list:
    """What an attention's context needs this tick: its values and its reads' queries, not the reads,
    which see the memories at the segment start (before this segment's writes)."""
    ctx = lv.flow("context")
    if ctx is None:
        return []
    refs = [x for x in ir.walk(ctx, queries=False) if isinstance(x, (ir.Ref, ir.Input))]
    return refs + [r.query for r in context_reads(ctx) if r.query is not None]


def _level_values(bl: BlockLowering, lv) -> list:
    """Everything a level's call needs: its flows and the query at its read site."""
    values = [v.args[0] if isinstance(v, ir.Op) and v.fn == "self" else v
              for role, v in lv.flows if role not in ("query", "context")]
    values += _context_values(lv)
    site = bl.reads.get(lv.name)
    if site is not None and site.query is not None:
        values.append(site.query)
    elif lv.flow("query") is not None:
        values.append(lv.flow("query"))
    return values


def groups(bl: BlockLowering) -> list[list]:
    """Lockstep groups: strongly connected sets of memories whose flows read each other this tick."""
    g = nx.DiGraph()
    names = {lv.name for lv in bl.levels}
    for lv in bl.levels:
        g.add_node(lv.name)
        for v in _level_values(bl, lv):
            for src in deps(v, bl.bindings) & names:
                g.add_edge(src, lv.name)
    out = []
    for comp in nx.strongly_connected_components(g):
        if len(comp) > 1 or any(g.has_edge(n, n) for n in comp):
            members = [lv for lv in bl.levels if lv.name in comp]
            for lv in members:
                if isinstance(lv, ir.Attention):
                    raise LoweringError(f"attention `{lv.name}` cannot take part in a self-modifying group", lv.span)
                if lv.read == "after":
                    raise LoweringError(f"`{lv.name}` reads after write but feeds its own flows", lv.span)
            out.append(members)
    return out


def forward_lines(bl: BlockLowering) -> list[str]:
    """The forward pass; a block with an attention context runs segment by segment (semantics.md §4.1)."""
    segmented = [lv for lv in bl.levels if isinstance(lv, ir.Attention) and lv.flow("context") is not None]
    if not segmented:
        return _schedule(bl)
    if len({lv.segment for lv in segmented}) > 1:
        raise LoweringError("the attention contexts of one block must share their segment", segmented[1].span)
    head = segmented[0]
    whole = {p: bl.expr(ir.Input(p, None)) for p in bl.block.params}
    for p in bl.block.params:
        bl.rename[p] = bl.locals.fresh(whole[p] + "_seg")
    first = next(iter(bl.block.params))
    lines = [f"# {bl.local(head.name)} attends within segments of {head.segment} tokens and reads its context at "
             "each segment start:",
             "# the block runs one segment at a time",
             "outputs = []",
             f"for seg_start, seg_end in rt.segments(rt.position_of(state.get({_key(bl, head)})), "
             f"{whole[first]}.shape[1], {head.segment}):"]
    lines += [f"    {bl.rename[p]} = {whole[p]}[:, seg_start:seg_end]" for p in bl.block.params]
    body = _schedule(bl)
    result = body.pop()
    assert result.startswith("return ")
    lines += ["    " + line for line in body] + [f"    outputs.append({result[len('return '):]})",
                                                 "return torch.cat(outputs, dim=1)"]
    bl.lines = lines
    return lines


def _schedule(bl: BlockLowering) -> list[str]:
    level_groups = groups(bl)
    in_group = {lv.name: i for i, grp in enumerate(level_groups) for lv in grp}
    dyn: dict[int, list[str]] = {}
    for i, grp in enumerate(level_groups):
        names = {lv.name for lv in grp}
        needed = _closure(bl, [v for lv in grp for v in _level_values(bl, lv)])
        dyn[i] = [b for b in bl.bindings if b in needed and deps(bl.bindings[b], bl.bindings) & names]
    owner = {}
    for i, names in dyn.items():
        for b in names:
            owner[b] = f"g{i}"
    for b in bl.bindings:
        owner.setdefault(b, f"b:{b}")
    for lv in bl.levels:
        owner[lv.name] = f"g{in_group[lv.name]}" if lv.name in in_group else f"m:{lv.name}"

    def needs(values, exclude=()):
        out = set()
        for v in values:
            out |= {owner[r] for r in _refs(v) if r in owner}
            out |= {owner[r.level] for r in _direct_reads(v) if r.level in owner}
            for r in _direct_reads(v):
                if r.query is not None:
                    out |= needs([r.query])
        return out - set(exclude)

    order = {}
    graph = nx.DiGraph()
    for idx, b in enumerate(bl.bindings):
        if owner[b] == f"b:{b}":
            node = f"b:{b}"
            order[node] = idx
            graph.add_node(node)
            for d in needs([bl.bindings[b]]) - {node}:
                graph.add_edge(d, node)
    for lv in bl.levels:
        node = owner[lv.name]
        order.setdefault(node, 1000 + bl.levels.index(lv))
        graph.add_node(node)
        vals = _level_values(bl, lv)
        if node.startswith("g"):
            vals += [bl.bindings[b] for b in dyn[int(node[1:])]]
        for d in needs(vals) - {node}:
            graph.add_edge(d, node)
    for lv in bl.levels:  # a context reads its memories before this segment's writes
        for r in context_reads(lv.flow("context")) if isinstance(lv, ir.Attention) and lv.flow("context") else ():
            if r.level in owner and owner[r.level] != owner[lv.name]:
                graph.add_edge(owner[lv.name], owner[r.level])
    try:
        schedule = list(nx.lexicographical_topological_sort(graph, key=lambda n: order.get(n, 0)))
    except nx.NetworkXUnfeasible:
        raise LoweringError("the values of this block depend on each other in a cycle", bl.block.span) from None
    for node in schedule:
        if node.startswith("b:"):
            name = node[2:]
            bl.lines.append(f"{bl.expr(ir.Ref(name, None))} = {bl.expr(bl.bindings[name])}  # {bl.where(bl.bindings[name].span)}")
        elif node.startswith("m:"):
            _level_call(bl, bl.model.level(node[2:]))
        else:
            i = int(node[1:])
            _group_loop(bl, level_groups[i], dyn[i])
    bl.lines.append(f"return {bl.expr(bl.block.output)}")
    return bl.lines


def _key(bl, lv) -> str:
    return bl.state_key(bl.level_attr(lv.name))


def _call_args(bl: BlockLowering, lv) -> str:
    site = bl.reads.get(lv.name)
    query = site.query if site is not None and site.query is not None else (lv.flow("query") or lv.flow("key"))
    value = lv.flow("value")
    if isinstance(value, ir.Op) and value.fn == "self":
        value = value.args[0]
    q, k, v = bl.expr(query), bl.expr(lv.flow("key")), bl.expr(value)
    if isinstance(lv, ir.Attention):
        return f"{q}, {k}, {v}"
    gates = ", ".join(f"{role!r}: {bl.expr(lv.flow(role))}" for role in GATE_ROLES if lv.flow(role) is not None)
    return f"q={q}, k={k}, v={v}, gates={{{gates}}}"


def _prefix_args(bl: BlockLowering, lv: ir.Attention) -> str:
    """Lines computing an attention's persistent and context tokens, passed through its key and value
    flows; returns the keyword arguments of its call."""
    name, out = py(bl.local(lv.name)), ""
    key, value = lv.flow("key"), lv.flow("value")
    if lv.persistent:
        tokens = bl.locals.fresh(f"p_{name}")
        first = next(iter(bl.block.params))
        bl.lines.append(f"{tokens} = self.{bl.level_attr(lv.name)}.tokens({bl.expr(ir.Input(first, None))})"
                        "  # the persistent tokens")
        out += f", persistent=({bl.expr_on(key, tokens)}, {bl.expr_on(value, tokens)})"
    ctx = lv.flow("context")
    if ctx is not None:
        saved = dict(bl.read_rename)
        for r in context_reads(ctx):
            mem = bl.model.level(r.level)
            var = bl.locals.fresh(f"h_{py(bl.local(r.level))}")
            bl.lines.append(f"{var} = self.{bl.level_attr(r.level)}.read_anchor({bl.expr(r.query)}, "
                            f"state.get({_key(bl, mem)}))  # the memory at the segment start")
            bl.read_rename[r.level] = var
        tokens = bl.locals.fresh(f"ctx_{name}")
        bl.lines.append(f"{tokens} = {bl.expr(ctx)}  # {bl.where(ctx.span)}")
        bl.read_rename = saved
        out += f", context=({bl.expr_on(key, tokens)}, {bl.expr_on(value, tokens)})"
    return out


def _level_call(bl: BlockLowering, lv):
    key = _key(bl, lv)
    args = _call_args(bl, lv)
    bl.lines.append(f"# {'attention' if isinstance(lv, ir.Attention) else 'memory'} {bl.local(lv.name)}"
                    f"  ({bl.where(lv.span)})")
    prefix = _prefix_args(bl, lv) if isinstance(lv, ir.Attention) and lv.has_prefix else ""
    attr = bl.level_attr(lv.name)
    bl.lines.append(f"{bl.out_var(lv.name)}, state[{key}] = self.{attr}({args}, state.get({key}){prefix})"
                    if isinstance(lv, ir.Attention) else
                    f"{bl.out_var(lv.name)}, state[{key}] = self.{attr}({args}, state=state.get({key}))")


def _group_loop(bl: BlockLowering, grp: list, dynamic: list[str]):
    reads_at = {lv.name: lv.read for lv in grp}
    step = 1 if any(m != "anchor" for m in reads_at.values()) else math.gcd(*[lv.chunk for lv in grp])
    names = ", ".join(bl.local(lv.name) for lv in grp)
    bl.lines.append(f"# self-modifying group: {names} advance together, {step} token(s) at a time,")
    bl.lines.append("# each reading its state at the chunk anchor before the segment's writes")
    length_src = bl.expr(ir.Input(next(iter(bl.block.params)), None))
    units = [_Unit(bl, members) for members in member_stacks(bl, grp)]
    for unit in units:
        bl.lines.extend(unit.open_lines(length_src))
    outs = [bl.out_var(lv.name) for lv in grp] + [bl.expr(ir.Ref(b, None)) for b in dynamic]
    bl.lines.append(f"parts = {{{', '.join(repr(o) + ': []' for o in outs)}}}")
    first = units[0].state
    bl.lines.append(f"for start, end in rt.segments(rt.position_of({first}), {length_src}.shape[1], {step}):")
    body_start = len(bl.lines)
    group_names = {lv.name for lv in grp}
    static = set()
    for lv in grp:
        for v in _level_values(bl, lv):
            static |= {r for r in _refs(v) if r not in dynamic}
    for b in dynamic:
        static |= {r for r in _refs(bl.bindings[b]) if r not in dynamic}
    inputs = set(bl.block.params)
    saved, saved_reads = dict(bl.rename), dict(bl.read_rename)
    slices = []
    # in the block's own order (parameters, then bindings), so the code never depends on how names sort
    for name in [n for n in list(bl.block.params) + list(bl.bindings) if n in static | inputs]:
        whole = bl.expr(ir.Ref(name, None))
        bl.rename[name] = bl.locals.fresh(whole + "_s")
        slices.append(f"    {bl.rename[name]} = {whole}[:, start:end]")
    outer_reads = {r.level for lv in grp for v in _level_values(bl, lv) for r in _direct_reads(v)} | {
        r.level for b in dynamic for r in _direct_reads(bl.bindings[b])}
    for level in [lv.name for lv in bl.levels if lv.name in outer_reads - group_names]:
        bl.read_rename[level] = bl.locals.fresh(bl.out_var(level) + "_s")
        slices.append(f"    {bl.read_rename[level]} = {bl.out_var(level)}[:, start:end]")
    bl.lines.extend(slices)
    inner: list[str] = []
    saved_lines, bl.lines = bl.lines, inner
    for lv in grp:
        site = bl.reads.get(lv.name)
        if site is not None and site.query is not None and (
                deps(site.query, bl.bindings) & group_names or _refs(site.query) & set(dynamic)):
            raise LoweringError(f"the query of `{lv.name}` depends on its group's own reads", site.span)
    for unit in units:
        inner.extend(unit.read_lines())
    for b in dynamic:
        inner.append(f"{bl.locals.names[('spec', b)]} = {bl.expr(bl.bindings[b])}  # {bl.where(bl.bindings[b].span)}")
    for unit in units:
        inner.append(unit.update_line())
    for o in outs:
        inner.append(f"parts[{o!r}].append({o})")
    bl.lines = saved_lines
    bl.lines.extend("    " + line for line in inner)
    bl.rename, bl.read_rename = saved, saved_reads
    del body_start
    for o in outs:
        bl.lines.append(f"{o} = torch.cat(parts[{o!r}], dim=1)")
    for unit in units:
        bl.lines.append(unit.close_line())


class _Unit:
    """One member of a self-modifying group, or a stack of members that compute alike (stacking.py): the
    lines that fetch its state, read it, update it and store its state back."""

    def __init__(self, bl: BlockLowering, members: list):
        self.bl, self.members = bl, members
        first = py(bl.local(members[0].name))
        self.stack = bl.locals.fresh("stack_" + first) if len(members) > 1 else None
        if self.stack:
            bl.stacks.append([lv.name for lv in members])
        self.keys = bl.locals.fresh("keys_" + first) if self.stack else None
        self.state = bl.locals.fresh("s_" + first + ("_stack" if self.stack else ""))

    def _target(self, lv) -> str:
        return f"self.{self.bl.level_attr(lv.name)}"

    def open_lines(self, length_src: str) -> list[str]:
        bl, members = self.bl, self.members
        if self.stack is None:
            return [f"{self.state} = state.get({_key(bl, members[0])})"]
        names = ", ".join(bl.local(lv.name) for lv in members)
        return [f"# {names}: one configuration and the same inputs, run as one stack of their heads",
                f"{self.stack} = rt.MemoryStack({', '.join(self._target(lv) for lv in members)})",
                f"{self.keys} = [{', '.join(_key(bl, lv) for lv in members)}]",
                f"{self.state} = {self.stack}.stack_state(list(map(state.get, {self.keys})), {length_src})"]

    def read_lines(self) -> list[str]:
        bl, lv = self.bl, self.members[0]
        site = bl.reads.get(lv.name)
        if site is None or site.query is None:
            return []
        method = "read_anchor" if lv.read == "anchor" else "read_current"
        outs = ", ".join(bl.out_var(m.name) for m in self.members)
        target = self.stack or self._target(lv)
        return [f"{outs} = {target}.{method}({bl.expr(site.query)}, {self.state})"]

    def update_line(self) -> str:
        target = self.stack or self._target(self.members[0])
        return f"{self.state} = {target}.write({_call_args(self.bl, self.members[0])}, state={self.state})"

    def close_line(self) -> str:
        if self.stack:
            return f"state.update(zip({self.keys}, {self.stack}.split_state({self.state})))"
        return f"state[{_key(self.bl, self.members[0])}] = {self.state}"
