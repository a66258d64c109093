"""Generated whole models: random `.nl` specs built from every part of the language, checked, compiled and run.

A spec is drawn from blocks of memory levels (linear and MLP, every rule, objective, chunk, read order,
self-generated target and head layout; declared in the block, as a model-level kind or as a kind of an
imported library), softmax attention (causal, sliding-window, persistent tokens, segments with a memory
as context), short convolutions, norms and gates, a HOPE-like self-modifying group, blocks with
parameters, blocks and CMS chains called inside blocks, CMS chains (sequential, independent with each
aggregation, nested; persist or reset per sequence; partial or dropped flush; per-member optimizers and
rates) and a network of residuals, norms, stacks and named layers, under an outer level with random
clock, clipping, bptt, warm-up, schedule and optimizer (inline or declared).

The promises tested: a spec that checks clean compiles, builds in float64, runs forward and backward to
finite values and takes one step of the nested training loop with a finite loss; its chunked backend
gives the token-by-token reference's logits, carried states, gradients and training losses to the
float64 bound of docs/semantics.md §9; trained with its segments replayed as graphs (`nlc train
--cuda-graphs`, a CPU stand-in for the capture) it gives the eager run's numbers bit for bit; a spec
that does not check clean is refused with real
diagnostics (a known code, a span in one of its files), and `nlc compile` exits 1, never 2 (an
internal error). Some specs carry one deliberate change (a near miss): a mistake that must be refused,
or a size at the edge (a chunk, window or CMS period past the context) that is only warned about and
must still run.

Write rates stay at most 0.05: a larger rate lets an inner learner with a superlinear objective (`lp(3)`,
`dot` with a self-generated target) diverge within a context, on every backend alike, which says nothing
about the compiler. Some still do (repeated `gd` rules on a deep identity-activated memory): a model whose
logits are not finite is set aside when the token-by-token reference's are not finite either.

`NLC_FUZZ_EXAMPLES` sets the number of generated specs and draws them afresh each run (default: the
same 12 every run).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import assume, given, strategies as st

from compile_testkit import (assert_close, assert_runs_agree, assert_split_runs_equal, inputs_and_outputs,
                             run_with_gradients)
from cuda_graph_standin import StandIn
from drawing import drawing
from generated_models import LIBRARY, SEARCH, Generated, build, models, write
from nldsl.cli import main
from nldsl.codes import CODES
from nldsl.compiler import _import_package, compile_spec, load_block
from nldsl.diagnostics import render_all
from nldsl.runtime import set_backend
from nldsl.runtime.train.graphs import flatten
from nldsl.runtime.train.loop import Diverged, NestedLoop
from nldsl.runtime.optim import make_optimizer

BATCH = 2


# ------------------------------------------------------------------------------------------ near misses

# A near miss is one change written into a generated spec: (what, pattern, replacement, refused), applied
# to the first match. The refused ones are errors; the others are warnings at most, and the spec still runs.
NEAR_MISSES = (
    ("retain with dgd", r"update    dgd\b", "update    retain, dgd", True),
    ("a gradient at the current state with chunks", r"update    (gd|momentum|dgd) at current",
     r"chunk 2\n update \1 at current", True),
    ("an unknown key", r"\n(\s+)clock ", r"\n\1clocks ", True),
    ("a CMS clock in steps", r"clock every (\d+) tokens", r"clock every \1 steps", True),
    ("an outer clock in tokens", r"clock     every (\d) steps?", r"clock     every \1 tokens", True),
    ("an unknown bptt", r"bptt      \w+", "bptt      partial", True),
    ("an empty stack", r"stack\(layer, \d\)", "stack(layer, 0)", True),
    ("a width mismatch", r"return linear\(", "return linear(x, 3) + linear(", True),
    ("an unknown stage in the network", r"-> lm_head", "-> missing -> lm_head", True),
    ("a network without its embedding", r"network = embed\(vocab, dim\) -> ", "network = ", True),
    ("a network without its head", r" -> lm_head\(tied = \w+\)", "", True),
    ("a head in the middle of the network", r"-> (lm_head\(tied = \w+\))", r"-> \1 -> rmsnorm -> \1", True),
    ("an embedding of another vocabulary", r"embed\(vocab, ", "embed(vocab + 1, ", True),
    ("a gate of the wrong width", r"sigmoid\(linear\(x, (heads|1|2)\)\)", "sigmoid(linear(x, 5))", True),
    ("a negative learning rate", r"lr = ", "lr = -", True),
    ("a memory read with two inputs", r"linear\((m\d+)\((q\d+)\)", r"linear(\1(\2, \2)", True),
    ("an unknown rule", r"update    (\w+)", r"update    \1, forget", True),
    ("a stray token", r"\n(\s+)return ", r"\n\1return ) ", True),
    ("a chunk longer than the context", r"chunk     \d+", "chunk     999", False),
    ("a window longer than the context", r"window     \d+", "window     999", False),
    ("a CMS period longer than the context", r"clock every \d+ tokens", "clock every 999 tokens", False),
    ("a CMS period of one token", r"clock every \d+ tokens", "clock every 1 token", False),
)


def near_miss(model: str, pattern: str, replacement: str) -> str | None:
    """`model` with the first match of `pattern` replaced, or None where nothing matches."""
    mutated, count = re.subn(pattern, replacement, model, count=1)
    return mutated if count else None


# ------------------------------------------------------------------------------------------ checks


def assert_refused(directory: Path, spec: Path, fe) -> None:
    """Every diagnostic is a real one pointing into the spec or its library, and `nlc compile` exits 1."""
    files = {str(spec), str(directory / LIBRARY)}
    errors = [d for d in fe.diagnostics if d.is_error]
    assert errors, "refused without an error"
    for d in fe.diagnostics:
        assert d.code in CODES and d.code != "NL0901", f"{d.code}: {d.message}"
        assert d.message and d.span.line >= 1 and d.span.col >= 1, d
        assert os.path.normpath(d.span.file) in {os.path.normpath(f) for f in files}, d.span.file
    render_all(fe.diagnostics, fe.sources)
    result = CliRunner().invoke(main, ["compile", str(spec), "-o", str(directory / "cli")])
    assert result.exit_code == 1, result.output
    assert "NL0901" not in result.output and "Traceback" not in result.output, result.output


def assert_runs(directory: Path, generated: Generated, files: dict) -> None:
    """The model builds in float64, its logits and gradients are finite, and one step of the nested training
    loop ends with a finite loss."""
    z = generated.sizes
    model, loop = build(directory, files)
    torch.manual_seed(1)
    tokens = torch.randint(0, z.vocab, (BATCH, z.context + 1))
    logits, _ = model(tokens[:, :-1])
    assert logits.shape == (BATCH, z.context, z.vocab)
    loss = F.cross_entropy(logits.reshape(-1, z.vocab), tokens[:, 1:].reshape(-1))
    if not math.isfinite(loss.item()):  # a spec whose inner learners diverge: the reference must agree
        with torch.no_grad():
            reference, _ = set_backend(model, "reference")(tokens[:, :-1])
        assert not torch.isfinite(reference).all(), "non-finite logits where the token-by-token reference has none"
        assume(False)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"d/d {name} is not finite"
    model.zero_grad(set_to_none=True)
    result = loop.step(tokens)
    assert math.isfinite(result.loss), result


def check_generated(generated: Generated, must_refuse: bool = False) -> None:
    """Check `generated`; run it if it checks clean, else check how it was refused."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        spec = write(directory, generated.model, generated.library)
        fe, files = compile_spec(str(spec))
        if fe.ok:
            assert not must_refuse, "a near miss checked clean"
            assert files is not None, [f"{d.code}: {d.message}" for d in fe.diagnostics]
            assert_runs(directory, generated, files)
        else:
            assert_refused(directory, spec, fe)


FUZZ = drawing(12, phases=SEARCH)


@FUZZ
@given(models())
def test_generated_models_check_compile_and_train(generated):
    """A generated model either checks clean and compiles, runs and trains, or is refused with diagnostics."""
    check_generated(generated)


@FUZZ
@given(models(), st.sampled_from(NEAR_MISSES))
def test_near_misses_are_refused_or_run(generated, change):
    """A generated model with one mistake is refused with diagnostics; with one size at the edge, it runs."""
    _, pattern, replacement, refused = change
    mutated = near_miss(generated.model, pattern, replacement)
    assume(mutated is not None)
    check_generated(Generated(mutated, generated.library, generated.sizes), must_refuse=refused)


# ------------------------------------------------------------------------------------------ both backends


@contextlib.contextmanager
def compiled(generated: Generated):
    """(directory, compiled files) of a generated model that checks clean (hypothesis passes over the rest)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        fe, files = compile_spec(str(write(directory, generated.model, generated.library)))
        assume(fe.ok and files is not None)
        yield directory, files


def run_on(backend: str, directory: Path, files: dict, generated: Generated):
    """On `backend`, in float64: logits, states and gradients of a prefix and its continuation (a carried-in
    state, both cut inside chunks and segments), and the losses of two steps of the nested training loop."""
    z = generated.sizes
    model, loop = build(directory, files)
    set_backend(model, backend)
    gen = torch.Generator().manual_seed(2)
    prefix = torch.randint(0, z.vocab, (BATCH, z.context // 2 + 1), generator=gen)
    continuation = torch.randint(0, z.vocab, (BATCH, z.context - prefix.shape[1]), generator=gen)
    run = run_with_gradients(model, prefix, continuation, seed=3)
    assume(all(bool(torch.isfinite(run[i]).all()) for i in (0, 2)))  # an inner learner that diverges
    batches = torch.randint(0, z.vocab, (2, BATCH, z.context + 1), generator=gen)
    return run, [loop.step(batch).loss for batch in batches]


@FUZZ
@given(models())
def test_generated_models_agree_on_both_backends(generated):
    """A generated model that checks clean gives the token-by-token reference's logits, carried states and
    gradients on the chunked backend (float64, a carried-in state), and the same losses over two steps of
    the nested training loop, CMS updates and the outer step between them included."""
    with compiled(generated) as (directory, files):
        try:
            reference, reference_losses = run_on("reference", directory, files, generated)
        except Diverged:
            assume(False)
        chunked, chunked_losses = run_on("chunked", directory, files, generated)
        assert_runs_agree(reference, chunked)
        assert_close(torch.tensor(reference_losses), torch.tensor(chunked_losses), "training losses")


@FUZZ
@given(models())
def test_the_blocks_of_generated_models_run_alone(generated):
    """Every block of a generated model, alone (`nldsl.load_block`) with the weights it has in the model,
    computes from the input the model gives it what it computes there, and a run split through its state
    gives the whole run."""
    with compiled(generated) as (directory, files):
        model, _ = build(directory, files)
        package = directory / "build" / "model"
        z = generated.sizes
        tokens = torch.randint(0, z.vocab, (BATCH, z.context), generator=torch.Generator().manual_seed(5))
        blocks = _import_package(package).model.BLOCKS
        assert blocks, "a model without blocks"
        for name, info in blocks.items():
            inside, x, y = inputs_and_outputs(model, info.cls, tokens)
            assert inside is not None, f"block {name} is listed but not in the model"
            assume(bool(torch.isfinite(y).all()))  # an inner learner that diverges
            layer = load_block(package, name).double()
            getattr(layer, info.attribute).load_state_dict(inside.state_dict())
            with torch.no_grad():
                alone, _ = layer(x)
            assert_close(y, alone, f"block {name}")
            assert_split_runs_equal(layer, x, (1, z.context // 2), f"{name}: ")


# ------------------------------------------------------------------------------------------ CUDA graphs


def train_steps(directory: Path, files: dict, generated: Generated, graphs: bool):
    """Three steps of the nested loop (float64, chunked), its segments through the stand-in for CUDA graphs
    with `graphs`: the losses, the loop and the model."""
    model, loop = build(directory, files)
    if graphs:
        loop = NestedLoop(model, loop.info, make_optimizer, graphs=StandIn(model))
    gen = torch.Generator().manual_seed(4)
    batches = torch.randint(0, generated.sizes.vocab, (3, BATCH, generated.sizes.context + 1), generator=gen)
    return [loop.step(batch).loss for batch in batches], loop, model


@FUZZ
@given(models())
def test_generated_models_train_with_graphs_to_the_eager_numbers(generated):
    """Training a generated model with its segments replayed as graphs (`nlc train --cuda-graphs`, here
    with the CPU stand-in that is as strict as a graph) gives the eager run's losses, weights, gradients
    and carried states bit for bit, whatever the model's states hold (memories, caches, attention)."""
    with compiled(generated) as (directory, files):
        try:
            eager, eager_loop, eager_model = train_steps(directory, files, generated, graphs=False)
        except Diverged:
            assume(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)    # `bptt full`: the loop says it runs eagerly
            graphed, loop, model = train_steps(directory, files, generated, graphs=True)
        assert graphed == eager
        for (name, p), q in zip(eager_model.named_parameters(), model.parameters()):
            assert torch.equal(p, q), name
            if p.grad is not None and q.grad is not None:
                assert torch.equal(p.grad, q.grad), name
        for name, state in eager_loop.carried.items():
            mine, theirs = flatten(state), flatten(loop.carried[name])
            assert mine[1] == theirs[1] and all(map(torch.equal, mine[0], theirs[0])), name
