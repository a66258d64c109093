"""Sibling memories of a self-modifying group that compute alike run as one `rt.MemoryStack`.

Which members stack is decided by the code generator (codegen/stacking.py); what a stack computes is
checked against the same model with its members run one by one, each MemoryLevel on its own state
(`one_by_one()`, as the generated code ran them before stacking): the logits, the carried states and
every gradient, in float64, across a carried-in state.
"""
from __future__ import annotations

import pytest
import torch

from compile_testkit import ROOT, assert_close, assert_states_close, build, compile_ok, in_root, probe, tokens, write_spec
from nldsl.runtime.memory_stack import one_by_one


GROUP = """
nl 1
model sibs {{
  vocab = 32
  dim = 16
  heads = 2
  head_dim = 8
  context = 64

  level pretrain : outer {{
    clock every 1 step
    objective next_token
    update adamw(lr = 1e-3)
  }}

  memory gen : mlp(depth = 2, hidden = head_dim, act = silu, residual = true) per head {{
    chunk 4
    key k
    value self(v)
    lr eta
    retain alpha
    objective l2
    update dgd
    read at anchor
    init by pretrain
  }}

  block sm(x) {{
    memory mem_k, mem_v, mem_a : gen
{extra}
    k     = l2norm(mem_k(x))
    v     = l2norm(mem_v(x))
    eta   = 0.25 * sigmoid(linear(x, heads))
    alpha = 0.5 + 0.5 * sigmoid(linear(mem_a(x), heads))
    return x + k + v
  }}

  network = embed(vocab, dim) -> residual(sm) -> rmsnorm -> lm_head(tied = true)
}}
"""


# a second kind of group: linear memories with momentum, reading the state before their write
LINEAR_GROUP = GROUP.replace("mlp(depth = 2, hidden = head_dim, act = silu, residual = true)", "linear").replace(
    "value self(v)", "value v").replace("update dgd", "momentum beta\n    update retain, momentum").replace(
    "read at anchor", "read before write").replace("objective l2", "objective sq").replace(
    "k     = l2norm(mem_k(x))", "k     = l2norm(linear(mem_k(x), dim))").replace(
    "v     = l2norm(mem_v(x))", "v     = linear(mem_v(x), dim)").replace(
    "    alpha = 0.5 + 0.5 * sigmoid(linear(mem_a(x), heads))",
    "    alpha = 0.5 + 0.5 * sigmoid(linear(mem_a(x), heads))\n    beta  = 0.9 * sigmoid(linear(x, heads))")


def test_hope_runs_its_four_generators_as_one_stack():
    with in_root():
        files = compile_ok(ROOT / "examples" / "hope.nl")
    model_py, plan = files["model.py"], files["plan.txt"]
    assert model_py.count("rt.MemoryStack(") == 1
    assert "rt.MemoryStack(self.mem_k, self.mem_v, self.mem_eta, self.mem_alpha)" in model_py
    assert "self.mem(q=q" in model_py   # M_memory has its own chunk: not stacked
    # the loop plan says so
    assert ("(reset per sequence), in one call with selfmod_titans.mem_v, selfmod_titans.mem_eta, "
            "selfmod_titans.mem_alpha") in plan
    assert plan.count("in selfmod_titans.mem_k's call") == 3
    assert "memory selfmod_titans.mem ×2: chunk 16, dgd, read anchor, dual form (reset per sequence)\n" in plan


def test_members_with_other_inputs_or_settings_stay_apart(tmp_path):
    same = compile_ok(write_spec(tmp_path, GROUP.format(extra=""), "same.nl"))["model.py"]
    assert "rt.MemoryStack(self.mem_k, self.mem_v, self.mem_a)" in same
    chunk = GROUP.format(extra="    memory mem_a : gen {\n      chunk 8\n    }").replace(
        "memory mem_k, mem_v, mem_a : gen", "memory mem_k, mem_v : gen")
    apart = compile_ok(write_spec(tmp_path, chunk, "chunk.nl"))["model.py"]
    assert "rt.MemoryStack(self.mem_k, self.mem_v)" in apart
    assert "self.mem_a.read_anchor(" in apart


@pytest.mark.parametrize("spec", ["examples/hope.nl", "group", "linear group"])
def test_a_stack_computes_what_its_members_compute_one_by_one(spec, tmp_path):
    texts = {"group": GROUP, "linear group": LINEAR_GROUP}
    path = ROOT / spec if spec not in texts else write_spec(tmp_path, texts[spec].format(extra=""), "group.nl")
    if spec == "linear group":
        model_py = compile_ok(path)["model.py"]
        assert "rt.MemoryStack(self.mem_k, self.mem_v, self.mem_a)" in model_py and ".read_current(" in model_py
    with in_root():
        model = build(path, tmp_path / "pkg")
    prefix, continuation = tokens(model, 2, 11, 1), tokens(model, 2, 10, 2)

    def run():
        logits_p, state_p = model(prefix)
        logits_c, state_c = model(continuation, state_p)
        loss = probe(logits_p, None, 3) + probe(logits_c, state_c, 4)
        params = [p for p in model.parameters() if p.requires_grad]
        return logits_c, state_c, torch.autograd.grad(loss, params, allow_unused=True)

    stacked = run()
    with one_by_one():
        alone = run()
    assert_close(alone[0], stacked[0], "logits")
    assert_states_close(alone[1], stacked[1], "carried state")
    for i, (g_alone, g_stacked) in enumerate(zip(alone[2], stacked[2])):
        assert (g_alone is None) == (g_stacked is None)
        if g_alone is not None:
            assert_close(g_alone, g_stacked, f"gradient of parameter {i}")
