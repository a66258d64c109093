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
from nldsl.runtime.memory import MemoryConfig, Rule, chunked, compiled, dual, reference, standard_objective

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
    assert_close(y_ref, y_cmp, f"[{name}] outputs")
    assert_states_close(state_ref, state_cmp, f"[{name}] final state")
    grads_ref = gradients(probe_loss(y_ref, state_ref, 1), leaves)
    grads_cmp = gradients(probe_loss(y_cmp, state_cmp, 1), leaves)
    for leaf in leaves:
        assert_close(grads_ref[leaf], grads_cmp[leaf], f"[{name}] d/d{leaf}")


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
