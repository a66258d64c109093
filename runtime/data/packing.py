"""Packing token streams into (B, T+1) batches: B parallel row streams, exactly resumable.

How the training stream is laid out
-----------------------------------
Each epoch visits every document once, in an order shuffled for that epoch (a pure function of the
seed and the epoch number). The epoch's documents are concatenated, each followed by the separator
`eos` (byte 0x00 for byte tokens), into N tokens, and cut into B contiguous shards of L = N // B
tokens (the last N mod B < B tokens of the epoch are not used). Row r of every batch reads shard r,
then a separator, then shard r of the next epoch, and so on: an endless stream per row

    row_r = shard_r(epoch 0) + [eos] + shard_r(epoch 1) + [eos] + ...

(a shard that already ends with a separator gets a second one there: an empty document, harmless),
and batch n holds, for every row, tokens [n*T, n*T + T] of that stream: T inputs and, shifted by one,
T targets. Batch n+1 starts where batch n's inputs stopped (its first token is batch n's last), so the
inputs of consecutive batches are one unbroken text per row: a `persist` memory that carries row r's
state into the next batch keeps reading the same text (`stream_rows`).

Why separators and a reset mask, not padding
--------------------------------------------
Documents are packed back to back and a row may cross a boundary. Padding every sequence to end at a
boundary would waste tokens and break the row continuity above, which persist memories rely on.
Instead the separator byte is in the input, so the model can learn that a new text begins, and each
batch comes with `reset`, a (B, T+1) bool tensor that is True at the first token of a document (the
token after a separator, and the first token of a row stream). Use `reset[:, :-1]` for the inputs.
For hard boundaries, the aligned layout (aligned.py, `nlc train --documents aligned`) starts every
row at a document and pads it instead.

Resuming
--------
Batch n is a pure function of (documents, seq_len, batch, seed, n), so the whole position is the
batch count: `state_dict()` gives plain ints (step, epoch, cursor and the settings and corpus
fingerprint it must be resumed with) and the layout's name (`packed`, or `aligned`:
runtime/data/aligned.py); the shuffle needs no generator state, since each epoch's order
is derived from (seed, epoch) by SHA-256. After `load_state_dict`, iteration yields exactly the
batches the uninterrupted stream would have yielded.
"""

from __future__ import annotations

import hashlib
import math
import random
import zlib
from collections import OrderedDict
from typing import Iterable, Optional, Sequence

import torch

from .tokenizer import EOS

STATE_VERSION = 1


def _as_tensors(documents: Iterable, eos: int) -> list[torch.Tensor]:
    docs = [torch.as_tensor(d if not isinstance(d, (bytes, bytearray)) else list(d), dtype=torch.long).flatten()
            for d in documents]
    if not docs:
        raise ValueError("no documents to pack")
    lo = min([eos] + [int(d.min()) for d in docs if d.numel()])
    hi = max([eos] + [int(d.max()) for d in docs if d.numel()])
    if lo < 0:
        raise ValueError("token ids must be non-negative")
    # bytes stay bytes in memory: a large corpus costs one byte per token, not eight
    dtype = torch.uint8 if hi < 256 else (torch.int32 if hi < 2**31 else torch.long)
    return [d.to(dtype) for d in docs]


def _concat(docs: Sequence[torch.Tensor], order: Iterable[int], eos: int) -> torch.Tensor:
    sep = torch.tensor([eos], dtype=docs[0].dtype)
    parts = []
    for i in order:
        parts.append(docs[i])
        parts.append(sep)
    return torch.cat(parts)


def _reset_mask(tokens: torch.Tensor, previous: torch.Tensor, eos: int) -> torch.Tensor:
    """True where a token starts a document: its predecessor (`previous` for column 0) is `eos`."""
    before = torch.cat([previous.view(-1, 1), tokens[:, :-1]], dim=1)
    return before == eos


class DocumentStream:
    """What the two layouts share: the documents, their checksum, each epoch's shuffle, iteration and an
    exact resume. A subclass lays out `batch_at(n)` and says how far the stream has read (`_cursor`)."""

    layout = ""
    stream_rows = False

    def __init__(self, documents: Iterable, seq_len: int, batch: int, seed: int = 0, eos: int = EOS):
        if int(seq_len) < 1 or int(batch) < 1:
            raise ValueError(f"seq_len and batch must be positive, got {seq_len} and {batch}")
        self.seq_len, self.batch, self.seed, self.eos = int(seq_len), int(batch), int(seed), int(eos)
        self._docs = _as_tensors(documents, self.eos)
        crc = 0
        for d in self._docs:
            crc = zlib.crc32(d.numel().to_bytes(8, "little"), crc)
            crc = zlib.crc32(d.numpy(), crc)
        self.checksum = crc
        self.step = 0
        self.last_reset: Optional[torch.Tensor] = None
        self.last_targets: Optional[int] = None  # targets of the last batch that count (None: all of them)

    @property
    def num_documents(self) -> int:
        return len(self._docs)

    def epoch_order(self, epoch: int) -> list[int]:
        """The order of the documents in `epoch`: a shuffle seeded by SHA-256 of (seed, epoch)."""
        digest = hashlib.sha256(f"nldsl.data.order:{self.seed}:{int(epoch)}".encode("utf-8")).digest()
        order = list(range(len(self._docs)))
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
        return order

    def batch_at(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _cursor(self, step: int) -> int:
        raise NotImplementedError

    # -- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> "DocumentStream":
        return self

    def next_with_reset(self) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, reset = self.batch_at(self.step)
        self.step += 1
        self.last_reset = reset
        return tokens, reset

    def __next__(self) -> torch.Tensor:
        return self.next_with_reset()[0]

    # -- resuming ----------------------------------------------------------------------------------

    def _settings(self) -> dict:
        return {
            "seed": self.seed, "seq_len": self.seq_len, "batch": self.batch, "eos": self.eos,
            "documents": len(self._docs), "tokens_per_epoch": self.tokens_per_epoch, "checksum": self.checksum,
        }

    def state_dict(self) -> dict:
        """The stream's position as a JSON-serialisable dict of ints (and its layout)."""
        return {"version": STATE_VERSION, "layout": self.layout, "step": self.step, "epoch": self.epoch,
                "cursor": self._cursor(self.step), **self._settings()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (from `state_dict()` of a stream over the same documents and settings)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown data stream state version {state.get('version')!r}")
        saved = {"layout": state.get("layout", "packed"), **state}  # streams saved before layouts were packed
        mismatched = [f"{key}: saved {saved.get(key)!r}, now {value!r}"
                      for key, value in {"layout": self.layout, **self._settings()}.items() if saved.get(key) != value]
        if mismatched:
            raise ValueError("the data stream cannot resume exactly with different data or settings: "
                             + "; ".join(mismatched))
        step = int(state["step"])
        if step < 0 or int(state.get("cursor", self._cursor(step))) != self._cursor(step):
            raise ValueError("inconsistent data stream state (step and cursor disagree)")
        self.step = step
        self.last_reset = None
        self.last_targets = None


class PackedStream(DocumentStream):
    """An endless, deterministic, exactly resumable stream of (B, T+1) LongTensor batches.

    `documents` are token-id sequences (lists, tensors or bytes), one per document. `next(stream)`
    gives the next batch; `next_with_reset()` gives `(tokens, reset)`; `batch_at(n)` gives batch n
    without moving. `last_reset` holds the reset mask of the batch `next` gave last. See the module
    docstring for the layout, the separator and the reset mask.
    """

    layout = "packed"
    stream_rows = True
    """Row r of batch n+1 continues row r of batch n (the same text, without a gap)."""

    def __init__(self, documents: Iterable, seq_len: int, batch: int, seed: int = 0, eos: int = EOS):
        super().__init__(documents, seq_len, batch, seed, eos)
        self.tokens_per_epoch = sum(d.numel() for d in self._docs) + len(self._docs)
        self.shard_len = self.tokens_per_epoch // self.batch
        if self.shard_len < 1:
            raise ValueError(
                f"{self.tokens_per_epoch} tokens cannot fill {self.batch} rows: use fewer rows or more text"
            )
        self._period = self.shard_len + 1  # a shard and the separator that joins it to the next epoch's
        self._epochs: OrderedDict[int, torch.Tensor] = OrderedDict()

    # -- the layout -------------------------------------------------------------------------------

    @property
    def batches_per_epoch(self) -> float:
        """How many batches one pass over the corpus takes (epochs need not align with batches)."""
        return self._period / self.seq_len

    @property
    def epoch(self) -> int:
        """The epoch the rows are reading at the start of the next batch."""
        return self.step * self.seq_len // self._period

    def _cursor(self, step: int) -> int:
        return step * self.seq_len

    def _epoch_rows(self, epoch: int) -> torch.Tensor:
        rows = self._epochs.get(epoch)
        if rows is None:
            flat = _concat(self._docs, self.epoch_order(epoch), self.eos)
            rows = flat[: self.batch * self.shard_len].view(self.batch, self.shard_len)
            self._epochs[epoch] = rows
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return rows

    def _window(self, start: int, length: int) -> torch.Tensor:
        """Tokens [start, start + length) of every row stream, as a (B, length) LongTensor."""
        out = torch.empty(self.batch, length, dtype=torch.long)
        pos, filled = start, 0
        while filled < length:
            epoch, offset = divmod(pos, self._period)
            if offset == self.shard_len:  # the separator between two epochs' shards
                out[:, filled] = self.eos
                take = 1
            else:
                take = min(self.shard_len - offset, length - filled)
                out[:, filled:filled + take] = self._epoch_rows(epoch)[:, offset:offset + take]
            filled += take
            pos += take
        return out

    def batch_at(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `n` of the stream and its reset mask, both (B, T+1); does not move the stream."""
        if n < 0:
            raise ValueError("batch index must be non-negative")
        start = n * self.seq_len
        if start == 0:
            tokens = self._window(0, self.seq_len + 1)
            previous = torch.full((self.batch,), self.eos, dtype=torch.long)  # a row stream starts a document
        else:
            window = self._window(start - 1, self.seq_len + 2)
            previous, tokens = window[:, 0], window[:, 1:]
        return tokens, _reset_mask(tokens, previous, self.eos)


def val_batches(
    documents: Iterable,
    seq_len: int,
    batch: int,
    n_batches: Optional[int] = None,
    eos: int = EOS,
    with_reset: bool = False,
) -> list:
    """Deterministic validation batches, each (B, T+1), meant to be evaluated from a fresh state.

    The documents are concatenated in the given order (no shuffle), each followed by `eos`, and read as
    windows of T+1 tokens at multiples of T. `n_batches=None` gives every full batch of such windows
    (at least one); a number picks that many batches of windows spread evenly over the whole text, so
    a few batches still sample every document. When the text is too short for that many disjoint
    windows, evenly spaced overlapping windows are used (and a text shorter than one window is
    repeated). With `with_reset=True` each item is `(tokens, reset)`, the reset mask True at each
    row's first token and after every separator. No documents (an empty validation split) gives [].
    """
    seq_len, batch = int(seq_len), int(batch)
    if seq_len < 1 or batch < 1:
        raise ValueError(f"seq_len and batch must be positive, got {seq_len} and {batch}")
    if n_batches is not None and n_batches < 0:
        raise ValueError("n_batches must be non-negative")
    docs = list(documents)
    if not docs or n_batches == 0:
        return []
    text = _concat(_as_tensors(docs, eos), range(len(docs)), eos).to(torch.long)
    windows = (text.numel() - 1) // seq_len
    rows = max(1, windows // batch) * batch if n_batches is None else n_batches * batch
    if rows <= windows:
        starts = [(i * windows // rows) * seq_len for i in range(rows)]
    else:
        if text.numel() < seq_len + 1:
            text = text.repeat(math.ceil((seq_len + 1) / text.numel()))
        last = text.numel() - (seq_len + 1)
        starts = [round(i * last / max(rows - 1, 1)) for i in range(rows)]
    tokens = torch.stack([text[s:s + seq_len + 1] for s in starts])
    out = []
    for b in range(0, rows, batch):
        chunk = tokens[b:b + batch].clone()
        if with_reset:
            fresh = torch.full((batch,), eos, dtype=torch.long)  # each row starts from a fresh state
            out.append((chunk, _reset_mask(chunk, fresh, eos)))
        else:
            out.append(chunk)
    return out
