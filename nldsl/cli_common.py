"""What the `nlc` commands share: the group that turns usage errors into `error:` lines (exit 1), the
guard that turns an unexpected exception into an internal-error report, and the parameter types
(--device, paths that must exist, finite numbers)."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shlex
import sys
import traceback
import warnings

import click

from . import __version__
from .diagnostics import render_all, summary

BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for git, cat, ... when the reader of their output left
PATH_HELP = "check the path; a relative path starts from the current directory"


class UserError(click.ClickException):
    """Bad input named on the command line: MESSAGE (already rendered `error...` lines) goes to standard
    error as it is, and the command exits 1."""

    exit_code = 1

    def show(self, file=None):
        click.echo(self.message, err=True)


def no_such(what: str, path: str) -> UserError:
    """NL0001, as `nlc check` reports a missing spec: PATH does not exist."""
    return UserError(f"error[NL0001]: no such {what} `{path}`\n  = help: {PATH_HELP}")


def usage_error(e: click.UsageError) -> UserError:
    """A click usage error (bad option value, unknown option, missing argument) as an `error:` line with
    the usage and where to find help."""
    message = e.format_message()
    if message[1:2].islower():  # "Invalid value ..." -> "invalid value ...", as nlc's other messages
        message = message[:1].lower() + message[1:]
    lines = [f"error: {message}"]
    if e.ctx is not None:
        lines.append(f"  = usage: {e.ctx.get_usage().removeprefix('Usage: ')}")
        what = "lists the commands" if isinstance(e.ctx.command, click.Group) else "describes every option"
        lines.append(f"  = help: `{e.ctx.command_path} --help` {what}")
    return UserError("\n".join(lines))


class Group(click.Group):
    """The `nlc` group: usage errors exit 1, like every other problem with the input (click's own exit
    code for them, 2, is nlc's internal error); `nlc` alone prints the help and exits 0; help piped into
    a reader that leaves (`nlc --help | head -1`) exits 141 quietly, as the commands do."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            e.exit_code = 0
            raise
        except click.UsageError as e:
            raise usage_error(e) from None
        except BrokenPipeError:
            broken_pipe()

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise usage_error(e) from None
        except BrokenPipeError:
            broken_pipe()


class _Device(click.ParamType):
    """A torch device this machine has (cpu, cuda, cuda:1, mps): one that it lacks is a usage error
    naming why, before anything runs."""

    name = "device"

    def convert(self, value, param, ctx):
        from .doctor import device_problem

        problem = device_problem(value)
        if problem:
            self.fail(problem, param, ctx)
        return value


DEVICE = _Device()

# runtime.BACKENDS, written out so that `--help` imports no torch (a test holds them equal)
BACKEND = click.option("--backend", default="chunked", show_default=True,
                       type=click.Choice(["chunked", "reference", "triton"]),
                       help="how memory levels run: chunk-parallel, token by token (the ground truth), or the "
                            "generated Triton kernels (on a CUDA device; elsewhere they fall back to chunked, "
                            "with a warning)")

# --compile of the commands that run a trained model forward (generate, learn, eval); `nlc train` has its own
COMPILE = click.option("--compile", "compile_steps", is_flag=True,
                       help="compile the chunked path's loops with torch.compile: pays on long texts with large memories "
                            "(titans.nl at heads of 64: forward 1.5x, after 10-25 s of compiling), not on short ones or "
                            "small memories")


class ExistingPath(click.Path):
    """click.Path(exists=True) whose missing path is NL0001 naming WHAT was expected (exit 1), as
    `nlc check` reports a missing spec."""

    def __init__(self, what: str, **kwargs):
        super().__init__(exists=False, **kwargs)
        self.what = what

    def convert(self, value, param, ctx):
        path = os.fspath(value)
        if not (self.allow_dash and path == "-"):
            if not os.path.exists(path):
                raise no_such(self.what, path)
            if os.path.isdir(path) and not self.dir_okay:
                raise UserError(f"error[NL0001]: `{path}` is a directory, not a {self.what}\n  = help: {PATH_HELP}")
            if not os.path.isdir(path) and not self.file_okay:
                raise UserError(f"error[NL0001]: `{path}` is a file, not a {self.what}\n  = help: {PATH_HELP}")
        return super().convert(value, param, ctx)


RUN = ExistingPath("run directory", file_okay=False)


class FiniteFloat(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which compare false with every bound)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class _Seed(click.types.IntParamType):
    """An integer that torch takes as a seed (64 bits, signed)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not -(2**63) <= number < 2**63:
            self.fail(f"{value!r} does not fit a 64-bit seed (-2**63 to 2**63 - 1)", param, ctx)
        return number


SEED = _Seed()


@contextlib.contextmanager
def clean_warnings():
    """nlc's own warnings (a backend that falls back, a step that does not compile) as one `warning:`
    line each, without Python's file and source line; other warnings as Python shows them."""
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("nldsl"):
            click.echo(f"warning: {message}", err=True)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        yield
    finally:
        warnings.showwarning = show


def broken_pipe():
    """Leave quietly with 141 (128 + SIGPIPE, what a shell reports for git or cat) when the reader of the
    output has gone (`nlc explain | head`); standard output goes to /dev/null first, so that flushing it
    at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass
    sys.exit(BROKEN_PIPE)


def report(fe, fmt: str, quiet_ok: bool = False) -> int:
    """Print a front end's diagnostics (and, in the full format, its summary line); 1 when it has errors."""
    if fe.diagnostics:
        text = render_all(fe.diagnostics, fe.sources, fmt)
        click.echo(text, err=fmt != "json")
    if fmt == "full" and (fe.diagnostics or not quiet_ok):
        click.echo(f"{fe.file}: {summary(fe.diagnostics)}", err=True)
    return 1 if not fe.ok else 0


def _out_of_memory(e: BaseException) -> bool:
    """A device or host allocation failed (torch raises OutOfMemoryError on GPUs, RuntimeError on CPUs)."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e))


def guarded(fn):
    """Turn any unexpected exception into an 'internal compiler error' with a repro line, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with clean_warnings():
                return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # `nlc explain | head`: the reader has gone
            broken_pipe()
        except OSError as e:  # the file system refused a path the user gave (unwritable, missing, a folder)
            click.echo(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), err=True)
            sys.exit(1)
        except BaseException as e:  # noqa: BLE001 - the last line of defence
            if _out_of_memory(e):
                click.echo(f"error: out of memory: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
                click.echo("  = help: the model or the batch is too large for this device: `nlc graph SPEC` shows "
                           "the parameter counts; use smaller sizes, a smaller --batch or --seq", err=True)
                sys.exit(1)
            repro = "nlc " + " ".join(shlex.quote(a) for a in sys.argv[1:])
            click.echo(f"error[NL0901]: internal compiler error: {type(e).__name__}: {e}", err=True)
            click.echo(f"  = note: this is a bug in nlc {__version__}, not in your spec", err=True)
            click.echo(f"  = repro: {repro}", err=True)
            if os.environ.get("NLC_BACKTRACE"):
                traceback.print_exc()
            else:
                click.echo("  = help: set NLC_BACKTRACE=1 for the Python traceback", err=True)
            sys.exit(2)

    return wrapper
