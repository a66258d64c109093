"""The loop plan (semantics.md §5): the nest of clocks the runtime executes, as text and as data."""

from __future__ import annotations

from nldsl import ir
from nldsl.checks import chunk_form


def runtime_info(model: ir.ModelIR) -> dict:
    """What the training loop needs to know about clocks and optimizers (stored in levels.json)."""
    o = model.outer
    return {
        "context": model.context,
        "outer": {"name": o.name, "every_steps": o.clock.period, "objective": o.objective,
                  "optimizer": {"kind": o.optimizer.kind, "args": dict(o.optimizer.args), "name": o.optimizer.name},
                  "clip": o.clip, "bptt": o.bptt, "warmup": o.warmup, "schedule": o.schedule},
        "cms": [{"name": c.name, "variant": c.variant, "taught_by": c.taught_by, "lifetime": c.lifetime,
                 "flush": c.flush,
                 "levels": [{"name": m.name, "period": m.clock.period, "unit": m.clock.unit,
                             "optimizer": {"kind": m.optimizer.kind, "args": dict(m.optimizer.args),
                                           "name": m.optimizer.name},
                             "lr": m.lr, "replicas": model.replica_count(m.name),
                             "initial_learner": c.initial_learner(m, o.name)} for m in c.members]}
                for c in model.cms],
        "memories": [{"name": m.name, "chunk": m.chunk, "lifetime": m.lifetime, "read": m.read,
                      "form": chunk_form(m)[0], "replicas": model.replica_count(m.name)} for m in model.memories],
        "attention": [{"name": a.name, "window": a.window} for a in model.attentions],
    }


def plan_text(model: ir.ModelIR, stacks=()) -> str:
    """The loop nest as text; `stacks`: groups of memory names the generated code runs as one call."""
    o = model.outer
    stacked = {}
    for names in stacks:
        stacked[names[0]] = ", in one call with " + ", ".join(names[1:]) + " (their heads side by side)"
        stacked.update({name: f", in {names[0]}'s call" for name in names[1:]})
    members = [m for c in model.cms for m in c.members if m.clock.unit == "tokens"]
    periods = sorted({m.clock.period for m in members})
    lines = [f"plan of model {model.name}: the nested loop the runtime executes", ""]
    lines.append(f"for each outer step:                       # level {o.name}: {o.clock.text}, {o.optimizer.text}")
    lines.append(f"  for each sequence of {model.context} tokens (a batch of rows):")
    if periods:
        cuts = ", ".join(str(p) for p in periods)
        lines.append(f"    cut the sequence at the CMS window ends (every {cuts} tokens, {_window_origin(model)})")
        lines.append("    for each segment:")
        ind = "      "
    else:
        ind = "    "
    lines.append(f"{ind}forward through the network; in-context memories update inside it, token by token:")
    for m in model.memories:
        form, reason = chunk_form(m)
        lines.append(f"{ind}  memory {m.name} ×{model.replica_count(m.name)}: chunk {m.chunk}, "
                     f"{', '.join(r.kind for r in m.rules)}" + (f", clip {m.clip:g}" if m.clip is not None else "")
                     + f", read {m.read}, {form} form"
                     f" ({'reset per sequence' if m.lifetime == 'reset' else 'persists'}){stacked.get(m.name, '')}")
    for a in model.attentions:
        lines.append(f"{ind}  attention {a.name}: KV cache grows every token" + (f", window {a.window}" if a.window else "")
                     + (f", within segments of {a.segment} tokens" if a.segment else "")
                     + (f", {a.persistent} persistent tokens" if a.persistent else "")
                     + (", a context read at each segment start (the block runs segment by segment)"
                        if a.flow("context") is not None else ""))
    if periods and o.bptt == "full":
        lines.append(f"{ind}loss {o.objective}; the backward of its CMS windows only (bptt full: the graph is kept "
                     "across segments, CMS updates enter it as stop-gradient changes)")
    else:
        lines.append(f"{ind}loss {o.objective}; backward"
                     + (" (gradients stop at the segment boundary: bptt truncated)" if periods else ""))
    for m in members:
        lines.append(f"{ind}every {m.clock.period} tokens: {m.name} steps {m.optimizer.text} "
                     f"with its window's summed gradient (lr scale {m.lr:g})")
    learners = {m.name: (m, c.initial_learner(m, o.name)) for c in model.cms for m in c.members}
    for m, learner in learners.values():
        if learner in learners:
            lines.append(f"{ind}every {learners[learner][0].clock.period} tokens, once {learner} has stepped: "
                         f"{m.name} goes back to its initial state, a parameter of {learner} (nested)")
    frozen = [m.name for c in model.cms for m in c.members if m.clock.unit == "never"]
    if frozen:
        lines.append(f"{ind}frozen MLPs trained by {o.name}: {', '.join(frozen)}")
    if periods and o.bptt == "full":
        lines.append(f"  backward of the whole sequence's loss into {o.name}'s parameters, through every segment")
    lines.append(f"  accumulate {o.name}'s gradients; every {o.clock.period} step(s): clip "
                 f"{o.clip if o.clip is not None else 'off'}, {o.optimizer.text}")
    reset = [f"{m.name} (learned by {learners[m.name][1]})" for c in model.cms if c.lifetime == "reset"
             for m in c.members if learners[m.name][1] is not None]
    if reset:
        lines.append(f"  then, reset per sequence, back to their initial states: {', '.join(reset)}")
    return "\n".join(lines) + "\n"


def _window_origin(model: ir.ModelIR) -> str:
    """Where CMS windows are counted from (semantics §5): each sequence's start under `reset per
    sequence`, each row's stream (across steps) under `persist`."""
    ticking = [c for c in model.cms if any(m.clock.unit == "tokens" for m in c.members)]
    reset = [c.name for c in ticking if c.lifetime == "reset"]
    persist = [c.name for c in ticking if c.lifetime != "reset"]
    if not persist:
        return "counted from the sequence start"
    if not reset:
        return "counted along each row's stream, across steps"
    return (f"counted from the sequence start in {', '.join(reset)}, along each row's stream in "
            f"{', '.join(persist)}")
