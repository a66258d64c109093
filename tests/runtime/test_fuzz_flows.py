"""Generated whole models after training: decoding, split runs, the transformers export, continual learning,
evaluation and resuming a run.

The specs are drawn by the strategies of tests/compile/generated_models.py; only those that check clean
are used. Three promises are tested on them:

- on the compiled model in float64 (its own small vocabulary, untrained): running a sequence in two
  pieces and carrying the returned state gives the logits of one pass, wherever it is split
  (docs/semantics.md §3.8, §4); decoding one token at a time after a prefill gives them too; greedy
  `generate` picks, at every step, the token that one pass over the growing sequence ranks first; and
  sampling with a seed gives the same tokens each time;
- on a run trained one float64 step (the vocabulary set to 256, so that byte text fits): `nlc export
  --hf` writes a directory whose package (and, with transformers installed, `AutoModelForCausalLM`
  offline) gives the run's logits and greedy tokens; `nlc learn` reading a short text twice in one call
  writes the memory file that two calls write, the second going on from the first's file (a model with
  no persistent level is refused with exit 1 and a reason); greedy decoding from that file's state is
  what one pass from it ranks first, and `nlc generate --memory` accepts it; `nlc eval --task ppl`, with
  and without the memory, scores every token of a text to a finite loss;
- on runs trained three float32 steps: one killed after its checkpoint at step 2 and resumed logs the
  metrics, and ends with the weights, optimizer states and open CMS windows, of one that ran straight
  through, bit for bit.

A model whose one-pass logits are not finite (an inner learner of the drawn spec diverging within the
context, as it does on every backend) is passed over: NaNs say nothing about these flows.

`NLC_FUZZ_EXAMPLES` sets the number of generated specs of each test and draws them afresh each run
(default: the same 4 every run).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import assume, given

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))

from drawing import drawing  # noqa: E402
from generated_models import SEARCH, Generated, build, models, write  # noqa: E402

import nldsl  # noqa: E402
from nldsl.cli import main  # noqa: E402
from nldsl.compiler import compile_spec  # noqa: E402
from nldsl.runtime.continual import read_memory  # noqa: E402
from nldsl.runtime.data import EOS  # noqa: E402
from nldsl.runtime.generate import Decoder, generate, load_run  # noqa: E402
from nldsl.runtime.train import Diverged  # noqa: E402

BATCH = 2
NEW_TOKENS = 4
TEXT = "The quick brown fox jumps over the lazy dog; the dog sleeps on.\n"
PROMPT = [84, 104, 101, 32]  # "The "

FLOWS = drawing(4, phases=SEARCH)


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Compiled specs go to a cache of this module's own."""
    saved = os.environ.get("NLC_CACHE")
    os.environ["NLC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("NLC_CACHE", None)
    else:
        os.environ["NLC_CACHE"] = saved


# ------------------------------------------------------------------------------------------ comparisons


def assert_same_logits(expected: torch.Tensor, actual: torch.Tensor, what: str) -> None:
    """Float64 logits equal to the contract's bound: max|x − y| ≤ 1e-9 · max(1, RMS(x))."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    bound = 1e-9 * max(1.0, float(expected.pow(2).mean().sqrt()))
    error = float((actual - expected).abs().max())
    assert error <= bound, f"{what}: logits differ by {error:.3g} (bound {bound:.3g})"


def assert_ranked_first(logits: torch.Tensor, token: int, what: str) -> None:
    """`token` has the largest logit of `logits` (V,), up to the float64 bound (a near tie may go either way)."""
    bound = 1e-9 * max(1.0, float(logits.abs().max()))
    assert float(logits.max() - logits[token]) <= bound, \
        f"{what}: token {token} is not ranked first ({int(logits.argmax())} is)"


def checked(directory: Path, generated: Generated):
    """The compiled files of `generated` written into `directory`; the example is skipped unless it checks clean."""
    spec = write(directory, generated.model, generated.library)
    fe, files = compile_spec(str(spec))
    assume(fe.ok and files is not None)
    return spec, files


# ------------------------------------------------------------------------------------------ state and decoding


def split_points(context: int) -> list[int]:
    """Where a sequence of `context` tokens is cut: after one token, inside and at the end of short chunks
    and segments, in the middle, and before the last token."""
    return sorted({p for p in (1, 2, 3, 5, context // 2, context - 1) if 0 < p < context})


def check_split_runs(model, tokens: torch.Tensor, full: torch.Tensor) -> None:
    """Two pieces with the state carried between them give `full`, the logits of one pass, at every split
    point."""
    for a in split_points(tokens.shape[1]):
        first, state = model(tokens[:, :a])
        second, _ = model(tokens[:, a:], state)
        assert_same_logits(full, torch.cat([first, second], dim=1), f"split after {a} tokens")


def check_decoding(model, tokens: torch.Tensor, full: torch.Tensor) -> None:
    """A prefill of two tokens, then one token per step, gives `full`, the logits of one pass."""
    decoder = Decoder(model)
    pieces = [decoder.prefill(tokens[:, :2])]
    pieces += [decoder.step(tokens[:, t])[:, None] for t in range(2, tokens.shape[1])]
    assert_same_logits(full, torch.cat(pieces, dim=1), "decoding token by token")
    assert decoder.tokens_seen == tokens.shape[1]


def check_greedy_generation(model, prompt: list[int], new_tokens: int) -> None:
    """Every greedy token is the one that a full pass over the prompt and the tokens before it ranks first."""
    new = generate(model, prompt, new_tokens, temperature=0)
    assert len(new) == new_tokens
    logits, _ = model(torch.tensor([prompt + new]))
    for j, token in enumerate(new):
        assert_ranked_first(logits[0, len(prompt) - 1 + j], token, f"greedy token {j}")


def check_seeded_sampling(model, prompt: list[int], new_tokens: int, vocab: int) -> None:
    """Sampling with one seed gives the same tokens twice, whatever was sampled in between."""
    first = generate(model, prompt, new_tokens, temperature=1.0, top_k=5, top_p=0.9, seed=7)
    generate(model, prompt, new_tokens, temperature=1.5, seed=8)
    again = generate(model, prompt, new_tokens, temperature=1.0, top_k=5, top_p=0.9, seed=7)
    assert first == again and len(first) == new_tokens
    assert all(0 <= t < vocab for t in first)


@FLOWS
@given(models())
def test_generated_models_split_decode_and_generate_as_one_pass(generated):
    """A generated model gives one pass's logits when split and carried, and when decoded token by token;
    its greedy tokens are what one pass ranks first, and seeded sampling is reproducible."""
    z = generated.sizes
    with tempfile.TemporaryDirectory() as tmp:
        _, files = checked(Path(tmp), generated)
        model, _ = build(Path(tmp), files)
        model.eval()
        tokens = torch.randint(0, z.vocab, (BATCH, z.context), generator=torch.Generator().manual_seed(3))
        prompt = tokens[0, :min(3, z.context - NEW_TOKENS)].tolist()
        with torch.no_grad():
            full, _ = model(tokens)
            assume(bool(torch.isfinite(full).all()))  # an inner learner that diverges within the context
            check_split_runs(model, tokens, full)
            check_decoding(model, tokens, full)
            check_greedy_generation(model, prompt, NEW_TOKENS)
            check_seeded_sampling(model, prompt, NEW_TOKENS, z.vocab)


# ------------------------------------------------------------------------------------------ a trained run


def with_byte_vocabulary(generated: Generated) -> Generated:
    """`generated` with a vocabulary of 256, so that the byte tokenizer's text fits it."""
    model = re.sub(r"vocab   = \d+", "vocab   = 256", generated.model, count=1)
    return Generated(model, generated.library, dataclasses.replace(generated.sizes, vocab=256))


def train_one_step(spec: Path, out: Path) -> Path:
    """A run directory of `spec` trained one float64 step of one sequence of its context."""
    from nldsl.runtime.train import TrainConfig, Trainer

    cfg = TrainConfig(spec=str(spec), steps=1, batch=1, out=str(out), dtype="float64", checkpoint_every=1,
                      eval_every=1, eval_batches=1)
    Trainer(cfg, log=lambda msg: None).train()
    return out


def invoke(*args: str):
    """`nlc ARGS`; its result, which must not be an internal error."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    return result


def greedy_until_separator(model, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy tokens as transformers' `generate` returns them: up to and with the first separator."""
    new = generate(model, prompt, new_tokens, temperature=0, stop=EOS)
    return new + [EOS] if len(new) < new_tokens else new


def check_export(run_dir: Path, out: Path, tokens: torch.Tensor) -> None:
    """`nlc export --hf` writes a package that gives the run's logits, and transformers (when installed) loads
    the directory offline and gives the run's logits and greedy tokens."""
    result = invoke("export", run_dir, "--hf", out)
    assert result.exit_code == 0, result.output
    run = load_run(run_dir)
    expected, _ = run.model(tokens)
    assume(bool(torch.isfinite(expected).all()))  # an inner learner that diverges within the context
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 256 and config["dtype"] == "float64"
    from safetensors.torch import load_file

    package = nldsl.load(out / "nlc_package").to(torch.float64).eval()
    package.load_state_dict({k[len("model."):]: v for k, v in load_file(str(out / "model.safetensors")).items()})
    assert_same_logits(expected, package(tokens)[0], "the exported package")
    try:
        import transformers
    except ImportError:
        return
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True, dtype="auto").eval()
    assert_same_logits(expected, hf(tokens).logits, "the transformers model")
    greedy = hf.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False)
    assert greedy[0, len(PROMPT):].tolist() == greedy_until_separator(run.model, PROMPT, NEW_TOKENS)


def persistent(run_dir: Path) -> bool:
    """Whether the run's model has a level whose learning outlives a sequence (what a memory file keeps)."""
    from nldsl.runtime.continual import persistent_levels

    levels = persistent_levels(load_run(run_dir))
    return bool(levels["cms"] or levels["memories"])


def assert_same_tensors(expected: dict, actual: dict, what: str) -> None:
    """Two dicts of float64 tensors with the same keys, equal to the contract's bound."""
    assert set(actual) == set(expected), (what, sorted(set(actual) ^ set(expected)))
    for name, value in expected.items():
        assert_same_logits(value, actual[name], f"{what} {name}")


def memory_tensors(memory) -> dict:
    """Every tensor a memory file holds: CMS members, open-window gradients and carried memory states."""
    out = {f"cms.{k}": v for k, v in memory.cms.items()}
    out.update({f"grad.{k}": v for k, v in memory.grads.items()})
    for key, state in memory.states.items():
        out.update({f"state.{key}.{k}": v.double() for k, v in state.to_tensors().items()})
    return out


def check_learning(run_dir: Path, text: Path, directory: Path) -> Path | None:
    """`nlc learn` reading a text twice in one call writes the memory file that two calls, the second going
    on from the first's file, write; a model with no persistent level is refused with exit 1 and a reason.
    The memory file, or None."""
    once, twice = directory / "once.mem", directory / "twice.mem"
    result = invoke("learn", run_dir, "--data", text, "--memory", once, "--passes", 2)
    assume(not (result.exit_code == 1 and "learning diverged" in result.output))  # as training can
    if not persistent(run_dir):
        assert result.exit_code == 1 and "no persistent level" in result.output, result.output
        assert not once.exists()
        return None
    assert result.exit_code == 0, result.output
    for _ in range(2):
        assert (result := invoke("learn", run_dir, "--data", text, "--memory", twice)).exit_code == 0, result.output
    run = load_run(run_dir)
    a, b = read_memory(once, run), read_memory(twice, run)
    assert a.position == b.position == 2 * len(text.read_bytes())  # every token and the separator, twice
    assert_same_tensors(memory_tensors(a), memory_tensors(b), "learned in two calls:")
    return once


def check_decoding_from_memory(run_dir: Path, memory: Path) -> None:
    """Greedy tokens from a memory file's state are what one pass from that state ranks first, and `nlc
    generate --memory` prints the prompt and its continuation."""
    from nldsl.runtime.continual import open_run

    run, state, warnings = open_run(run_dir, memory)
    assert not warnings, warnings
    new = generate(run.model, PROMPT, NEW_TOKENS, temperature=0, state=state)
    logits, _ = run.model(torch.tensor([PROMPT + new]), dict(state) if state else None)
    for j, token in enumerate(new):
        assert_ranked_first(logits[0, len(PROMPT) - 1 + j], token, f"greedy token {j} from the memory")
    generated = invoke("generate", run_dir, "--prompt", "The ", "--max-new-tokens", NEW_TOKENS, "--temperature", 0,
                       "--memory", memory)
    assert generated.exit_code == 0 and generated.stdout.startswith("The "), generated.output


def check_perplexity(run_dir: Path, text: Path, out: Path, memory: Path | None) -> None:
    """`nlc eval --task ppl` scores every token of the text after the first, to a finite loss."""
    result = invoke("eval", run_dir, "--task", "ppl", "--data", text, "--out", out,
                    *(["--memory", memory] if memory else []))
    assert result.exit_code == 0, result.output
    scored = json.loads(out.read_text())["results"]
    assert scored["tokens"] == len(text.read_bytes())  # the text and its separator, less the first token
    assert math.isfinite(scored["loss_nats"]) and scored["loss_nats"] > 0, scored


@FLOWS
@given(models())
def test_generated_runs_export_learn_and_evaluate(generated):
    """A generated model trained one step exports for transformers with its logits, learns a text into a
    memory file that generation and evaluation accept, and evaluates to a finite loss."""
    generated = with_byte_vocabulary(generated)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        spec, _ = checked(directory, generated)
        try:
            run_dir = train_one_step(spec, directory / "run")
        except Diverged:  # a model whose learners diverge (its rates, not nlc): nothing to go on with
            assume(False)
        tokens = torch.randint(0, 256, (BATCH, generated.sizes.context), generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            check_export(run_dir, directory / "hf", tokens)
        text = directory / "text.txt"
        text.write_text(TEXT, encoding="utf-8")
        memory = check_learning(run_dir, text, directory)
        check_perplexity(run_dir, text, directory / "ppl.json", None)
        if memory is not None:
            with torch.no_grad():
                check_decoding_from_memory(run_dir, memory)
            check_perplexity(run_dir, text, directory / "ppl-memory.json", memory)


# ------------------------------------------------------------------------------------------ resuming a run


class Killed(Exception):
    """The end of a run stopped right after a checkpoint, as by SIGKILL."""


def trained(spec: Path, out: Path, resume: bool = False, kill_at: int = 0) -> Path:
    """`out` after training `spec` three steps of two sequences in float32, checkpointing and evaluating
    every second step: resumed from the run's last checkpoint when `resume`, killed right after the
    checkpoint of step `kill_at` when that is set."""
    from nldsl.runtime.train import TrainConfig, Trainer

    class Run(Trainer):
        def checkpoint(self):
            super().checkpoint()
            if self.loop.step_count == kill_at:
                raise Killed

    cfg = TrainConfig(spec=str(spec), steps=3, batch=BATCH, out=str(out), checkpoint_every=2, eval_every=2,
                      eval_batches=1)
    try:
        Run(cfg, resume=resume, log=lambda msg: None).train()
    except Killed:
        pass
    return out


def run_record(run_dir: Path) -> tuple[list, dict]:
    """A run's metrics (every entry but the clock's) and its last checkpoint's tensors."""
    from safetensors.torch import load_file

    rows = [{k: v for k, v in json.loads(line).items() if k not in ("time", "tokens_per_s", "peak_memory_mb")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    weights = json.loads((run_dir / "checkpoint.json").read_text())["weights"]
    return rows, load_file(str(run_dir / weights))


@FLOWS
@given(models())
def test_generated_runs_resume_bit_exactly(generated):
    """A generated model trained three steps in one run, and in a run killed after its checkpoint at step 2
    and resumed, logs the same metrics and ends with the same weights, optimizer state and open CMS
    windows, bit for bit, whatever its clocks, optimizers, schedule and backpropagation mode."""
    generated = with_byte_vocabulary(generated)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        spec, _ = checked(directory, generated)
        try:
            straight = run_record(trained(spec, directory / "straight"))
        except Diverged:  # an inner learner that diverges: the same in both runs, and nothing to compare
            assume(False)
        trained(spec, directory / "killed", kill_at=2)
        resumed = run_record(trained(spec, directory / "killed", resume=True))
        assert resumed[0] == straight[0]
        assert resumed[1].keys() == straight[1].keys()
        for key, value in straight[1].items():
            assert torch.equal(resumed[1][key], value), key
