"""The canonical formatter (nldsl.fmt): round trip, idempotence, comments, layout rules."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drawing import drawing
from fmt_testkit import EXAMPLES, assert_round_trip, example_id, modules, shape
from nldsl import ast
from nldsl.diagnostics import SpecError
from nldsl.fmt import format_expr, format_module, format_source, quote
from nldsl.parser import parse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))

from generated_models import SEARCH, models  # noqa: E402


def fmt(text: str) -> str:
    return format_source(textwrap.dedent(text).lstrip("\n"))


def same(text: str) -> None:
    """`text` is already canonical."""
    text = textwrap.dedent(text).lstrip("\n")
    assert format_source(text) == text


# ---------------------------------------------------------------- the examples


def test_there_are_examples():
    assert any(p.name == "hope.nl" for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_examples_round_trip(path):
    assert_round_trip(path.read_text(encoding="utf-8"), example_id(path))


# ---------------------------------------------------------------- expressions and precedence


@pytest.mark.parametrize(
    "source, canonical",
    [
        ("(a)", "a"),
        ("((a + b))", "a + b"),
        ("(a + b) * c", "(a + b) * c"),
        ("a + (b * c)", "a + b * c"),
        ("(a - b) - c", "a - b - c"),
        ("a - (b - c)", "a - (b - c)"),
        ("a - (b + c)", "a - (b + c)"),
        ("a / (b * c)", "a / (b * c)"),
        ("(a * b) / c", "a * b / c"),
        ("a % (b % c)", "a % (b % c)"),
        ("a * (b % c)", "a * (b % c)"),
        ("-a ** b", "-a ** b"),
        ("-(a ** b)", "-a ** b"),
        ("(-a) ** b", "(-a) ** b"),
        ("a ** (b ** c)", "a ** b ** c"),
        ("(a ** b) ** c", "(a ** b) ** c"),
        ("a ** -b", "a ** -b"),
        ("a ** (-b)", "a ** -b"),
        ("a ** (b * c)", "a ** (b * c)"),
        ("-(a + b)", "-(a + b)"),
        ("- - a", "--a"),
        ("+a * -b", "+a * -b"),
        ("(a -> b) -> c", "(a -> b) -> c"),
        ("a -> (b -> c)", "a -> (b -> c)"),
        ("a->b->c", "a -> b -> c"),
        ("(a -> b) + 1", "(a -> b) + 1"),
        ("a + 1 -> b * 2", "a + 1 -> b * 2"),
        ("f((a -> b))", "f(a -> b)"),
        ("f(x=1,y)", "f(y, x = 1)"),
        ("f ( a , b = (c , ) )", "f(a, b = (c,))"),
        ("lib.mod.f()", "lib.mod.f()"),
        ("( )", "()"),
        ("(a,b,)", "(a, b)"),
        ("[ ]", "[]"),
        ("[a,(b)]", "[a, b]"),
        ("3e-3 + .5 + 1. + 007", "3e-3 + .5 + 1. + 007"),
    ],
)
def test_expression_layout(source, canonical):
    assert format_source(f"x = {source}\n") == f"x = {canonical}\n"
    assert_round_trip(f"x = {source}\n")


@pytest.mark.parametrize(
    "value, literal",
    [
        ("plain", '"plain"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("line\nbreak\ttab", r'"line\nbreak\ttab"'),
        ("ünï ☃ 名前", '"ünï ☃ 名前"'),
        ("", '""'),
    ],
)
def test_strings_are_re_escaped(value, literal):
    assert quote(value) == literal
    assert parse(f"x = {literal}\n").items[0].value.value == value


def test_unknown_escapes_keep_their_value():
    out = assert_round_trip('x = "a\\qb"\n')
    assert out == 'x = "a\\\\qb"\n'


def test_format_expr_rejects_non_expressions():
    with pytest.raises(TypeError):
        format_expr(ast.Ident("x", ast.NO_SPAN))


# ---------------------------------------------------------------- statements and bodies


def test_spacing_and_indentation():
    out = fmt("""
        nl   1
        model   m{
        memory a,b:mlp( depth=2 )per head{
        clock every 1 token
        }
        block f(x,y=2){
        return   x+y
        }
        }
        """)
    assert out == textwrap.dedent("""\
        nl 1

        model m {
          memory a, b : mlp(depth = 2) per head {
            clock every 1 token
          }

          block f(x, y = 2) {
            return x + y
          }
        }
        """)


def test_one_line_bodies_stay_on_one_line():
    same("""
        cms c {
          level fast : mlp(expand = 4) { clock every 16 tokens }
          level slow : mlp(expand = 4) { clock every 256 tokens }
        }
        """)
    assert fmt("memory m {   chunk 8   }\n") == "memory m { chunk 8 }\n"
    assert fmt("block f(x) { return x }\n") == "block f(x) { return x }\n"


def test_bodies_over_several_lines_are_expanded():
    assert fmt("memory m { chunk 8\n}\n") == "memory m {\n  chunk 8\n}\n"
    assert fmt("memory m {\nchunk 8 }\n") == "memory m {\n  chunk 8\n}\n"
    # a nested body is never squeezed onto its parent's line
    assert fmt("level a { level b { x 1 } }\n") == "level a {\n  level b { x 1 }\n}\n"


def test_empty_bodies():
    assert fmt("memory m {\n\n}\nmodel n { }\n") == "memory m {}\nmodel n {}\n"
    assert fmt("block f() {\n}\n") == "block f() {}\n"


def test_phrases_and_properties():
    same("""
        memory m : mlp(depth = 2) per head {
          clock every 1 token
          key   k, "s" 2 lib.x f(a)
          state reset per sequence
          lr    -0.5 * eta, (a, b), [1, 2]
          detach
        }
        """)


def test_keys_and_names_are_aligned_in_runs():
    out = fmt("""
        model m {
          vocab = 256
          head_dim = dim / heads
          x = 1

          clock every 1 step
          objective next_token
          flag
          update adamw(lr = 3e-3)
        }
        """)
    assert out == textwrap.dedent("""\
        model m {
          vocab    = 256
          head_dim = dim / heads
          x        = 1

          clock     every 1 step
          objective next_token
          flag
          update    adamw(lr = 3e-3)
        }
        """)


def test_blank_lines():
    out = fmt("""


        nl 1
        a = 1



        b = 2
        model m {

          x 1


          y 2

        }
        c = 3
        """)
    assert out == "nl 1\na = 1\n\nb = 2\n\nmodel m {\n  x 1\n\n  y 2\n}\n\nc = 3\n"


def test_blank_lines_inside_blocks_follow_the_source():
    same("""
        block f(x) {
          memory m : selfmod {
            chunk 16
          }
          q = m(x)
          return q
        }
        """)


# ---------------------------------------------------------------- comments


def test_comments_in_every_position():
    text = """\
        # before the version

        nl 1  # after the version
        # above an import
        import "lib/x.nl" as x  # after an import

        # above a model
        model m {  # after the opening brace
          # at the top of a body
          a = 1  # after a binding
          memory k : f(
            # inside a call
            u,  # after an argument
            v)  # after the call
          # at the end of a body
        }  # after the closing brace
        # at the end of the file
        """
    out = assert_round_trip(textwrap.dedent(text))
    assert out == textwrap.dedent("""\
        # before the version

        nl 1  # after the version
        # above an import
        import "lib/x.nl" as x  # after an import

        # above a model
        model m {  # after the opening brace
          # at the top of a body
          a = 1  # after a binding
          # inside a call
          # after an argument
          memory k : f(u, v)  # after the call
          # at the end of a body
        }  # after the closing brace
        # at the end of the file
        """)


def test_trailing_comment_of_a_multi_line_statement_goes_after_it():
    out = fmt("x = f(a,  # about a\n  b)\n")
    assert out == "x = f(a, b)  # about a\n"


def test_comments_keep_their_indentation_and_unicode():
    same("""
        model m {
          memory a : mlp {
            # η ≥ 0, ∇ℓ, 名前, 🙂
            lr eta  # α ≥ 2η
          }
        }
        """)


def test_comments_in_bodies_and_headers():
    assert fmt("memory e {  # hdr\n}\n") == "memory e {}  # hdr\n"
    assert fmt("memory e {\n  # only a comment\n}\n") == "memory e {\n  # only a comment\n}\n"
    assert fmt("level a { x 1 }  # one line\n") == "level a { x 1 }  # one line\n"
    assert fmt("block f(\n  x,  # the input\n) {\n  return x\n}\n") == (
        "block f(x) {  # the input\n  return x\n}\n"
    )


def test_trailing_comments_of_a_run_share_a_column():
    out = fmt("""
        memory m {
          chunk 8  # a
          value self(v)  # b

          key k  # c
        }
        """)
    assert out == "memory m {\n  chunk 8        # a\n  value self(v)  # b\n\n  key k  # c\n}\n"


def test_comment_only_and_empty_files():
    assert format_source("") == ""
    assert format_source("\n\n") == ""
    assert format_source("# just a note\n\n\n# and another") == "# just a note\n\n# and another\n"


def test_crlf_and_tabs():
    out = format_source("nl 1\r\nmodel m {\r\n\tx\t1  # c\r\n}\r\n")
    assert out == "nl 1\n\nmodel m {\n  x 1  # c\n}\n"


def test_syntax_errors_raise_spec_error():
    with pytest.raises(SpecError):
        format_source("model m {\n")


# ---------------------------------------------------------------- generated specs

@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modules)
def test_generated_modules_round_trip(module):
    out = format_module(module)
    assert shape(parse(out)) == shape(module), out
    assert format_source(out) == out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_examples_with_comments_and_blank_lines_added(data):
    path = data.draw(st.sampled_from(EXAMPLES), label="example")
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        continued = i > 0 and lines[i - 1].rstrip().endswith("\\")
        if not continued and data.draw(st.integers(0, 5)) == 0:
            added = ["", "# added", "      # added, indented", "# ünï 名前"]
            out.append(data.draw(st.sampled_from(added)))
        if not line.rstrip().endswith("\\") and data.draw(st.integers(0, 4)) == 0:
            line += data.draw(st.sampled_from(["  # trailing", "#t", " # η ≥ 0"]))
        out.append(line)
    text = "\n".join(out)
    try:
        parse(text)
    except SpecError:
        assume(False)
    assert_round_trip(text)


@drawing(20, phases=SEARCH)
@given(models())
def test_generated_whole_models_round_trip(generated):
    """Whole models drawn from every construct of the language (and their libraries) format to the same
    meaning, idempotently."""
    assert_round_trip(generated.model, "generated.nl")
    if generated.library:
        assert_round_trip(generated.library, "parts.nl")
