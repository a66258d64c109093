"""Byte-level tokens: one token per UTF-8 byte, vocabulary 256, byte 0x00 reserved as the separator."""

from __future__ import annotations

import math
from typing import Iterable

EOS = 0
"""The document separator: the NUL byte. It never occurs in text (`load_documents` removes any that
do), so a byte-level model with vocabulary 256 needs no extra id to see where one document ends and
the next begins. A newline (0x0A) could not serve: it is everywhere inside documents."""


class ByteTokenizer:
    """UTF-8 bytes as token ids. `decode` replaces invalid sequences (a cut multi-byte character)
    with U+FFFD instead of raising, so any slice of a token stream decodes."""

    vocab_size = 256
    eos_id = EOS

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        if hasattr(ids, "tolist"):  # a tensor or an array
            ids = ids.tolist()
        try:
            data = bytes(int(i) for i in ids)
        except ValueError as err:
            raise ValueError(f"byte tokens are 0..255: {err}") from None
        return data.decode("utf-8", errors="replace")


def bits_per_byte(loss_nats_per_token, bytes_per_token: float = 1.0):
    """Convert a mean next-token loss in nats into bits per byte of text.

    For byte-level tokens one token is one byte, so this is the loss divided by ln 2; pass the corpus'
    average bytes per token for another tokenizer. Works on floats and on tensors.
    """
    if bytes_per_token <= 0:
        raise ValueError("bytes_per_token must be positive")
    return loss_nats_per_token / (math.log(2.0) * bytes_per_token)
