"""`nlc train`'s configuration: a new run's (SPEC exists, --out is free or --force), a resumed run's (the
options that fix its weights and data stream are the run's own, the others may change, with a note), and
the command line the processes of --nproc get."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .cli_common import UserError, report

# options a resumed run keeps (they fix its weights and its data stream), and those it may change
KEPT_ON_RESUME = {"data": "--data", "batch": "--batch", "seq": "--seq", "dtype": "--dtype", "seed": "--seed",
                  "documents": "--documents"}
CHANGED_ON_RESUME = {"device": "--device", "backend": "--backend", "checkpoint_every": "--checkpoint-every",
                     "eval_every": "--eval-every", "parallel": "--parallel", "compile_steps": "--compile",
                     "cuda_graphs": "--cuda-graphs"}


def new_config(ctx):
    """The TrainConfig of a new run, after checking that SPEC exists and --out is free (or --force)."""
    import os

    from .runtime.train.run import RunDirInUse, TrainConfig, check_out_dir

    p = ctx.params
    if p["spec"] is None:
        raise click.UsageError("missing argument 'SPEC': the spec to train (or --resume RUN to continue a run)", ctx)
    _require_spec(p["spec"])
    # under torchrun, rank 0 checks (the others cannot tell its files from an earlier run's)
    if not p["force"] and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        try:
            check_out_dir(Path(p["out"]))
        except RunDirInUse as e:
            raise UserError(f"error[NL0602]: {e}") from None
    # the data as an absolute path: --resume and `nlc eval` may run from another directory
    data = str(Path(p["data"]).resolve()) if p["data"] is not None else None
    return TrainConfig(p["spec"], data, p["steps"], p["batch"], p["seq"], p["out"], p["device"], p["dtype"],
                       p["seed"], p["checkpoint_every"], p["eval_every"], backend=p["backend"],
                       parallel=p["parallel"] or "ddp", compile=p["compile_steps"], cuda_graphs=p["cuda_graphs"],
                       documents=p["documents"], force=p["force"])


def _require_spec(spec: str) -> None:
    """Exit 1 with NL0001, as `nlc check` reports it, when SPEC is neither a file nor a package directory."""
    from .compiler import MANIFEST
    from .pipeline import check_file

    path = Path(spec)
    if not path.exists():
        sys.exit(report(check_file(spec), "full") or 1)
    if path.is_dir() and not (path / MANIFEST).is_file() and not any((c / MANIFEST).is_file() for c in path.iterdir()):
        raise UserError(f"error[NL0001]: `{spec}` is a directory with no compiled package in it\n"
                        "  = help: give a .nl spec, or a directory made by `nlc compile`")


def _spec_sha256(spec: str) -> str:
    """The sha256 of SPEC's sources, as a compiled package's manifest records it (exit 1 on a bad spec)."""
    from .compiler import MANIFEST, compile_spec

    path = Path(spec)
    if path.is_dir():
        package = path if (path / MANIFEST).is_file() else next(c for c in path.iterdir() if (c / MANIFEST).is_file())
        return json.loads((package / MANIFEST).read_text())["spec_sha256"]
    fe, files = compile_spec(spec)
    if files is None:
        sys.exit(report(fe, "full") or 1)
    return json.loads(files[MANIFEST])["spec_sha256"]


def resume_config(ctx, run: Path, given: set):
    """The TrainConfig that continues RUN, and notes on what changes; exit 1 when an option conflicts with
    the run, or when there is nothing to train."""
    import dataclasses

    from .compiler import MANIFEST
    from .runtime.train.run import TrainConfig

    p = ctx.params
    if not (run / "config.json").is_file():
        raise click.BadParameter(f"{run} is not a run directory (it has no config.json): start a run with "
                                 "--out, continue it with --resume", ctx, param_hint="--resume")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in json.loads((run / "config.json").read_text()).items() if k in fields}
    conflicts = []
    if "force" in given:
        conflicts.append("--force starts a new run, and --resume continues one")
    if "out" in given and not _same_path(p["out"], str(run)):
        conflicts.append(f"--out {p['out']}: a resumed run stays in its own directory, {run}")
    manifest = run / "model" / MANIFEST
    if p["spec"] is not None:
        _require_spec(p["spec"])
        if manifest.is_file() and _spec_sha256(p["spec"]) != json.loads(manifest.read_text())["spec_sha256"]:
            conflicts.append(f"{p['spec']} is not the spec {run} was trained from ({saved.get('spec')}, as it was then)")
    for name, flag in KEPT_ON_RESUME.items():
        if name in given and not _same_setting(name, p[name], saved, run):
            conflicts.append(f"{flag} {p[name]}: {run} was trained with {_setting(name, saved, run)}")
    if conflicts:
        raise UserError("\n".join([f"error: cannot resume {run} with these options"]
                                  + [f"  = note: {c}" for c in conflicts]
                                  + ["  = help: a resumed run keeps its directory, spec, data, batch, seq, dtype, "
                                     "seed and documents (they fix its weights and data stream): leave those out, or start a new "
                                     "run with --out"]))
    total = p["steps"] if "steps" in given else saved.get("steps", p["steps"])
    reached = _reached_step(run)
    if total <= reached:
        why = (f"it has trained {reached} steps, and --steps {total} is a total" if "steps" in given
               else f"it has trained all its {reached} steps")
        raise UserError(f"error: nothing to train in {run}: {why}\n"
                        f"  = help: pass --steps N with N > {reached} to train it further")
    notes = []
    if total != saved.get("steps"):
        notes.append(f"training {run} on to step {total} (it was started for {saved.get('steps')})")
    saved.update(steps=total, out=str(run))
    for name, flag in CHANGED_ON_RESUME.items():
        key = "compile" if name == "compile_steps" else name
        if name in given and p[name] != saved.get(key):
            if name == "compile_steps":
                notes.append(f"--compile: the tile steps are compiled from here on ({run} ran them eagerly so far)")
            elif name == "cuda_graphs":
                notes.append(f"--cuda-graphs: segments are replayed as CUDA graphs from here on ({run} ran them "
                             "eagerly so far)")
            elif saved.get(key) is not None:
                notes.append(f"{flag} {p[name]} from here on ({run} trained with {saved[key]} so far)")
            saved[key] = p[name]
    return TrainConfig(**saved), notes


def _reached_step(run: Path) -> int:
    """The step of RUN's last checkpoint (exit 1 when it has none)."""
    checkpoint = run / "checkpoint.json"
    if not checkpoint.is_file():
        raise UserError(f"error: {run} has no checkpoint yet (it stopped before its first), so there is nothing "
                        f"to resume\n  = help: start it again with --out {run} --force")
    return int(json.loads(checkpoint.read_text())["step"])


def _same_path(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _setting(name: str, saved: dict, run: Path):
    """How RUN's setting NAME reads on the command line (--data: the bundled corpus when it had none)."""
    value = _effective(name, saved, run)
    if name == "data" and value is None:
        return "the bundled corpus"
    return f"{KEPT_ON_RESUME[name]} {value}"


def _effective(name: str, saved: dict, run: Path):
    """RUN's setting NAME as it trained: --seq left out means the spec's context; a run from before
    --documents packed its documents."""
    value = saved.get(name)
    if name == "documents" and value is None:
        return "packed"
    if name == "seq" and value is None:
        try:
            return json.loads((run / "model" / "levels.json").read_text())["runtime"]["context"]
        except (OSError, ValueError, KeyError):
            return None
    return value


def _same_setting(name: str, value, saved: dict, run: Path) -> bool:
    theirs = _effective(name, saved, run)
    if name == "data":
        return theirs is not None and _same_path(value, theirs)
    return value == theirs


def forwarded(ctx, given: set) -> list[str]:
    """The command line of `nlc train` as given, for the processes that --nproc starts (without --nproc)."""
    args = [ctx.params["spec"]] if ctx.params["spec"] else []
    for param in ctx.command.params:
        if param.name in given and param.name not in ("spec", "nproc"):
            value = ctx.params[param.name]
            if getattr(param, "is_flag", False):
                args += [param.opts[0]] if value else []
            else:
                args += [param.opts[0], str(value)]
    return args
