"""`nlc export --hf`: a directory transformers loads offline with trust_remote_code."""

from __future__ import annotations

import ast
import json

import pytest
import torch
from safetensors.torch import load_file

import nldsl
from nldsl.cli import main
from nldsl.runtime.generate import generate, load_run


def test_export_writes_weights_config_and_the_compiled_package(tiny_hope_run, runner, tmp_path):
    out = tmp_path / "hf"
    result = runner.invoke(main, ["export", str(tiny_hope_run), "--hf", str(out)])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names >= {"config.json", "generation_config.json", "model.safetensors", "modeling_nlc.py", "nlc_compiled.py",
                     "nlc_package"}
    config = json.loads((out / "config.json").read_text())
    manifest = json.loads((tiny_hope_run / "model" / "manifest.json").read_text())
    assert config["model_type"] == "nlc" and config["vocab_size"] == 256
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_nlc.NlcForCausalLM"
    assert config["nlc_spec_sha256"] == manifest["spec_sha256"] and config["nlc_step"] == 12
    modeling = (out / "modeling_nlc.py").read_text()
    ast.parse(modeling)
    assert "from .nlc_compiled import Model" in modeling
    assert (out / "nlc_compiled.py").read_text() == (tiny_hope_run / "model" / "model.py").read_text()

    run = load_run(tiny_hope_run)
    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == {f"model.{k}" for k in run.model.state_dict()}
    package = nldsl.load(out / "nlc_package")  # the copied package loads with nlc alone
    package.load_state_dict({k[len("model."):]: v for k, v in weights.items()})
    tokens = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(1))
    assert torch.equal(package(tokens)[0], run.model(tokens)[0])

    again = runner.invoke(main, ["export", str(tiny_hope_run), "--hf", str(out)])
    assert again.exit_code == 1 and "not empty" in again.output
    assert runner.invoke(main, ["export", str(tiny_hope_run), "--hf", str(out), "--force"]).exit_code == 0


@pytest.mark.parametrize("which", ["tiny_hope", "transformer"])
def test_transformers_loads_the_export_offline(tiny_hope_run, example_runs, tmp_path, monkeypatch, which):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    transformers = pytest.importorskip("transformers")
    from nldsl.runtime.export_hf import export_hf

    run_dir = tiny_hope_run if which == "tiny_hope" else example_runs["transformer"]
    out = export_hf(run_dir, tmp_path / "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True).eval()
    assert type(model).__name__ == "NlcForCausalLM"
    run = load_run(run_dir)
    tokens = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, _ = run.model(tokens)
        theirs = model(tokens.to(torch.long), labels=tokens)
    assert torch.allclose(theirs.logits.to(ours.dtype), ours, atol=1e-5)
    assert theirs.loss is not None and torch.isfinite(theirs.loss)

    prompt = [84, 104, 101, 32]  # "The "
    with torch.no_grad():
        generated = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False)
    assert generated[0, len(prompt):].tolist() == generate(run.model, prompt, 6, temperature=0)
    # a row carries its state from its first token: padding is refused, by forward and by generate
    padded = torch.tensor([[0, 0] + prompt, [1, 2] + prompt])
    mask = torch.ones_like(padded)
    mask[0, :2] = 0
    with pytest.raises(ValueError, match="padding"):
        model(padded, attention_mask=mask)
    with pytest.raises(ValueError, match="padding"):
        model.generate(padded, attention_mask=mask, max_new_tokens=2, do_sample=False)


def test_a_float64_export_loads_and_runs_in_float64(example_runs, tmp_path, monkeypatch):
    """`dtype="auto"` builds the model in the saved dtype: every parameter, the memories' learned
    initial states included, is float64 and the logits are the run's own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    transformers = pytest.importorskip("transformers")
    from nldsl.runtime.export_hf import export_hf

    out = export_hf(example_runs["hope"], tmp_path / "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True, dtype="auto").eval()
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    run = load_run(example_runs["hope"])
    tokens = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(model(tokens).logits, run.model(tokens)[0], atol=1e-10)


def test_nldsl_load_of_a_run_directory_has_the_trained_weights(tiny_hope_run):
    run = load_run(tiny_hope_run)
    model = nldsl.load(tiny_hope_run)
    for (name, mine), (_, theirs) in zip(model.state_dict().items(), run.model.state_dict().items()):
        assert torch.equal(mine, theirs), name
    untrained = nldsl.load(tiny_hope_run / "model")  # the package alone: freshly initialised
    assert not all(torch.equal(a, b) for a, b in zip(untrained.state_dict().values(), model.state_dict().values()))
