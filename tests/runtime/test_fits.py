"""A model is measured before it is built: its level graph's parameter count is the model's own, and a
model whose parameters alone exceed the memory there is is refused with both sizes."""

from __future__ import annotations

import pytest
import torch

import nldsl
from nldsl.compiler import compile_spec, write_package
from nldsl.runtime import fits
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
