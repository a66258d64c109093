"""`nldsl.load_block`: one block of a spec alone, as a stateful layer over features.

For every block of every example, in float64: the layer computes what the block computes inside its
model (same weights, the input the model gave it), a sequence split anywhere and carried through the
state gives the whole run, and the reference and chunked backends agree, gradients included. Then
what the loader refuses, with messages that say why.
"""
from __future__ import annotations

import pytest
import torch

import nldsl
from compile_testkit import (EXAMPLES, assert_close, assert_split_runs_equal, build, example_id, in_root,
                             inputs_and_outputs, set_backend, tokens, write_spec)
from nldsl.compiler import compile_spec, write_package

B, T = 2, 21
SPLITS = (5, 8, 16)

_BUILT: dict = {}


@pytest.fixture
def built(tmp_path_factory):
    """(package directory, float64 model) of an example, compiled once per session."""
    def get(spec):
        if spec not in _BUILT:
            out = tmp_path_factory.mktemp(example_id(spec))
            model = build(spec, out)
            _BUILT[spec] = (out / model_name(spec), model)
        return _BUILT[spec]
    return get


def model_name(spec: str) -> str:
    with in_root():
        fe, _ = compile_spec(spec)
    return fe.model.name


def blocks_of(package) -> dict:
    return nldsl.compiler._import_package(package).model.BLOCKS


def layer_of(package, name, backend="chunked", seed=0):
    torch.manual_seed(seed)
    return nldsl.load_block(package, name, backend=backend).double()


def features(layer, length, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, length, layer.width_in, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("spec", EXAMPLES, ids=example_id)
def test_a_block_alone_computes_what_it_computes_inside_its_model(spec, built):
    package, model = built(spec)
    set_backend(model, "chunked")
    compared = []
    for name, info in blocks_of(package).items():
        inside, x, y = inputs_and_outputs(model, info.cls, tokens(model, B, T, 1))
        if inside is None:
            continue  # declared, not used by the network
        layer = layer_of(package, name)
        getattr(layer, info.attribute).load_state_dict(inside.state_dict())
        with torch.no_grad():
            alone, state = layer(x)
        assert_close(y, alone, f"block {name}")
        assert set(state) <= layer.state_keys and all(k.startswith(info.attribute + ".") for k in state)
        compared.append(name)
    assert compared, "the network uses no block of the spec"


@pytest.mark.parametrize("backend", ["chunked", "reference"])
@pytest.mark.parametrize("spec", EXAMPLES, ids=example_id)
def test_a_block_alone_continues_its_sequences_through_the_state(spec, backend, built):
    package, _ = built(spec)
    for name in blocks_of(package):
        layer = layer_of(package, name, backend)
        assert_split_runs_equal(layer, features(layer, T, 2), SPLITS, f"{name}: ")


@pytest.mark.parametrize("spec", ["examples/hope.nl", "examples/titans.nl", "examples/gated_deltanet.nl"],
                         ids=example_id)
def test_a_block_alone_agrees_across_backends_with_gradients(spec, built):
    package, _ = built(spec)
    for name in blocks_of(package):
        runs = {}
        for backend in ("reference", "chunked"):
            layer = layer_of(package, name, backend, seed=5)
            x = features(layer, T, 3).requires_grad_()
            y, _ = layer(x)
            probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=y.dtype)
            (y * probe).sum().backward()
            grads = {k: p.grad for k, p in layer.named_parameters() if p.grad is not None}
            assert x.grad is not None and grads, "no gradient reached the input or the parameters"
            runs[backend] = (y, x.grad, grads)
        (y_ref, dx_ref, g_ref), (y_chk, dx_chk, g_chk) = runs["reference"], runs["chunked"]
        assert_close(y_ref, y_chk, f"{name} outputs")
        assert_close(dx_ref, dx_chk, f"{name} input gradient")
        assert sorted(g_ref) == sorted(g_chk)
        for key in g_ref:
            assert_close(g_ref[key], g_chk[key], f"{name} gradient of {key}", rtol=1e-8)


def test_the_layer_names_its_parameters_and_state_after_the_spec(built):
    package, model = built("examples/titans.nl")
    layer = layer_of(package, "lmm_block")
    inside = {k.removeprefix("layer.0."): v.shape for k, v in model.state_dict().items()
              if k.startswith("layer.0.lmm_block.")}
    assert {k: v.shape for k, v in layer.state_dict().items()} == inside
    _, state = layer(features(layer, 4, 0))
    assert sorted(state) == ["lmm_block.k_conv", "lmm_block.mem", "lmm_block.q_conv", "lmm_block.v_conv"]
    assert (layer.width_in, layer.width_out) == (128, 128)
    assert "block='lmm_block'" in repr(layer)


def test_what_the_loader_refuses(built, tmp_path):
    package, _ = built("examples/titans.nl")
    with pytest.raises(ValueError, match=r"model `titans` has no block `ffn` \(its blocks: `lmm_block`; a block that the "
                                         r"network does not use is not compiled\)"):
        nldsl.load_block(package, "ffn")
    layer = layer_of(package, "lmm_block")
    with pytest.raises(ValueError, match=r"takes a tensor \(batch, length, 128\); got shape \(2, 5\)"):
        layer(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got shape \(2, 5, 64\)"):
        layer(torch.zeros(2, 5, 64, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating point; got torch.int64"):
        layer(torch.zeros(2, 5, 128, dtype=torch.long))
    with pytest.raises(TypeError, match=r"float64 parameters and got torch.float32 features"):
        layer(torch.zeros(2, 5, 128))
    _, state = layer(features(layer, 5, 0))
    with pytest.raises(ValueError, match="holds 2 sequences"):
        layer(torch.zeros(3, 5, 128, dtype=torch.float64), state)
    other = layer_of(built("examples/gated_deltanet.nl")[0], "gdn_block")
    with pytest.raises(ValueError, match="which this model does not make"):
        other(features(other, 5, 0), state)
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "manifest.json").write_text("{}")
    (run / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="is a training run: load its whole model with nldsl.load"):
        nldsl.load_block(run, "lmm_block")


def test_a_spec_file_loads_through_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    with in_root():
        layer = nldsl.load_block("examples/gated_deltanet.nl", "gdn_block")
    y, state = layer(torch.randn(1, 9, layer.width_in))
    assert y.shape == (1, 9, layer.width_out) and state


def test_a_package_without_a_block_table_asks_for_a_new_compile(tmp_path):
    with in_root():
        fe, files = compile_spec("examples/titans.nl")
    files = dict(files, **{"model.py": files["model.py"].split("\n# The spec's blocks by name")[0]
                           + "\n\nModel = TitansModel\n"})
    package = write_package(files, str(tmp_path), fe.model.name)
    with pytest.raises(ValueError, match="did not list blocks: compile it again"):
        nldsl.load_block(package, "lmm_block")


ARGUMENTS = """nl 1
model args {
  vocab = 64
  dim = 32
  context = 64

  level pretrain : outer {
    clock     every 1 step
    objective next_token
    update    adamw(lr = 1e-3)
  }

  block ffn(x, expand = 2) {
    return linear(gelu(linear(x, dim * expand)), dim)
  }

  block spare(x, width = 3) {
    return linear(silu(linear(x, dim * width)), dim)
  }

  network = embed(vocab, dim) -> residual(rmsnorm -> ffn(expand = 4)) -> rmsnorm -> lm_head(tied = true)
}
"""


def test_a_block_takes_the_arguments_of_its_use_and_an_unused_block_is_not_compiled(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    spec = write_spec(tmp_path, ARGUMENTS, "args.nl")
    layer = nldsl.load_block(spec, "ffn")
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
        "ffn.out2.weight": (32, 128), "ffn.out.weight": (128, 32)}
    y, state = layer(torch.randn(2, 7, 32))
    assert y.shape == (2, 7, 32) and state == {}
    with pytest.raises(ValueError, match=r"no block `spare` \(its blocks: `ffn`; a block that the network "
                                         r"does not use is not compiled\)"):
        nldsl.load_block(spec, "spare")
