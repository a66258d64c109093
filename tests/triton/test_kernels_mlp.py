"""The generated kernels of MLP memories against the float64 reference and the chunked path: outputs,
final states and the gradients w.r.t. q, k, v, the gates and the initial (or carried) state, within the
float32 ratios of docs/semantics.md §6. Shapes are tiny (dk = dv = 8, hidden 16, T 10 to 37) because the
kernels run under the Triton interpreter on a CPU."""
from __future__ import annotations

import dataclasses
import os
import types
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402
from hypothesis import assume, given, strategies as st  # noqa: E402

from nldsl.compiler import compile_spec  # noqa: E402
from nldsl.runtime.memory import MemoryConfig, Rule, standard_objective  # noqa: E402
from nldsl.runtime.triton.registry import kernels_for  # noqa: E402
from drawing import drawing  # noqa: E402
from triton_testkit import DEVICE, FLOAT32_RATIO, OUTPUT_RATIO, Case, compare, float32_can_match, kernels, ratio, split_run, run_path, run_reference  # noqa: E402

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]


def check(case: Case, against_chunked: bool = True, lk=None) -> None:
    """Triton vs reference (and vs chunked); the fused forward and backward kernels ran once each (or,
    without a backward kernel, the PyTorch backward walked every chunk)."""
    lk = lk or kernels(case.cfg, case.objective)
    before = dict(lk.launches)
    tri = run_path(case, "triton", lk)
    tight = FLOAT32_RATIO if case.dtype == torch.float32 else None
    compare(run_reference(case), tri, "triton vs reference", limit=tight)
    if against_chunked:
        compare(run_path(case, "chunked"), tri, "triton vs chunked", limit=tight)
    offset = (case.position or 0) % case.cfg.chunk
    tiles = -(-(case.tokens + offset) // case.cfg.chunk)
    used = {name: lk.launches[name] - before[name] for name in before}
    kernel_backward = lk.backward_kernel_streamed(torch.empty(0, device=DEVICE)) if lk.stream else lk.bwd is not None
    expected = {"fwd": 1, "bwd": 1, "bwd_tiles": 0} if kernel_backward else {"fwd": 1, "bwd": 0, "bwd_tiles": tiles}
    assert used == expected, used


def mlp(rules, chunk=4, read="after", act="silu", residual=True, self_target=False, dk=8, hidden=16, bias=False):
    return MemoryConfig("mlp", dk, dk, depth=2, hidden=hidden, act=act, residual=residual, bias=bias,
                        rules=tuple(Rule(r) for r in rules), read=read, chunk=chunk, self_target=self_target)


TITANS = ("retain", "momentum")


def mcase(cfg, objective, **kw) -> Case:
    """A case with write rates below 0.2, where the MLP memories stay bounded over 40 tokens (but for
    some drawn rule combinations: see Run.bounded)."""
    return Case(cfg, objective, eta_max=0.2, **kw)


def test_titans_combination_forward_and_backward():
    check(mcase(mlp(TITANS, read="anchor"), standard_objective("sq"), tokens=10))


@pytest.mark.parametrize("read, tokens, position", [("after", 10, None), ("after", 29, 3), ("before", 10, 6),
                                                    ("anchor", 19, 6)])
def test_titans_rules_every_read_carried_state_and_ragged_tail(read, tokens, position):
    check(mcase(mlp(TITANS, read=read), standard_objective("sq"), tokens=tokens, position=position, seed=tokens))


@pytest.mark.parametrize("rules", [("gd",), ("gd", "retain"), ("momentum",), ("momentum", "retain"),
                                   ("retain", "gd", "momentum")])
def test_rule_orders(rules):
    check(mcase(mlp(rules, read="after"), standard_objective("l2"), tokens=13, position=5, seed=1))


@pytest.mark.parametrize("act", ["silu", "gelu", "relu", "tanh", "sigmoid", "identity"])
def test_activations(act):
    check(mcase(mlp(TITANS, act=act, read="after", hidden=12), standard_objective("mse"), tokens=11, seed=2),
          against_chunked=False)


@pytest.mark.parametrize("objective", [standard_objective("dot"), standard_objective("huber", delta=0.5),
                                       standard_objective("lp", p=3.0)])
def test_objectives(objective):
    check(mcase(mlp(("retain", "gd"), read="before"), objective, tokens=10, seed=3), against_chunked=False)


# biases: weights whose input is 1, under the scalar rules (W1's transition does not act on b1)
BIASED = [
    (TITANS, "after", False, "sq", 10, None),
    (TITANS, "before", False, "l2", 13, 6),
    (TITANS, "anchor", False, "mse", 11, 3),
    (("gd", "retain"), "after", True, "l2", 12, 2),      # a self-generated target M_anchor(v)
    (("dgd",), "after", False, "l2", 13, 5),             # a transition on W1
    (("delta", "gd"), "before", False, "huber", 10, None),
]


@pytest.mark.parametrize("rules, read, self_target, objective, tokens, position", BIASED)
def test_biases(rules, read, self_target, objective, tokens, position):
    obj = standard_objective(objective, delta=0.5) if objective == "huber" else standard_objective(objective)
    cfg = mlp(rules, read=read, self_target=self_target, residual=not self_target, bias=True)
    check(mcase(cfg, obj, tokens=tokens, position=position, seed=tokens))


def test_no_residual_and_a_self_generated_target():
    check(mcase(mlp(("gd",), residual=False, self_target=True, read="after"), standard_objective("l2"),
               tokens=12, position=2, seed=4), against_chunked=False)


def test_wider_chunk_hidden_and_heads():
    check(mcase(mlp(TITANS, chunk=8, hidden=24, dk=12, read="anchor"), standard_objective("sq"), batch=1,
               heads=3, tokens=20, seed=5), against_chunked=False)


def test_the_pytorch_tile_walk_backward_agrees():
    cfg = mlp(TITANS, read="after")
    walk = dataclasses.replace(kernels(cfg, standard_objective("sq")), bwd=None,
                               launches={"fwd": 0, "bwd": 0, "bwd_tiles": 0})
    check(mcase(cfg, standard_objective("sq"), tokens=13, position=2, seed=6), against_chunked=False, lk=walk)


# chunks of 32 and 48 tokens run as tiles of 16 (codegen/kernels_mlp.py SUB_TILE): the anchor is the
# chunk's, the state carried from tile to tile; calls that start at every kind of place in a chunk
SUBTILED = [
    (("retain", "momentum"), "after", 32, 70, None),
    (("retain", "momentum"), "anchor", 48, 61, 21),     # carried in at tile 1 of 3, 5 tokens into it
    (("retain", "momentum"), "before", 32, 40, 16),     # carried in on a tile boundary inside a chunk
    (("dgd",), "anchor", 32, 50, 7),                    # a transition on the key-input layer
    (("gd", "retain"), "after", 32, 13, 35),            # a call inside one chunk, not at its end
]


CLIPPED = [
    (TITANS, "after", False, False, "sq", 0.05, 10, None),
    (TITANS, "anchor", True, False, "mse", 0.5, 13, 6),
    (("gd", "retain"), "after", False, True, "l2", 0.2, 12, 2),   # a self-generated target M_anchor(v)
    (("dgd",), "before", True, False, "huber", 0.2, 11, 3),       # a transition on W1
]


@pytest.mark.parametrize("rules, read, bias, self_target, objective, clip, tokens, position", CLIPPED)
def test_clipped_gradients(rules, read, bias, self_target, objective, clip, tokens, position):
    """`clip` inside the fused kernels: the norm of each token's whole gradient (both layers, the biases
    too) bounds it, and the backward goes through the scale."""
    obj = standard_objective(objective, delta=0.5) if objective == "huber" else standard_objective(objective)
    cfg = dataclasses.replace(mlp(rules, read=read, self_target=self_target, residual=not self_target, bias=bias),
                              clip=clip)
    check(mcase(cfg, obj, tokens=tokens, position=position, seed=tokens))


def test_a_clipped_state_too_large_for_the_chip_runs_the_chunked_path(monkeypatch):
    """A clipped level has no streamed kernels: a state above ON_CHIP_FLOATS falls back, saying why."""
    from nldsl.runtime.triton import launch_mlp

    clipped = kernels(dataclasses.replace(mlp(TITANS), clip=1.0), standard_objective("l2"))
    assert clipped.fwd_streamed is None and clipped.bwd_streamed is None
    gpu = types.SimpleNamespace(is_cuda=True, shape=(2, 4))
    monkeypatch.setattr(launch_mlp, "interpreting", lambda: False)
    monkeypatch.setattr(launch_mlp, "ON_CHIP_FLOATS", clipped.state_floats() - 1)
    assert not clipped.streams(gpu) and "does not fit on chip" in clipped.unfit(gpu)


def test_a_biased_state_too_large_for_the_chip_streams_its_forward(monkeypatch):
    """On a GPU a state with biases above ON_CHIP_FLOATS runs the streamed forward, one program per head,
    and the PyTorch walk over the chunks as its backward."""
    from nldsl.runtime.triton import launch_mlp

    biased = kernels(mlp(TITANS, bias=True), standard_objective("l2"))
    gpu = types.SimpleNamespace(is_cuda=True, shape=(2, 4))
    monkeypatch.setattr(launch_mlp, "interpreting", lambda: False)
    assert not biased.streams(gpu) and biased.unfit(gpu) is None
    monkeypatch.setattr(launch_mlp, "ON_CHIP_FLOATS", biased.state_floats() - 1)
    assert biased.streams(gpu) and biased.unfit(gpu) is None
    assert biased.bwd_streamed is None and "PyTorch" in biased.streamed_backward and biased.slices_for(2, "cuda") == 1


def test_biases_in_chunks_of_several_tiles():
    """The biases' anchor is the chunk's first tile's start (stored), carried in mid-chunk."""
    cfg = mlp(TITANS, chunk=32, read="after", bias=True)
    check(mcase(cfg, standard_objective("l2"), tokens=61, position=21, seed=12), against_chunked=False)


@pytest.mark.parametrize("rules, read, chunk, tokens, position", SUBTILED)
def test_chunks_longer_than_a_tile_run_as_several_tiles(rules, read, chunk, tokens, position):
    cfg = mlp(rules, chunk=chunk, read=read)
    lk = kernels(cfg, standard_objective("l2"))
    assert (lk.tile_tokens, lk.block_t) == (16, 16)
    check(mcase(cfg, standard_objective("l2"), tokens=tokens, position=position, seed=tokens), against_chunked=False,
          lk=lk)


def test_sub_tiled_chunks_split_anywhere_equal_the_whole_run():
    """Chunks of 32 tokens as tiles of 16: calls cut inside a tile, at a tile end inside a chunk and at
    a chunk end carry the same state as one call."""
    cfg = mlp(TITANS, chunk=32, read="after")
    lk = kernels(cfg, standard_objective("l2"))
    case = mcase(cfg, standard_objective("l2"), tokens=50, seed=13)
    y, state = split_run(lk, case, [])
    for cuts in ([5], [16, 33], [20, 21, 32], [7, 14, 30, 40, 41]):
        ys, states = split_run(lk, case, cuts)
        assert ratio(y, ys) <= OUTPUT_RATIO, cuts
        for key, value in state.to_tensors().items():
            assert ratio(value.float(), states.to_tensors()[key].float()) <= OUTPUT_RATIO, (cuts, key)


@pytest.mark.parametrize("rules, read, chunk, tokens, position", SUBTILED[1:3])
def test_the_pytorch_walk_of_sub_tiled_chunks_agrees(rules, read, chunk, tokens, position):
    cfg = mlp(rules, chunk=chunk, read=read)
    walk = dataclasses.replace(kernels(cfg, standard_objective("l2")), bwd=None,
                               launches={"fwd": 0, "bwd": 0, "bwd_tiles": 0})
    check(mcase(cfg, standard_objective("l2"), tokens=tokens, position=position, seed=tokens), against_chunked=False,
          lk=walk)


@pytest.mark.parametrize("rules, read, tokens, position", [
    (("dgd",), "anchor", 19, 3), (("dgd",), "after", 13, None), (("retain", "delta", "gd"), "before", 11, 6),
    (("gd", "delta"), "after", 10, None)])
def test_transitions_on_the_key_input_layer(rules, read, tokens, position):
    check(mcase(mlp(rules, read=read), standard_objective("l2"), tokens=tokens, position=position, seed=7))


def test_the_hope_selfmod_memory_dgd_with_a_self_generated_target():
    cfg = mlp(("dgd",), read="anchor", self_target=True, chunk=8)
    check(mcase(cfg, standard_objective("l2"), tokens=21, position=5, seed=8), against_chunked=False)


# ------------------------------------------------------------------ the examples' MLP memories

def example_levels(name: str) -> list:
    """The example's MLP memories with a standard objective, shrunk to dk = dv = 8, hidden 16 (one per
    distinct configuration)."""
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        fe, _ = compile_spec(f"examples/{name}.nl")
    finally:
        os.chdir(old)
    found = {}
    for m in fe.model.memories:
        if m.family != "mlp" or m.objective.name == "custom":
            continue
        rules = tuple(Rule(r.kind, "anchor", r.per_layer) for r in m.rules)
        cfg = MemoryConfig("mlp", 8, 8, depth=m.depth, hidden=16, act=m.act, residual=m.residual, bias=m.bias,
                           rules=rules, read=m.read, chunk=m.chunk, self_target=m.self_target)
        found[cfg] = standard_objective(m.objective.name, **dict(m.objective.params))
    return list(found.items())


EXAMPLE_LEVELS = [(name, cfg, objective) for name in ("titans", "ttt_mlp", "hope", "miras")
                  for cfg, objective in example_levels(name)]


@pytest.mark.parametrize("name, cfg, objective", EXAMPLE_LEVELS, ids=[
    f"{name}-{cfg.chunk}-{objective.name}" for name, cfg, objective in EXAMPLE_LEVELS])
def test_example_memory_levels(name, cfg, objective):
    check(mcase(cfg, objective, tokens=cfg.chunk + 5, position=3, seed=cfg.chunk), against_chunked=False)


@pytest.mark.parametrize("rules, tokens, position", [(TITANS, 1, 5), (TITANS, 3, None), (("dgd",), 2, 1)])
def test_calls_shorter_than_a_chunk(rules, tokens, position):
    check(mcase(mlp(rules, read="after"), standard_objective("l2"), tokens=tokens, position=position, seed=9))


# ------------------------------------------------------------------ random combinations

RULES = st.lists(st.sampled_from(["retain", "gd", "momentum", "delta", "dgd"]), min_size=1, max_size=3)
# a random MLP memory: rules, chunk, read, activation, residual, target, objective, where a call starts
# and how long it is
RANDOM_LEVEL = dict(rules=RULES, chunk=st.sampled_from([2, 3, 4, 32]), read=st.sampled_from(["after", "before", "anchor"]),
                    act=st.sampled_from(["silu", "gelu", "tanh"]), residual=st.booleans(), self_target=st.booleans(),
                    objective=st.sampled_from(["l2", "mse", "dot", "huber"]),
                    position=st.sampled_from([None, 0, 2, 5, 21, 40]), tokens=st.integers(1, 45),
                    seed=st.integers(0, 2 ** 16))


def check_random_level(hidden: int, rules, chunk, read, act, residual, self_target, objective, position, tokens,
                       seed, bias=False, **kernel_settings) -> None:
    """check() for a drawn level with a fused form (hypothesis skips the others), its kernels with
    `kernel_settings` (dataclasses.replace)."""
    try:
        cfg = MemoryConfig("mlp", 8, 8, depth=2, hidden=hidden, act=act, residual=residual, bias=bias,
                           rules=tuple(Rule(r) for r in rules), read=read, chunk=chunk, self_target=self_target)
    except ValueError:  # a combination the semantics rule out
        assume(False)
    found, _ = kernels_for(cfg, standard_objective(objective), "tests.random")
    assume(found is not None)
    lk = dataclasses.replace(found, **kernel_settings, launches={"fwd": 0, "bwd": 0, "bwd_tiles": 0})
    case = mcase(cfg, standard_objective(objective), tokens=tokens, position=position, seed=seed)
    assume(float32_can_match(case))
    check(case, against_chunked=False, lk=lk)


@drawing(12)
@given(**RANDOM_LEVEL, bias=st.booleans())
def test_random_fused_combinations(**drawn):
    check_random_level(12, **drawn)
