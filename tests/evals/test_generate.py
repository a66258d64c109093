"""`nlc generate`: one prefill pass, then token-by-token decoding that carries every level's state."""

from __future__ import annotations

import json

import pytest
import torch

from nldsl.cli import main
from nldsl.runtime.data import ByteTokenizer
from nldsl.runtime.generate import Decoder, filter_logits, generate, generate_text, load_run, sample


@pytest.mark.parametrize("name", ["hope", "transformer"])
def test_decoding_token_by_token_matches_one_pass(example_runs, name):
    run = load_run(example_runs[name], dtype="float64")
    assert run.step == 1 and next(run.model.parameters()).dtype == torch.float64
    tokens = torch.randint(0, 256, (2, 41), generator=torch.Generator().manual_seed(7))
    full, _ = run.model(tokens)
    decoder = Decoder(run.model)
    pieces = [decoder.prefill(tokens[:, :3])]  # a prefix that ends inside a memory chunk
    pieces += [decoder.step(tokens[:, t])[:, None] for t in range(3, tokens.shape[1])]
    stepped = torch.cat(pieces, dim=1)
    assert stepped.shape == full.shape
    assert torch.allclose(stepped, full, rtol=0, atol=1e-9), (stepped - full).abs().max()
    assert decoder.tokens_seen == tokens.shape[1]


@pytest.mark.parametrize("name", ["hope", "transformer"])
def test_greedy_generation_is_what_one_pass_predicts(example_runs, name):
    run = load_run(example_runs[name], dtype="float64")
    prompt = ByteTokenizer().encode("Alice was ")
    new = generate(run.model, prompt, 12, temperature=0)
    assert len(new) == 12
    logits, _ = run.model(torch.tensor([prompt + new]))
    predicted = logits[0, len(prompt) - 1:-1].argmax(-1).tolist()
    assert predicted == new


def test_top_k_and_top_p_keep_the_most_likely_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda out: torch.isfinite(out[0]).tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert kept(filter_logits(logits, top_p=0.8)) == [True, True, False, False]  # 0.5 < 0.8: one more
    assert kept(filter_logits(logits, top_p=0.81)) == [True, True, True, False]
    assert kept(filter_logits(logits)) == [True] * 4
    assert kept(filter_logits(logits[:, [3, 2, 1, 0]], top_k=1)) == [False, False, False, True]
    with pytest.raises(ValueError):
        filter_logits(logits, top_p=0.0)


def test_sampling_follows_temperature_and_seed():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0]])
    assert sample(logits, temperature=0).tolist() == [1]
    seeded = [sample(logits, 1.0, generator=torch.Generator().manual_seed(3)) for _ in range(3)]
    assert all(torch.equal(seeded[0], s) for s in seeded)
    g = torch.Generator().manual_seed(0)
    assert {int(sample(logits, 1.0, top_k=2, generator=g)) for _ in range(200)} == {1, 2}
    g = torch.Generator().manual_seed(0)
    assert len({int(sample(logits, 5.0, generator=g)) for _ in range(200)}) == 4  # hot: every token comes up


def test_cli_generate_prints_the_prompt_and_its_continuation(example_runs, runner):
    run_dir = example_runs["transformer"]
    result = runner.invoke(main, ["generate", str(run_dir), "--prompt", "The ", "--max-new-tokens", "8",
                                  "--temperature", "0"])
    assert result.exit_code == 0, result.output
    expected = generate_text(load_run(run_dir), "The ", 8, temperature=0)
    assert result.stdout == "The " + expected + "\n"
    again = runner.invoke(main, ["generate", str(run_dir), "--prompt", "The ", "--max-new-tokens", "8", "--seed", "5",
                                 "--top-k", "20", "--top-p", "0.9"])
    twice = runner.invoke(main, ["generate", str(run_dir), "--prompt", "The ", "--max-new-tokens", "8", "--seed", "5",
                                 "--top-k", "20", "--top-p", "0.9"])
    assert again.exit_code == 0 and again.stdout == twice.stdout


def test_cli_generate_refuses_what_is_not_a_trained_run(example_runs, runner, tmp_path):
    result = runner.invoke(main, ["generate", str(tmp_path), "--prompt", "x"])
    assert result.exit_code == 1 and "not a run directory" in result.output
    untrained = tmp_path / "untrained"
    (untrained / "model").mkdir(parents=True)
    for f in (example_runs["transformer"] / "model").iterdir():
        if f.is_file():
            (untrained / "model" / f.name).write_bytes(f.read_bytes())
    result = runner.invoke(main, ["generate", str(untrained), "--prompt", "x"])
    assert result.exit_code == 1 and "no checkpoint.json" in result.output
    assert "Traceback" not in result.output
    assert json.loads((untrained / "model" / "manifest.json").read_text())["model"] == "transformer"
