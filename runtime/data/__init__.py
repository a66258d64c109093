"""Training data for `nlc train` (``nldsl.runtime.data``): text in, (B, T+1) token batches out.

- `load_documents(path=None)`: the bundled public-domain English corpus, a text file, or a folder.
- `split(documents, val_fraction, seed)`: a deterministic train/validation split.
- `ByteTokenizer`: UTF-8 bytes as tokens (vocabulary 256); byte 0x00 (`EOS`) separates documents.
- `PackedStream`: B parallel row streams over shuffled epochs, with a reset mask at document starts;
  row r of each batch continues row r of the one before; `state_dict()` resumes it exactly.
- `AlignedStream`: every row starts a document (or a piece of a long one), padded with `IGNORE`;
  `aligned_val_batches` the same for validation (aligned.py).
- `val_batches`: fixed validation batches; `bits_per_byte`: nats per token to bits per byte.
"""

from .documents import CORPUS_DIR, TEXT_SUFFIXES, load_documents, split
from .aligned import IGNORE, AlignedStream, aligned_val_batches
from .packing import PackedStream, val_batches
from .tokenizer import EOS, ByteTokenizer, bits_per_byte

__all__ = [
    "CORPUS_DIR", "EOS", "IGNORE", "AlignedStream", "ByteTokenizer", "PackedStream", "TEXT_SUFFIXES",
    "aligned_val_batches", "bits_per_byte", "load_documents", "split", "val_batches",
]
