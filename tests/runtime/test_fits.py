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
