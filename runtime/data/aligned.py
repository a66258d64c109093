"""Aligned documents: every row of every batch starts at the beginning of a document or of a piece of one.

How the stream is laid out
--------------------------
Each epoch visits every document once, in the order `DocumentStream.epoch_order` gives (the packed
layout's shuffle). A document d of n tokens is read as the sequence [eos] + d + [eos]: its n + 1
targets are its tokens and the separator that ends it, the first of them predicted from the
separator alone. That sequence is cut into pieces of at most T+1 tokens that overlap by one, so that
every target falls in exactly one piece: piece k holds tokens [kT, kT + T + 1). The pieces of an epoch
are dealt in order, B to a batch, and the next epoch's follow without a gap; a piece shorter than T+1
is padded with `IGNORE` (-100) to the end of its row.

What a trainer does with it: the inputs are `tokens[:, :-1]` with `IGNORE` read as token 0, the targets
`tokens[:, 1:]`, and a target equal to `IGNORE` counts for nothing (`cross_entropy`'s default
`ignore_index`). Since padding only ever follows the real tokens of a row, and every model is causal, the
padding changes no output that counts. Every row starts from a fresh state: no memory and no attention
sees two documents, and a memory's chunks start at a document's first token. The price is the padding
(`padding`), and a document longer than T is learned in pieces that do not see each other.

`last_targets` is the number of targets of the last batch that count, for the trainer's mean. Batch n is
a pure function of (documents, seq_len, batch, seed, n): the position is the batch count, and
`state_dict()` resumes it exactly, as in the packed layout.
"""
from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from typing import Iterable, Optional

import torch

from .packing import DocumentStream, _as_tensors
from .tokenizer import EOS

IGNORE = -100


def _pieces(length: int, seq_len: int) -> int:
    """How many pieces of at most seq_len + 1 tokens, overlapping by one, cover a sequence of `length`."""
    return max(1, math.ceil((length - 1) / seq_len))


def _piece(doc: torch.Tensor, k: int, seq_len: int, eos: int) -> torch.Tensor:
    """Piece k of S = [eos] + doc + [eos] (positions 0 to n + 1), padded with IGNORE to seq_len + 1 tokens."""
    out = torch.full((seq_len + 1,), IGNORE, dtype=torch.long)
    n, start = doc.numel(), k * seq_len
    if start == 0:
        out[0] = eos
    if start <= n + 1 <= start + seq_len:
        out[n + 1 - start] = eos
    lo, hi = max(start - 1, 0), min(start + seq_len, n)  # the document's tokens in this piece: S[p] = doc[p - 1]
    if hi > lo:
        out[lo + 1 - start:hi + 1 - start] = doc[lo:hi].to(torch.long)
    return out


class AlignedStream(DocumentStream):
    """An endless, deterministic, exactly resumable stream of (B, T+1) batches whose rows start documents
    (or pieces of them), padded with IGNORE; see the module docstring."""

    layout = "aligned"

    def __init__(self, documents: Iterable, seq_len: int, batch: int, seed: int = 0, eos: int = EOS):
        super().__init__(documents, seq_len, batch, seed, eos)
        self._counts = [_pieces(d.numel() + 2, self.seq_len) for d in self._docs]
        self.pieces_per_epoch = sum(self._counts)
        self.tokens_per_epoch = sum(d.numel() + 1 for d in self._docs)  # the targets that count
        self._epochs: OrderedDict[int, tuple[list[int], list[int]]] = OrderedDict()

    @property
    def padding(self) -> float:
        """The share of an epoch's targets that are padding."""
        return 1.0 - self.tokens_per_epoch / (self.pieces_per_epoch * self.seq_len)

    @property
    def batches_per_epoch(self) -> float:
        return self.pieces_per_epoch / self.batch

    @property
    def epoch(self) -> int:
        """The epoch of the next batch's first piece."""
        return self.step * self.batch // self.pieces_per_epoch

    def _cursor(self, step: int) -> int:
        return step * self.batch  # pieces read

    def _epoch_table(self, epoch: int) -> tuple[list[int], list[int]]:
        """The epoch's document order and, per document in that order, the index of its first piece."""
        table = self._epochs.get(epoch)
        if table is None:
            order = self.epoch_order(epoch)
            starts, total = [], 0
            for i in order:
                starts.append(total)
                total += self._counts[i]
            table = self._epochs[epoch] = (order, starts)
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return table

    def piece(self, index: int) -> tuple[int, int]:
        """(document, piece) of the stream's piece `index`, counted over all epochs."""
        epoch, j = divmod(index, self.pieces_per_epoch)
        order, starts = self._epoch_table(epoch)
        slot = bisect.bisect_right(starts, j) - 1
        return order[slot], j - starts[slot]

    def batch_at(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `n` (B, T+1) and its reset mask: True at every row's first token (a fresh state) and at the
        first token of a document."""
        if n < 0:
            raise ValueError("batch index must be non-negative")
        rows, reset = [], torch.zeros(self.batch, self.seq_len + 1, dtype=torch.bool)
        for r in range(self.batch):
            doc, k = self.piece(n * self.batch + r)
            rows.append(_piece(self._docs[doc], k, self.seq_len, self.eos))
            reset[r, 0] = True
            reset[r, 1] = k == 0
        return torch.stack(rows), reset

    def next_with_reset(self) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, reset = super().next_with_reset()
        self.last_targets = int((tokens[:, 1:] != IGNORE).sum())
        return tokens, reset


def aligned_val_batches(documents: Iterable, seq_len: int, batch: int, n_batches: Optional[int] = None,
                        eos: int = EOS) -> list:
    """Validation batches in the aligned layout, each (B, T+1), to be evaluated from a fresh state: the
    pieces of the documents in the given order (no shuffle); `n_batches=None` gives them all (the last
    batch filled from the start again), a number that many batches of pieces spread evenly over them
    (repeated when there are fewer pieces than rows). No documents gives []."""
    seq_len, batch = int(seq_len), int(batch)
    if seq_len < 1 or batch < 1:
        raise ValueError(f"seq_len and batch must be positive, got {seq_len} and {batch}")
    docs = list(documents)
    if not docs or n_batches == 0:
        return []
    docs = _as_tensors(docs, eos)
    pieces = [(d, k) for d in docs for k in range(_pieces(d.numel() + 2, seq_len))]
    if n_batches is None:  # every piece once, the last batch filled from the start again
        chosen = [pieces[i % len(pieces)] for i in range(math.ceil(len(pieces) / batch) * batch)]
    else:  # spread evenly over the pieces (repeating them when there are fewer than rows)
        rows = n_batches * batch
        chosen = [pieces[i * len(pieces) // rows] for i in range(rows)]
    tokens = torch.stack([_piece(d, k, seq_len, eos) for d, k in chosen])
    return [tokens[b:b + batch].clone() for b in range(0, len(chosen), batch)]
