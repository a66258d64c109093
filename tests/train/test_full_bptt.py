"""`bptt full` (semantics §5): the step's graph is kept across segments; each CMS window's gradient comes
from a local backward and its update enters the graph as a stop-gradient additive change."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from tiny_specs import build_loop, cms_memory_spec

ROOT = Path(__file__).resolve().parents[2]

LR_CMS, LR_OUTER = 0.5, 0.1


def build(tmp_path, bptt="full", fast=4, slow=8, spec=None, backend="chunked", seed=0, memory="linear"):
    return build_loop(tmp_path, spec or cms_memory_spec(bptt, fast, slow, memory), backend, seed)


def batch(seed=0, rows=2, length=16):
    return torch.randint(0, 16, (rows, length + 1), generator=torch.Generator().manual_seed(seed))


def cms_names(loop):
    return {lv.name: [n for n, _ in lv.params] for lv in loop.own.cms}


def record_cms_grads(loop, monkeypatch, step=True):
    """Each CMS step's gradient (after the lr scale), by level; with step=False the update is skipped."""
    seen = {lv.name: [] for lv in loop.own.cms}
    for lv in loop.own.cms:
        opt = loop.cms_opts[lv.name]
        original = opt.step

        def fake(*a, _lv=lv, _original=original, **k):
            seen[_lv.name].append({n: p.grad.detach().clone() for n, p in _lv.params})
            if step:
                return _original(*a, **k)

        monkeypatch.setattr(opt, "step", fake)
    return seen


def test_the_checker_and_the_plan_accept_full_bptt(tmp_path):
    from nldsl.cli import main
    from click.testing import CliRunner

    path = tmp_path / "spec.nl"
    path.write_text(cms_memory_spec())
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert "bptt full: the graph is kept across segments" in result.output
    assert "backward of the whole sequence's loss into pretrain's parameters" in result.output


def test_updates_that_change_nothing_give_the_gradients_of_one_pass_over_the_whole_sequence(tmp_path, monkeypatch):
    """With every CMS update skipped, the kept graph is one forward over the whole sequence: the outer
    gradient is that pass's, and each level's first window gradient is that pass's for the window's losses."""
    model, loop, _ = build(tmp_path)
    seen = record_cms_grads(loop, monkeypatch, step=False)
    outer = dict(loop.own.outer)
    grads = {}
    monkeypatch.setattr(loop.outer_opt, "step",
                        lambda *a, **k: grads.update({n: p.grad.detach().clone() for n, p in outer.items()}))
    data = batch()
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    loop.step(data)
    assert [len(v) for v in seen.values()] == [4, 2]

    x, y = data[:, :-1], data[:, 1:]
    model.load_state_dict(reference)
    model.zero_grad(set_to_none=True)
    logits, _ = model(x, {})
    per_token = F.cross_entropy(logits.reshape(-1, 16), y.reshape(-1), reduction="none").reshape(y.shape)
    whole = torch.autograd.grad(per_token.sum() / y.numel(), list(outer.values()), retain_graph=True)
    for (name, _), g in zip(outer.items(), whole):
        torch.testing.assert_close(grads[name], g, rtol=1e-9, atol=1e-12, msg=name)
    names = cms_names(loop)
    params = dict(model.named_parameters())
    for level, tokens in (("chain.fast", 4), ("chain.slow", 8)):
        first = torch.autograd.grad(per_token[:, :tokens].sum(), [params[n] for n in names[level]], retain_graph=True)
        for name, g in zip(names[level], first):
            torch.testing.assert_close(seen[level][0][name], LR_CMS_SCALE * g, rtol=1e-9, atol=1e-12, msg=name)


LR_CMS_SCALE = 1.0  # `lr` of the CMS members: the default scale


def oracle_step(model, names, data, fast=4, slow=8):
    """One step written out: windows of `fast` and `slow` tokens, plain SGD, the update a constant added to
    the value in use; returns the parameters after the step."""
    x, y = data[:, :-1], data[:, 1:]
    params = dict(model.named_parameters())
    value = {n: params[n].detach().clone().requires_grad_() for level in names.values() for n in level}
    start = {"chain.fast": 0, "chain.slow": 0}
    periods = {"chain.fast": fast, "chain.slow": slow}
    losses, state = [], {}
    for begin in range(0, 16, fast):
        logits, state = functional_call(model, value, (x[:, begin:begin + fast], state))
        losses.append(F.cross_entropy(logits.reshape(-1, 16), y[:, begin:begin + fast].reshape(-1), reduction="sum"))
        end = begin + fast
        for level, period in periods.items():
            if end % period:
                continue
            window = torch.stack(losses[start[level] // fast:end // fast]).sum()
            grads = torch.autograd.grad(window, [value[n] for n in names[level]], retain_graph=True)
            for n, g in zip(names[level], grads):
                old = value[n]
                value[n] = (old - LR_CMS * g).detach() + (old - old.detach())
            start[level] = end
    outer = [n for n in params if n not in value]
    grads = torch.autograd.grad(torch.stack(losses).sum() / y.numel(), [params[n] for n in outer])
    after = {n: (params[n] - LR_OUTER * g).detach() for n, g in zip(outer, grads)}
    after.update({n: v.detach() for n, v in value.items()})
    return after


@pytest.mark.parametrize("memory", ["linear", "mlp(depth = 2, hidden = 8, act = silu)"])
def test_one_step_matches_the_step_written_out(tmp_path, monkeypatch, memory):
    """The step written out runs on the token-by-token reference; the loop on the chunked path with every
    group of tiles large enough to be recomputed in backward, which under `bptt full` it must not be: that
    backward frees what it recomputes from, and the graph is backpropagated twice."""
    from nldsl.runtime.memory import dual

    monkeypatch.setattr(dual, "RECOMPUTE_MIN_BYTES", 0)
    data = batch(1)
    oracle_model, oracle_loop, _ = build(tmp_path / "oracle", backend="reference", memory=memory)
    expected = oracle_step(oracle_model, cms_names(oracle_loop), data)
    model, loop, _ = build(tmp_path / "loop", memory=memory)
    loop.step(data)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-8, atol=1e-11, msg=name)


def test_full_and_truncated_agree_with_one_segment_and_differ_with_several(tmp_path):
    after = {}
    for bptt, period in (("full", 16), ("truncated", 16), ("full", 4), ("truncated", 4)):
        model, loop, _ = build(tmp_path / f"{bptt}{period}", bptt=bptt, fast=period, slow=16)
        loop.step(batch(2))
        after[bptt, period] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, p in after["full", 16].items():
        torch.testing.assert_close(p, after["truncated", 16][name], rtol=1e-12, atol=1e-14, msg=name)
    embed = next(n for n in after["full", 4] if "embed" in n)
    assert not torch.allclose(after["full", 4][embed], after["truncated", 4][embed], rtol=1e-6, atol=1e-9)


def test_a_step_leaves_no_graph_behind_and_the_next_one_runs(tmp_path):
    model, loop, _ = build(tmp_path)
    loop.step(batch(3))
    assert all(not t.requires_grad for t in _tensors(loop.carried))
    assert all(p.grad is None or not p.grad.requires_grad for p in model.parameters())
    result = loop.step(batch(4))
    assert result.cms_steps == ["chain.fast", "chain.fast", "chain.slow", "chain.fast", "chain.fast", "chain.slow"]


def _tensors(state):
    for v in state.values():
        if isinstance(v, torch.Tensor):
            yield v
        elif hasattr(v, "to_tensors"):
            yield from v.to_tensors().values()


def test_hope_steps_alike_on_the_reference_and_the_chunked_path(tmp_path):
    """hope.nl under `bptt full`: self-modifying memories and a three-member CMS chain, their backward
    run twice over one graph (each window's, then the step's)."""
    text = (ROOT / "examples" / "hope.nl").read_text()
    text = text.replace("objective next_token", "objective next_token\n    bptt      full", 1)
    assert "bptt      full" in text
    after = {}
    for backend in ("reference", "chunked"):
        model, loop, _ = build(tmp_path / backend, spec=text, backend=backend)
        loop.step(batch(5, length=32))
        after[backend] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, p in after["chunked"].items():
        torch.testing.assert_close(p, after["reference"][name], rtol=1e-8, atol=1e-10, msg=name)


def test_sharded_parameters_refuse_full_bptt():
    from nldsl.runtime.train.distributed import DataParallel, ParallelError

    comm = DataParallel.__new__(DataParallel)
    comm.sharded = True
    with pytest.raises(ParallelError, match="bptt full"):
        comm.check_levels({"outer": {"name": "pretrain", "bptt": "full", "optimizer": {"kind": "adamw"}}, "cms": []})


def test_with_nothing_carried_across_segments_full_and_truncated_train_alike(tmp_path):
    """Without memories or attention nothing couples the segments but the CMS updates, so keeping the graph
    changes nothing: nested resets, learned initial states and `reset per sequence` run the same."""
    from test_cms_resets import SPEC as RESETS

    text = RESETS.replace("SLOW", "8").replace("FAST", "4")
    after = {}
    for bptt in ("full", "truncated"):
        spec = text.replace("objective next_token", f"objective next_token\n    bptt      {bptt}")
        model, loop, _ = build(tmp_path / bptt, spec=spec)
        for seed in range(3):
            loop.step(batch(seed))
        after[bptt] = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert {n: st.resets for n, st in loop.stats.items() if st.resets} == {"nest.fast": 6, "fresh.quick": 3}
    for name, p in after["full"].items():
        torch.testing.assert_close(p, after["truncated"][name], rtol=1e-10, atol=1e-13, msg=name)


def test_a_model_without_cms_levels_trains_as_under_truncated(tmp_path):
    from tiny_specs import tiny_spec

    after = {}
    for bptt in ("full", "truncated"):
        spec = tiny_spec(vocab=16).replace("update adamw(lr = 1e-3)", f"update adamw(lr = 1e-3)\n    bptt {bptt}")
        model, loop, _ = build(tmp_path / bptt, spec=spec)
        for seed in range(2):
            loop.step(batch(seed))
        after[bptt] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, p in after["full"].items():
        torch.testing.assert_close(p, after["truncated"][name], rtol=1e-12, atol=1e-14, msg=name)


EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.nl"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_steps_under_full_bptt(tmp_path, name):
    import re
    import shutil

    text = (ROOT / "examples" / f"{name}.nl").read_text()
    text = re.sub(r"\n(\s*)bptt\s+truncated", r"\n\1bptt      full", text) if "bptt" in text else \
        re.sub(r"(level \w+ : outer \{)", r"\1\n    bptt full", text, count=1)
    assert "bptt      full" in text or "bptt full" in text
    shutil.copytree(ROOT / "examples" / "lib", tmp_path / "lib")  # the Titans examples import from it
    model, loop, _ = build(tmp_path, spec=text)
    vocab = model.vocab_size
    data = torch.randint(0, vocab, (1, 33), generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = loop.step(data)
    assert math.isfinite(result.loss) and result.outer_stepped
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


def test_a_run_resumes_exactly_with_a_window_open_across_the_checkpoint(tmp_path):
    """The slow window (24 tokens) is open when a 16-token step ends: its gradient so far is taken with the
    step's backward, kept in the checkpoint, and the resumed run goes on as the straight one."""
    from nldsl.runtime.train.checkpoint import load, save

    _, straight, _ = build(tmp_path / "a", slow=24)
    for s in range(4):
        straight.step(batch(10 + s))
    _, first, _ = build(tmp_path / "b", slow=24)
    for s in range(2):
        first.step(batch(10 + s))
    slow = next(lv for lv in first.own.cms if lv.name == "chain.slow")
    assert all(p.grad is not None for _, p in slow.params)  # open at the checkpoint
    (tmp_path / "run").mkdir()
    save(tmp_path / "run", first.model, first, {})
    _, resumed, _ = build(tmp_path / "c", slow=24, seed=5)
    load(tmp_path / "run", resumed.model, resumed)
    for s in range(2, 4):
        resumed.step(batch(10 + s))
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
