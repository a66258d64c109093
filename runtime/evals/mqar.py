"""`mqar`: multi-query associative recall in the style of Zoology (Arora et al., 2023).

Each example is `pairs` key–value pairs written one token each, `k1 v1 k2 v2 … kN vN`, followed by
a query region filled with a filler token in which every key is asked once: the key appears at an
even offset 2g of the region and the model must predict its value as the next token. The offsets g
are drawn without replacement with probability ∝ (g + 1)^(a − 1) (a power law, `power_a` = a), so
most queries come soon after the pairs and a few far away. Keys are distinct letters; values are
digits and symbols (with repetition); everything is generated from the seed, with byte tokens, so a
byte-level model reads printable text. Accuracy is the fraction of queries whose argmax over the
whole vocabulary is the right value; it is also given per gap bucket (tokens from the pair to its
query).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..continual import expand_state

KEYS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VALUES = "0123456789!#$%&*+-/:;<=>?@^_~"
FILLER = " "


@dataclass
class MqarOptions:
    pairs: int = 8  # key-value pairs per example
    length: int = 64  # tokens per example: 2 * pairs of pairs, then the query region
    examples: int = 64
    power_a: float = 0.01
    seed: int = 0
    batch: int = 16


@dataclass
class MqarData:
    tokens: torch.Tensor  # (N, length) inputs
    targets: torch.Tensor  # (N, length) the value to predict after each query key, -100 elsewhere
    gaps: torch.Tensor  # (N, length) tokens from the pair's key to the query's key, -1 elsewhere


def make_mqar(opts: MqarOptions) -> MqarData:
    """Generate MQAR examples deterministically from `opts.seed`."""
    n_pairs, length = opts.pairs, opts.length
    if not 1 <= n_pairs <= len(KEYS):
        raise ValueError(f"mqar needs 1 to {len(KEYS)} key-value pairs, got {n_pairs}")
    space = (length - 2 * n_pairs) // 2
    if space < n_pairs:
        raise ValueError(f"an mqar example of {length} tokens has no room to ask {n_pairs} queries after its "
                         f"pairs; use a length of at least {4 * n_pairs}")
    g = torch.Generator().manual_seed(opts.seed)
    weights = torch.arange(1, space + 1, dtype=torch.float64) ** (opts.power_a - 1)
    key_ids = torch.tensor([ord(c) for c in KEYS])
    value_ids = torch.tensor([ord(c) for c in VALUES])
    tokens = torch.full((opts.examples, length), ord(FILLER), dtype=torch.long)
    targets = torch.full((opts.examples, length), -100, dtype=torch.long)
    gaps = torch.full((opts.examples, length), -1, dtype=torch.long)
    context = 2 * n_pairs
    for i in range(opts.examples):
        keys = key_ids[torch.randperm(len(KEYS), generator=g)[:n_pairs]]
        values = value_ids[torch.randint(len(VALUES), (n_pairs,), generator=g)]
        tokens[i, 0:context:2], tokens[i, 1:context:2] = keys, values
        offsets = torch.multinomial(weights, n_pairs, replacement=False, generator=g)
        where = context + 2 * offsets
        tokens[i, where] = keys
        targets[i, where] = values
        gaps[i, where] = where - 2 * torch.arange(n_pairs)
    return MqarData(tokens, targets, gaps)


def _bucket(gap: int) -> str:
    low = 1
    while low * 4 <= gap:
        low *= 4
    return f"{low}-{low * 4 - 1}"


@torch.no_grad()
def run_mqar(run, state, opts: MqarOptions) -> dict:
    data = make_mqar(opts)
    device = next(run.model.parameters()).device
    correct = torch.zeros_like(data.targets, dtype=torch.bool)
    for start in range(0, opts.examples, opts.batch):
        x = data.tokens[start:start + opts.batch].to(device)
        logits, _ = run.model(x, expand_state(state, x.shape[0]))
        correct[start:start + opts.batch] = logits.argmax(-1).cpu() == data.targets[start:start + opts.batch]
    asked = data.targets != -100
    hits = correct[asked]
    by_gap: dict = {}
    for gap, hit in zip(data.gaps[asked].tolist(), hits.tolist()):
        entry = by_gap.setdefault(_bucket(gap), [0, 0])
        entry[0] += int(hit)
        entry[1] += 1
    buckets = sorted(by_gap, key=lambda b: int(b.split("-")[0]))
    return {
        "pairs": opts.pairs, "length": opts.length, "examples": opts.examples, "power_a": opts.power_a,
        "queries": int(asked.sum()), "accuracy": float(hits.float().mean()),
        "example_accuracy": float((correct | ~asked).all(-1).float().mean()),
        "chance": 1.0 / len(set(VALUES)),
        "by_gap": {b: {"accuracy": by_gap[b][0] / by_gap[b][1], "queries": by_gap[b][1]} for b in buckets},
    }
