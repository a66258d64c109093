"""The streamed kernels of MLP memories (`<level>_fwd_streamed`, `<level>_bwd_streamed`: the state and
its gradients in global memory, a block of hidden units at a time; what a GPU runs for a state above
launch_mlp.ON_CHIP_FLOATS) against the float64 reference, the chunked path and the on-chip kernels:
outputs, final states and every gradient. Hidden 20 or 24 in blocks of 16 (the second block partly
masked) or of 32 (one block), and hidden 40 with each head's forward split over 2 or 3 programs (the
chunk-at-a-time launches of `<level>_fwd_streamed_out` and `<level>_fwd_streamed`), under the Triton
interpreter."""
from __future__ import annotations

import dataclasses
import types

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402
from hypothesis import given  # noqa: E402

from nldsl.runtime.memory import MemoryConfig, Rule, chunked, standard_objective  # noqa: E402
from nldsl.runtime.triton import launch_mlp  # noqa: E402
from test_kernels_mlp import RANDOM_LEVEL, TITANS, check, check_random_level, mcase, mlp  # noqa: E402
from drawing import drawing  # noqa: E402
from triton_testkit import FLOAT32_RATIO, kernels, make_inputs, ratio, split_run, start_state, to32  # noqa: E402,E501

pytestmark = pytest.mark.triton


def streamed(cfg, objective, hidden_block: int = 16, slices: int = 1):
    """The level's kernels made to run the streamed kernels (the backward kernel too, also on a GPU),
    `hidden_block` hidden units at a time, each head's forward split over `slices` programs."""
    return dataclasses.replace(kernels(cfg, objective), stream=True, stream_backward=True, hidden_block=hidden_block,
                               slices=slices,
                               launches={"fwd": 0, "bwd": 0, "bwd_tiles": 0})


CASES = [
    # rules, read, chunk, self_target, residual, objective, tokens, position
    (TITANS, "after", 4, False, True, "sq", 13, 2),
    (TITANS, "before", 4, False, True, "l2", 11, None),
    (TITANS, "anchor", 4, False, False, "mse", 10, 5),
    (("gd",), "after", 3, False, True, "huber", 9, 1),
    (("dgd",), "anchor", 8, True, True, "l2", 21, 5),        # HOPE's self-modifying memory
    (("retain", "delta", "gd"), "before", 4, False, True, "l2", 11, 6),
    (TITANS, "after", 32, False, True, "l2", 40, 21),       # chunks of two tiles, carried in mid-tile
]


@pytest.mark.parametrize("rules, read, chunk, self_target, residual, objective, tokens, position", CASES)
def test_streamed_forward_and_backward(rules, read, chunk, self_target, residual, objective, tokens, position):
    cfg = mlp(rules, chunk=chunk, read=read, self_target=self_target, residual=residual, hidden=24)
    lk = streamed(cfg, standard_objective(objective))
    check(mcase(cfg, standard_objective(objective), tokens=tokens, position=position, seed=tokens), lk=lk)


BIASED = [
    # rules, read, chunk, self_target, residual, objective, tokens, position
    (TITANS, "after", 4, False, True, "sq", 13, 2),
    (TITANS, "before", 4, False, True, "l2", 11, None),
    (TITANS, "anchor", 4, False, False, "mse", 10, 5),
    (("gd", "retain"), "after", 4, True, True, "l2", 12, 2),   # a self-generated target
    (("dgd",), "after", 3, False, True, "l2", 10, 1),         # a transition on W1, not on b1
    (TITANS, "after", 32, False, True, "l2", 40, 21),        # chunks of two tiles, carried in mid-tile
]


@pytest.mark.parametrize("rules, read, chunk, self_target, residual, objective, tokens, position", BIASED)
def test_streamed_forward_with_biases(rules, read, chunk, self_target, residual, objective, tokens, position):
    """Biases in the streamed forward (b1 streamed with W1's rows, b2 on chip; one program per head) and
    the PyTorch walk over the chunks as its backward."""
    cfg = dataclasses.replace(mlp(rules, chunk=chunk, read=read, self_target=self_target, residual=residual,
                                  hidden=24), bias=True)
    lk = streamed(cfg, standard_objective(objective), slices=3)
    assert lk.bwd_streamed is None and lk.slices_for(4, "cuda") == 1
    check(mcase(cfg, standard_objective(objective), tokens=tokens, position=position, seed=tokens), lk=lk)


@pytest.mark.parametrize("rules, tokens, position", [(TITANS, 1, 5), (TITANS, 3, None), (("dgd",), 2, 1)])
def test_calls_shorter_than_a_chunk(rules, tokens, position):
    """Decoding a token at a time with a large memory: calls inside one chunk, the anchor carried."""
    cfg = mlp(rules, read="after", hidden=24)
    check(mcase(cfg, standard_objective("l2"), tokens=tokens, position=position, seed=9),
          lk=streamed(cfg, standard_objective("l2")))


def test_keys_and_values_of_different_widths():
    """W1 (hidden, dk) and W2 (dv, hidden) of different sizes (no residual). (A W2 copy placed at W1's
    size apart would overlap the other copy; the interpreter runs programs one after another and a
    block's loads before its stores, so such an overlap shows only on a GPU.)"""
    cfg = MemoryConfig("mlp", 8, 12, depth=2, hidden=24, act="gelu", residual=False,
                       rules=(Rule("retain"), Rule("momentum")), read="before", chunk=4)
    case = mcase(cfg, standard_objective("l2"), batch=1, heads=1, tokens=11, position=1, seed=12)
    check(case, lk=streamed(cfg, standard_objective("l2")))


@pytest.mark.parametrize("rules, read, chunk, self_target, residual, objective, tokens, position, slices",
                         [(*case, 2 + i % 2) for i, case in enumerate(CASES)])
def test_a_head_split_over_programs(rules, read, chunk, self_target, residual, objective, tokens, position,
                                    slices):
    """Hidden 40 as slices of 32 and 8 units (2) or 16, 16 and 8 (3), a chunk at a time: every slice's
    share of the memory at the anchor, then the slices' passes; y sums their shares."""
    cfg = mlp(rules, chunk=chunk, read=read, self_target=self_target, residual=residual, hidden=40)
    lk = streamed(cfg, standard_objective(objective), slices=slices)
    check(mcase(cfg, standard_objective(objective), tokens=tokens, position=position, seed=tokens), lk=lk)


def test_without_the_streamed_backward_kernel_the_pytorch_walk_takes_over():
    """What a level does when its streamed backward does not fit the device (OutOfResources)."""
    cfg = mlp(TITANS, chunk=4, read="after", hidden=24)
    lk = dataclasses.replace(streamed(cfg, standard_objective("l2")), bwd_streamed=None)
    check(mcase(cfg, standard_objective("l2"), tokens=11, position=3, seed=2), lk=lk)


@pytest.mark.parametrize("hidden_block", [16, 32])
def test_streamed_forward_equals_the_on_chip_forward(hidden_block):
    """The same outputs, end state and anchor as the on-chip kernel, whatever the block."""
    cfg = mlp(TITANS, chunk=4, read="after", hidden=24)
    objective = standard_objective("l2")
    case = mcase(cfg, objective, tokens=14, seed=3)
    y, state = split_run(kernels(cfg, objective), case, [6])
    ys, states = split_run(streamed(cfg, objective, hidden_block), case, [6])
    assert ratio(y, ys) <= FLOAT32_RATIO
    for key, value in state.to_tensors().items():
        assert ratio(value, states.to_tensors()[key]) <= FLOAT32_RATIO, key


@pytest.mark.parametrize("slices", [1, 3])
def test_streamed_calls_split_anywhere_equal_the_whole_run(slices):
    """Calls cut anywhere carry the state of one whole call (one program per head), with each head's
    forward on one program or split over three."""
    cfg = mlp(TITANS, chunk=32, read="after", hidden=40)
    case = mcase(cfg, standard_objective("l2"), tokens=50, seed=13)
    y, state = split_run(streamed(cfg, standard_objective("l2")), case, [])
    for cuts in ([5], [16, 33], [20, 21, 32]):
        ys, states = split_run(streamed(cfg, standard_objective("l2"), slices=slices), case, cuts)
        assert ratio(y, ys) <= FLOAT32_RATIO, cuts
        for key, value in state.to_tensors().items():
            assert ratio(value, states.to_tensors()[key]) <= FLOAT32_RATIO, (cuts, key)


def test_the_launcher_streams_a_state_too_large_for_the_chip(monkeypatch):
    """On a GPU a state above ON_CHIP_FLOATS runs the streamed forward without gradients instead of falling
    back (with them the chunked path, measured faster); a forced choice wins; without a streamed kernel
    the level still says why it cannot run."""
    small = kernels(mlp(TITANS, hidden=24), standard_objective("l2"))
    gpu = types.SimpleNamespace(is_cuda=True, shape=(2, 4))
    monkeypatch.setattr(launch_mlp, "interpreting", lambda: False)
    assert not small.streams(gpu) and small.unfit(gpu) is None
    monkeypatch.setattr(launch_mlp, "ON_CHIP_FLOATS", small.state_floats() - 1)
    assert small.streams(gpu) and small.unfit(gpu) is None
    assert not small.streams(types.SimpleNamespace(is_cuda=False, shape=(2, 4)))
    assert not small.streams(gpu, grad=True) and "with gradients" in small.unfit(gpu, grad=True)
    assert not dataclasses.replace(small, stream=False).streams(gpu)
    assert "does not fit on chip" in dataclasses.replace(small, fwd_streamed=None).unfit(gpu)
    assert "global memory" in dataclasses.replace(small, stream=True).backward
    # how many programs a head's streamed forward gets: about two per multiprocessor, one per block at most
    monkeypatch.setattr(launch_mlp, "multiprocessors", lambda device: 132)
    wide = dataclasses.replace(small, hidden=1024, hidden_block=16)          # 64 blocks of hidden units
    assert [wide.slices_for(p, "cuda") for p in (8, 132, 264, 1)] == [33, 2, 1, 64]
    assert wide.slices_for(8, "cpu") == 1 and dataclasses.replace(wide, slices=4).slices_for(300, "cuda") == 4
    assert "PyTorch" in dataclasses.replace(small, stream=True, bwd_streamed=None).backward
    # after a streamed forward on a GPU the backward walks the chunks in PyTorch unless asked for the kernel
    assert small.backward_kernel_streamed(types.SimpleNamespace(is_cuda=False))
    assert not small.backward_kernel_streamed(gpu) and "on a GPU the tiles in reverse" in small.streamed_backward
    assert dataclasses.replace(small, stream_backward=True).backward_kernel_streamed(gpu)
    assert not dataclasses.replace(small, stream_backward=False).backward_kernel_streamed(types.SimpleNamespace(is_cuda=False))
    assert not dataclasses.replace(small, bwd_streamed=None, stream_backward=True).backward_kernel_streamed(gpu)


def test_a_streamed_forward_without_gradients_stores_nothing():
    cfg = mlp(TITANS, chunk=4, read="after", hidden=24)
    objective = standard_objective("l2")
    lk = streamed(cfg, objective)
    case = mcase(cfg, objective, tokens=12, seed=4)
    with torch.no_grad():
        y, state = split_run(lk, case, [])
        y_chunked = _chunked(cfg, objective, case)
    assert lk.launches["fwd"] == 1
    assert ratio(y_chunked, y) <= FLOAT32_RATIO


def _chunked(cfg, objective, case):
    inp = make_inputs(cfg, case.batch, case.heads, case.tokens, case.seed, grad=False)
    gates = {n: to32(inp.gates[n]) for n in cfg.required_gates()}
    y, _ = chunked(cfg, objective, to32(inp.q), to32(inp.k), to32(inp.v), gates, None,
                   start_state(cfg, to32(inp.params0), None, inp.k))
    return y


@drawing(8)
@given(**RANDOM_LEVEL)
def test_random_streamed_combinations(**drawn):
    check_random_level(20, **drawn, stream=True, hidden_block=16)
