"""Documents: the bundled corpus, a text file or a folder of them, and the train/validation split."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence, Union

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
"""The bundled corpus: public-domain English works, one UTF-8 `.txt` file each (see its README.md)."""

TEXT_SUFFIXES = (".txt", ".md")

Document = tuple[str, str]


def _read(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    # one newline convention, and the separator byte (NUL) kept out of the text
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def load_documents(path: Union[str, Path, None] = None) -> list[Document]:
    """Load documents as a list of `(name, text)`, one per file.

    - `None`: the bundled corpus (every `*.txt` in the corpus folder; its README is not a document).
    - a file: that file, whatever its suffix, named by its file name.
    - a folder: every `*.txt` and `*.md` below it, recursively, sorted by relative path (which is the
      name); hidden files and folders are skipped.

    Text is read as UTF-8 (invalid bytes become U+FFFD), newlines become `\\n`, and NUL characters are
    dropped (NUL is the document separator). Empty documents are skipped.
    """
    if path is None:
        base, files = CORPUS_DIR, sorted(CORPUS_DIR.glob("*.txt"))
    else:
        base = Path(path).expanduser()
        if base.is_file():
            files = [base]
        elif base.is_dir():
            files = sorted(
                (f for f in base.rglob("*")
                 if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES and not _is_hidden(f.relative_to(base))),
                key=lambda f: f.relative_to(base).as_posix(),
            )
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    documents = []
    for f in files:
        name = f.name if f == base else f.relative_to(base).as_posix()
        text = _read(f)
        if text.strip():
            documents.append((name, text))
    if not documents:
        where = "the bundled corpus" if path is None else str(path)
        raise ValueError(f"no documents in {where} (looked for non-empty {' and '.join(TEXT_SUFFIXES)} files)")
    return documents


def _rank(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"nldsl.data.split:{seed}:{name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _tail_cut(text: str, val_fraction: float) -> int:
    """Where the validation tail of `text` starts: at `1 - val_fraction` of it, moved on to the start
    of the next line when one begins within 1000 characters, and always leaving both parts non-empty."""
    cut = min(max(int(len(text) * (1.0 - val_fraction)), 1), len(text) - 1)
    newline = text.find("\n", cut, cut + 1000)
    if 0 <= newline < len(text) - 1:
        cut = newline + 1
    return cut


def split(
    documents: Sequence[Document], val_fraction: float = 0.05, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """Split documents into `(train, validation)`, deterministically for a given seed.

    Whole documents are held out when the corpus has enough of them for the fraction: round(n *
    val_fraction) documents (at least one, never all), chosen by a hash of (seed, name), so the choice
    of one document does not depend on which others are there. A corpus too small for that (one
    document, or fewer than about 1 / (2 * val_fraction): under 10 documents at 5%) holds out instead
    the last `val_fraction` of every document, cut at a line start; those tails are named
    `"<name>#tail"`. Both lists keep the input order. `val_fraction=0` returns `(documents, [])`.
    """
    docs = list(documents)
    if not docs:
        raise ValueError("split needs at least one document")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return docs, []
    n = len(docs)
    n_val = int(n * val_fraction + 0.5)
    if n == 1 or n_val == 0:
        train, val = [], []
        for name, text in docs:
            if len(text) < 2:
                train.append((name, text))
                continue
            cut = _tail_cut(text, val_fraction)
            train.append((name, text[:cut]))
            val.append((f"{name}#tail", text[cut:]))
        return train, val
    n_val = min(n_val, n - 1)
    order = sorted(range(n), key=lambda i: (_rank(seed, docs[i][0]), i))
    held = set(order[:n_val])
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]


__all__ = ["CORPUS_DIR", "TEXT_SUFFIXES", "load_documents", "split"]
