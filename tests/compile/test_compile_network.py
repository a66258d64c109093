"""Stacks in the network: every stack runs the layer it was written with.

A stack's layer class is named after the binding it repeats; stacks written inline (`stack(residual(up),
2)`) have no binding and share the name `layer`. Two different layers under one name must still get a
class each, and a stack inside a stacked layer must not become its own layer.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from compile_testkit import build, compile_ok, tokens, write_spec
from tiny_specs import build_loop

SPEC = """
nl 1
model nets {{
  vocab   = 16
  dim     = 8
  heads   = 2
  context = 8

  level pretrain : outer {{
    update sgd(lr = 0.1)
  }}

  block up(x) {{
    return linear(relu(linear(x, dim)), dim)
  }}

  block down(x) {{
    memory m : linear per head {{
      key    k
      value  v
      lr     0.1
      update gd
    }}
    k = l2norm(linear(x, dim))
    v = linear(x, dim)
    return linear(m(k), dim)
  }}

  {bindings}
}}
"""

TWO_INLINE = "network = embed(vocab, dim) -> stack(residual(up), 2) -> stack(residual(down), 2) -> lm_head(tied = true)"
NAMED_AND_INLINE = ("layer   = residual(up)\n"
                    "  network = embed(vocab, dim) -> stack(layer, 2) -> stack(residual(down), 3) -> lm_head(tied = true)")
NESTED = ("layer   = stack(residual(up), 2) -> residual(down)\n"
          "  network = embed(vocab, dim) -> stack(layer, 2) -> lm_head(tied = true)")
SAME_TWICE = ("layer   = residual(up)\n"
              "  network = embed(vocab, dim) -> stack(layer, 2) -> stack(layer, 3) -> lm_head(tied = true)")


def spec(tmp_path: Path, bindings: str) -> Path:
    return write_spec(tmp_path, SPEC.format(bindings=bindings))


def residual_stack(layers, x, state, block: str):
    for layer in layers:
        x = x + getattr(layer, block)(x, state)
    return x


def test_two_inline_stacks_run_their_own_blocks(tmp_path):
    """`stack(residual(up), 2) -> stack(residual(down), 2)`: the second stack runs `down`, not `up`."""
    model = build(spec(tmp_path, TWO_INLINE), tmp_path / "out")
    assert all(hasattr(layer, "up") for layer in model.layer)
    assert all(hasattr(layer, "down") for layer in model.layer_2)
    x = tokens(model, 2, 8, seed=0)
    logits, _ = model(x)
    h = residual_stack(model.layer, model.embed(x), {}, "up")
    h = residual_stack(model.layer_2, h, {}, "down")
    torch.testing.assert_close(logits, h @ model.embed.weight.t())


def test_an_inline_stack_next_to_a_binding_called_layer(tmp_path):
    """`stack(layer, 2) -> stack(residual(down), 3)`: the inline stack is not taken for `layer`."""
    model = build(spec(tmp_path, NAMED_AND_INLINE), tmp_path / "out")
    assert len(model.layer) == 2 and all(hasattr(layer, "up") for layer in model.layer)
    assert len(model.layer_2) == 3 and all(hasattr(layer, "down") for layer in model.layer_2)


def test_a_stack_inside_a_stacked_layer_builds_and_trains(tmp_path):
    """`layer = stack(residual(up), 2) -> residual(down)` stacked twice: four `up`s and two `down`s, with their
    memories, and one step of the training loop."""
    model, loop, _ = build_loop(tmp_path, SPEC.format(bindings=NESTED))
    assert [len(layer.layer) for layer in model.layer] == [2, 2]
    assert all(hasattr(inner, "up") for layer in model.layer for inner in layer.layer)
    assert all(hasattr(layer, "down") for layer in model.layer)
    torch.manual_seed(0)
    result = loop.step(torch.randint(0, 16, (2, 9)))
    assert math.isfinite(result.loss)


def test_the_same_layer_stacked_twice_shares_one_class(tmp_path):
    files = compile_ok(spec(tmp_path, SAME_TWICE))
    assert files["model.py"].count("class Layer(") == 1
    assert "class Layer_2(" not in files["model.py"]
