"""The training data pipeline (nldsl.runtime.data): corpus, tokenizer, split, packing, resume."""
from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest
import torch

from nldsl.runtime.data import (
    CORPUS_DIR, EOS, ByteTokenizer, PackedStream, bits_per_byte, load_documents, split, val_batches,
)

TOK = ByteTokenizer()


def synthetic_docs(lengths, seed=0):
    """Documents of random non-zero byte ids (0 is the separator), one per length."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 256, (n,), generator=g).tolist() for n in lengths]


def oracle_rows(stream: PackedStream, docs, epochs: int) -> list[list[int]]:
    """The row streams as the layout describes them, built the slow and obvious way."""
    rows = [[] for _ in range(stream.batch)]
    for epoch in range(epochs):
        flat = []
        for i in stream.epoch_order(epoch):
            flat += list(docs[i]) + [stream.eos]
        shard = len(flat) // stream.batch
        for r in range(stream.batch):
            rows[r] += flat[r * shard:(r + 1) * shard] + [stream.eos]
    return rows


# -- tokenizer ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "plain ASCII, with\nnewlines\tand tabs", "Opticæ × 2 — naïve café", "日本語 🙂 Ελληνικά"]
)
def test_tokenizer_round_trip(text):
    ids = TOK.encode(text)
    assert ids == list(text.encode("utf-8")) and all(0 <= i < 256 for i in ids)
    assert TOK.decode(ids) == text
    assert TOK.decode(torch.tensor(ids)) == text
    assert len(TOK) == TOK.vocab_size == 256 and TOK.eos_id == EOS == 0


def test_tokenizer_decodes_a_cut_character_with_a_replacement():
    ids = TOK.encode("café")
    assert len(ids) == 5  # é is two bytes
    assert TOK.decode(ids[:-1]) == "caf\ufffd"
    with pytest.raises(ValueError):
        TOK.decode([300])


def test_bits_per_byte():
    assert bits_per_byte(math.log(2)) == pytest.approx(1.0)
    assert bits_per_byte(math.log(256)) == pytest.approx(8.0)
    assert bits_per_byte(math.log(2), bytes_per_token=4.0) == pytest.approx(0.25)
    assert float(bits_per_byte(torch.tensor(2 * math.log(2)))) == pytest.approx(2.0)


# -- documents -----------------------------------------------------------------------------------


def test_load_documents_from_a_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.md").write_text("# Heading\nmarkdown body\n", encoding="utf-8")
    (tmp_path / "b" / "a.txt").write_bytes(b"windows\r\nline\x00 ends\r\n")
    (tmp_path / "c.txt").write_text("top level café\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "notes.rst").write_text("not a document\n", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("hidden\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"bad \xff byte\n")

    docs = load_documents(tmp_path)
    assert [name for name, _ in docs] == ["b/a.txt", "b/z.md", "bad.txt", "c.txt"]
    texts = dict(docs)
    assert texts["b/a.txt"] == "windows\nline ends\n"  # newlines normalised, the separator byte dropped
    assert texts["c.txt"] == "top level café\n"
    assert texts["bad.txt"] == "bad \ufffd byte\n"
    assert load_documents(str(tmp_path)) == docs


def test_load_documents_from_a_file_and_errors(tmp_path):
    path = tmp_path / "one.text"
    path.write_text("a single document\n", encoding="utf-8")
    assert load_documents(path) == [("one.text", "a single document\n")]
    with pytest.raises(FileNotFoundError):
        load_documents(tmp_path / "missing")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="no documents"):
        load_documents(tmp_path / "sub")


def test_default_corpus_is_the_stated_english_text():
    docs = load_documents()
    files = sorted(CORPUS_DIR.glob("*.txt"))
    assert [name for name, _ in docs] == [f.name for f in files]
    assert len(docs) == 5

    readme = (CORPUS_DIR / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+\.txt)` \|.*\| ([\d,]+) \|$", readme, re.M)
    stated = {name: int(size.replace(",", "")) for name, size in rows}
    actual = {f.name: f.stat().st_size for f in files}
    assert stated == actual
    total = sum(actual.values())
    assert f"{total:,} bytes" in readme
    assert 1_000_000 < total <= 3_000_000
    assert sum(len(text.encode("utf-8")) for _, text in docs) == total  # read whole, nothing dropped

    for name, text in docs:
        assert "gutenberg" not in text.lower(), name  # packaging stripped
        assert "\r" not in text and "\x00" not in text
        words = re.findall(r"[a-z]+", text.lower())
        counts = Counter(words)
        assert len(words) > 15_000, name
        for common in ("the", "and", "of", "to"):
            assert counts[common] / len(words) > 0.01, (name, common)
        letters = sum(c.isascii() and (c.isalpha() or c.isspace()) for c in text)
        assert letters / len(text) > 0.9, name
    texts = dict(docs)
    assert "Alice was beginning to get very tired" in texts["alice-in-wonderland.txt"]
    assert "Of Man's first disobedience" in texts["paradise-lost.txt"]
    assert "Opticæ" in texts["opticks.txt"]


# -- split -----------------------------------------------------------------------------------------


def many_docs(n):
    return [(f"doc{i:03d}.txt", f"document {i}\n" * 20) for i in range(n)]


def test_split_holds_out_whole_documents_deterministically():
    docs = many_docs(100)
    train, val = split(docs, val_fraction=0.05, seed=0)
    assert len(val) == 5 and len(train) == 95
    assert sorted(train + val) == sorted(docs)
    assert split(docs, 0.05, 0) == (train, val)
    assert split(list(reversed(docs)), 0.05, 0)[1] == list(reversed(val))  # the choice ignores input order
    assert [d for d in docs if d in train] == train  # input order kept
    assert split(docs, 0.05, 1)[1] != val
    # choosing by name: a document held out stays held out when unrelated documents are removed
    kept = [d for d in docs if d in val or int(d[0][3:6]) % 2 == 0]
    assert set(val) >= set(split(kept, 0.05, 0)[1])
    assert len(split(docs, 0.3, 0)[1]) == 30
    assert split(docs, 0.0, 0) == (docs, [])


def test_split_with_few_documents_holds_out_tails():
    one = [("only.txt", "".join(f"line {i}\n" for i in range(1000)))]
    train, val = split(one, val_fraction=0.05)
    assert [n for n, _ in train] == ["only.txt"] and [n for n, _ in val] == ["only.txt#tail"]
    assert train[0][1] + val[0][1] == one[0][1]
    assert val[0][1].startswith("line ") and train[0][1].endswith("\n")  # cut at a line start
    assert abs(len(val[0][1]) / len(one[0][1]) - 0.05) < 0.01
    assert split(one, 0.5) != (one, [])  # never holds out the only document whole
    long_line = [("wide.txt", "x" * 50_000 + "\n")]  # no line start near the cut: cut where the fraction says
    assert len(split(long_line, 0.1)[1][0][1]) == 5_001

    default = load_documents()
    train, val = split(default)  # five documents: too few to hold out whole ones at 5%
    assert len(train) == len(val) == 5
    for (name, text), (head_name, head), (tail_name, tail) in zip(default, train, val):
        assert head_name == name and tail_name == name + "#tail" and head + tail == text
        assert 0.04 < len(tail) / len(text) < 0.06
    with pytest.raises(ValueError):
        split([])
    with pytest.raises(ValueError):
        split(one, val_fraction=1.0)


# -- packing -----------------------------------------------------------------------------------


def test_packed_batches_follow_the_row_stream_layout():
    docs = synthetic_docs([300, 41, 7, 1000, 128, 1, 333])
    stream = PackedStream(docs, seq_len=16, batch=3, seed=5)
    total = sum(map(len, docs)) + len(docs)
    assert stream.tokens_per_epoch == total and stream.shard_len == total // 3
    n = 400  # several epochs (an epoch is about 43 batches here)
    rows = oracle_rows(stream, docs, epochs=n * 16 // (stream.shard_len + 1) + 2)
    for step in range(n):
        batch = next(stream)
        assert batch.shape == (3, 17) and batch.dtype == torch.long
        for r in range(3):
            assert batch[r].tolist() == rows[r][step * 16: step * 16 + 17]
        # targets are the inputs shifted by one
        x, y = batch[:, :-1], batch[:, 1:]
        assert torch.equal(y[:, :-1], x[:, 1:])
    assert stream.epoch >= 8


def test_each_epoch_visits_every_document_once_in_a_shuffled_order():
    docs = synthetic_docs([50 + 10 * i for i in range(12)], seed=1)
    stream = PackedStream(docs, seq_len=8, batch=4, seed=0)
    orders = [stream.epoch_order(e) for e in range(4)]
    assert all(sorted(o) == list(range(12)) for o in orders)
    assert len({tuple(o) for o in orders}) == 4
    assert PackedStream(docs, 8, 4, seed=0).epoch_order(3) == orders[3]
    assert PackedStream(docs, 8, 4, seed=1).epoch_order(0) != orders[0]
    # the B shards of an epoch, read row after row, are the epoch's text (less the last N mod B tokens)
    flat = []
    for i in orders[0]:
        flat += docs[i] + [EOS]
    rows = stream._epoch_rows(0)
    assert rows.flatten().tolist() == flat[: 4 * stream.shard_len]
    assert len(flat) - 4 * stream.shard_len < 4


def test_reset_marks_document_starts():
    docs = synthetic_docs([37, 5, 90, 64, 12, 200])
    stream = PackedStream(docs, seq_len=10, batch=2, seed=3)
    first, reset = stream.next_with_reset()
    assert reset.shape == first.shape and reset.dtype == torch.bool
    assert reset[:, 0].all()  # each row stream starts a document
    assert torch.equal(stream.last_reset, reset)
    previous = first
    for _ in range(150):
        tokens, reset = stream.next_with_reset()
        before = torch.cat([previous[:, -2:-1], tokens[:, :-1]], dim=1)  # the token before each position
        assert torch.equal(reset, before == EOS)
        previous = tokens


def test_reset_on_real_text_points_at_document_beginnings():
    texts = ["First document. " * 30, "Second one, rather different. " * 20, "Third! " * 50]
    stream = PackedStream([TOK.encode(t) for t in texts], seq_len=64, batch=2, seed=0)
    starts = set()
    for _ in range(40):
        tokens, reset = stream.next_with_reset()
        for r, t in zip(*torch.nonzero(reset, as_tuple=True)):
            starts.add(TOK.decode(tokens[r, t:t + 6]))
    assert {"First ", "Second", "Third!"} <= starts


def test_rows_continue_across_batches():
    docs = [TOK.encode(text) for _, text in load_documents()]
    stream = PackedStream(docs, seq_len=128, batch=4, seed=0)
    assert stream.stream_rows
    batches = [next(stream) for _ in range(6)]
    for a, b in zip(batches, batches[1:]):
        assert torch.equal(b[:, 0], a[:, -1])
    works, checked = [t for _, t in load_documents()], 0
    for r in range(4):
        inputs = torch.cat([b[r, :-1] for b in batches])
        if EOS not in inputs.tolist():  # row r's inputs over six batches: one unbroken passage of a work
            text = TOK.decode(inputs)
            assert sum(text in t for t in works) == 1, r
            checked += 1
    assert checked >= 3


def test_stream_is_deterministic_given_the_seed():
    docs = synthetic_docs([120, 80, 400, 60])
    a = [next(PackedStream(docs, 12, 3, seed=7))]
    s1, s2, s3 = PackedStream(docs, 12, 3, seed=7), PackedStream(docs, 12, 3, seed=7), PackedStream(docs, 12, 3, seed=8)
    one = [next(s1) for _ in range(60)]
    two = [next(s2) for _ in range(60)]
    three = [next(s3) for _ in range(60)]
    assert all(torch.equal(x, y) for x, y in zip(one, two)) and torch.equal(a[0], one[0])
    assert not all(torch.equal(x, y) for x, y in zip(one, three))
    assert torch.equal(s1.batch_at(17)[0], one[17]) and s1.step == 60


@pytest.mark.parametrize("interrupt_at", [0, 1, 13, 44, 45, 97])
def test_exact_resume(interrupt_at):
    docs = synthetic_docs([200, 31, 77, 150, 9, 420], seed=4)
    reference = PackedStream(docs, seq_len=9, batch=4, seed=11)
    expected = [reference.next_with_reset() for _ in range(interrupt_at + 60)]

    first = PackedStream(docs, seq_len=9, batch=4, seed=11)
    for _ in range(interrupt_at):
        next(first)
    saved = json.loads(json.dumps(first.state_dict()))  # plain JSON
    assert saved["layout"] == "packed" and all(isinstance(v, int) for k, v in saved.items() if k != "layout")
    assert saved["step"] == interrupt_at and saved["cursor"] == interrupt_at * 9

    resumed = PackedStream(docs, seq_len=9, batch=4, seed=11)
    resumed.load_state_dict(saved)
    assert resumed.epoch == saved["epoch"] == first.epoch
    for tokens, reset in expected[interrupt_at:]:
        got, got_reset = resumed.next_with_reset()
        assert torch.equal(got, tokens) and torch.equal(got_reset, reset)


def test_resume_refuses_other_data_or_settings():
    docs = synthetic_docs([100, 200, 300])
    stream = PackedStream(docs, 8, 2, seed=0)
    next(stream)
    state = stream.state_dict()
    others = (PackedStream(docs, 8, 2, seed=1), PackedStream(docs, 9, 2, seed=0), PackedStream(docs, 8, 3, seed=0),
              PackedStream(synthetic_docs([100, 200, 300], seed=9), 8, 2, seed=0))
    for other in others:
        with pytest.raises(ValueError, match="resume"):
            other.load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        stream.load_state_dict({**state, "version": 99})
    with pytest.raises(ValueError, match="inconsistent"):
        stream.load_state_dict({**state, "cursor": 3})


def test_packing_input_checks():
    with pytest.raises(ValueError):
        PackedStream([], 8, 2)
    with pytest.raises(ValueError):
        PackedStream([[1, 2]], 8, 4)  # 3 tokens cannot fill 4 rows
    with pytest.raises(ValueError):
        PackedStream([[1, 2]], 0, 1)
    tiny = PackedStream([[5, 6]], seq_len=8, batch=1)  # shorter than a row: the stream repeats it
    assert next(tiny).tolist() == [[5, 6, 0, 0, 5, 6, 0, 0, 5]]
    wide = PackedStream([[300, 1, 2], [4000]], seq_len=3, batch=2, eos=7)  # non-byte ids keep their values
    seen = torch.cat([next(wide) for _ in range(4)]).unique().tolist()
    assert seen == [1, 2, 7, 300, 4000]


# -- validation -----------------------------------------------------------------------------------


def test_val_batches_are_deterministic_windows_of_the_text():
    docs = synthetic_docs([500, 300, 250], seed=2)
    text = []
    for d in docs:
        text += d + [EOS]
    every = val_batches(docs, seq_len=20, batch=4)
    windows = (len(text) - 1) // 20
    assert len(every) == windows // 4
    for b, batch in enumerate(every):
        assert batch.shape == (4, 21) and batch.dtype == torch.long
        for r in range(4):
            k = b * 4 + r
            assert batch[r].tolist() == text[k * 20: k * 20 + 21]
    few = val_batches(docs, 20, 4, n_batches=2)
    again = val_batches(docs, 20, 4, n_batches=2)
    assert len(few) == 2 and all(torch.equal(x, y) for x, y in zip(few, again))
    starts = []
    for batch in few:
        for row in batch.tolist():
            starts.append(next(s for s in range(0, len(text), 20) if text[s:s + 21] == row))
    assert starts == sorted(starts) and starts[-1] > len(text) // 2  # spread over the whole text

    with_reset = val_batches(docs, 20, 4, n_batches=1, with_reset=True)
    (tokens, reset), = with_reset
    assert reset[:, 0].all()
    assert torch.equal(reset[:, 1:], tokens[:, :-1] == EOS)
    assert val_batches([], 20, 4) == [] and val_batches(docs, 20, 4, n_batches=0) == []


def test_val_batches_from_too_little_text():
    short = [[1, 2, 3, 4, 5]]
    (batch,) = val_batches(short, seq_len=8, batch=2)
    assert batch.shape == (2, 9)
    assert batch[0].tolist() == [1, 2, 3, 4, 5, 0, 1, 2, 3]  # repeated to fill one window
    many = val_batches([list(range(1, 60))], seq_len=10, batch=4, n_batches=3)  # more rows than windows
    assert len(many) == 3 and all(b.shape == (4, 11) for b in many)


def test_the_pipeline_end_to_end_on_the_default_corpus():
    train, val = split(load_documents(), seed=0)
    stream = PackedStream([TOK.encode(t) for _, t in train], seq_len=256, batch=8, seed=0)
    batch = next(stream)
    assert batch.shape == (8, 257) and int(batch.max()) < 256
    assert 700 < stream.batches_per_epoch < 900
    evals = val_batches([TOK.encode(t) for _, t in val], 256, 8, 4)
    assert len(evals) == 4 and all(b.shape == (8, 257) for b in evals)
    assert not any(torch.equal(e, batch) for e in evals)
