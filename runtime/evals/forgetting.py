"""`forgetting`: learn a segment A, then a segment B, and measure how much of A is kept.

The run's persistent levels learn A in context (as `nlc learn` does), then B; the loss on A is
measured before anything is learned, after A and after B (each time with no level learning, from the
learned state), and the loss on B before and after B. `forgetting` is how much the loss on A rose
while learning B; `retained` is the part of A's gain still there after B (1: nothing forgotten).
By default A and B are the first two held-out documents of the run's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..continual import Learner, Memory
from ..data import ByteTokenizer, load_documents
from .common import mean_loss
from .ppl import held_out


@dataclass
class ForgettingOptions:
    data: Optional[str] = None  # segment A (a text file or folder); None: the first held-out document
    data_b: Optional[str] = None  # segment B; None: the next held-out document
    max_tokens: int = 2048  # tokens of each segment
    passes: int = 1
    seq: Optional[int] = None
    batch: int = 8


def _segments(run, opts: ForgettingOptions) -> tuple[list[int], list[int], str, str]:
    val = held_out(run.config)
    if opts.data:
        a_docs, a_name = load_documents(opts.data), opts.data
    else:
        a_docs, a_name = val[:1], val[0][0]
    if opts.data_b:
        b_docs, b_name = load_documents(opts.data_b), opts.data_b
    else:
        rest = [d for d in val if d not in a_docs] or val[-1:]
        b_docs, b_name = rest[:1], rest[0][0]
    tok = ByteTokenizer()
    a = tok.encode("\n".join(text for _, text in a_docs))[:opts.max_tokens]
    b = tok.encode("\n".join(text for _, text in b_docs))[:opts.max_tokens]
    return a, b, a_name, b_name


def run_forgetting(run, state, opts: ForgettingOptions, memory: Optional[Memory] = None) -> dict:
    a, b, a_name, b_name = _segments(run, opts)
    learner = Learner(run, memory, opts.seq)
    seq = learner.seq

    def loss(tokens):
        return mean_loss(run.model, tokens, seq, opts.batch, learner.loop.carried or None)

    a_base, b_base = loss(a), loss(b)
    learner.learn(a, opts.passes, a_name)
    a_after_a = loss(a)
    learner.learn(b, opts.passes, b_name)
    a_after_b, b_after_b = loss(a), loss(b)
    gain = a_base - a_after_a
    return {
        "segment_a": a_name, "segment_b": b_name, "tokens_a": len(a), "tokens_b": len(b), "passes": opts.passes,
        "loss_a_before": a_base, "loss_a_after_a": a_after_a, "loss_a_after_b": a_after_b,
        "loss_b_before": b_base, "loss_b_after_b": b_after_b,
        "forgetting": a_after_b - a_after_a,
        "retained": (a_base - a_after_b) / gain if gain > 0 else None,
    }
