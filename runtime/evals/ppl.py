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


def text_tokens(documents, max_tokens: Optional[int] = None) -> list[int]:
    """Documents as one byte stream, each followed by the separator; with `max_tokens`, cut to
    max_tokens + 1 tokens (that many predictions), every document keeping an equal share of them."""
    tok = ByteTokenizer()
    encoded = [tok.encode(text) + [EOS] for _, text in documents]
    stream = [t for e in encoded for t in e]
    if max_tokens is None or len(stream) <= max_tokens + 1:
        return stream
    budget, left, out = max_tokens + 1, len(encoded), []
    for i, e in sorted(enumerate(encoded), key=lambda p: len(p[1])):  # short ones whole, the rest in equal shares
        take = min(len(e), budget // left)
        out.append((i, e[:take]))
        budget, left = budget - take, left - 1
    return [t for _, e in sorted(out, key=lambda p: p[0]) for t in e]


def run_ppl(run, state, opts: PplOptions) -> dict:
    docs = load_documents(opts.data) if opts.data else held_out(run.config)
    tokens = text_tokens(docs, opts.max_tokens)
    seq = opts.seq or run.context
    total, count = window_losses(run.model, tokens, seq, opts.batch, state)
    loss = total / max(count, 1)
    return {
        "source": opts.data or f"held-out split of {run.config.get('data') or 'the bundled corpus'}",
        "documents": [name for name, _ in docs], "tokens": count, "seq": seq,
        "loss_nats": loss, "bits_per_byte": bits_per_byte(loss),
    }
