"""Training segments replayed as CUDA graphs (runtime/train/graphs.py, `nlc train --cuda-graphs`).

On a CPU a stand-in takes the graph's place (tests/cuda_graph_standin.py), as strict as a graph where
the loop could go wrong; against it, training with graphs must give the eager run's numbers bit for
bit. On a GPU the real capture is held to the eager run the same way."""
from __future__ import annotations

import json

import pytest
import torch

from nldsl.runtime.layers import KVCache
from nldsl.runtime.memory import MemoryState
from cuda_graph_standin import Failing, StandIn
from nldsl.runtime.train.graphs import CudaGraphs, flatten, key_of, rebuild
from tiny_specs import build_loop, cms_memory_spec


def batches(vocab, count, length=17, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (2, length), generator=gen) for _ in range(count)]


def train(tmp_path, spec, steps, capture=None, vocab=16):
    model, loop, _ = build_loop(tmp_path, spec)
    if capture is not None:
        loop = type(loop)(model, loop.info, _optimizers(), graphs=capture(model))
    losses = [loop.step(b).loss for b in batches(vocab, steps)]
    return model, loop, losses


def _optimizers():
    from nldsl.runtime.optim import make_optimizer
    return make_optimizer


def assert_same_run(eager, graphed):
    (m1, l1, losses1), (m2, l2, losses2) = eager, graphed
    assert losses1 == losses2
    for (name, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(p, q), name
        assert (p.grad is None) == (q.grad is None) or not (p.grad if p.grad is not None else q.grad).any(), name
        if p.grad is not None and q.grad is not None:
            assert torch.equal(p.grad, q.grad), name
    assert l1.carried.keys() == l2.carried.keys()
    for name in l1.carried:
        t1, lay1 = flatten(l1.carried[name])
        t2, lay2 = flatten(l2.carried[name])
        assert lay1 == lay2 and all(torch.equal(a, b) for a, b in zip(t1, t2)), name
    opts = lambda loop: [loop.outer_opt, *loop.cms_opts.values()]   # noqa: E731
    for o1, o2 in zip(opts(l1), opts(l2)):
        for s1, s2 in zip(o1.state.values(), o2.state.values()):
            for k in s1:
                assert torch.equal(torch.as_tensor(s1[k]), torch.as_tensor(s2[k])), k
    assert {k: (v.updates, v.last_norm) for k, v in l1.stats.items()} == \
           {k: (v.updates, v.last_norm) for k, v in l2.stats.items()}


OUTER_EVERY_2 = "clock     every 1 step\n    objective next_token\n    update    sgd(lr = 0.1)"

SPECS = {
    # a CMS chain of windows 4 and 8 and a linear memory of chunk 2 reset per sequence
    "linear": cms_memory_spec("truncated"),
    # (its memory at lr 0.1: at 0.5 its state overflows float32 by the second step, the GPU test's dtype)
    "mlp": cms_memory_spec("truncated", fast=2, slow=4, memory="mlp(depth = 2, hidden = 8, act = silu)")
    .replace("lr     0.5", "lr     0.1"),
    # the outer level steps every second step: its gradient waits in the loop across a step
    "outer_every_2": cms_memory_spec("truncated").replace("clock     every 1 step", "clock     every 2 steps"),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_training_with_graphs_gives_the_eager_numbers(tmp_path, name):
    steps = 4
    eager = train(tmp_path / "eager", SPECS[name], steps)
    graphed = train(tmp_path / "graphed", SPECS[name], steps, StandIn)
    assert_same_run(eager, graphed)
    counts = graphed[1].graphs.counts
    segments = steps * len(graphed[1]._cuts(16))
    # the first step sees every key once; the second captures and replays them; later steps replay
    assert counts["captured"] == counts["eager"] == segments // steps
    assert counts["replayed"] == segments - counts["eager"]


def test_a_memory_that_persists_is_never_captured_and_trains_as_eagerly(tmp_path):
    spec = cms_memory_spec("truncated").replace("      update gd\n", "      update gd\n      state  persist\n")
    assert "state  persist" in spec
    eager = train(tmp_path / "eager", spec, 3)
    graphed = train(tmp_path / "graphed", spec, 3, StandIn)
    assert_same_run(eager, graphed)
    counts = graphed[1].graphs.counts
    # its position grows: every segment's key is new (the first step's first segment starts from none)
    assert counts["captured"] == 0 and counts["replayed"] == 0 and counts["eager"] == 3 * len(graphed[1]._cuts(16))


def test_a_capture_that_fails_says_so_and_the_run_goes_on_eagerly(tmp_path):
    spec = SPECS["linear"]
    eager = train(tmp_path / "eager", spec, 3)
    with pytest.warns(RuntimeWarning, match="capturing a training segment failed.*not permitted"):
        graphed = train(tmp_path / "graphed", spec, 3, Failing)
    assert_same_run(eager, graphed)
    graphs = graphed[1].graphs
    assert graphs.failed and graphs.counts["captured"] == 0 and not graphs.graphs


def test_the_limit_on_graphs_leaves_the_other_keys_eager(tmp_path):
    spec = SPECS["linear"]
    eager = train(tmp_path / "eager", spec, 3)
    model, loop, _ = build_loop(tmp_path / "graphed", spec)
    loop = type(loop)(model, loop.info, _optimizers(), graphs=StandIn(model))
    loop.graphs.limit = 1
    losses = [loop.step(b).loss for b in batches(16, 3)]
    assert_same_run(eager, (model, loop, losses))
    assert loop.graphs.counts["captured"] == 1 and len(loop.graphs.graphs) == 1


def test_bptt_full_runs_without_graphs(tmp_path):
    model, loop, _ = build_loop(tmp_path, cms_memory_spec("full"))
    with pytest.warns(RuntimeWarning, match="under `bptt full` .* they run eagerly"):
        loop = type(loop)(model, loop.info, _optimizers(), graphs=StandIn(model))
    assert loop.graphs is None


def test_a_state_goes_through_its_buffers_and_back_with_its_sharing_kept():
    w, m = torch.randn(2, 3), torch.randn(2, 3)
    state = {"mem": MemoryState({"W": w}, {"W": w}, {"W": m}, 12), "conv": torch.randn(2, 3, 4),
             "attn": KVCache(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4), 5), "off": None}
    tensors, layout = flatten(state)
    assert len(tensors) == 5                               # W once for params and anchor
    again = rebuild(layout, tensors)
    assert again["mem"].params["W"] is again["mem"].anchor["W"] is w and again["mem"].position == 12
    assert again["attn"].position == 5 and again["off"] is None and again["conv"] is state["conv"]
    copy = rebuild(layout, [t.clone() for t in tensors])
    assert copy["mem"].params["W"] is copy["mem"].anchor["W"] and copy["mem"].params["W"] is not w
    x = torch.zeros(2, 4, dtype=torch.long)
    # the key: shapes and host values (positions) count, tensor values do not
    assert key_of(x, x, state) == key_of(x, x, copy)
    moved = dict(state, mem=MemoryState({"W": w}, {"W": w}, {"W": m}, 13))
    assert key_of(x, x, moved) != key_of(x, x, state)
    assert key_of(x, x, dict(state, conv=torch.randn(2, 3, 4, requires_grad=True))) is None
    assert key_of(x, x, {"odd": object()}) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("backend", ["chunked", "triton"])
def test_on_a_gpu_graphed_training_matches_eager(tmp_path, backend):
    spec = SPECS["mlp"]

    def run(graphs):
        model, loop, _ = build_loop(tmp_path / str(graphs), spec, backend=backend, dtype=torch.float32)
        model.cuda()
        loop = type(loop)(model, loop.info, _optimizers(), graphs=CudaGraphs() if graphs else None)
        losses = [loop.step(b.cuda()).loss for b in batches(16, 4)]
        return model, loop, losses

    (m1, _, l1), (m2, loop, l2) = run(False), run(True)
    assert loop.graphs.failed is None and loop.graphs.counts["replayed"] > 0
    assert l1 == pytest.approx(l2, rel=1e-5)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- `nlc train --cuda-graphs`

BYTE_SPEC = SPECS["linear"].replace("vocab   = 16", "vocab   = 256")


@pytest.fixture()
def run_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    spec = tmp_path / "tiny.nl"
    spec.write_text(BYTE_SPEC)
    return spec


def with_stand_in(monkeypatch):
    """Every NestedLoop built from here on captures with the stand-in."""
    from nldsl.runtime.train import NestedLoop

    plain = NestedLoop.__init__

    def init(self, model, info, make_optimizer, **options):
        plain(self, model, info, make_optimizer, **{**options, "graphs": StandIn(model)})
    monkeypatch.setattr(NestedLoop, "__init__", init)


def test_a_run_with_graphs_logs_them_and_resumes_exactly(run_env, tmp_path, monkeypatch):
    from nldsl.runtime.train import TrainConfig, Trainer

    def config(out, steps):
        return TrainConfig(str(run_env), steps=steps, batch=2, seq=16, out=str(tmp_path / out), eval_every=2,
                           checkpoint_every=2)

    Trainer(config("eager", 4)).train()
    with_stand_in(monkeypatch)
    Trainer(config("straight", 4)).train()
    Trainer(config("resumed", 2)).train()
    Trainer(config("resumed", 4), resume=True).train()

    def records(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if "loss" in r]

    loss = lambda name: [r["loss"] for r in records(name)]   # noqa: E731
    assert loss("straight") == loss("eager") == loss("resumed")
    graphs = [r["cuda_graphs"] for r in records("straight")]
    assert graphs[0]["replayed"] == 0 and graphs[-1]["replayed"] > 0
    assert "cuda_graphs" not in records("eager")[0]


def test_cuda_graphs_on_a_cpu_is_refused_with_a_message(run_env, tmp_path):
    from click.testing import CliRunner

    from nldsl.cli import main

    result = CliRunner().invoke(main, ["train", str(run_env), "--cuda-graphs", "--steps", "1", "--out",
                                       str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "--cuda-graphs replays segments on a GPU, and this run is on cpu" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()      # refused before anything is written


def test_cuda_graphs_with_sharded_parameters_is_refused(run_env, tmp_path):
    from nldsl.runtime.train import TrainConfig, Trainer, TrainInputError
    from nldsl.runtime.train.distributed import Single

    class Sharded(Single):   # what a process of an FSDP run on a GPU says of itself (nothing runs on it)
        sharded = True

    cfg = TrainConfig(str(run_env), steps=1, batch=2, seq=16, out=str(tmp_path / "run"), device="cuda",
                      cuda_graphs=True)
    with pytest.raises(TrainInputError, match="does not combine with --parallel fsdp"):
        Trainer(cfg, comm=Sharded("cuda"))


def test_resuming_with_cuda_graphs_says_so_and_checks_the_device(run_env, tmp_path):
    from click.testing import CliRunner

    from nldsl.cli import main

    run = tmp_path / "run"
    fast = ["--batch", "2", "--seq", "16", "--eval-every", "1"]
    assert CliRunner().invoke(main, ["train", str(run_env), "--steps", "1", *fast, "--out", str(run)]).exit_code == 0
    result = CliRunner().invoke(main, ["train", "--resume", str(run), "--steps", "2", "--cuda-graphs"])
    assert f"note: --cuda-graphs: segments are replayed as CUDA graphs from here on ({run} ran them" in result.output
    assert result.exit_code == 1 and "this run is on cpu" in result.output, result.output


def test_loading_states_that_are_the_graphs_own_buffers_in_other_slots():
    """A replay's states out may be its own input buffers (a state passed on unchanged); loaded into
    other slots of the same graph, each slot still gets what was there before the load."""
    from nldsl.runtime.train.graphs import _Call

    x = torch.zeros(1, 2, dtype=torch.long)
    call = _Call(lambda *args: None, x, x, {"a": torch.full((3,), 1.0), "b": torch.full((3,), 2.0)})
    first, second = call.inputs
    call.load(x, x, {"a": second, "b": first})                 # swapped
    assert call.inputs[0] is first and torch.equal(first, torch.full((3,), 2.0))
    assert torch.equal(second, torch.full((3,), 1.0))
    call.load(x, x, {"a": first, "b": second})                 # each its own: copies onto itself
    assert torch.equal(first, torch.full((3,), 2.0)) and torch.equal(second, torch.full((3,), 1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("backend", ["chunked", "triton"])
def test_on_a_gpu_nlc_train_with_graphs_gives_the_eager_losses_and_resumes(run_env, tmp_path, backend):
    """`nlc train --device cuda --cuda-graphs` as a user runs it: the eager run's losses, replays counted
    in metrics.jsonl, and a run stopped at a checkpoint and resumed with graphs lands on the same losses."""
    from click.testing import CliRunner

    from nldsl.cli import main

    common = ["--batch", "2", "--seq", "16", "--eval-every", "2", "--checkpoint-every", "2", "--device", "cuda",
              "--backend", backend]

    def train(out, steps, *more):
        result = CliRunner().invoke(main, ["train", str(run_env), "--steps", str(steps), *common,
                                           "--out", str(tmp_path / out), *more])
        assert result.exit_code == 0, result.output

    train("eager", 6)
    train("graphed", 6, "--cuda-graphs")
    train("resumed", 4, "--cuda-graphs")
    result = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "resumed"), "--steps", "6",
                                       "--cuda-graphs"])
    assert result.exit_code == 0, result.output

    def records(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if "loss" in r]

    eager = [r["loss"] for r in records("eager")]
    assert len(eager) == 6
    for name in ("graphed", "resumed"):
        assert [r["loss"] for r in records(name)] == pytest.approx(eager, rel=1e-5), name
    assert records("graphed")[-1]["cuda_graphs"]["replayed"] > 0
