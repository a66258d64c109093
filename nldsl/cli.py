"""The `nlc` command line.

Exit codes: 0 clean (warnings allowed), 1 errors in a spec or in what the command line gives (a missing
file, a bad option value), 2 internal error (printed with a repro line; set NLC_BACKTRACE=1 to see the
Python traceback), 141 when the reader of the output went away (`nlc explain | head`), silently.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from . import __version__
from .cli_common import BACKEND, DEVICE, RUN, SEED, ExistingPath, Group, guarded, report
from .cli_runs import COMMANDS as RUN_COMMANDS
from .cli_train import forwarded, new_config, resume_config
from .diagnostics import render_all

FORMATS = click.Choice(["full", "concise", "json"])
STDIN = "<stdin>"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="nlc")
def main():
    """nlc: a compiler for nested-learning architectures.

    Write a model as levels, context flows, update rules and clocks in a `.nl` spec; check it, look
    at its level graph and loop plan, format it, compile it to PyTorch modules and Triton kernels,
    train it, evaluate it and keep it learning after training.

    \b
    Examples:
      nlc check examples/hope.nl
      nlc graph examples/hope.nl --format html -o hope.html
      nlc fmt --check examples/*.nl
      nlc compile examples/hope.nl -o build/
      nlc train examples/hope.nl --steps 100 --out runs/hope
      nlc generate runs/hope --prompt "Alice was"
      nlc learn runs/hope --data notes.txt --memory notes.mem
      nlc eval runs/hope --task ppl --memory notes.mem
      nlc export runs/hope --hf hf/hope
      nlc explain NL0302
      nlc doctor

    \b
    Exit codes: 0 done (warnings allowed); 1 a problem in a spec or in the
    command line (a missing file, a bad option value); 2 an internal error
    (a bug in nlc); 141 the reader of the output went away (`| head`).
    """


@main.command(short_help="Check specs and report every problem (`-`: standard input).")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=True, allow_dash=True))
@click.option("--format", "fmt", type=FORMATS, default="full", show_default=True,
              help="full: source line and caret; concise: file:line:col; json: for tools")
@click.option("--dump", "dump", default="", metavar="STAGES",
              help="print intermediate forms: comma-separated among ast, ir, graph")
@click.option("--werror", is_flag=True, help="treat warnings as errors")
@guarded
def check(specs, fmt, dump, werror):
    """Check one or more specs and report every problem (`-` reads standard input).

    Exits 0 when every spec is free of errors (warnings are allowed unless --werror), 1 otherwise.
    """
    from .pipeline import check_file

    status = 0
    json_items = []
    for spec in specs:
        fe = _check_stdin() if spec == "-" else check_file(spec)
        if dump:
            _dump(fe, dump)
        if fmt == "json":
            from .diagnostics import to_json

            json_items += [to_json(d) for d in fe.diagnostics]
            status |= 0 if fe.ok else 1
        else:
            status |= report(fe, fmt, quiet_ok=True)
        if werror and fe.diagnostics:
            status = 1
    if fmt == "json":
        import json

        click.echo(json.dumps(json_items, indent=2))
    sys.exit(status)


def _check_stdin():
    """check_file for the spec on standard input, named <stdin> in diagnostics."""
    from .diagnostics import SpecError
    from .pipeline import MAX_SHOWN, FrontEnd, decode, run_front_end

    data = sys.stdin.buffer.read()
    try:
        text = decode(data, STDIN)
    except SpecError as e:
        fe = FrontEnd(STDIN)
        fe.diagnostics.extend(e.diagnostics)
        fe.sources[STDIN] = data[:MAX_SHOWN].decode("utf-8", "replace")
        return fe
    return run_front_end(text, STDIN)


def _dump(fe, stages: str):
    from .dump import dump_ast, dump_ir

    for stage in [s.strip() for s in stages.split(",") if s.strip()]:
        if stage == "ast" and fe.module is not None:
            click.echo(f"# --- ast: {fe.file}\n" + dump_ast(fe.module))
        elif stage == "ir" and fe.model is not None:
            click.echo(f"# --- ir: {fe.file}\n" + dump_ir(fe.model))
        elif stage == "graph" and fe.graph is not None:
            from .graph import to_doc
            from .render import render

            click.echo(f"# --- graph: {fe.file}\n" + render(to_doc(fe.graph, fe.model, fe.file), "json"))
        elif stage not in ("ast", "ir", "graph"):
            raise click.BadParameter(f"unknown stage {stage!r}; choose among ast, ir, graph", param_hint="--dump")


@main.command(short_help="Show the level graph of a spec (text, json, dot, mermaid, html).")
@click.argument("spec", type=click.Path(dir_okay=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "dot", "mermaid", "html"]), default="text",
              show_default=True, help="text: tree and table; html: a self-contained page with an SVG drawing")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="write to this file instead of standard output")
@click.option("--diagnostics", "diag_fmt", type=FORMATS, default="full", show_default=True,
              help="how to print problems in the spec")
@guarded
def graph(spec, fmt, output, diag_fmt):
    """Show the level graph of SPEC: every level, its clock, sizes, and the flow/teach/meta edges.

    The text form prints the hierarchy as a tree from the fastest clock to the slowest, then a table
    of parameters, state size and update cost per token.
    """
    from .graph import to_doc
    from .pipeline import check_file
    from .render import render

    fe = check_file(spec)
    if fe.ok and fe.graph is None:
        click.echo(f"error[NL0105]: {spec} is a library (it defines no model); there is no level graph to show",
                   err=True)
        sys.exit(1)
    if not fe.ok:
        sys.exit(report(fe, diag_fmt) or 1)
    if fe.diagnostics and diag_fmt != "json":
        click.echo(render_all(fe.diagnostics, fe.sources, diag_fmt), err=True)
    text = render(to_doc(fe.graph, fe.model, spec, fe.diagnostics), fmt)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=not text.endswith("\n"))


@main.command(short_help="Format specs in the canonical layout (`-`: standard input).")
@click.argument("specs", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--check", "check_only", is_flag=True, help="do not write; exit 1 if any file would change")
@guarded
def fmt(specs, check_only):
    """Format specs in the canonical layout, keeping comments (`-` reads standard input).

    Formatting is idempotent and never changes meaning: the formatted file parses to the same tree.
    """
    from .diagnostics import SpecError
    from .fmt import format_source
    from .pipeline import decode, read_source

    status = 0
    for spec in specs:
        name, data, text = (STDIN if spec == "-" else spec), None, None
        try:
            if spec == "-":
                data = sys.stdin.buffer.read()
                text = decode(data, name)
            else:
                text = read_source(spec)
            out = format_source(text, name)
        except SpecError as e:  # show the line of this file: the text read, or its bytes as far as they decode
            shown = text if text is not None else _shown(spec, data)
            click.echo(render_all(e.diagnostics, {name: shown} if shown is not None else {}), err=True)
            status = 1
            continue
        if spec == "-":
            click.echo(out, nl=False)
        elif out != text:
            if check_only:
                click.echo(f"would reformat {spec}", err=True)
                status = 1
            else:
                with open(spec, "w", encoding="utf-8") as f:
                    f.write(out)
                click.echo(f"reformatted {spec}", err=True)
    sys.exit(status)


def _shown(spec: str, data: bytes | None) -> str | None:
    """The start of a spec that could not be decoded, for the source line under its diagnostic (None: no
    file to show)."""
    from .pipeline import MAX_SHOWN

    if data is None:
        try:
            with open(spec, "rb") as f:
                data = f.read(MAX_SHOWN)
        except OSError:
            return None
    return data[:MAX_SHOWN].decode("utf-8", "replace")


@main.command(name="compile", short_help="Compile a spec to PyTorch modules and Triton kernels.")
@click.argument("spec", type=click.Path())
@click.option("-o", "--output", "out_dir", default="build", show_default=True, type=click.Path(file_okay=False),
              help="the package is written to OUTPUT/<model>/")
@click.option("--force", is_flag=True, help="write even if the target directory holds other files")
@click.option("--dump", "dump", default="", metavar="STAGES",
              help="also write intermediate forms beside the package: comma-separated among ast, ir, graph, plan")
@click.option("--format", "fmt", type=FORMATS, default="full", show_default=True, help="how to print problems")
@guarded
def compile_cmd(spec, out_dir, force, dump, fmt):
    """Compile SPEC into a self-contained Python package of PyTorch modules and Triton kernels.

    \b
    OUTPUT/<model>/ holds model.py (generated modules named after the spec), kernels.py (the
    fused Triton kernels of its memory levels, for `--backend triton` on a GPU), __init__.py,
    levels.json (the level graph and clocks), plan.txt (the loop nest the runtime executes),
    spec.nl (a copy of the spec) and manifest.json (the spec's hash and the nlc version).
    Compiling twice gives the same bytes. Load the result with `nldsl.load(OUTPUT/<model>)`.
    """
    from .compiler import compile_spec, write_package

    stages = [s.strip() for s in dump.split(",") if s.strip()]
    unknown = [s for s in stages if s not in ("ast", "ir", "graph", "plan")]
    if unknown:  # before anything is written
        raise click.BadParameter(f"unknown stage {unknown[0]!r}; choose among ast, ir, graph, plan", param_hint="--dump")
    fe, files = compile_spec(spec)
    if files is None:
        sys.exit(report(fe, fmt) or 1)
    if fe.diagnostics:
        click.echo(render_all(fe.diagnostics, fe.sources, fmt), err=True)
    try:
        target = write_package(files, out_dir, fe.model.name, force)
    except FileExistsError as e:
        click.echo(f"error[NL0602]: {e}\n  = help: choose another --output, or pass --force", err=True)
        sys.exit(1)
    for stage in stages:
        from .dump import dump_ast, dump_ir

        texts = {"ast": lambda: dump_ast(fe.module), "ir": lambda: dump_ir(fe.model),
                 "graph": lambda: files["levels.json"], "plan": lambda: files["plan.txt"]}
        ext = "json" if stage == "graph" else "txt"
        (target.parent / f"{fe.model.name}.{stage}.{ext}").write_text(texts[stage](), encoding="utf-8")
    click.echo(f"compiled {spec} -> {target}", err=True)


@main.command(short_help="Train a spec with the nested loop, or --resume a run.")
@click.argument("spec", required=False, type=click.Path())
@click.option("--data", default=None, type=ExistingPath("file or folder"),
              help="a text file or a folder of .txt/.md files (default: the bundled English corpus)")
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=1),
              help="total outer steps (with --resume: the total to reach, default the run's own)")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1),
              help="rows per batch (the global batch: split over the processes)")
@click.option("--seq", default=None, type=click.IntRange(min=2), help="tokens per row (default: the spec's context)")
@click.option("--out", default="runs/latest", show_default=True, type=click.Path(file_okay=False),
              help="the run directory: refused when it holds files, unless --force")
@click.option("--force", is_flag=True,
              help="train into --out even if it holds files: an earlier run there is deleted first, other files stay")
@click.option("--resume", "resume", default=None, type=RUN,
              help="continue the run in this directory from its last checkpoint (SPEC may be left out)")
@click.option("--device", default="cpu", show_default=True, type=DEVICE, help="torch device (cpu, cuda, cuda:1, ...)")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float64", "bfloat16"]),
              help="parameter and activation dtype")
@click.option("--seed", default=0, show_default=True, type=SEED, help="seeds initialisation and data order")
@click.option("--documents", default="packed", show_default=True, type=click.Choice(["packed", "aligned"]),
              help="packed: each row streams through the documents back to back, separated by byte 0; aligned: "
                   "each row starts a document (or a piece of a long one), padded at its end, its memories "
                   "fresh (no `state persist` memory)")
@click.option("--checkpoint-every", default=50, show_default=True, type=click.IntRange(min=1),
              help="write a checkpoint every N steps (and at the end)")
@click.option("--eval-every", default=50, show_default=True, type=click.IntRange(min=1),
              help="measure the validation loss every N steps (and at the end)")
@BACKEND
@click.option("--nproc", default=1, show_default=True, type=click.IntRange(min=1),
              help="data-parallel processes on this machine (started with torchrun)")
@click.option("--parallel", default=None, type=click.Choice(["ddp", "fsdp"]),
              help="with several processes: ddp (a replica per process) or fsdp (sharded parameters)  [default: ddp, "
                   "or the resumed run's]")
@click.option("--compile", "compile_steps", is_flag=True,
              help="compile the chunked path's tile steps with torch.compile: faster for large MLP memories "
                   "(heads of 64, hidden 256: 1.5-1.8x), slower for small ones; the first steps compile")
@click.option("--cuda-graphs", "cuda_graphs", is_flag=True,
              help="replay each training segment as a CUDA graph once its shape and positions recur (with "
                   "--device cuda): the same numbers, without the cost of issuing a small model's operators one "
                   "by one; the second step captures")
@guarded
def train(spec, data, steps, batch, seq, out, force, resume, device, dtype, seed, documents, checkpoint_every, eval_every,
          backend, nproc, parallel, compile_steps, cuda_graphs):
    """Train SPEC (a .nl file, compiled on the fly, or a compiled package) with the nested loop.

    In-context memories update inside the forward pass, each CMS level steps at the end of its window
    with the window-summed gradient, the outer level steps at its clock. The run directory gets
    metrics.jsonl, checkpoints (safetensors + JSON), loss.png and update_norms.png. A new run refuses
    an --out that holds files (an earlier run: continue it with --resume) unless --force. Before the
    first step it checks that the parameters, their gradients and optimizer states, and the activations
    of a segment at --batch fit the machine (or the card with --device cuda), and stops with both sizes
    where they do not.

    --resume RUN continues RUN's own model from its last checkpoint up to --steps (default: the total
    it was started with; a total it has reached already is an error). It keeps the run's spec, data,
    batch, seq, dtype, seed and documents: giving other values is an error; --device, --backend, --parallel,
    --compile, --cuda-graphs, --checkpoint-every and --eval-every may change, with a note.

    With --nproc N the run is data-parallel over N processes (torchrun; `torchrun --nproc_per_node N -m
    nldsl.train SPEC ...` does the same, across machines too); a checkpoint resumes under any N.
    """
    import os

    # a step makes many small tensor operations: OpenMP threads spinning between them cost more than
    # they save on a shared machine (set OMP_WAIT_POLICY yourself to override)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .train import launch, run_training

    ctx = click.get_current_context()
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    if resume:
        cfg, notes = resume_config(ctx, Path(resume), given)
    else:
        cfg, notes = new_config(ctx), []
    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # start the processes; each runs this command again
        if cfg.batch % nproc:
            raise click.BadParameter(f"{cfg.batch} rows do not split over {nproc} processes: use a multiple of {nproc}",
                                     param_hint="--batch")
        sys.exit(launch(nproc, forwarded(ctx, given)))
    if os.environ.get("RANK", "0") == "0":
        for note in notes:
            click.echo(f"note: {note}", err=True)
    sys.exit(run_training(cfg, resume=bool(resume)))


@main.command(short_help="Print the loop nest the runtime executes for a spec.")
@click.argument("spec", type=click.Path())
@guarded
def plan(spec):
    """Print the loop nest the runtime will execute for SPEC (a .nl file or a compiled package)."""
    from pathlib import Path

    from .compiler import MANIFEST, compile_spec

    p = Path(spec)
    if p.is_dir():
        package = p if (p / MANIFEST).is_file() else next((c for c in p.iterdir() if (c / MANIFEST).is_file()), None)
        if package is None:
            click.echo(f"error: {spec} is not a compiled package", err=True)
            sys.exit(1)
        click.echo((package / "plan.txt").read_text(), nl=False)
        return
    fe, files = compile_spec(spec)
    if files is None:
        sys.exit(report(fe, "full") or 1)
    click.echo(files["plan.txt"], nl=False)


@main.command(short_help="Draw a run's loss and update-norm plots from its metrics.")
@click.argument("run", type=RUN)
@guarded
def plot(run):
    """Draw RUN/loss.png and RUN/update_norms.png from RUN/metrics.jsonl."""
    from pathlib import Path

    from .runtime.train.metrics import plot as draw

    try:
        paths = draw(Path(run))
    except FileNotFoundError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    for p in paths:
        click.echo(f"wrote {p}", err=True)


@main.command(short_help="Explain a diagnostic code, or list every code.")
@click.argument("code", required=False)
@guarded
def explain(code):
    """Explain a diagnostic code (e.g. NL0302), or list every code."""
    from .codes import CODES

    if code is None:
        for c, text in CODES.items():
            click.echo(f"{c}  {text}")
        return
    code = code.upper()
    if code not in CODES:
        click.echo(f"error: unknown code {code}; `nlc explain` lists them all", err=True)
        sys.exit(1)
    click.echo(f"{code}: {CODES[code]}")


@main.command(short_help="Report what this machine gives nlc; check every backend.")
@click.option("--spec", default=None, type=click.Path(),
              help="check this spec's model (default: a small built-in model with a delta-rule, a chunked "
                   "linear and an MLP memory)")
@click.option("--device", default=None, type=DEVICE,
              help="the device to check the backends on (default: cuda when there is one)")
@click.option("--no-check", "no_check", is_flag=True, help="only list packages, devices and backends")
@click.option("--compile", "compiled", is_flag=True,
              help="also check the chunked backend with its tile steps compiled (what `nlc train --compile` runs)")
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON")
@guarded
def doctor(spec, device, no_check, compiled, as_json):
    """Report what this machine gives nlc, and check that every backend computes the same model.

    Lists the packages nlc needs and the optional ones (with what each enables), the devices torch
    sees and which backends can run on DEVICE, with the reason when one cannot (the triton backend
    needs a CUDA device, or TRITON_INTERPRET=1 on a CPU). Then runs a model forward and backward on
    every backend that can run, in float32, against the float64 token-by-token reference on logits
    and every parameter's gradient, and names each memory level that falls back from the triton
    backend, with the reason (and with --compile whether torch.compile works here). On a CUDA device
    it also replays a training segment of each backend as a CUDA graph, as `nlc train --cuda-graphs`
    does, against the same segment run eagerly. Exits 1 when a required package is missing, a backend
    disagrees or a graph's replay does.

    \b
    Examples:
      nlc doctor
      nlc doctor --spec examples/hope.nl --device cuda
      TRITON_INTERPRET=1 nlc doctor      # the generated kernels under the interpreter, on a CPU
    """
    import json
    from pathlib import Path

    from .doctor import diagnose, render_text, to_json

    if spec is not None:
        from .compiler import compile_spec

        fe, files = compile_spec(spec)
        if files is None:
            sys.exit(report(fe, "full") or 1)
    findings = diagnose(Path(spec) if spec else None, device, not no_check, compiled)
    if as_json:
        click.echo(json.dumps(to_json(findings), indent=2))
    else:
        click.echo(render_text(findings, styled=sys.stdout.isatty()))
    sys.exit(1 if any(f.bad for f in findings) else 0)


for _command in RUN_COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
