"""Every front-end stage as text: the AST, the elaborated IR (levels, blocks, dataflow) and the graph."""

from __future__ import annotations

import dataclasses

from . import ast, ir


def dump_ast(node, indent: int = 0) -> str:
    """An indented tree of AST nodes with their source positions."""
    lines: list[str] = []

    def emit(n, depth, label=""):
        pad = "  " * depth + (f"{label}: " if label else "")
        if isinstance(n, tuple):
            if not n:
                return
            for x in n:
                emit(x, depth, label)
            return
        if not dataclasses.is_dataclass(n) or isinstance(n, ast.Span):
            lines.append(f"{pad}{n!r}")
            return
        scalars, children = [], []
        for f in dataclasses.fields(n):
            v = getattr(n, f.name)
            if f.name == "span" or isinstance(v, ast.Span):
                continue
            if dataclasses.is_dataclass(v) or (isinstance(v, tuple) and v and dataclasses.is_dataclass(v[0])):
                children.append((f.name, v))
            elif f.name != "comments":
                scalars.append(f"{f.name}={v!r}" if not isinstance(v, tuple) else f"{f.name}={list(v)!r}")
        where = f" @{n.span.line}:{n.span.col}" if hasattr(n, "span") and n.span.line else ""
        lines.append(f"{pad}{type(n).__name__}{where} " + " ".join(scalars))
        for name, child in children:
            emit(child, depth + 1, name)

    emit(node, indent)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def value_text(v) -> str:
    """A dataflow value written back as an expression."""
    if isinstance(v, ir.Input):
        return v.name
    if isinstance(v, ir.Const):
        return f"{v.value:g}"
    if isinstance(v, ir.Ref):
        return v.name
    if isinstance(v, ir.Read):
        return f"read {v.level}({value_text(v.query) if v.query is not None else ''})"
    if isinstance(v, ir.Op):
        opts = "".join(f", {k}={val}" for k, val in v.options)
        return f"{v.fn}({', '.join(value_text(a) for a in v.args)}{opts})"
    if isinstance(v, ir.Bin):
        return f"({value_text(v.left)} {v.op} {value_text(v.right)})"
    if isinstance(v, ir.Apply):
        target = v.target.block if isinstance(v.target, ir.BlockCall) else getattr(v.target, "cms", "?")
        return f"{target}({value_text(v.arg)})"
    return "?"


def net_text(net, depth: int = 0) -> list[str]:
    pad = "  " * depth
    if isinstance(net, ir.Seq):
        out = [f"{pad}sequence"]
        for s in net.stages:
            out += net_text(s, depth + 1)
        return out
    if isinstance(net, ir.Residual):
        return [f"{pad}residual"] + net_text(net.inner, depth + 1)
    if isinstance(net, ir.Stack):
        return [f"{pad}stack ×{net.count}"] + net_text(net.inner, depth + 1)
    if isinstance(net, ir.Embed):
        return [f"{pad}embed {net.vocab}→{net.dim}"]
    if isinstance(net, ir.LMHead):
        return [f"{pad}lm_head{' (tied)' if net.tied else ''}"]
    if isinstance(net, ir.Norm):
        return [f"{pad}{net.kind}"]
    if isinstance(net, ir.BlockCall):
        return [f"{pad}block {net.block}"]
    if isinstance(net, ir.CmsCall):
        return [f"{pad}cms {net.cms}"]
    return [f"{pad}?"]


def dump_ir(model: ir.ModelIR) -> str:
    out = [f"model {model.name}  (vocab {model.vocab}, dim {model.dim}, context {model.context})", "constants:"]
    out += [f"  {k} = {v!r}" for k, v in model.constants]
    o = model.outer
    out += ["levels:", f"  outer {o.name}: {o.clock.text}, objective {o.objective}, update {o.optimizer.text}"
            + (f", clip {o.clip:g}" if o.clip else "") + f", bptt {o.bptt}"]
    for m in model.memories:
        rules = ", ".join(r.kind + (f" at {r.at}" if r.at not in ("none",) else "") for r in m.rules)
        out.append(f"  memory {m.name}: {m.type_text} ×{m.heads} heads, dk {m.dk}, dv {m.dv}, chunk {m.chunk}, "
                   f"rules [{rules}]" + (f", clip {m.clip:g}" if m.clip is not None else "")
                   + f", objective {m.objective.text}, read {m.read}, "
                   f"{'self target, ' if m.self_target else ''}state {m.lifetime}, init by {m.init_by}, "
                   f"replicas {model.replica_count(m.name)}")
        for role, v in m.flows:
            out.append(f"    {role:10} = {value_text(v)}")
    for a in model.attentions:
        out.append(f"  attention {a.name}: {a.type_text} ×{a.heads} heads, dk {a.dk}, dv {a.dv}")
        for role, v in a.flows:
            out.append(f"    {role:10} = {value_text(v)}")
    for c in model.cms:
        out.append(f"  cms {c.name}: {c.variant} (agg {c.agg}), taught by {c.taught_by}, state {c.lifetime}, "
                   f"flush {c.flush}")
        for m in c.members:
            out.append(f"    level {m.name}: {m.type_text}, act {m.act}, {m.clock.text}, update {m.optimizer.text}, lr {m.lr:g}")
    for opt in model.optimizers:
        out.append(f"  optimizer {opt.name}: {opt.text}")
    out.append("blocks:")
    for b in model.blocks:
        out.append(f"  block {b.name}({', '.join(b.params)}):")
        out += [f"    {k} = {value_text(v)}" for k, v in b.bindings]
        out.append(f"    return {value_text(b.output)}")
    out.append("network:")
    out += ["  " + line for line in net_text(model.network)]
    return "\n".join(out) + "\n"
