"""The network's ends: token ids in through `embed`, logits out through `lm_head`.

A network is a pipeline from token ids (B, T) to logits (B, T, vocab): its first stage must be
`embed(vocab, dim)` and its last `lm_head`, each once, and no other stage may be either (inside
`residual(...)` or `stack(...)` neither has a meaning: they map widths `dim` to `dim`). Named bindings
are already expanded here, so `front = embed(vocab, dim) -> rmsnorm` used as the first stage counts.
"""

from __future__ import annotations

from . import ir
from .diagnostics import Diagnostic, Label, error

_EXAMPLE = "network = embed(vocab, dim) -> stack(layer, layers) -> rmsnorm -> lm_head(tied = true)"


def _top_stages(net: ir.Net) -> list:
    """The stages of the top-level pipeline, nested pipelines (expanded bindings) flattened."""
    if isinstance(net, ir.Seq):
        return [leaf for stage in net.stages for leaf in _top_stages(stage)]
    return [net]


def _ends(net: ir.Net) -> list:
    """Every `embed` and `lm_head` stage of `net`, at any depth."""
    if isinstance(net, (ir.Embed, ir.LMHead)):
        return [net]
    if isinstance(net, ir.Seq):
        return [end for stage in net.stages for end in _ends(stage)]
    if isinstance(net, (ir.Residual, ir.Stack)):
        return _ends(net.inner)
    return []


def network_checks(model: ir.ModelIR) -> list[Diagnostic]:
    """Errors (NL0405) for a network that does not begin with `embed` and end with `lm_head`."""
    stages = _top_stages(model.network)
    first, last = stages[0], stages[-1]
    out = []
    if not isinstance(first, ir.Embed):
        out.append(error("NL0405", "the network does not begin with `embed(vocab, dim)`", first.span,
                         "this stage would receive token ids",
                         help=f"the model maps token ids to logits, e.g. `{_EXAMPLE}`"))
    if not isinstance(last, ir.LMHead):
        out.append(error("NL0405", "the network does not end with `lm_head`", last.span,
                         "this stage's output would be taken for logits",
                         help=f"end the pipeline with `lm_head(tied = true)` or `lm_head(tied = false)`, "
                              f"e.g. `{_EXAMPLE}`"))
    for end in _ends(model.network):
        if end is first and isinstance(end, ir.Embed) or end is last and isinstance(end, ir.LMHead):
            continue
        word, where = ("embed", "first") if isinstance(end, ir.Embed) else ("lm_head", "last")
        other = first if where == "first" else last
        again = other.span == end.span  # one binding's `embed` (or `lm_head`), the binding used twice
        out.append(error("NL0405", f"`{word}` can only be the network's {where} stage", end.span,
                         "reached again: the binding that holds it is used twice" if again else f"not the {where} stage",
                         labels=[] if again else [Label(other.span, f"the network's {where} stage")],
                         help="blocks, cms chains, norms, residual(...) and stack(...) map width `dim` to `dim`; "
                              f"keep one `{word}`, {where} in the pipeline"))
    return out
