"""What the `nlc` commands share: the guard that turns an unexpected exception into an internal-error
report, and the --device type."""

from __future__ import annotations

import functools
import os
import shlex
import sys
import traceback

import click

from . import __version__


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


def guarded(fn):
    """Turn any unexpected exception into an 'internal compiler error' with a repro line, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:  # the file system refused a path the user gave (unwritable, missing, a folder)
            click.echo(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), err=True)
            sys.exit(1)
        except BaseException as e:  # noqa: BLE001 - the last line of defence
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
