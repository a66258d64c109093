"""The `nlc` commands that use a trained run: generate, learn, eval and export (COMMANDS, which cli.py
adds to the `nlc` group)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from .cli_common import BACKEND, COMPILE, DEVICE, RUN, SEED, ExistingPath, FiniteFloat, guarded

MEMORY_FILE = ExistingPath("memory file", dir_okay=False)
TEXT = ExistingPath("file or folder")


def _run_error(e: Exception):
    click.echo(f"error: {e}", err=True)
    sys.exit(1)


def _diverged(e, unchanged: str):
    """A level's learning went non-finite (the run's learning rates or gates, not a bug in nlc): exit 1.
    `e` is a Diverged; its step counts the windows of --seq tokens read in context."""
    click.echo(f"error: learning diverged: non-finite {e.what} in level `{e.level}` in window {e.step} of the "
               f"text\n  = note: {unchanged}\n"
               f"  = help: lower that level's learning rate or bound its gates, and train the run again", err=True)
    sys.exit(1)


@click.command(short_help="Continue a prompt with a trained run's model.")
@click.argument("run", type=RUN)
@click.option("--prompt", default="", help="the text to continue (empty: start a new document)")
@click.option("--memory", default=None, type=MEMORY_FILE,
              help="a memory file from `nlc learn` to start from")
@click.option("--max-new-tokens", default=200, show_default=True, type=click.IntRange(min=0),
              help="generate at most this many tokens (bytes); a document separator stops earlier")
@click.option("--temperature", default=0.8, show_default=True, type=FiniteFloat(min=0),
              help="sampling temperature; 0 always takes the most likely token")
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(min=0),
              help="sample among the k most likely tokens only (0: no limit)")
@click.option("--top-p", default=1.0, show_default=True, type=FiniteFloat(min=0, max=1, min_open=True),
              help="nucleus sampling: among the fewest most likely tokens whose probability reaches p")
@click.option("--seed", default=0, show_default=True, type=SEED, help="seeds the sampling")
@click.option("--device", default="cpu", show_default=True, type=DEVICE, help="torch device (cpu, cuda, cuda:1, ...)")
@BACKEND
@COMPILE
@guarded
def generate(run, prompt, memory, max_new_tokens, temperature, top_k, top_p, seed, device, backend, compile_steps):
    """Continue PROMPT with the model of RUN (a directory made by `nlc train`).

    The prompt runs in one forward pass; then tokens are sampled one at a time, every level carrying
    its state (memories their fast weights, attention its KV cache). Nothing is learned.
    """
    from .runtime.continual import open_run
    from .runtime.generate import RunError, generate_text

    try:
        model_run, state, warnings = open_run(run, memory, device=device, backend=backend, compile=compile_steps)
    except RunError as e:
        _run_error(e)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(prompt, nl=False)
    generate_text(model_run, prompt, max_new_tokens, state=state, temperature=temperature, top_k=top_k,
                  top_p=top_p, seed=seed, write=lambda text: click.echo(text, nl=False))
    click.echo()


@click.command(short_help="Learn a text in context and keep it in a memory file.")
@click.argument("run", type=RUN)
@click.option("--data", required=True, type=TEXT,
              help="the text to learn: a text file, or a folder of .txt/.md files")
@click.option("--memory", required=True, type=click.Path(dir_okay=False),
              help="the memory file: updated when it exists, created otherwise")
@click.option("--seq", default=None, type=click.IntRange(min=1),
              help="tokens per forward pass (default: the run's training length)")
@click.option("--passes", default=1, show_default=True, type=click.IntRange(min=1),
              help="read the text this many times")
@click.option("--device", default="cpu", show_default=True, type=DEVICE, help="torch device (cpu, cuda, cuda:1, ...)")
@BACKEND
@COMPILE
@guarded
def learn(run, data, memory, seq, passes, device, backend, compile_steps):
    """Learn the text DATA in context with the model of RUN and keep it in a memory file.

    The outer level stays frozen; in-context memories and CMS members learn at their clocks. The
    state of every persistent level goes to the memory file (safetensors with a JSON manifest), for
    `nlc generate --memory` and `nlc eval --memory`. A memory file fits only the spec it was made for.
    """
    from .runtime.continual import describe, learn_file
    from .runtime.generate import RunError, load_run
    from .runtime.train import Diverged

    try:
        model_run = load_run(run, device=device, backend=backend, compile=compile_steps)
        report, _ = learn_file(model_run, data, memory, seq=seq, passes=passes)
    except (RunError, ValueError) as e:  # ValueError: the text (no documents in DATA, nothing to learn)
        _run_error(e)
    except Diverged as e:
        _diverged(e, f"{memory} was not written" + (" and is unchanged" if Path(memory).exists() else ""))
    for line in describe(report):
        click.echo(line, err=True)
    click.echo(f"wrote {memory}", err=True)


def _numbers(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            numbers = [kind(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
        if not all(math.isfinite(n) for n in numbers):
            raise click.BadParameter(f"expected finite numbers, got {value!r}")
        return numbers
    return parse


@click.command(name="eval", short_help="Evaluate a trained run: ppl, mqar, niah, forgetting.")
@click.argument("run", type=RUN)
@click.option("--task", required=True, type=click.Choice(["ppl", "mqar", "niah", "forgetting"]),
              help="ppl: bits per byte (each document alone after a run trained with --documents aligned); "
                   "mqar: associative recall; niah: passkey retrieval; "
                   "forgetting: learn A then B, loss on A")
@click.option("--memory", default=None, type=MEMORY_FILE,
              help="a memory file from `nlc learn` to start from")
@click.option("--data", default=None, type=TEXT,
              help="ppl: the text to score; forgetting: segment A (default: the run's held-out split)")
@click.option("--data-b", default=None, type=TEXT,
              help="forgetting: segment B (default: the next held-out document)")
@click.option("--out", default=None, type=click.Path(),
              help="a .json file or a folder for the results (default: RUN/evals/)")
@click.option("--seq", default=None, type=click.IntRange(min=1),
              help="ppl, forgetting: tokens per forward pass (default: the run's training length)")
@click.option("--batch", default=None, type=click.IntRange(min=1), help="rows per forward pass")
@click.option("--max-tokens", default=None, type=click.IntRange(min=2),
              help="ppl: tokens scored at most (16384); forgetting: tokens per segment (2048)")
@click.option("--passes", default=None, type=click.IntRange(min=1), help="forgetting: reads of each segment")
@click.option("--seed", default=None, type=SEED, help="mqar, niah: seeds the generated examples")
@click.option("--mqar-pairs", default=None, type=click.IntRange(min=1), help="mqar: key-value pairs per example (8)")
@click.option("--mqar-length", default=None, type=click.IntRange(min=4), help="mqar: tokens per example (64)")
@click.option("--mqar-examples", default=None, type=click.IntRange(min=1), help="mqar: examples (64)")
@click.option("--niah-lengths", default=None, callback=_numbers(int),
              help="niah: prompt lengths in tokens, comma-separated (256,512,1024)")
@click.option("--niah-depths", default=None, callback=_numbers(float),
              help="niah: needle depths in [0, 1], comma-separated (0,0.25,0.5,0.75,1)")
@click.option("--niah-trials", default=None, type=click.IntRange(min=1), help="niah: keys per cell (4)")
@click.option("--device", default="cpu", show_default=True, type=DEVICE, help="torch device (cpu, cuda, cuda:1, ...)")
@BACKEND
@COMPILE
@guarded
def eval_cmd(run, task, memory, device, backend, compile_steps, out, **options):
    """Evaluate the model of RUN on a task; print a table and write the results as JSON.

    Every task runs on generated or local text. Results go to RUN/evals/<task>.json (with a memory
    file: <task>+<memory>.json), and niah draws its heat map beside them.
    """
    from rich.console import Console

    from .runtime.evals import evaluate, table, write_results
    from .runtime.generate import RunError
    from .runtime.train import Diverged

    try:
        doc = evaluate(run, task, memory=memory, options=options, device=device, backend=backend,
                       compile=compile_steps)
    except (RunError, ValueError) as e:
        _run_error(e)
    except Diverged as e:  # forgetting: learning its segments in context
        _diverged(e, "no results were written")
    for w in doc["warnings"]:
        click.echo(f"warning: {w}", err=True)
    Console().print(table(doc))
    for path in write_results(doc, out):
        click.echo(f"wrote {path}", err=True)


@click.command(short_help="Export a trained run for transformers (offline).")
@click.argument("run", type=RUN)
@click.option("--hf", "out", required=True, type=click.Path(file_okay=False),
              help="write a transformers directory here (AutoModelForCausalLM with trust_remote_code)")
@click.option("--force", is_flag=True, help="write even if the directory is not empty")
@guarded
def export(run, out, force):
    """Export the model of RUN as a directory that transformers loads offline.

    OUT gets config.json, model.safetensors, modeling_nlc.py (the transformers classes), the compiled
    model it imports, and the whole compiled package; loading needs nlc installed, not a network.
    """
    from .runtime.export_hf import export_hf
    from .runtime.generate import RunError

    try:
        target = export_hf(run, out, force=force)
    except RunError as e:
        _run_error(e)
    click.echo(f"exported {run} -> {target}", err=True)


COMMANDS = (generate, learn, eval_cmd, export)
