"""A model is measured before it is built: its level graph's parameter count is the model's own, and a
model whose parameters alone exceed the memory there is is refused with both sizes. Training measures
what a segment keeps for its backward at its batch too, and refuses a batch whose activations do not
fit beside the parameters' training state."""

from __future__ import annotations

import json

import pytest
import torch

import nldsl
from nldsl.compiler import compile_spec, write_package
from nldsl.runtime import fits
from cuda_graph_standin import graph_ids, graphs_alive
from tiny_specs import tiny_spec


@pytest.fixture()
def package(tmp_path):
    spec = tmp_path / "tiny.nl"
    spec.write_text(tiny_spec())
    fe, files = compile_spec(str(spec))
    assert files is not None
    return write_package(files, str(tmp_path / "build"), fe.model.name)


def test_the_graphs_parameter_count_is_the_models(package):
    model = nldsl.load(package)
    assert fits.parameter_count(package) == sum(p.numel() for p in model.parameters())


def test_a_model_larger_than_the_memory_is_refused_before_it_is_built(package, monkeypatch):
    count = fits.parameter_count(package)
    fits.check_fits(package)  # this machine holds the tiny model
    monkeypatch.setattr(fits, "host_memory", lambda: 4 * count - 1)
    with pytest.raises(fits.ModelTooLarge, match=f"{count:,} parameters alone need"):
        nldsl.load(package)
    monkeypatch.setattr(fits, "host_memory", lambda: 4 * count)
    assert isinstance(nldsl.load(package), torch.nn.Module)


@pytest.mark.parametrize("outer, cms", [("adamw(lr = 1e-3)", "momentum(lr = 0.1, beta = 0.9)"),
                                        ("muon(lr = 1e-3)", "m3(lr = 0.1)"), ("sgd(lr = 0.1)", "sgd(lr = 0.1)")])
def test_the_graph_counts_what_training_holds(tmp_path, outer, cms):
    """Parameters, a gradient for each, and the optimizers' states as a step leaves them (slow windows of 8
    tokens close within the step, so every level has stepped)."""
    from tiny_specs import build_loop, cms_memory_spec

    text = cms_memory_spec(bptt="truncated").replace("update    sgd(lr = 0.1)", f"update    {outer}") \
        .replace("update sgd(lr = 0.5)", f"update {cms}")
    model, loop, _ = build_loop(tmp_path, text)
    loop.step(torch.randint(0, 16, (2, 17), generator=torch.Generator().manual_seed(0)))
    states = sum(t.numel() for opt in [loop.outer_opt, *loop.cms_opts.values()] for st in opt.state.values()
                 for t in st.values() if isinstance(t, torch.Tensor) and t.dim() > 0)
    params = sum(p.numel() for p in model.parameters())
    assert states > 0 or "sgd" in outer
    package = next((tmp_path / "build").rglob("levels.json")).parent
    assert fits.training_count(package) == 2 * params + states


def test_training_is_refused_where_the_parameters_fit_but_their_training_state_does_not(package, monkeypatch):
    count, values = fits.parameter_count(package), fits.training_count(package)
    assert values >= 2 * count + 2 * count  # tiny_spec's adamw: two moments a parameter
    monkeypatch.setattr(fits, "host_memory", lambda: 4 * values - 1)
    fits.check_fits(package)  # to run it, the parameters are enough
    with pytest.raises(fits.ModelTooLarge, match=f"{count:,} parameters with their gradients and optimizer "
                                                  f"states \\({values:,} values\\) need"):
        fits.check_fits(package, training=True)
    monkeypatch.setattr(fits, "host_memory", lambda: 4 * values)
    fits.check_fits(package, training=True)


def test_nlc_train_refuses_it_with_a_message(package, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from nldsl.runtime import fits; size = 4 * fits.parameter_count(sys.argv[1]) + 4; "
            "fits.host_memory = lambda: size; "
            "from nldsl.cli import main; sys.argv = ['nlc', 'train', sys.argv[1], '--steps', '1', '--out', sys.argv[2]]; main()")
    run = subprocess.run([sys.executable, "-c", code, str(package), str(tmp_path / "run")], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "with their gradients and optimizer states" in run.stderr and "Traceback" not in run.stderr


def test_the_activations_of_a_batch_are_measured_from_two_and_three_rows(package):
    """What autograd keeps grows by the same amount a row from two rows on, so the extension to many rows
    is what a forward of that many rows keeps; and it holds at least the loss's log-probabilities."""
    model = nldsl.load(package)
    tokens = 12
    assert fits.activation_bytes(model, 7, tokens) == fits.saved_bytes(model, 7, tokens)
    assert fits.activation_bytes(model, 2, tokens) == fits.saved_bytes(model, 2, tokens)
    assert fits.saved_bytes(model, 7, tokens) >= 7 * tokens * model.vocab_size * 4
    assert fits.saved_bytes(model, 2, 2 * tokens) > fits.saved_bytes(model, 2, tokens)


def test_measuring_the_activations_leaves_the_model_and_the_random_stream_alone(package):
    model = nldsl.load(package)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    fits.activation_bytes(model, 5, 8)
    after_measuring = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after_measuring)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_measuring_the_activations_leaves_no_autograd_graph_alive(package):
    """The measured forward's graph goes with it: a graph left alive (a saved tensor holding its own
    grad_fn is a cycle) holds a segment's activations for the whole run, and on a GPU its parameters'
    AccumulateGrad nodes, made on the default stream, break the capture of `nlc train --cuda-graphs`."""
    model = nldsl.load(package)
    before = graph_ids()
    fits.activation_bytes(model, 5, 8)
    assert graphs_alive(before) == []


@pytest.mark.parametrize("bptt, expected", [("truncated", 4), ("full", 16)])
def test_a_step_keeps_the_activations_of_its_longest_segment(tmp_path, package, bptt, expected):
    """The loop cuts a step at every CMS window's end, so the shortest window bounds a segment, except
    under `bptt full`, whose graph spans the step; a model without CMS keeps its whole sequence."""
    from nldsl.runtime.train.levels import longest_segment
    from tiny_specs import build_loop, cms_memory_spec

    _, loop, info = build_loop(tmp_path, cms_memory_spec(bptt=bptt, fast=4, slow=8))
    assert longest_segment(info, 16) == expected
    assert max(end - start for start, end in loop._cuts(16)) == 4  # the cuts themselves
    plain = json.loads((package / "levels.json").read_text())["runtime"]
    assert longest_segment(plain, 16) == 16


def test_training_is_refused_where_the_activations_of_its_batch_do_not_fit(package, monkeypatch):
    """The parameters and their training state fit; a segment's activations at this batch do not."""
    model = nldsl.load(package)
    state = 4 * fits.training_count(package)
    kept = fits.activation_bytes(model, 64, 32)
    monkeypatch.setattr(fits, "host_memory", lambda: state + kept - 1)
    with pytest.raises(fits.ModelTooLarge, match="activations a segment of 32 tokens keeps for its backward at "
                                                 "batch 64"):
        fits.check_training_fits(package, model, "cpu", 64, 32)
    monkeypatch.setattr(fits, "host_memory", lambda: state + kept)
    fits.check_training_fits(package, model, "cpu", 64, 32)


def test_nlc_train_refuses_a_batch_too_large_for_this_machine_with_a_message(package, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from nldsl.runtime import fits; size = 4 * fits.training_count(sys.argv[1]) + 10 ** 6; "
            "fits.host_memory = lambda: size; "
            "from nldsl.cli import main; sys.argv = ['nlc', 'train', sys.argv[1], '--steps', '1', '--batch', '64', "
            "'--out', sys.argv[2]]; main()")
    run = subprocess.run([sys.executable, "-c", code, str(package), str(tmp_path / "run")], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "activations a segment of" in run.stderr and "batch 64" in run.stderr and "Traceback" not in run.stderr
