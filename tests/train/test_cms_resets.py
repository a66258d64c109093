"""CMS members that go back to a learned initial state (semantics §5): the next member of a nested chain
at the end of each window of the previous one, which learns that state (Eq. 72), and every member of a
chain under `reset per sequence` after each step, from states the outer level learns."""
from __future__ import annotations

import pytest
import torch

from nldsl.runtime.layers import CmsChain, CmsMLP
from nldsl.runtime.train.checkpoint import load, save
from tiny_specs import build_loop

SPEC = """nl 1
model tiny_cms {
  vocab    = 16
  dim      = 8
  context  = 16

  level pretrain : outer {
    clock     every 1 step
    objective next_token
    update    sgd(lr = 0.1)
  }

  cms nest : nested {
    update sgd(lr = 0.05)
    level slow : mlp(expand = 2) { clock every SLOW tokens }
    level fast : mlp(expand = 2) {
      clock  every FAST tokens
      update momentum(lr = 0.02, beta = 0.9)
    }
  }

  cms fresh : independent(agg = sum) {
    update sgd(lr = 0.05)
    state  reset per sequence
    flush  drop
    level quick : mlp(expand = 2) { clock every 6 tokens }
    level frozen : mlp(expand = 2) { clock never }
  }

  network = embed(vocab, dim) -> residual(rmsnorm -> nest) -> residual(rmsnorm -> fresh) -> rmsnorm -> lm_head(tied = true)
}
"""


def build(tmp_path, slow=8, fast=4, seed=0):
    return build_loop(tmp_path, SPEC.replace("SLOW", str(slow)).replace("FAST", str(fast)), seed=seed)


def batch(seed: int):
    return torch.randint(0, 16, (2, 17), generator=torch.Generator().manual_seed(seed))


def snapshot(params):
    return [p.detach().clone() for p in params]


def levels(loop):
    return {lv.name: lv for lv in loop.own.cms}


def test_the_copy_of_a_member_takes_its_gradient_and_changes_no_value():
    torch.manual_seed(0)
    members = [("a", CmsMLP(4, 8)), ("b", CmsMLP(4, 8))]
    chain = CmsChain(members, variant="nested", initial=("b",))
    plain = CmsChain([(n, m) for n, m in members], variant="sequential")
    x = torch.randn(3, 4)
    with torch.no_grad():
        chain.b.w_in.add_(0.1)           # the member has moved away from its initial state
    y = chain(x)
    assert torch.equal(y, plain(x))
    y.square().sum().backward()
    for name, p in chain.b.named_parameters():
        assert torch.equal(getattr(chain.init.b, name).grad, p.grad)
    with pytest.raises(ValueError, match="does not have"):
        CmsChain([("a", CmsMLP(4, 8))], initial=("c",))


def test_who_learns_each_initial_state(tmp_path):
    model, loop, info = build(tmp_path)
    learners = {lv["name"]: lv["initial_learner"] for chain in info["cms"] for lv in chain["levels"]}
    assert learners == {"nest.slow": None, "nest.fast": "nest.slow", "fresh.quick": "pretrain", "fresh.frozen": None}
    own = levels(loop)
    outer = {name for name, _ in loop.own.outer}
    assert {n for n, _ in own["nest.slow"].params} >= {"nest.chain.init.fast.w_in", "nest.chain.slow.w_in"}
    assert "fresh.chain.init.quick.w_in" in outer and "fresh.chain.frozen.w_in" in outer
    assert not any(".init." in n for n, _ in own["nest.fast"].params + own["fresh.quick"].params)
    assert [p0 for _, p0 in own["nest.fast"].initial] == list(model.nest.chain.init.fast.parameters())


def test_a_nested_member_goes_back_to_what_the_previous_one_learned(tmp_path, monkeypatch):
    """One step of 16 tokens: fast steps at 4, 8, 12, 16 and slow at 8 and 16, and at 8 and 16 fast goes
    back to its initial state, which slow has just stepped with the gradient fast's weights gathered over
    slow's window (first order: the steps fast took since its last reset are held fixed)."""
    model, loop, _ = build(tmp_path)
    own = levels(loop)
    fast, slow = own["nest.fast"], own["nest.slow"]
    init = [p0 for _, p0 in fast.initial]
    seen = []
    cms_step = loop._cms_step

    def spy(lv, checks):
        if lv is fast:
            seen.append(("fast", [p.grad.clone() for p, _ in fast.initial]))
        if lv is slow:
            seen.append(("slow", snapshot(init), [p.grad.clone() for p in init]))
        cms_step(lv, checks)
        if lv is slow:
            seen.append(("slow after", snapshot(init)))
    monkeypatch.setattr(loop, "_cms_step", spy)
    start = snapshot(init)
    loop.step(batch(1))
    assert [s[0] for s in seen] == ["fast", "slow", "slow after", "fast"] * 2
    # the gradient slow steps the initial state with: the sum of fast's two window gradients before it
    fast_windows = [s[1] for s in seen if s[0] == "fast"]
    slow_steps = [s for s in seen if s[0] == "slow"]
    assert len(fast_windows) == 4 and len(slow_steps) == 2
    for k, (_, before, grads) in enumerate(slow_steps):
        for g, w1, w2 in zip(grads, fast_windows[2 * k], fast_windows[2 * k + 1]):
            torch.testing.assert_close(g, w1 + w2, rtol=1e-12, atol=1e-15)
    after = [s[1] for s in seen if s[0] == "slow after"]
    for p0, b, a, g in zip(start, slow_steps[0][1], after[0], slow_steps[0][2]):
        assert torch.equal(p0, b)
        torch.testing.assert_close(a, b - 0.05 * g, rtol=1e-12, atol=1e-15)     # sgd(lr = 0.05)
    # after the reset at 16: fast is its initial state, its open window and momentum are gone
    for p, p0 in fast.initial:
        assert torch.equal(p, p0) and p.grad is None
        assert p not in loop.cms_opts["nest.fast"].state
    assert not torch.equal(init[0], start[0])
    assert loop.stats["nest.fast"].resets == 2 and loop.stats["nest.slow"].resets == 0


def test_a_reset_drops_the_open_window_of_a_member_with_another_period(tmp_path, monkeypatch):
    """slow every 8, fast every 3: the segments end at 3, 6, 8, 9, 12, 15 and 16. The reset at 8 falls
    inside fast's window 7..9, whose first part goes with the weights that made it: fast steps at 9 with
    the gradient of token 9 alone."""
    model, loop, _ = build(tmp_path, slow=8, fast=3)
    fast = levels(loop)["nest.fast"]
    weight = fast.initial[0][0]
    pieces = []                                   # each segment's gradient of fast's first weight
    weight.register_hook(lambda g: pieces.append(g.clone()))
    stepped = []
    cms_step = loop._cms_step

    def spy(lv, checks):
        if lv is fast:
            stepped.append(weight.grad.clone())
        cms_step(lv, checks)
    monkeypatch.setattr(loop, "_cms_step", spy)
    result = loop.step(batch(2))
    assert result.cms_steps.count("nest.fast") == 5 and len(pieces) == 7
    assert loop.stats["nest.fast"].resets == 2               # at 8 and 16
    for got, want in zip(stepped, [pieces[0], pieces[1], pieces[3], pieces[4], pieces[5]]):
        assert torch.equal(got, want)
    assert not torch.allclose(stepped[2], pieces[2] + pieces[3])
    for p, p0 in fast.initial:
        assert torch.equal(p, p0) and p.grad is None


def test_reset_per_sequence_starts_every_step_from_states_the_outer_level_learns(tmp_path):
    model, loop, _ = build(tmp_path)
    quick = levels(loop)["fresh.quick"]
    init = [p0 for _, p0 in quick.initial]
    start = snapshot(init)
    for step in range(2):
        result = loop.step(batch(3 + step))
        assert result.cms_steps.count("fresh.quick") == 2      # at 6 and 12; the window 13..16 is dropped
        for p, p0 in quick.initial:
            assert torch.equal(p, p0) and p.grad is None         # back to the learned state, nothing left open
    assert all(not torch.equal(a, b) for a, b in zip(init, start))   # pretrain stepped the initial states
    assert loop.stats["fresh.quick"].resets == 2


def test_a_run_with_resets_resumes_exactly(tmp_path):
    _, straight, _ = build(tmp_path / "a")
    for s in range(4):
        straight.step(batch(10 + s))
    model, first, _ = build(tmp_path / "b")
    for s in range(2):
        first.step(batch(10 + s))
    (tmp_path / "run").mkdir()
    save(tmp_path / "run", first.model, first, {})
    model2, resumed, _ = build(tmp_path / "c", seed=5)
    load(tmp_path / "run", model2, resumed)
    for s in range(2, 4):
        resumed.step(batch(10 + s))
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    assert {k: (v.updates, v.resets) for k, v in straight.stats.items()} == \
        {k: (v.updates, v.resets) for k, v in resumed.stats.items()}


def test_metrics_count_the_resets(tmp_path, monkeypatch):
    from pathlib import Path

    from nldsl.runtime.train import TrainConfig, Trainer

    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    spec = Path(__file__).resolve().parents[2] / "examples" / "cms_variants.nl"
    records = []
    Trainer(TrainConfig(spec=str(spec), steps=2, batch=2, seq=64, out=str(tmp_path / "run"), checkpoint_every=10,
                        eval_every=10, eval_batches=1), log=lambda msg: None).train(progress=records.append)
    levels = records[-1]["levels"]
    assert levels["nest.inner_mlp"]["resets"] == 2          # once per 64 tokens, when nest.outer_mlp steps
    assert levels["heads_cms.quick"]["resets"] == 2         # after each step (reset per sequence)
    assert "resets" not in levels["chain.fast"] and "resets" not in levels["nest.outer_mlp"]
