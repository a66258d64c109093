"""What the front end says about qualified imports' constants, failed constants, model properties and
repeated arguments, and the wording (help lines, carets) of a few diagnostics.

Each case is the small spec below with one line changed; the compile-fail suite (tests/errors/) holds
one spec per code and place, these tests check what the diagnostics say.
"""

from __future__ import annotations

import pytest

from nldsl.diagnostics import render_all
from nldsl.pipeline import check_file, run_front_end

SPEC = """nl 1
{imports}model tiny {{
  vocab   = 256
  dim     = {dim}
  {heads}
  context = 128

  level pretrain : outer {{
    update {update}
  }}

  block mix({params}) {{
    memory m : linear {per} {{
      clock  {clock}
      chunk  {chunk}
      key    k
      value  v
      lr     0.5
      update {rule}
    }}
    k = l2norm(linear(x, dim))
    v = linear(x, dim)
    return linear(m(k), dim)
  }}

  network = embed(vocab, dim) -> residual({stage}) -> lm_head(tied = true)
}}
"""
BASE = dict(imports="", dim="32", heads="heads   = 4", update="adamw(lr = 1e-3)", params="x", per="per head",
            clock="every 1 token", chunk="1", rule="gd", stage="mix")


def front(tmp_path, libs=None, **changes):
    for name, text in (libs or {}).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    path = tmp_path / "main.nl"
    path.write_text(SPEC.format(**{**BASE, **changes}), encoding="utf-8")
    return run_front_end(path.read_text(encoding="utf-8"), str(path))


def errors(fe):
    return [d for d in fe.diagnostics if d.is_error]


def only_error(fe, code):
    errs = errors(fe)
    assert [d.code for d in errs] == [code], render_all(fe.diagnostics, fe.sources)
    return errs[0]


def test_the_base_spec_is_clean(tmp_path):
    fe = front(tmp_path)
    assert fe.ok, render_all(fe.diagnostics, fe.sources)


# ------------------------------------------------------------ 1. qualified imports' constants


def test_a_qualified_constant_is_written_with_its_prefix(tmp_path):
    fe = front(tmp_path, {"lib.nl": "nl 1\nfoo = 2\n"}, imports='import "lib.nl" as L\n', dim="16 * L.foo")
    assert fe.ok, render_all(fe.diagnostics, fe.sources)
    assert fe.model.dim == 32


def test_a_qualified_constant_does_not_leak_bare(tmp_path):
    """The library's `heads = 8` does not give a model without `heads` 8 heads."""
    fe = front(tmp_path, {"lib.nl": "nl 1\nheads = 8\n"}, imports='import "lib.nl" as L\n', heads="")
    assert not fe.ok
    assert any(d.code == "NL0101" and "heads" in d.message for d in errors(fe))
    d = only_error(front(tmp_path, {"lib.nl": "nl 1\nfoo = 2\n"}, imports='import "lib.nl" as L\n', dim="16 * foo"),
                   "NL0101")
    assert d.message == "unknown name `foo`" and d.help == "did you mean `L.foo`?"


def test_an_unqualified_constant_is_written_bare(tmp_path):
    fe = front(tmp_path, {"lib.nl": "nl 1\nfoo = 2\n"}, imports='import "lib.nl"\n', dim="16 * foo")
    assert fe.ok and fe.model.dim == 32, render_all(fe.diagnostics, fe.sources)


def test_a_qualified_library_uses_its_own_names_bare(tmp_path):
    """Inside the library its constants, blocks and network bindings are written bare; the model writes
    them `L.thing`, and a library block's default may use a library constant."""
    lib = ("nl 1\nrate = 2\nwidth = rate * 16\n"
           "block ffn(x, e = rate) {\n  return linear(gelu(linear(x, dim * e)), dim)\n}\n"
           "pair = rmsnorm -> ffn\n")
    fe = front(tmp_path, {"lib.nl": lib}, imports='import "lib.nl" as L\n', dim="L.width",
               stage="mix) -> residual(L.pair")
    assert fe.ok, render_all(fe.diagnostics, fe.sources)
    assert fe.model.dim == 32
    assert ("L.width", 32) in fe.model.constants and "width" not in dict(fe.model.constants)


# ------------------------------------------------------------ 2, 3. failed and misused constants


@pytest.mark.parametrize("key", ["vocab", "dim", "context"])
def test_a_required_constant_bound_to_a_network(tmp_path, key):
    text = SPEC.format(**BASE).replace(f"  {key} ", f"  {key} = rmsnorm\n  unused_{key} ", 1)
    (tmp_path / "main.nl").write_text(text, encoding="utf-8")
    fe = check_file(str(tmp_path / "main.nl"))
    d = only_error(fe, "NL0201")
    assert d.message == f"`{key}` must be a positive integer, not a network" and d.help


@pytest.mark.parametrize("value, code", [("64 / 0", "NL0202"), ("dim2", "NL0101"), ("1e400", "NL0202"),
                                         ("dim", "NL0111")])
def test_a_failed_constant_is_reported_once(tmp_path, value, code):
    fe = front(tmp_path, dim=value)
    only_error(fe, code)
    text = render_all(fe.diagnostics, fe.sources)
    assert "Poison" not in text and " at 0x" not in text


def test_a_constant_used_before_its_definition(tmp_path):
    d = only_error(front(tmp_path, dim="context"), "NL0101")
    assert d.message == "`context` is used before it is defined" and "move" in d.help


def test_a_constant_defined_by_itself(tmp_path):
    d = only_error(front(tmp_path, dim="dim"), "NL0111")
    assert d.message == "`dim` is defined in terms of itself"


@pytest.mark.parametrize("value, shown, fix", [("64.0", "64.0", "64"), ("1e2", "100.0", "100")])
def test_a_float_size_is_shown_as_a_float(tmp_path, value, shown, fix):
    d = only_error(front(tmp_path, dim=value), "NL0203")
    assert d.label == f"it is {shown}" and d.help == f"write `dim = {fix}`"


def test_a_string_optimizer_argument_is_the_wrong_type(tmp_path):
    d = only_error(front(tmp_path, update='adamw(lr = "fast")'), "NL0201")
    assert "must be a number" in d.message and d.help


# ------------------------------------------------------------ 4. properties in the model body


@pytest.mark.parametrize("line, hint", [("heads 4", "did you mean `heads = 4`?"),
                                        ("foo 1", "did you mean `foo = 1`?"),
                                        ("clock every 1 token", "inside the `{ ... }`")])
def test_a_property_in_the_model_body(tmp_path, line, hint):
    d = only_error(front(tmp_path, heads=line), "NL0108")
    assert hint in d.help and d.span.line == 5


# ------------------------------------------------------------ 5. arguments and parameters given twice


@pytest.mark.parametrize("changes, code, second", [
    (dict(update="adamw(lr = 3e-3, lr = 1)"), "NL0102", "lr = 1"),
    (dict(update="adamw(3e-3, lr = 1)"), "NL0107", "lr = 1"),
    (dict(params="x, e = 2, e = 3"), "NL0102", "e = 3"),
    (dict(params="x, x = 2"), "NL0102", "x = 2"),
    (dict(params="x, x"), "NL0102", "x) {"),
    (dict(params="x, e = 2", stage="mix(e = 3, e = 4)"), "NL0102", "e = 4"),
])
def test_a_name_given_twice(tmp_path, changes, code, second):
    fe = front(tmp_path, **changes)
    d = only_error(fe, code)
    line = fe.sources[d.span.file].split("\n")[d.span.line - 1]
    assert line[d.span.col - 1:].startswith(second), line
    assert d.help and d.labels


# ------------------------------------------------------------ 8. help lines


@pytest.mark.parametrize("changes, code", [
    (dict(dim="0"), "NL0203"),
    (dict(per="per 0 heads"), "NL0203"),
    (dict(chunk="0"), "NL0203"),
    (dict(clock="every 1 token\n      clock every 1 token"), "NL0109"),
    (dict(update="adamw(3e-3, 4, 5, 6, 7)"), "NL0107"),
    (dict(params="x, y"), "NL0107"),
    (dict(params="x, e = 2", stage="mix(f = 3)"), "NL0107"),
    (dict(clock="every 16"), "NL0301"),
    (dict(rule="gd at bogus"), "NL0206"),
    (dict(clock=""), "NL0201"),
])
def test_every_diagnostic_has_a_help_line(tmp_path, changes, code):
    d = only_error(front(tmp_path, **changes), code)
    assert d.help, d


def test_an_unknown_gradient_point_is_pointed_at(tmp_path):
    fe = front(tmp_path, rule="gd at bogus")
    d = only_error(fe, "NL0206")
    line = fe.sources[d.span.file].split("\n")[d.span.line - 1]
    assert line[d.span.col - 1:].startswith("bogus")


def test_a_clock_without_a_unit_suggests_one(tmp_path):
    d = only_error(front(tmp_path, clock="every 16"), "NL0301")
    assert d.help == "name the unit: `every 16 tokens` or `every 16 steps`"


# ------------------------------------------------------------ 7. nesting


def test_a_long_sum_is_reported_at_its_expression(tmp_path):
    fe = front(tmp_path, dim=" + ".join(["32"] + ["0"] * 800))
    d = only_error(fe, "NL0005")
    assert (d.span.line, d.span.col) == (4, 13)


def test_a_negative_period_is_a_syntax_error_whose_help_says_what_a_period_is(tmp_path):
    d = only_error(front(tmp_path, clock="every -16 tokens"), "NL0003")
    assert d.help == "a period is a positive number: `every 16 tokens`"
