"""The text renderer: a tree from the fastest clock tier to the slowest, then a table of levels."""

from __future__ import annotations

from rich.cells import cell_len

from nldsl.render.text import render_text

TIERS = ["every 1 token", "every 16 tokens", "every 256 tokens", "every 4096 tokens", "every 1 step"]


def _tree_and_table(text: str) -> tuple[list[str], list[str]]:
    tree, table = text.split("\n\n", 1)
    return tree.splitlines(), table.splitlines()


def test_the_tree_has_one_branch_per_clock_tier_fastest_first(hope_doc):
    tree, _ = _tree_and_table(render_text(hope_doc))
    assert tree[0].startswith("hope  examples/hope.nl  [11 levels, 17 edges, 0 errors, 1 warning]")
    branches = [line[4:] for line in tree if line.startswith(("├── ", "└── "))]
    assert [branch.split("  (tier")[0] for branch in branches] == TIERS
    assert [branch.split("(tier ")[1] for branch in branches] == ["0)", "1)", "2)", "3)", "4)"]


def test_every_level_sits_under_its_tier_with_kind_and_type(hope_doc):
    tree, _ = _tree_and_table(render_text(hope_doc))
    tier_of_line = {}
    tier = None
    for number, line in enumerate(tree):
        if line.startswith(("├── ", "└── ")):
            tier = line[4:].split("  (tier")[0]
        tier_of_line[number] = tier
    for item in hope_doc["levels"]:
        number = next(i for i, line in enumerate(tree) if f"── {item['name']}  {item['kind']}  " in line)
        assert tier_of_line[number] == item["clock_text"].split(",")[0]
        assert item["type"][:12] in tree[number]


def test_incoming_edges_are_listed_under_their_target(hope_doc):
    tree, _ = _tree_and_table(render_text(hope_doc))
    start = next(i for i, line in enumerate(tree) if "── continuum.fast  cms" in line)
    below = [line.split("── ")[-1] for line in tree[start + 1 : start + 4]]
    assert below == [
        "flow <- selfmod_titans.mem: memory read",
        "flow <- swa: attended",
        "teach <= pretrain: lm loss",
    ]
    assert sum("meta <~ pretrain: initial state" in line for line in tree) == 5


def test_a_level_whose_clock_differs_from_its_tier_shows_its_own_clock(hope_doc):
    text = render_text(hope_doc)
    assert "── selfmod_titans.mem  memory  (every 1 token, chunk 64)  mlp(" in text
    assert "── swa  attention  sliding window" in text  # same clock as its tier: not repeated


def test_the_table_has_one_row_per_level_with_human_numbers(hope_doc):
    _, table = _tree_and_table(render_text(hope_doc))
    header = table[0].split()
    assert header == ["level", "kind", "clock", "params", "state", "update/token"]
    rows = {line.split()[0]: line for line in table[2:] if line.split() and line.split()[0] != "learnable"}
    assert set(rows) >= {item["name"] for item in hope_doc["levels"]}
    assert rows["selfmod_titans.mem"].split()[-4:-1] == ["64", "33.0k", "8.2k"]
    assert rows["selfmod_titans.mem"].endswith("16.6k")
    assert rows["continuum.slow"].split()[-3:] == ["526.3k", "—", "1.6M"]
    assert rows["pretrain"].split()[-3:] == ["1.2M", "—", "—"]
    assert "learnable parameters owned by the levels: 3.3M" in "\n".join(table)


def test_output_fits_100_columns_and_has_no_colour_by_default(hope_doc, hostile_doc):
    for doc in (hope_doc, hostile_doc):
        text = render_text(doc)
        assert "\x1b[" not in text
        assert max(cell_len(line) for line in text.splitlines()) <= 100
        assert all(line == line.rstrip() for line in text.splitlines())
        assert text.endswith("\n")


def test_colour_is_available_on_request(tiny_doc):
    assert "\x1b[" in render_text(tiny_doc, color=True)


def test_output_does_not_depend_on_the_terminal_environment(hope_doc, monkeypatch):
    plain = render_text(hope_doc)
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LINES", "10")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert render_text(hope_doc) == plain


def test_labels_are_shown_literally_never_as_markup(hostile_doc, hostile_labels):
    text = render_text(hostile_doc)
    assert "[bold]not markup[/bold]" in text
    assert "</script><script>alert(1)</script>" in text
    assert "say \"hi\" <b>bold</b> & 'quote'" in text


def test_rendering_is_deterministic(any_doc):
    assert render_text(any_doc) == render_text(any_doc)


def test_tiny_golden(tiny_doc, check_golden):
    check_golden("tiny.txt", render_text(tiny_doc))
