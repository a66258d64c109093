"""Sizes and costs of levels: parameters, state size and update cost per token (the graph's labels).

All figures count every replica (a level inside `stack(layer, 4)` counts four times). Costs are
multiply-adds × 2 (FLOPs) of the update per token, to compare levels, not to predict time.
"""

from __future__ import annotations

from . import ir

MOMENT_SLOTS = {"sgd": 0, "momentum": 1, "adamw": 2, "muon": 1, "m3": 5, "deep_momentum": 1}


def training_values(levels) -> int:
    """What training holds besides activations, from the graph's (kind, params, state_size) rows: every
    parameter, its gradient, and the state of each optimizer level (moments, momentum buffers)."""
    rows = list(levels)
    params = sum(p or 0 for _, p, _ in rows)
    return 2 * params + sum(s or 0 for kind, _, s in rows if kind == "optimizer")


def human(n) -> str:
    if n is None:
        return "—"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _clock(c: ir.Clock, chunk=None) -> dict:
    return {"period": c.period, "unit": c.unit, "chunk": chunk}


def _memory(model, m: ir.Memory, reps: int) -> dict:
    weights = sum(o * i + (o if m.bias else 0) for o, i in m.layer_shapes)
    per_head_state = weights * (1 + (m.chunk > 1) + any(r.kind == "momentum" for r in m.rules))
    forward = sum(2 * o * i for o, i in m.layer_shapes)
    update = 3 * forward + sum(2 * o * i for o, i in m.layer_shapes)  # forward, backward, outer product, apply
    if any(r.kind in ("delta", "dgd") for r in m.rules):
        o, i = m.layer_shapes[0]
        update += 4 * o * i
    state = m.heads * per_head_state * reps
    rules = ", ".join(r.kind + (" at current" if r.at == "current" else "") for r in m.rules)
    clip = f"; clip {m.clip:g}" if m.clip is not None else ""
    notes = [f"update {rules}{clip}; objective {m.objective.text}; read {_read_text(m.read)}",
             f"state {'reset per sequence' if m.lifetime == 'reset' else 'persists across sequences'}"
             + (f"; initial state learned by {m.init_by}" if m.init_by else "; initial state zero")]
    if m.template:
        notes.append(f"kind {m.template}")
    return {
        "kind": "memory", "type": m.type_text + (f" ×{m.heads} heads" if m.heads > 1 else ""),
        "clock": _clock(m.clock, m.chunk), "clock_text": m.clock.text + (f", chunk {m.chunk}" if m.chunk > 1 else ""),
        "params": m.heads * weights * reps if m.init_by else 0,
        "state_size": state, "state_text": human(state),
        "update_cost": m.heads * update * reps, "heads": m.heads, "replicas": reps, "notes": notes,
    }


def _read_text(read: str) -> str:
    return {"before": "before write", "after": "after write", "anchor": "at anchor"}[read]


def level_stats(model: ir.ModelIR, lv, w) -> dict:
    reps = max(1, model.replica_count(lv.name))
    if isinstance(lv, ir.Memory):
        out = _memory(model, lv, reps)
    elif isinstance(lv, ir.Attention):
        per_token = lv.heads * (lv.dk + lv.dv) * reps
        out = {"kind": "attention", "type": lv.type_text + (f" ×{lv.heads} heads" if lv.heads > 1 else ""),
               "clock": _clock(lv.clock), "clock_text": "every 1 token (KV cache)", "params": 0,
               "state_size": per_token * lv.window if lv.window else None,
               "state_text": f"{human(per_token)} per token" + (f" × {lv.window}" if lv.window else ""),
               "update_cost": None, "heads": lv.heads, "replicas": reps,
               "notes": [f"sliding window {lv.window}" if lv.window else "full causal attention"]}
        if lv.segment:
            tokens = lv.segment * (2 if lv.flow("context") is not None else 1)
            out.update(state_size=per_token * tokens, state_text=f"{human(per_token)} per token × {tokens}",
                       notes=[f"attends within segments of {lv.segment} tokens"])
        if lv.flow("context") is not None:
            out["notes"].append("a context token per segment token, read at the segment start")
        if lv.persistent:
            out["notes"].append(f"{lv.persistent} learned persistent tokens")
    elif isinstance(lv, ir.CmsMember):
        params = _mlp_params(lv) * reps
        frozen = lv.clock.unit == "never"
        out = {"kind": "cms", "type": lv.type_text, "clock": _clock(lv.clock), "clock_text": lv.clock.text,
               # its MLP, and the initial states it learns for the next member of a nested chain; a frozen
               # member's MLP is the outer level's
               "params": (0 if frozen else params) + _initial_states(model, lv.name),
               "state_size": params, "state_text": human(params),
               "update_cost": None if frozen else 4 * params + params // max(1, lv.clock.period or 1),
               "heads": 1, "replicas": reps,
               "notes": [f"frozen MLP, trained by {model.outer.name}"] if frozen else
                        [f"steps {lv.optimizer.text} every {lv.clock.period} tokens with the window-summed gradient"]}
    else:
        out = {"kind": "outer", "type": lv.type_text, "clock": _clock(lv.clock), "clock_text": lv.clock.text,
               "params": 0, "state_size": None, "state_text": "—", "update_cost": None, "heads": 1, "replicas": 1,
               "notes": [f"update {lv.optimizer.text}" + (f", clip {lv.clip:g}" if lv.clip else "") + f", bptt {lv.bptt}"]}
    out["span"] = lv.span
    return out


def optimizer_stats(model, opt: ir.Optimizer, owners, g) -> dict:
    served = sum(g.nodes[o].get("params", 0) for o in owners if o in g.nodes and o != model.outer.name)
    if model.outer.name in owners:
        served += g.nodes[model.outer.name].get("params", 0) + sum(
            d.get("params", 0) for _, d in g.nodes(data=True) if d.get("kind") == "memory")
    state = MOMENT_SLOTS.get(opt.kind, 1) * served
    clock = next(iter(g.nodes[o]["clock"] for o in owners if o in g.nodes), {"period": 1, "unit": "steps", "chunk": None})
    return {"kind": "optimizer", "type": opt.text, "clock": dict(clock),
            "clock_text": next(iter(g.nodes[o]["clock_text"] for o in owners if o in g.nodes), ""),
            "params": 0, "state_size": state, "state_text": human(state), "update_cost": None, "heads": 1,
            "replicas": 1, "notes": [f"serves {', '.join(owners)}"], "span": opt.span}


def outer_params(model: ir.ModelIR, w) -> int:
    """Parameters the outer level owns: projections, norms, convolutions, embeddings, frozen MLPs."""
    total = 0
    uses = block_uses(model)
    for b in model.blocks:
        reps = max(1, uses.get(b.name, 0))
        w.block = b.name
        total += reps * sum(_op_params(v, w) for _, v in b.bindings + (("out", b.output),))
        total += reps * sum(_op_params(v, w) for lvname in b.levels for _, v in (model.level(lvname).flows
                                                                               if model.level(lvname) else ()))
    total += _net_params(model.network, model, 1)
    for att in model.attentions:
        total += att.persistent * model.dim * max(1, model.replica_count(att.name))
    for c in model.cms:
        for m in c.members:
            if m.clock.unit == "never":
                total += _mlp_params(m) * max(1, model.replica_count(m.name))
        if c.variant == "independent" and c.agg == "weighted_sum":  # the aggregation's weights
            total += len(c.members) * max(1, model.replica_count(c.members[0].name))
    return total + _initial_states(model, model.outer.name)


def _mlp_params(m: ir.CmsMember) -> int:
    return 2 * m.width * m.hidden + (m.hidden + m.width if m.bias else 0)


def _initial_states(model: ir.ModelIR, learner: str) -> int:
    """Parameters of the learned initial states (θ₀ of CMS members that are reset) that `learner` learns."""
    return sum(_mlp_params(m) * max(1, model.replica_count(m.name)) for c in model.cms for m in c.members
               if c.initial_learner(m, model.outer.name) == learner)


def block_uses(model: ir.ModelIR) -> dict:
    """How many copies of each block the network holds (through stack, repeated stages and blocks
    applied inside other blocks); each copy has its own parameters."""
    blocks = {b.name: b for b in model.blocks}
    counts: dict = {}

    def visit(net, mult, inside=()):
        if isinstance(net, ir.Stack):
            visit(net.inner, mult * net.count, inside)
        elif isinstance(net, ir.BlockCall) and net.block in blocks and net.block not in inside:
            counts[net.block] = counts.get(net.block, 0) + mult
            b = blocks[net.block]
            for _, v in b.bindings + (("out", b.output),):
                for node in ir.walk(v):
                    if isinstance(node, ir.Apply):
                        visit(node.target, mult, inside + (net.block,))
        elif isinstance(net, ir.Seq):
            for stage in net.stages:
                visit(stage, mult, inside)
        elif isinstance(net, ir.Residual):
            visit(net.inner, mult, inside)

    visit(model.network, 1)
    return counts


def _op_params(v, w) -> int:
    total = 0
    for x in ir.walk(v):
        if not isinstance(x, ir.Op):
            continue
        width = w.of(x.args[0]) if x.args else None
        if x.fn == "linear" and width:
            total += width * x.option("out") + (x.option("out") if x.option("bias") else 0)
        elif x.fn == "conv" and width:
            total += width * x.option("window")
        elif x.fn == "rmsnorm" and width:
            total += width
        elif x.fn == "layernorm" and width:
            total += 2 * width
    return total


def _net_params(net, model, mult) -> int:
    if isinstance(net, ir.Seq):
        return sum(_net_params(s, model, mult) for s in net.stages)
    if isinstance(net, ir.Residual):
        return _net_params(net.inner, model, mult)
    if isinstance(net, ir.Stack):
        return _net_params(net.inner, model, mult * net.count)
    if isinstance(net, ir.Embed):
        return net.vocab * net.dim * mult
    if isinstance(net, ir.LMHead):
        return 0 if net.tied else model.dim * model.vocab * mult
    if isinstance(net, ir.Norm):
        return model.dim * (2 if net.kind == "layernorm" else 1) * mult
    return 0
