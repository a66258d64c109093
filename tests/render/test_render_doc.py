"""The level-graph document: validation, clock tiers, number formatting, text cleaning."""

from __future__ import annotations

import pytest

from nldsl.render.doc import GraphDocError, clean_text, clock_phrase, human_count, load


def test_hope_tiers_run_from_the_fastest_clock_to_the_slowest(hope_doc):
    graph = load(hope_doc)
    assert [tier.label for tier in graph.tiers] == [
        "every 1 token",
        "every 16 tokens",
        "every 256 tokens",
        "every 4096 tokens",
        "every 1 step",
    ]
    assert [tier.index for tier in graph.tiers] == [0, 1, 2, 3, 4]
    first = graph.tiers[0]
    assert [level.name for level in first.levels][:2] == ["selfmod_titans.mem", "selfmod_titans.mem_alpha"]
    assert {level.name for level in graph.tiers[-1].levels} == {"pretrain", "pretrain.adamw"}


def test_a_tier_whose_levels_share_a_clock_is_labelled_with_the_whole_clock(tiny_doc):
    tiny_doc["levels"][0]["clock"]["chunk"] = 16
    tiny_doc["levels"][0]["clock_text"] = "every 1 token, chunk 16"
    assert load(tiny_doc).tiers[0].label == "every 1 token, chunk 16"


def test_missing_ranks_are_derived_from_the_clocks(hope_doc):
    with_ranks = [(t.label, [lv.name for lv in t.levels]) for t in load(hope_doc).tiers]
    for item in hope_doc["levels"]:
        del item["rank"]
    without = [(t.label, [lv.name for lv in t.levels]) for t in load(hope_doc).tiers]
    assert without == with_ranks


def test_missing_clock_text_is_spelled_from_the_clock(tiny_doc):
    del tiny_doc["levels"][0]["clock_text"]
    tiny_doc["levels"][0]["clock"] = {"period": 4, "unit": "tokens", "chunk": 2}
    assert load(tiny_doc).levels[0].clock.text == "every 4 tokens, chunk 2"
    assert clock_phrase("steps", 1, None) == "every 1 step"
    assert clock_phrase("never", None, None) == "never"


def test_incoming_edges(hope_doc):
    graph = load(hope_doc)
    sources = [(e.src, e.kind) for e in graph.incoming("continuum.fast")]
    assert sources == [("selfmod_titans.mem", "flow"), ("swa", "flow"), ("pretrain", "teach")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema="nlc.graph/2"), "schema"),
        (lambda d: d["levels"].append(dict(d["levels"][0])), "duplicate level names ['mem']"),
        (lambda d: d["edges"][0].update(dst="nowhere"), "edges[0]: unknown level 'nowhere'"),
        (lambda d: d["edges"][0].update(kind="sideways"), "edges[0].kind"),
        (lambda d: d["levels"][1].update(name=""), "levels[1].name"),
        (lambda d: d["levels"][1]["clock"].update(unit="hours"), "levels[1].clock.unit"),
        (lambda d: d["levels"][0].update(params="many"), "levels[0].params"),
        (lambda d: d.update(levels="mem"), "levels: expected a list"),
    ],
)
def test_malformed_documents_are_refused_with_the_offending_path(tiny_doc, change, message):
    change(tiny_doc)
    with pytest.raises(GraphDocError) as caught:
        load(tiny_doc)
    assert message in str(caught.value)


def test_a_document_must_be_a_mapping():
    with pytest.raises(GraphDocError, match="mapping"):
        load(["not", "a", "document"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0, "0"),
        (512, "512"),
        (999, "999"),
        (1000, "1.0k"),
        (33024, "33.0k"),
        (999_949, "999.9k"),
        (999_950, "1.0M"),
        (1_200_000, "1.2M"),
        (3_400_000_000, "3.4G"),
        (2.5, "2.5"),
    ],
)
def test_human_count(value, text):
    assert human_count(value) == text


def test_clean_text_normalises_newlines_and_drops_control_characters():
    assert clean_text("a\r\nb\rc") == "a\nb\nc"
    assert clean_text("tab\there") == "tab here"
    assert clean_text("nul\x00 esc\x1b[31m bell\x07") == "nul esc[31m bell"
    assert clean_text("lone \ud800 surrogate") == "lone  surrogate"
    assert clean_text("unicode αβ 日本 🙂") == "unicode αβ 日本 🙂"
