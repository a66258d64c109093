"""An objective's one argument may be given by position or by its name: `huber(0.5)` is
`huber(delta = 0.5)`, `lp(3)` is `lp(p = 3)`."""

from __future__ import annotations

from pathlib import Path

import pytest

from nldsl.pipeline import run_front_end

SPEC = (Path(__file__).resolve().parents[1] / "errors" / "huber_unknown_keyword.nl").read_text(encoding="utf-8")


def objective_of(call: str):
    text = SPEC.replace("huber(threshold = 1.0)", call)
    fe = run_front_end(text, "spec.nl")
    assert fe.ok, [d.message for d in fe.diagnostics]
    (memory,) = fe.model.memories
    return memory.objective


@pytest.mark.parametrize("positional, named", [("huber(0.5)", "huber(delta = 0.5)"), ("lp(3)", "lp(p = 3)")])
def test_named_argument_means_the_positional_one(positional, named):
    by_position, by_name = objective_of(positional), objective_of(named)
    assert (by_name.name, by_name.params) == (by_position.name, by_position.params)
    assert by_name.params[0][1] in (0.5, 3.0)


@pytest.mark.parametrize("call, message", [
    ("huber(delta = 0.5, delta = 1.0)", "the argument `delta` twice"),
    ("huber(0.5, delta = 1.0)", "takes one argument"),
    ("lp(delta = 2)", "has no argument `delta`"),
    ("custom(expr = r * r)", "has no argument `expr`"),
])
def test_wrong_named_arguments_are_diagnosed(call, message):
    fe = run_front_end(SPEC.replace("huber(threshold = 1.0)", call), "spec.nl")
    assert [d.code for d in fe.diagnostics if d.is_error] and any(message in d.message for d in fe.diagnostics)
