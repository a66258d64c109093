"""The aligned layout (runtime/data/aligned.py): every row starts a document or a piece of one, every
target of every document is in exactly one piece per epoch, padding is IGNORE, and the stream resumes
exactly."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, strategies as st

from drawing import drawing
from nldsl.runtime.data import IGNORE, AlignedStream, PackedStream, aligned_val_batches

EOS = 0


def documents(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 256, (n,), generator=gen).tolist() for n in lengths]


def sequence(doc):
    return [EOS] + list(doc) + [EOS]


LENGTHS = [3, 10, 0, 7, 25, 1, 16]


@pytest.mark.parametrize("seq_len", [1, 4, 8, 30])
def test_each_epoch_reads_every_target_of_every_document_once_in_its_order(seq_len):
    docs = documents(LENGTHS)
    stream = AlignedStream(docs, seq_len=seq_len, batch=3, seed=5)
    pieces = stream.pieces_per_epoch
    rows = torch.cat([stream.batch_at(n)[0] for n in range(-(-2 * pieces // 3))])[:2 * pieces]
    for epoch in range(2):
        got, seen = {}, []
        for row in rows[epoch * pieces:(epoch + 1) * pieces]:
            real = row[row != IGNORE].tolist()
            assert len(real) >= 2 and (row[len(real):] == IGNORE).all()  # padding only at the end
            seen.append(real)
        order = stream.epoch_order(epoch)
        expected = []
        for d in order:
            s = sequence(docs[d])
            expected += [s[k * seq_len:k * seq_len + seq_len + 1] for k in range(-(-(len(s) - 1) // seq_len))]
        assert seen == expected
        for d in order:  # the targets, concatenated piece by piece, are each document's once
            got[d] = []
        for real, (d, k) in zip(seen, [stream.piece(epoch * pieces + j) for j in range(pieces)]):
            got[d] += real[1:]
        assert got == {d: list(docs[d]) + [EOS] for d in order}
    assert stream.tokens_per_epoch == sum(n + 1 for n in LENGTHS)
    assert stream.padding == pytest.approx(1 - stream.tokens_per_epoch / (pieces * seq_len))


def test_the_targets_that_count_and_the_reset_mask():
    docs = documents(LENGTHS)
    stream = AlignedStream(docs, seq_len=8, batch=4, seed=1)
    for n in range(5):
        tokens, reset = stream.next_with_reset()
        assert stream.last_targets == int((tokens[:, 1:] != IGNORE).sum())
        assert reset[:, 0].all() and not reset[:, 2:].any()
        firsts = [stream.piece(n * 4 + r)[1] == 0 for r in range(4)]
        assert reset[:, 1].tolist() == firsts
        assert all(tokens[r, 0] == EOS for r in range(4) if firsts[r])


@pytest.mark.parametrize("interrupt_at", [0, 1, 6, 11, 23])
def test_an_aligned_stream_resumes_exactly(interrupt_at):
    docs = documents(LENGTHS, seed=3)
    reference = AlignedStream(docs, seq_len=6, batch=3, seed=9)
    expected = [reference.next_with_reset() for _ in range(interrupt_at + 15)]
    first = AlignedStream(docs, seq_len=6, batch=3, seed=9)
    for _ in range(interrupt_at):
        next(first)
    saved = json.loads(json.dumps(first.state_dict()))
    assert saved["layout"] == "aligned" and saved["cursor"] == 3 * interrupt_at
    resumed = AlignedStream(docs, seq_len=6, batch=3, seed=9)
    resumed.load_state_dict(saved)
    assert resumed.epoch == first.epoch
    for tokens, reset in expected[interrupt_at:]:
        got, got_reset = resumed.next_with_reset()
        assert torch.equal(got, tokens) and torch.equal(got_reset, reset)


def test_a_stream_refuses_the_other_layouts_state():
    docs = documents(LENGTHS)
    aligned, packed = AlignedStream(docs, 6, 2), PackedStream(docs, 6, 2)
    with pytest.raises(ValueError, match="layout: saved 'packed', now 'aligned'"):
        aligned.load_state_dict(packed.state_dict())
    with pytest.raises(ValueError, match="layout: saved 'aligned', now 'packed'"):
        packed.load_state_dict(aligned.state_dict())
    old = {k: v for k, v in packed.state_dict().items() if k != "layout"}  # saved before layouts
    PackedStream(docs, 6, 2).load_state_dict(old)
    with pytest.raises(ValueError, match="seq_len: saved 6, now 7"):
        AlignedStream(docs, 7, 2).load_state_dict(aligned.state_dict())


def test_validation_batches_in_the_aligned_layout():
    docs = documents(LENGTHS)
    every = aligned_val_batches(docs, seq_len=8, batch=3)
    pieces = [row[row != IGNORE].tolist() for b in every for row in b]
    expected = [sequence(d)[k * 8:k * 8 + 9] for d in docs for k in range(-(-(len(d) + 1) // 8))]
    assert pieces[:len(expected)] == expected and len(pieces) == -(-len(expected) // 3) * 3
    assert pieces[len(expected):] == expected[:len(pieces) - len(expected)]  # the last batch filled from the start
    two = aligned_val_batches(docs, seq_len=8, batch=3, n_batches=2)
    assert len(two) == 2 and all(b.shape == (3, 9) for b in two)
    assert [row[row != IGNORE].tolist() for b in two for row in b] == [expected[i * len(expected) // 6] for i in range(6)]
    many = aligned_val_batches(documents([2]), seq_len=8, batch=2, n_batches=2)  # fewer pieces than rows
    assert all(torch.equal(row, many[0][0]) for b in many for row in b)
    assert aligned_val_batches([], 8, 2) == [] and aligned_val_batches(docs, 8, 2, n_batches=0) == []


@drawing(40)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=9), st.integers(1, 12), st.integers(1, 5),
       st.integers(0, 2**31), st.integers(0, 30))
def test_any_corpus_is_read_whole_once_an_epoch_and_resumes_anywhere(lengths, seq_len, batch, seed, stop):
    """Every epoch, the pieces' targets put together give each document and its separator exactly once;
    a stream stopped after `stop` batches and resumed from its state goes on as one never stopped."""
    docs = documents(lengths, seed=seed % 1000)
    stream = AlignedStream(docs, seq_len=seq_len, batch=batch, seed=seed)
    pieces = stream.pieces_per_epoch
    batches = [stream.batch_at(n)[0] for n in range(-(-2 * pieces // batch) + 1)]
    rows = torch.cat(batches)
    for epoch in range(2):
        got = {d: [] for d in range(len(docs))}
        for j in range(pieces):
            row = rows[epoch * pieces + j]
            real = row[row != IGNORE].tolist()
            assert (row[len(real):] == IGNORE).all() and 2 <= len(real) <= seq_len + 1
            d, k = stream.piece(epoch * pieces + j)
            got[d] += real[1:]
        assert got == {d: list(doc) + [EOS] for d, doc in enumerate(docs)}
    first = AlignedStream(docs, seq_len=seq_len, batch=batch, seed=seed)
    for _ in range(stop):
        next(first)
    resumed = AlignedStream(docs, seq_len=seq_len, batch=batch, seed=seed)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for n in range(stop, stop + 3):
        assert torch.equal(next(resumed), stream.batch_at(n)[0])
        assert resumed.last_targets == int((stream.batch_at(n)[0][:, 1:] != IGNORE).sum())
