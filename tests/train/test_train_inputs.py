"""`nlc train` on inputs it cannot train on says why and exits 1, with no internal error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from nldsl.cli import main
from tiny_specs import tiny_spec

SMALL_VOCAB = tiny_spec(vocab=64)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def train(tmp_path, spec_text: str, *args: str):
    spec = tmp_path / "tiny.nl"
    spec.write_text(spec_text)
    return CliRunner().invoke(main, ["train", str(spec), "--steps", "1", "--batch", "2", "--out", str(tmp_path / "run"),
                                     *args])


def test_a_vocabulary_smaller_than_the_tokenizers_is_named(tmp_path):
    result = train(tmp_path, SMALL_VOCAB)
    assert result.exit_code == 1, result.output
    assert "vocabulary has 64 tokens and the byte tokenizer 256" in result.output
    assert "internal compiler error" not in result.output


@pytest.mark.parametrize("what", ["an empty folder", "a missing file"])
def test_data_without_documents_is_named(tmp_path, what):
    data = tmp_path / "corpus"
    if what == "an empty folder":
        data.mkdir()
    result = train(tmp_path, tiny_spec(), "--data", str(data))
    assert result.exit_code == 1, result.output
    assert "internal compiler error" not in result.output
    if what == "an empty folder":
        assert f"--data {data}: no documents in" in result.output
    else:
        assert f"error[NL0001]: no such file or folder `{data}`" in result.output
