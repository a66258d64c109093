"""A block or chain applied at several places of a block body is a copy each time, as in the network
(language.md §11): each application has its own parameters and its own state. Sharing one state made the
second application start from where the first ended, so early positions saw the sequence's last tokens."""
from __future__ import annotations

import json

import torch

from compile_testkit import build, tokens

SPEC = """nl 1
model twice {
  vocab   = 16
  dim     = 8
  heads   = 2
  context = 16

  level pretrain : outer {
    update sgd(lr = 0.05)
  }

  block shift(x) {
    memory m : linear per head {
      key    k
      value  v
      lr     0.1
      update gd
    }
    k = l2norm(linear(x, dim))
    v = linear(x, dim)
    return conv(linear(x, dim), window = 2) + m(k)
  }

  cms mix : sequential {
    level fast : mlp(expand = 2) { clock every 4 tokens }
  }

  block both(x) {
    return shift(x) + shift(2 * x) + mix(x) + mix(x * x)
  }

  network = embed(vocab, dim) -> residual(both) -> lm_head(tied = true)
}
"""


def model_of(tmp_path):
    spec = tmp_path / "twice.nl"
    spec.write_text(SPEC, encoding="utf-8")
    return build(spec, tmp_path / "build")


def test_each_application_is_causal(tmp_path):
    model = model_of(tmp_path)
    x = tokens(model, 1, 8, seed=3)
    changed = x.clone()
    changed[0, -1] = (x[0, -1] + 1) % 16
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0][:, :-1], model(changed)[0][:, :-1], rtol=0, atol=0)


def test_a_split_run_carries_each_applications_state(tmp_path):
    model = model_of(tmp_path)
    x = tokens(model, 2, 12, seed=4)
    with torch.no_grad():
        whole, _ = model(x)
        first, state = model(x[:, :5])
        second, _ = model(x[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-10, atol=1e-12)
    assert sum(1 for key in state if key.endswith(".m")) == 2  # one memory state per application


def test_each_application_has_its_own_parameters_and_the_graph_counts_them(tmp_path):
    model = model_of(tmp_path)
    names = [n for n, _ in model.named_parameters()]
    assert sum(1 for n in names if n.endswith("out_conv.weight")) == 2
    assert sum(1 for n in names if ".chain.fast.w_in" in n) == 2
    levels = json.loads(next((tmp_path / "build").rglob("levels.json")).read_text())["levels"]
    assert sum(lv["params"] or 0 for lv in levels) == sum(p.numel() for p in model.parameters())
