"""`ppl`: bits per byte on the run's held-out split (or on a given text), no level learning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..data import EOS, ByteTokenizer, bits_per_byte, load_documents, split
from .common import window_losses


@dataclass
class PplOptions:
    data: Optional[str] = None  # a text file or folder; None: the held-out split of the run's data
    seq: Optional[int] = None  # tokens per window (default: the run's training length)
    batch: int = 8
    max_tokens: int = 16384  # score at most this many tokens (spread over the documents in order)


def held_out(config: dict) -> list[tuple[str, str]]:
    """The validation documents of a run: its training data split as `nlc train` split it."""
    docs = load_documents(config.get("data"))
    _, val = split(docs, seed=int(config.get("seed", 0)))
    return val or docs


def document_tokens(documents, max_tokens: Optional[int] = None) -> list[list[int]]:
    """Each document's bytes followed by the separator; with `max_tokens`, cut so that all of them hold
    max_tokens + 1 tokens (that many predictions in one stream), every document keeping an equal share."""
    tok = ByteTokenizer()
    encoded = [tok.encode(text) + [EOS] for _, text in documents]
    if max_tokens is None or sum(map(len, encoded)) <= max_tokens + 1:
        return encoded
    budget, left, out = max_tokens + 1, len(encoded), []
    for i, e in sorted(enumerate(encoded), key=lambda p: len(p[1])):  # short ones whole, the rest in equal shares
        take = min(len(e), budget // left)
        out.append((i, e[:take]))
        budget, left = budget - take, left - 1
    return [e for _, e in sorted(out, key=lambda p: p[0])]


def text_tokens(documents, max_tokens: Optional[int] = None) -> list[int]:
    """The documents as one byte stream, each followed by the separator (see `document_tokens`)."""
    return [t for e in document_tokens(documents, max_tokens) for t in e]


def run_ppl(run, state, opts: PplOptions) -> dict:
    """Bits per byte in the layout the run trained in: one stream cut into windows (packed), or each
    document from its start after a separator (aligned, `nlc train --documents aligned`)."""
    docs = load_documents(opts.data) if opts.data else held_out(run.config)
    seq = opts.seq or run.context
    layout = run.config.get("documents") or "packed"
    if layout == "aligned":
        budget = None if opts.max_tokens is None else opts.max_tokens - 1  # each document's tokens, all predicted
        scored = [window_losses(run.model, [EOS] + d, seq, opts.batch, state) for d in document_tokens(docs, budget)]
        total, count = sum(t for t, _ in scored), sum(c for _, c in scored)
    else:
        total, count = window_losses(run.model, text_tokens(docs, opts.max_tokens), seq, opts.batch, state)
    loss = total / max(count, 1)
    return {
        "source": opts.data or f"held-out split of {run.config.get('data') or 'the bundled corpus'}",
        "documents": [name for name, _ in docs], "layout": layout, "tokens": count, "seq": seq,
        "loss_nats": loss, "bits_per_byte": bits_per_byte(loss),
    }
