"""The generated kernels of linear memories against the float64 reference and the chunked path:
outputs, final states and the gradients w.r.t. q, k, v, the gates and the initial (or carried) state,
within the float32 ratios of docs/semantics.md §6. Shapes are tiny (B = 2, H = 2, T = 10, C = 4,
dk = dv = 8) because the kernels run under the Triton interpreter on a CPU."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402
from hypothesis import assume, given, strategies as st  # noqa: E402

from nldsl.compiler import compile_spec  # noqa: E402
from nldsl.runtime.memory import MemoryConfig, Rule, standard_objective  # noqa: E402
from nldsl.runtime.memory.inputs import start_state  # noqa: E402
from drawing import drawing  # noqa: E402
from triton_testkit import (FLOAT32_RATIO, OUTPUT_RATIO, Case, Run, compare, float32_can_match, kernels,  # noqa: E402
                            make_inputs, ratio, run_path, run_reference, split_run, to32)

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]


def check(case: Case, against_chunked: bool = True) -> None:
    """Triton vs reference (and vs chunked); the Triton backward kernel must have run where one exists."""
    lk = kernels(case.cfg, case.objective)
    before = dict(lk.launches)
    tri = run_path(case, "triton", lk)
    tight = FLOAT32_RATIO if case.dtype == torch.float32 else None
    compare(run_reference(case), tri, "triton vs reference", limit=tight)
    if against_chunked:
        compare(run_path(case, "chunked"), tri, "triton vs chunked", limit=tight)
    used = {k: lk.launches[k] - before[k] for k in before}
    if lk.uses_step(case.tokens):
        assert used["step"] == 1 and used["recompute"] == 1, used
    else:
        assert used["fwd"] == 1, used
        assert used["bwd"] == (1 if lk.bwd is not None else 0), used


def linear(rules, chunk=4, read="after", self_target=False, dk=8, dv=8):
    return MemoryConfig("linear", dk, dv, rules=tuple(Rule(*r) if isinstance(r, tuple) else Rule(r) for r in rules),
                        read=read, chunk=chunk, self_target=self_target)


# ------------------------------------------------------------------ the examples' linear memories

def example_level(name: str):
    """The example's (only) linear memory, its dimensions shrunk to dk = dv = 8."""
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        fe, _ = compile_spec(f"examples/{name}.nl")
    finally:
        os.chdir(old)
    (m,) = [m for m in fe.model.memories if m.family == "linear"]
    rules = tuple(Rule(r.kind, "current" if r.at == "current" else "anchor", r.per_layer) for r in m.rules)
    cfg = MemoryConfig("linear", 8, 8, rules=rules, read=m.read, chunk=m.chunk, self_target=m.self_target)
    return cfg, standard_objective(m.objective.name, **dict(m.objective.params))


EXAMPLES = ["linear_attention", "gated_deltanet", "ttt_linear", "deltanet"]


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize("tokens, position", [(10, None), (10, 6), (37, 3)])
def test_example_memory_levels(name, tokens, position):
    cfg, objective = example_level(name)
    check(Case(cfg, objective, tokens=tokens, position=position, seed=tokens))


# ------------------------------------------------------------------ specs written here

SPECS = {
    # Titans' linear memory: [retain, momentum at anchor], read at the anchor (HOPE Eq. 90)
    "titans_linear": (linear(["retain", "momentum"], read="anchor"), "l2"),
    "titans_after_mse": (linear(["retain", "momentum"], read="after"), "mse"),
    "momentum_then_retain": (linear(["momentum", "retain"], read="before"), "sq"),
    # HOPE's matrix memory: dgd with a self-generated target, read at the anchor
    "hope_matrix": (linear(["dgd"], read="anchor", self_target=True), "l2"),
    "hope_matrix_after": (linear(["dgd"], read="after", self_target=True), "l2"),
    # a transition after the momentum (momentum enters the triangular system)
    "momentum_delta": (linear(["retain", "momentum", "delta"], read="after"), "l2"),
    "gd_then_delta": (linear(["retain", "gd", "delta"], read="before"), "l2"),
    # elementwise objectives at the anchor (second derivative in the backward kernel)
    "huber_before": (linear(["retain", "gd"], read="before"), ("huber", {"delta": 0.3})),
    "lp_after": (linear(["gd"], read="after"), ("lp", {"p": 3.0})),
    # gradient point at chunk size 1: Titans without momentum (at the anchor) vs Gated DeltaNet (current)
    "retain_gd_at_anchor_c1": (linear(["retain", "gd"], chunk=1), "l2"),
    "retain_gd_at_current_c1": (linear(["retain", ("gd", "current")], chunk=1), "l2"),
    "gdn_as_delta_dot": (linear(["retain", "delta", "gd"], chunk=1), "dot"),
    "dgd_current_self_c1": (linear([("dgd", "current")], chunk=1, read="anchor", self_target=True), "sq"),
    # no chunk-parallel form: the step kernel
    "momentum_c1": (linear(["retain", "momentum"], chunk=1), "l2"),
    "l1_current_c1": (linear([("gd", "current")], chunk=1), "l1"),
    # chunk not a power of two, dk != dv
    "chunk3_rect": (linear(["retain", "gd"], chunk=3, dk=8, dv=12), "l2"),
}


def objective_of(spec):
    if isinstance(spec, tuple):
        return standard_objective(spec[0], **spec[1])
    return standard_objective(spec)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_levels_with_a_carried_state(name):
    cfg, objective = SPECS[name]
    check(Case(cfg, objective_of(objective), position=5, seed=3))


# chunks of 32 and 48 tokens run as tiles of 16 (codegen/kernels.py SUB_TILE): the anchor is the chunk's,
# the state carried from tile to tile; calls that start at every kind of place in a chunk
@pytest.mark.parametrize("rules, read, objective, chunk, tokens, position", [
    (["retain", "momentum"], "anchor", "l2", 32, 70, None),
    (["retain", "momentum"], "after", "sq", 48, 61, 21),     # carried in at tile 1 of 3, 5 tokens into it
    (["retain", "gd"], "before", "huber", 32, 40, 16),        # carried in on a tile boundary inside a chunk
    (["dgd"], "anchor", "l2", 32, 50, 7),                     # a transition
    (["gd"], "after", "l2", 32, 13, 35),                      # a call inside one chunk, not at its end
])
def test_chunks_longer_than_a_tile_run_as_several_tiles(rules, read, objective, chunk, tokens, position):
    cfg = linear(rules, chunk=chunk, read=read, self_target=rules == ["dgd"])
    objective = objective_of(("huber", {"delta": 0.3}) if objective == "huber" else objective)
    lk = kernels(cfg, objective)
    assert lk.form == "dual" and lk.tile_tokens == 16 and lk.block_t == 16
    check(Case(cfg, objective, tokens=tokens, position=position, seed=tokens), against_chunked=False)


def test_the_gradient_point_is_meaning():
    """[retain, gd at anchor] and [retain, gd at current] at C = 1 are different models (semantics §2.2;
    each matches the reference in test_spec_levels_with_a_carried_state): the kernels differ too."""
    runs = []
    for name in ("retain_gd_at_anchor_c1", "retain_gd_at_current_c1"):
        cfg = SPECS[name][0]
        runs.append(run_path(Case(cfg, objective_of("l2")), "triton", kernels(cfg, objective_of("l2"))))
    assert ratio(runs[0].y, runs[1].y) > 4 * OUTPUT_RATIO


@pytest.mark.parametrize("rules,chunk,dv", [(["retain", "momentum", "delta"], 4, 32),
                                            (["retain", ("gd", "current")], 1, 32), (["delta", "gd"], 1, 32),
                                            (["retain", ("gd", "current")], 1, 24)],
                         ids=["dual", "wy", "wy-delta", "wy-partial-block"])
def test_several_row_blocks_sum_their_partial_gradients(rules, chunk, dv):
    """Rows of W split across programs (and, in the wy form, walked in blocks by the tile-parallel
    backward; the last block partly masked when dv is not a multiple of it) give the reference's
    outputs, states and gradients."""
    cfg = linear(rules, dv=dv, chunk=chunk)
    lk = kernels(cfg, objective_of("l2"), f"tests.blocks{chunk}.{dv}")
    lk.block_v = 16
    try:
        case = Case(cfg, objective_of("l2"), tokens=37, position=2, seed=5)
        compare(run_reference(case), run_path(case, "triton", lk), "two row blocks", limit=FLOAT32_RATIO)
    finally:
        lk.block_v = None


@pytest.mark.parametrize("rules,objective,chunk,tile", [(["retain", ("gd", "current")], "l2", 1, None),
                                                        (["retain", ("gd", "current")], "l2", 1, 32),
                                                        ([("dgd", "current")], "l2", 1, None), (["delta", "gd"], "dot", 1, 32),
                                                        (["retain", "momentum", "delta"], "l2", 4, None)],
                         ids=["gated-deltanet", "gated-deltanet-tile32", "dgd", "delta-dot-tile32", "dual-momentum-delta"])
def test_kernels_with_the_gpus_launch_settings(monkeypatch, rules, objective, chunk, tile):
    """The launch settings a GPU uses, under the interpreter: one tile per program in the wy form's
    tile-parallel kernels, which pass keys and values in blocks of columns (16 in prep, 32 in prep_bwd; at
    32-token tiles 32 and 16), forward walks over wider row blocks (32 rows) than the backward's (16),
    every tensor of a several-block head (dv = 64): the reference's outputs, states and gradients."""
    cfg = linear(rules, chunk=chunk, dk=64, dv=64, self_target=rules[0] == ("dgd", "current"))
    lk = dataclasses.replace(kernels(cfg, objective_of(objective), "tests.gpu_settings"), tile=tile)
    wide = tile is not None
    monkeypatch.setattr(type(lk), "tiles_per_program", staticmethod(lambda n_tiles: 1))
    monkeypatch.setattr(type(lk), "rows_per_program",
                        lambda self, walk=False, heads=0, device=None, tile=0: 32 if walk else 16)
    monkeypatch.setattr(type(lk), "walk_settings", lambda self, prec, heads, device, tile=0: (32, {}))
    monkeypatch.setattr(type(lk), "columns_per_block",
                        lambda self, tile, backward=False: (16 if backward else 32) if wide else (32 if backward else 16))
    case = Case(cfg, objective_of(objective), tokens=70 if wide else 37, position=3, seed=11)
    compare(run_reference(case), run_path(case, "triton", lk), "GPU launch settings", limit=FLOAT32_RATIO)


def test_the_wy_forms_anchor_is_its_state_as_on_the_chunked_path():
    """The wy form reads at the current state: the anchor it returns is its state, one tensor (converted
    once), as the chunked path returns it."""
    cfg = linear(["retain", ("gd", "current")], chunk=1)
    case = Case(cfg, objective_of("l2"), tokens=20, position=3, seed=4)
    for path, lk in (("chunked", None), ("triton", kernels(cfg, objective_of("l2"), "tests.anchor"))):
        run = run_path(case, path, lk)
        assert run.state.anchor["W"] is run.state.params["W"], path


def test_wy_tiles_of_free_size_give_the_same_result():
    cfg = linear(["retain", ("gd", "current")], chunk=1)
    lk = kernels(cfg, objective_of("l2"), "tests.tiles")
    case = Case(cfg, objective_of("l2"), tokens=37, seed=9)
    runs = []
    for tile in (16, 32):
        lk.tile = tile
        runs.append(run_path(case, "triton", lk))
    lk.tile = None
    compare(runs[0], runs[1], "tile 16 vs 32", limit=FLOAT32_RATIO)


@pytest.mark.parametrize("rules", [["retain", ("gd", "current")], [("delta", "current")], ["retain"]],
                         ids=["gated_deltanet", "deltanet", "no_columns"])
@pytest.mark.parametrize("tokens", [40, 64])
def test_the_backward_walk_makes_the_start_states_the_forward_did_not_store(rules, tokens):
    """With `states_every` 2 the wy forward walk stores every second tile's start state and the backward
    walk makes the others again from it: the reference's outputs, states and gradients, with an odd
    number of tiles (3 of 16 tokens, the last pair one tile) or an even one (4)."""
    cfg = linear(rules, chunk=1)
    found = kernels(cfg, objective_of("l2"), "tests.every")
    lk = dataclasses.replace(found, states_every=2, launches={n: 0 for n in found.launches})
    case = Case(cfg, objective_of("l2"), tokens=tokens, position=5, seed=tokens)
    compare(run_reference(case), run_path(case, "triton", lk), "a start state every 2 tiles", limit=FLOAT32_RATIO)
    assert lk.launches["bwd"] == 1


# ------------------------------------------------------------------ splitting and decoding

@pytest.mark.parametrize("name", ["titans_linear", "hope_matrix", "retain_gd_at_current_c1", "momentum_delta"])
def test_a_split_run_and_token_by_token_decoding_equal_the_whole_run(name):
    cfg, objective = SPECS[name]
    objective = objective_of(objective)
    lk = kernels(cfg, objective)
    case = Case(cfg, objective, tokens=10, seed=11)
    y, state = split_run(lk, case, [])
    for cuts in ([3], [4, 8], list(range(1, 10))):  # inside a chunk, at chunk ends, every token (decoding)
        ys, states = split_run(lk, case, cuts)
        assert ratio(y, ys) <= OUTPUT_RATIO, cuts
        for key, value in state.to_tensors().items():
            assert ratio(value.float(), states.to_tensors()[key].float()) <= OUTPUT_RATIO, (cuts, key)


def test_sub_tiled_chunks_split_anywhere_and_decoded_token_by_token_equal_the_whole_run():
    """Chunks of 32 tokens as tiles of 16: calls cut inside a tile, at a tile end inside a chunk, at a
    chunk end, and one token at a time (the step kernel) carry the same state as one call."""
    cfg, objective = linear(["retain", "momentum"], chunk=32, read="anchor"), objective_of("l2")
    lk = kernels(cfg, objective)
    case = Case(cfg, objective, tokens=45, seed=12)
    y, state = split_run(lk, case, [])
    for cuts in ([5], [16, 33], [20, 21, 32], list(range(1, 45))):
        ys, states = split_run(lk, case, cuts)
        assert ratio(y, ys) <= OUTPUT_RATIO, cuts
        for key, value in state.to_tensors().items():
            assert ratio(value.float(), states.to_tensors()[key].float()) <= OUTPUT_RATIO, (cuts, key)


# ------------------------------------------------------------------ random rule combinations

RULES = st.lists(st.sampled_from(["retain", "gd", "momentum", "delta", "dgd"]), min_size=1, max_size=3)


@drawing(12)
@given(rules=RULES, chunk=st.sampled_from([1, 3, 4, 32]), read=st.sampled_from(["after", "before", "anchor"]),
       current=st.booleans(), self_target=st.booleans(),
       objective=st.sampled_from(["l2", "sq", "mse", "dot", "huber"]),
       position=st.sampled_from([None, 0, 2, 5, 21, 40]), tokens=st.integers(1, 45), seed=st.integers(0, 2 ** 16))
def test_random_rule_combinations(rules, chunk, read, current, self_target, objective, position, tokens, seed):
    at = "current" if current and chunk == 1 else "anchor"
    try:
        cfg = MemoryConfig("linear", 8, 8, rules=tuple(Rule(r, at if r in ("gd", "momentum", "dgd") else "anchor")
                                                       for r in rules),
                           read=read, chunk=chunk, self_target=self_target)
    except ValueError:
        assume(False)
    case = Case(cfg, objective_of(objective), tokens=tokens, position=position, seed=seed)
    assume(float32_can_match(case))
    check(case, against_chunked=False)


@drawing(8)
@given(rules=RULES, chunk=st.sampled_from([1, 4, 32]), read=st.sampled_from(["after", "before", "anchor"]),
       current=st.booleans(), self_target=st.booleans(), objective=st.sampled_from(["l2", "sq", "dot", "huber"]),
       clip=st.sampled_from([0.05, 0.5]), position=st.sampled_from([None, 2, 21]), tokens=st.integers(1, 40),
       seed=st.integers(0, 2 ** 16))
def test_clipped_gradients(rules, chunk, read, current, self_target, objective, clip, position, tokens, seed):
    """`clip` in the kernels (a program holds every row: the norm spans them): forward, backward and the
    step kernel against the reference, with some tokens clipped and others not."""
    at = "current" if current and chunk == 1 else "anchor"
    try:
        cfg = MemoryConfig("linear", 8, 8, rules=tuple(Rule(r, at if r in ("gd", "momentum", "dgd") else "anchor")
                                                       for r in rules),
                           read=read, chunk=chunk, self_target=self_target, clip=clip)
    except ValueError:
        assume(False)
    case = Case(cfg, objective_of(objective), tokens=tokens, position=position, seed=seed)
    assume(float32_can_match(case))
    check(case)


def test_clip_takes_every_row_whatever_the_block_of_rows_asked_for():
    cfg = dataclasses.replace(linear(["retain", "momentum"], dv=32), clip=0.2)
    lk = kernels(cfg, objective_of("l2"), "tests.clip_rows")
    lk.block_v = 16
    try:
        assert lk.rows_per_program() == 32
        case = Case(cfg, objective_of("l2"), tokens=21, position=2, seed=5)
        compare(run_reference(case), run_path(case, "triton", lk), "clip, whole rows", limit=FLOAT32_RATIO)
    finally:
        lk.block_v = None


@drawing(10)
@given(rules=RULES, read=st.sampled_from(["after", "before", "anchor"]), current=st.booleans(),
       self_target=st.booleans(), objective=st.sampled_from(["l2", "dot", "mse"]), dv=st.sampled_from([24, 32, 40]),
       position=st.sampled_from([None, 3, 21]), tokens=st.integers(17, 45), every=st.sampled_from([1, 2]),
       walk=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2 ** 16))
def test_random_wy_levels_in_several_row_blocks(rules, read, current, self_target, objective, dv, position, tokens,
                                                every, walk, seed):
    """The wy form with its walks over blocks of 16 rows (two or three, the last partly masked where dv is
    24 or 40): each block's share of the backward's products with the tiles' states, summed by prep_bwd,
    gives the reference's outputs, states and gradients, whatever the rules (with no columns E, with
    only the rank-one term or only the transition's, or both), and whichever tiles' start states the
    forward stored (`states_every`, or one a step of a forward walking `walk_tiles` tiles a step)."""
    at = "current" if current else "anchor"
    try:
        cfg = MemoryConfig("linear", 16, 16 if self_target else dv,
                           rules=tuple(Rule(r, at if r in ("gd", "momentum", "dgd") else "anchor") for r in rules),
                           read=read, chunk=1, self_target=self_target)
    except ValueError:
        assume(False)
    found = kernels(cfg, objective_of(objective))
    assume(found.prep is not None and found.prep_bwd is not None)
    lk = dataclasses.replace(found, block_v=16, states_every=every, walk_tiles=walk,
                             launches={n: 0 for n in found.launches})
    case = Case(cfg, objective_of(objective), tokens=tokens, position=position, seed=seed)
    assume(float32_can_match(case))
    compare(run_reference(case), run_path(case, "triton", lk), f"{lk.columns or 'no'} columns, row blocks of 16",
            limit=FLOAT32_RATIO)
    assert lk.launches["bwd"] == 1


# ------------------------------------------------------------------ a forward walk over merged tiles

def merged_walk_level(level: str):
    """(config, objective) of a wy-form level: an example's, a delta rule with a self-generated target
    ("self_target") or retention alone, a level with no columns E ("no_columns")."""
    if level in EXAMPLES:
        return example_level(level)
    if level == "self_target":
        return linear([("delta", "current")], chunk=1, self_target=True), objective_of("l2")
    return linear(["retain"], chunk=1), objective_of("l2")


@pytest.mark.parametrize("level", ["gated_deltanet", "deltanet", "no_columns"])
@pytest.mark.parametrize("walk_tiles", [2, 4])
@pytest.mark.parametrize("tokens, position", [(40, None), (64, 5), (75, 21)])
def test_a_backward_after_a_forward_over_merged_tiles(level, walk_tiles, tokens, position):
    """A forward for training that walks `walk_tiles` tiles a step stores the start state of each step;
    the backward walk, over single tiles, makes the others again: the reference's outputs, states and
    gradients, with the last step partly (40, 75 tokens) or wholly (64 at 4 a step) within the tokens."""
    cfg, objective = merged_walk_level(level)
    found = kernels(cfg, objective, f"tests.merge_bwd_{level}")
    with pytest.raises(ValueError, match="walk_tiles must be 1, 2 or 4"):
        dataclasses.replace(found, walk_tiles=3)
    lk = dataclasses.replace(found, walk_tiles=walk_tiles, launches={n: 0 for n in found.launches})
    case = Case(cfg, objective, tokens=tokens, position=position, seed=tokens)
    compare(run_reference(case), run_path(case, "triton", lk), f"{walk_tiles} tiles a step", limit=FLOAT32_RATIO)
    assert lk.launches["merge"] == 1 and lk.launches["bwd"] == 1

@pytest.mark.parametrize("level", ["gated_deltanet", "deltanet", "linear_attention", "self_target", "no_columns"])
@pytest.mark.parametrize("walk_tiles", [2, 4])
@pytest.mark.parametrize("tokens, cuts", [(40, []), (64, []), (75, [20])])
def test_a_forward_walk_over_merged_tiles_equals_the_reference(level, walk_tiles, tokens, cuts):
    """A forward that keeps nothing for a backward walks `walk_tiles` tiles of 16 tokens a step, their
    terms merged by `_nl_merge_tiles`: the reference's outputs and state, and within float32 rounding the
    walk over single tiles, with the last merged tile partly past the tokens (40, 75) or with tiles past
    the last (40 tokens in 3 tiles at 4 a step), and from a carried-in state (a call cut after 20 tokens)."""
    cfg, objective = merged_walk_level(level)
    found = kernels(cfg, objective, f"tests.merge_{level}")
    assert found.merge is not None
    merged = dataclasses.replace(found, walk_tiles=walk_tiles, launches={n: 0 for n in found.launches})
    case = Case(cfg, objective, tokens=tokens, seed=tokens)
    with torch.no_grad():
        y, state = split_run(merged, case, cuts)
        single = Run(*split_run(found, case, cuts), {})
    assert merged.launches["merge"] == len(cuts) + 1 and merged.launches["fwd"] == len(cuts) + 1, merged.launches
    compare(run_reference(case), Run(y, state, {}), f"{walk_tiles} tiles a step", grads=False, limit=FLOAT32_RATIO)
    compare(single, Run(y, state, {}), "merged vs single tiles", grads=False, limit=FLOAT32_RATIO)


@pytest.mark.parametrize("family", ["linear", "mlp"])
@pytest.mark.parametrize("grad", [True, False])
def test_a_forward_under_no_grad_keeps_no_states_for_a_backward(monkeypatch, family, grad):
    """Inputs that require gradients (a model's parameters made them) under no_grad: nothing will call the
    backward, so the forward stores no tiles' states; with grad mode on it does. Linear and MLP memories."""
    if family == "linear":
        cfg = linear(["retain", ("gd", "current")], chunk=1)
    else:
        cfg = MemoryConfig("mlp", 8, 8, depth=2, hidden=16, act="silu", residual=True, rules=(Rule("gd"),), chunk=4)
    lk = kernels(cfg, objective_of("l2"), f"tests.no_grad_{family}")
    stored = []
    launch = type(lk).launch_fwd
    monkeypatch.setattr(type(lk), "launch_fwd", lambda self, *a, store, **kw: stored.append(store) or
                        launch(self, *a, store=store, **kw))
    inp = make_inputs(cfg, 1, 2, 40, seed=1)
    gates = {n: to32(g) for n, g in inp.gates.items() if n in cfg.required_gates()}
    q, k, v = (to32(t) for t in (inp.q, inp.k, inp.v))      # leaves that require gradients
    with torch.set_grad_enabled(grad):
        y, _ = lk.run(cfg, objective_of("l2"), q, k, v, gates, start_state(cfg, to32(inp.params0), None, k))
    assert stored == [grad] and (y.grad_fn is not None) == grad
