"""The compile-fail suite: every spec in tests/errors/ must produce exactly the diagnostics it declares.

Each `tests/errors/*.nl` starts with one or more header lines

    # expect: NL0204 at 17:14
    # expect: warning NL0504 at 18:14
    # expect: NL0007 at lib/cycle_b.nl:3:1     (a diagnostic in another file, relative to the spec)

and the test asserts that the multiset of (severity, code, file, line, col) reported by `check_file`
equals the declared one. It also checks how the diagnostics read: the full rendering names the
place, shows the source line and a caret, and never leaks a traceback or an internal module path.

A few renderings are kept as goldens in tests/errors/golden/; regenerate them with `NLC_REGEN=1`.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from nldsl.codes import CODES
from nldsl.diagnostics import LONGEST_SHOWN, _window, render_all, render_full
from nldsl.pipeline import check_file

ERRORS = Path(__file__).resolve().parents[1] / "errors"
GOLDEN = ERRORS / "golden"
SPECS = sorted(ERRORS.glob("*.nl"))
EXPECT = re.compile(r"# expect: (?:(error|warning) )?(NL\d{4}) at (?:(\S+):)?(\d+):(\d+)\s*$")

# Renderings kept byte for byte: a syntax error with a second label, a cross-file label, a
# dimension error with the span that fixed the width, a warning with a secondary span, a did-you-mean.
GOLDEN_SPECS = ("syntax_unclosed_brace", "import_library_with_model", "residual_memory_widths",
                "dgd_unstable", "unknown_key_did_you_mean")

# Codes the front end does not emit on a spec: NL0602 belongs to the code generator's output directory
# and NL0901 to internal errors (tests/frontend/test_cli.py).
NOT_FROM_SPECS = {"NL0602", "NL0901"}

LEAKS = (re.compile(r"Traceback"), re.compile(r'File "'), re.compile(r"\bnldsl[./]"), re.compile(r"\.py\b"),
         re.compile(r"site-packages"))


def expectations(path: Path) -> list[tuple[str, str, str, int, int]]:
    """The (severity, code, file, line, col) the header of `path` declares, files as check_file names them."""
    out = []
    for raw in path.read_bytes().decode("utf-8", "replace").split("\n"):
        if not raw.startswith("# expect:"):
            break
        m = EXPECT.match(raw.rstrip("\r"))
        assert m, f"{path.name}: malformed header line {raw!r}"
        severity, code, file, line, col = m.groups()
        file = os.path.normpath(os.path.join(os.path.dirname(path.name), file)) if file else path.name
        out.append((severity or "error", code, file, int(line), int(col)))
    return out


@pytest.fixture
def in_errors(monkeypatch):
    """Run from tests/errors so that every path in a diagnostic is relative (as in the goldens)."""
    monkeypatch.chdir(ERRORS)


def reported(fe) -> list[tuple[str, str, str, int, int]]:
    return [(d.severity, d.code, os.path.normpath(d.span.file), d.span.line, d.span.col) for d in fe.diagnostics]


def test_there_are_enough_specs():
    assert len(SPECS) >= 60


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_expected_diagnostics(spec, in_errors):
    want = expectations(spec)
    assert want, f"{spec.name} has no `# expect:` header"
    fe = check_file(spec.name)
    got = reported(fe)
    assert Counter(got) == Counter(want), (
        f"{spec.name}\n  expected: {sorted(want)}\n  reported: {sorted(got)}\n\n"
        + render_all(fe.diagnostics, fe.sources, "full"))
    if any(s == "error" for s, *_ in want):
        assert not fe.ok


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_rendering(spec, in_errors):
    fe = check_file(spec.name)
    full = render_all(fe.diagnostics, fe.sources, "full")
    for leak in LEAKS:
        assert not leak.search(full), f"{spec.name}: the rendering leaks {leak.pattern!r}:\n{full}"
    for d in fe.diagnostics:
        assert d.message and d.code in CODES
        assert d.label or d.help, f"{spec.name}: {d.code} `{d.message}` has neither a label nor a help"
        text = render_full(d, fe.sources)
        assert text in full
        rows = text.split("\n")
        assert rows[0] == f"{d.severity}[{d.code}]: {d.message}"
        assert rows[1].strip() == f"--> {d.span.file}:{d.span.line}:{d.span.col}"
        # the source line, or for a long one the window around the span (cut ends marked `…`)
        offset, source = _window(fe.sources[d.span.file].split("\n")[d.span.line - 1].rstrip(), d.span.col)
        at = next((i for i, row in enumerate(rows) if row.lstrip().startswith(f"{d.span.line} | ")), None)
        assert at is not None and rows[at].endswith(source.strip()), f"{spec.name}: source line not shown:\n{text}"
        assert len(source) <= LONGEST_SHOWN + 2
        caret = rows[at + 1].split(" | ", 1)[1]
        pad = len(caret) - len(caret.lstrip(" "))
        assert caret.lstrip(" ").startswith("^") and pad == len(source[: d.span.col - 1 - offset]), \
            f"{spec.name}: the caret is not under column {d.span.col}:\n{text}"
    concise = render_all(fe.diagnostics, fe.sources, "concise").splitlines()
    assert sorted(concise) == sorted(f"{d.span}: {d.severity}[{d.code}]: {d.message}" for d in fe.diagnostics)
    items = json.loads(render_all(fe.diagnostics, fe.sources, "json"))
    assert len(items) == len(fe.diagnostics)
    for item in items:
        assert {"severity", "code", "message", "span", "label", "labels", "notes", "help"} <= set(item)
        assert {"file", "line", "col", "end_line", "end_col"} <= set(item["span"])


def test_the_suite_covers_every_code():
    covered = {code for spec in SPECS for _, code, *_ in expectations(spec)}
    missing = set(CODES) - NOT_FROM_SPECS - covered
    assert not missing, f"no spec in tests/errors exercises {sorted(missing)}"


def test_the_suite_covers_warnings_and_several_errors():
    all_expect = [expectations(spec) for spec in SPECS]
    assert any(s == "warning" for e in all_expect for s, *_ in e)
    assert any(len(e) > 1 for e in all_expect)
    assert any(f != spec.name for spec, e in zip(SPECS, all_expect) for _, _, f, _, _ in e)


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_golden_rendering(name, in_errors):
    fe = check_file(f"{name}.nl")
    text = render_all(fe.diagnostics, fe.sources, "full") + "\n"
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("NLC_REGEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    if not golden.exists():
        pytest.fail(f"missing golden {golden.relative_to(ERRORS.parent.parent)}: "
                    f"create it with `NLC_REGEN=1 python -m pytest {Path(__file__).name}`")
    assert text == golden.read_text(encoding="utf-8"), (
        f"the rendering of {name}.nl changed; if intended, regenerate with NLC_REGEN=1:\n{text}")


def test_a_diamond_of_imports_is_not_a_duplicate(tmp_path, monkeypatch):
    """Two libraries that import one shared file bring in the same definitions once, not twice."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "common.nl").write_text("nl 1\nrate = 0.5\n", encoding="utf-8")
    (tmp_path / "lib" / "a.nl").write_text('nl 1\nimport "common.nl"\n', encoding="utf-8")
    (tmp_path / "lib" / "b.nl").write_text('nl 1\nimport "../lib/common.nl"\n', encoding="utf-8")
    spec = (ERRORS / "unused_block.nl").read_text(encoding="utf-8")
    spec = spec.replace("model tiny {", 'import "lib/a.nl"\nimport "lib/b.nl"\nmodel tiny {')
    (tmp_path / "main.nl").write_text(spec, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    fe = check_file("main.nl")
    assert [d.code for d in fe.diagnostics] == ["NL0110"], render_all(fe.diagnostics, fe.sources)
