"""Every syntax error of a file, each once: the parser resynchronises at the next statement.

A statement in error is blanked out (a call wrapped over several lines counts as one statement, a
`{` it opened becomes a placeholder declaration so the body that follows still parses), and the file
is parsed again; diagnostics on blanked lines are follow-on errors and are not reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nldsl.diagnostics import SpecError, render_full
from nldsl.parser import MAX_SYNTAX_ERRORS, parse

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transformer.nl"


def errors_of(text: str) -> list[tuple[str, int, int]]:
    with pytest.raises(SpecError) as info:
        parse(text, "bad.nl")
    return sorted((d.code, d.span.line, d.span.col) for d in info.value.diagnostics)


def with_lines(replacements: dict[int, str]) -> str:
    lines = EXAMPLE.read_text(encoding="utf-8").split("\n")
    for n, line in replacements.items():
        lines[n - 1] = line
    return "\n".join(lines)


def line_of(text: str) -> dict[str, int]:
    lines = EXAMPLE.read_text(encoding="utf-8").split("\n")
    return {key: next(i + 1 for i, ln in enumerate(lines) if ln.strip().startswith(key)) for key in text.split()}


def test_the_example_parses():
    parse(EXAMPLE.read_text(encoding="utf-8"), "transformer.nl")


def test_three_unrelated_errors_give_three_diagnostics():
    at = line_of("vocab heads network")
    text = with_lines({at["vocab"]: "  vocab    = 256 256", at["heads"]: "  heads    = = 4",
                       at["network"]: "  network = embed(vocab, dim) -> -> lm_head(tied = true)"})
    found = errors_of(text)
    assert sorted(line for _, line, _ in found) == [at["vocab"], at["heads"], at["network"]]
    assert {code for code, *_ in found} <= {"NL0002", "NL0003"}


def test_an_error_in_a_declaration_header_does_not_spill_into_its_body():
    """The `{` of a broken header is kept, so the body's lines and its `}` raise nothing more."""
    text = "nl 1\nmodel m {\n  memory a : : linear per head {\n    key   k\n    value v\n  }\n  dim = 3 3\n}\n"
    assert errors_of(text) == [("NL0003", 3, 14), ("NL0003", 7, 11)]


def test_an_error_inside_a_wrapped_call_blanks_the_whole_call():
    text = ("nl 1\nmodel m {\n  level pretrain : outer {\n    update adamw(lr = 1e-3,\n"
            "                 betas = (0.9 0.95),\n                 weight_decay = 0.1)\n  }\n  dim = 3 3\n}\n")
    assert errors_of(text) == [("NL0003", 5, 31), ("NL0003", 8, 11)]


def test_an_unexpected_character_and_a_token_error_are_both_reported():
    text = "nl 1\nmodel m {\n  vocab = 256;\n  dim = 3 3\n}\n"
    assert errors_of(text) == [("NL0002", 3, 14), ("NL0003", 4, 11)]


def test_a_stray_closing_brace_is_reported_once():
    text = "nl 1\n}\nmodel m {\n  vocab = 256\n}\n}\n"
    assert errors_of(text) == [("NL0003", 2, 1), ("NL0003", 6, 1)]


def test_an_unclosed_brace_after_other_errors_still_gets_its_diagnostic():
    text = "nl 1\nmodel m {\n  vocab = 256 256\n  block b(x) {\n    return x\n"
    found = errors_of(text)
    assert ("NL0003", 3, 15) in found and [c for c, *_ in found].count("NL0004") == 1


def test_the_number_of_diagnostics_is_bounded():
    text = "nl 1\nmodel m {\n" + "".join(f"  c{i} = 1 1\n" for i in range(3 * MAX_SYNTAX_ERRORS)) + "}\n"
    assert len(errors_of(text)) == MAX_SYNTAX_ERRORS


def test_each_diagnostic_renders_with_its_own_line_and_caret():
    text = "nl 1\nmodel m {\n  vocab = 256 256\n  dim = = 4\n}\n"
    with pytest.raises(SpecError) as info:
        parse(text, "bad.nl")
    sources = {"bad.nl": text}
    rendered = [render_full(d, sources) for d in info.value.diagnostics]
    assert "bad.nl:3:15" in rendered[0] and "vocab = 256 256" in rendered[0] and "^" in rendered[0]
    assert "bad.nl:4:9" in rendered[1] and "dim = = 4" in rendered[1] and "^" in rendered[1]


@pytest.mark.parametrize('broken', ['  vocab    = 256 +', '  heads    = = 4', '  dim      = max(4, , 5)',
                                    '  dim      = [1, 2', '  layers   = 2 3', '  context  = (',
                                    '  vocab    : 256'])
def test_every_syntax_error_has_a_help_line(broken):
    """Each syntax diagnostic says what to do, not only what was expected."""
    at = line_of("vocab")
    with pytest.raises(SpecError) as info:
        parse(with_lines({at["vocab"]: broken}), "bad.nl")
    for d in info.value.diagnostics:
        assert d.help, f"{d.code} {d.message!r} has no help line"
