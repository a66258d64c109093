"""The chunked path with its tile steps compiled by torch.compile (`compile=True`) equals the float64
reference on outputs, final states and every gradient, fresh and with a carried-in state; a step that
cannot be compiled runs eagerly with one warning; the option reaches the levels of a model.

Compiling takes seconds per configuration on a CPU, hence `slow`."""

from __future__ import annotations

import warnings

import pytest
import torch

from memory_testkit import (assert_close, assert_states_close, gradients, make_inputs, probe_loss,
                            random_state, state_leaves)
from nldsl.runtime import MemoryLevel, set_backend
from nldsl.runtime.memory import (MemoryConfig, Rule, chunk_form, chunked, compiled, dual, dual_linear, reference,
                                  standard_objective, wy)

pytestmark = pytest.mark.slow

MLP = dict(family="mlp", depth=2, hidden=6, act="silu", residual=True)
CASES = {
    "titans mlp": (MemoryConfig(dk=4, dv=4, rules=(Rule("retain"), Rule("momentum")), chunk=4, read="after",
                                bias=True, **MLP), "mse"),
    "hope dgd self target": (MemoryConfig(dk=4, dv=4, rules=(Rule("dgd"),), chunk=4, read="anchor",
                                          self_target=True, **MLP), "l2"),
    "hope dgd with clip": (MemoryConfig(dk=4, dv=4, rules=(Rule("dgd"),), chunk=4, read="anchor", clip=0.2,
                                        **MLP), "l2"),
    "linear delta": (MemoryConfig("linear", 4, 3, rules=(Rule("retain"), Rule("delta"), Rule("gd")), chunk=3,
                                  read="before"), "huber"),
}


# The lean loops of linear memories, compiled compiled.BLOCK tiles a call (2 here, to compile fast):
# 11 tokens from position 5 make a short first tile (the general loop), then 5 whole chunks of 2 (two
# compiled blocks of 2, then one chunk eagerly); the wy form's tiles of 2 from the call's start make 5
# whole tiles (the same) and a group of one short tile (eagerly).
LEAN = {
    "linear gd, lean loop": (MemoryConfig("linear", 4, 3, rules=(Rule("gd"),), chunk=2, read="after"), "huber",
                             dual_linear._COMPILED_LOOP, {}, 2),
    "linear titans, lean loop": (MemoryConfig("linear", 4, 3, rules=(Rule("retain"), Rule("momentum")), chunk=2,
                                              read="before"), "huber", dual_linear._COMPILED_LOOP, {}, 2),
    "gated delta, wy walk": (MemoryConfig("linear", 4, 3, rules=(Rule("retain"), Rule("gd", at="current"))), "l2",
                             wy._COMPILED_TILES, {"tile": 2}, 2),
}


@pytest.fixture(autouse=True)
def fresh_compile_state():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name, carried", [(name, True) for name in CASES] + [("titans mlp", False)])
def test_compiled_steps_match_the_reference(name, carried):
    cfg, objective_name = CASES[name]
    objective = standard_objective(objective_name)
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=11, seed=5)
    state = random_state(cfg, 2, 2, position=6, seed=6) if carried else None
    leaves = inputs.leaves()
    if state is not None:
        leaves.update(state_leaves(state))
    args = (cfg, objective, inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0, state)
    y_ref, state_ref = reference(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("error", compiled.CompileFallbackWarning)   # really compiled
        y_cmp, state_cmp = chunked(*args, compile=True)
    assert not dual._COMPILED_TILE_STEP.failed
    assert_like_reference(name, (y_ref, state_ref), (y_cmp, state_cmp), leaves)


def assert_like_reference(name, expected, actual, leaves):
    """The outputs, final state and (given leaves) gradients of a run equal the reference's."""
    (y_ref, state_ref), (y, state) = expected, actual
    assert_close(y_ref, y, f"[{name}] outputs")
    assert_states_close(state_ref, state, f"[{name}] final state")
    grads_ref = gradients(probe_loss(y_ref, state_ref, 1), leaves) if leaves else {}
    grads = gradients(probe_loss(y, state, 1), leaves) if leaves else {}
    for leaf in leaves:
        assert_close(grads_ref[leaf], grads[leaf], f"[{name}] d/d{leaf}")


@pytest.mark.parametrize("name", LEAN)
def test_compiled_lean_loops_match_the_reference(name):
    """In a forward alone the lean loops run compiled, block by block; a forward that a backward will
    follow keeps them eager (compiled.run_in_blocks), and both equal the reference."""
    cfg, objective_name, step, options, blocks = LEAN[name]
    objective = standard_objective(objective_name)
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=11, seed=7)
    state = random_state(cfg, 2, 2, position=5, seed=8)
    leaves = {**inputs.leaves(), **state_leaves(state)}
    args = (cfg, objective, inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0, state)
    y_ref, state_ref = reference(*args)
    assert chunk_form(cfg, objective)[0] == ("wy" if "wy" in name else "dual")
    calls = []
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("error", compiled.CompileFallbackWarning)   # really compiled
        patch.setattr(step, "compiled", None)
        patch.setattr(compiled, "BLOCK", 2)
        real = compiled.CompiledStep.__call__
        patch.setattr(compiled.CompiledStep, "__call__", lambda self, *a, **k: (calls.append(self), real(self, *a, **k))[1])
        with torch.no_grad():
            y_cmp, state_cmp = chunked(*args, compile=True, **options)
        assert calls.count(step) == blocks and not step.failed
        y_grad, state_grad = chunked(*args, compile=True, **options)
        assert calls.count(step) == blocks
    assert_like_reference(name, (y_ref, state_ref), (y_cmp, state_cmp), {})
    assert_like_reference(name, (y_ref, state_ref), (y_grad, state_grad), leaves)


def test_a_step_that_does_not_compile_runs_eagerly_with_one_warning(torch_compile_fails):
    step = torch_compile_fails
    cfg, objective_name = CASES["titans mlp"]
    objective = standard_objective(objective_name)
    inputs = make_inputs(cfg, batch=2, heads=2, tokens=9, seed=2, grad=False)
    args = (cfg, objective, inputs.q, inputs.k, inputs.v, inputs.gates, inputs.params0)
    with pytest.warns(compiled.CompileFallbackWarning, match="no C\\+\\+ compiler here") as caught:
        y, _ = chunked(*args, compile=True)
        y_again, _ = chunked(*args, compile=True)
    assert len(caught) == 1 and step.failed
    y_eager, _ = chunked(*args)
    assert torch.equal(y, y_eager) and torch.equal(y_again, y_eager)


def test_an_error_of_the_step_itself_is_raised_not_hidden():
    step = compiled.CompiledStep(lambda x: x.reshape(7))
    with pytest.raises(RuntimeError, match="shape"):
        step(torch.zeros(3))
    assert not step.failed


def test_set_backend_passes_the_option_to_every_memory_level(monkeypatch):
    calls = []
    real = dual._COMPILED_TILE_STEP

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(dual, "_COMPILED_TILE_STEP", counting)
    cfg, objective_name = CASES["titans mlp"]
    model = torch.nn.ModuleList([MemoryLevel(cfg, standard_objective(objective_name), heads=2) for _ in range(2)])
    x = torch.randn(1, 8, 8)
    gates = {"lr": 0.1, "retain": 0.9, "momentum": 0.5}
    set_backend(model, "chunked", compile=True)
    assert all(level.compile_steps for level in model)
    y_compiled = model[0](x, x, x, gates)[0]
    assert len(calls) == 2          # two chunks of 4
    set_backend(model, "chunked")
    assert not any(level.compile_steps for level in model)
    torch.testing.assert_close(model[0](x, x, x, gates)[0], y_compiled, rtol=1e-5, atol=1e-6)
    assert len(calls) == 2
    with pytest.warns(compiled.CompileFallbackWarning, match="no effect on the reference backend"):
        set_backend(model, "reference", compile=True)
    model[0](x, x, x, gates)
    assert len(calls) == 2
