"""Evaluations of a trained run (`nlc eval`), all on generated or local text.

- `ppl`: bits per byte on the run's held-out split or on a given text (`ppl.py`);
- `mqar`: Zoology-style multi-query associative recall, accuracy by gap (`mqar.py`);
- `niah`: passkey retrieval in filler text at several lengths and depths, with a heat map (`niah.py`);
- `forgetting`: learn a segment A then B in context, loss on A before and after (`forgetting.py`).

`evaluate(RUN, task, memory=..., options=...)` runs one of them, optionally from a memory file of
`nlc learn`, and returns a JSON-ready document; `write_results` stores it (RUN/evals/<task>.json by
default, and niah's heat map beside it) and `table` renders it for the terminal.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Union

from .forgetting import ForgettingOptions, run_forgetting
from .mqar import MqarOptions, make_mqar, run_mqar
from .niah import NiahOptions, heatmap, make_prompt, run_niah
from .ppl import PplOptions, run_ppl

TASKS = {"ppl": PplOptions, "mqar": MqarOptions, "niah": NiahOptions, "forgetting": ForgettingOptions}


def task_options(task: str, options: Optional[dict] = None):
    """The options dataclass of `task` filled from `options`: a key `<task>_<field>` wins over `<field>`;
    None values keep the defaults, and keys of other tasks are ignored."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    options = options or {}
    values = {}
    for f in dataclasses.fields(TASKS[task]):
        for key in (f"{task}_{f.name}", f.name):
            if options.get(key) is not None:
                values[f.name] = options[key]
                break
    return TASKS[task](**values)


def evaluate(run_dir: Union[str, Path], task: str, *, memory: Optional[Union[str, Path]] = None,
             options: Optional[dict] = None, device: str = "cpu", dtype: Optional[str] = None,
             backend: str = "chunked", compile: bool = False) -> dict:
    """Run `task` on the model of RUN on `backend` (with the memory file applied when given); `compile`:
    the chunked path's loops compiled by torch.compile."""
    from nldsl import __version__

    from ..continual import open_run, read_memory

    opts = task_options(task, options)
    run, state, warnings = open_run(run_dir, memory, device=device, dtype=dtype, backend=backend,
                                      compile=compile)
    if task == "ppl":
        results = run_ppl(run, state, opts)
    elif task == "mqar":
        results = run_mqar(run, state, opts)
    elif task == "niah":
        results = run_niah(run, state, opts)
    else:
        results = run_forgetting(run, state, opts, read_memory(memory, run) if memory else None)
    return {
        "task": task, "run": str(run_dir), "model": run.manifest.get("model"), "spec_sha256": run.spec_sha256,
        "step": run.step, "memory": str(memory) if memory else None, "device": device, "backend": backend,
        "compile": compile,
        "dtype": str(next(run.model.parameters()).dtype).replace("torch.", ""),
        "options": dataclasses.asdict(opts), "results": results, "warnings": warnings, "nlc": __version__,
    }


def result_path(doc: dict, out: Optional[Union[str, Path]] = None) -> Path:
    """Where `write_results` puts a result: OUT if it names a .json file, OUT/<name>.json for a folder,
    RUN/evals/<name>.json by default; <name> is the task, plus `+<memory file stem>` with a memory."""
    name = doc["task"] + (f"+{Path(doc['memory']).stem}" if doc.get("memory") else "")
    if out is not None and str(out).endswith(".json"):
        return Path(out)
    return (Path(out) if out is not None else Path(doc["run"]) / "evals") / f"{name}.json"


def write_results(doc: dict, out: Optional[Union[str, Path]] = None) -> list[Path]:
    """Write the result as JSON (and niah's heat map as a PNG beside it); returns the paths written."""
    path = result_path(doc, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    written = [path]
    if doc["task"] == "niah":
        title = f"{doc['model']}: passkey retrieval" + (f" with {Path(doc['memory']).name}" if doc["memory"] else "")
        written.append(heatmap(doc["results"], path.with_suffix(".png"), title))
    return written


def _f(x, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table(doc: dict):
    """A rich Table of the result."""
    from rich.table import Table

    r, task = doc["results"], doc["task"]
    title = f"{task} — {doc['model']} (step {doc['step']})"
    if doc["memory"]:
        title += f" + {Path(doc['memory']).name}"
    t = Table(title=title)
    if task == "niah":
        t.add_column("length \\ depth", justify="right")
        for d in r["depths"]:
            t.add_column(f"{d:g}", justify="right")
        for n in r["lengths"]:
            row = [c for c in r["cells"] if c["length"] == n]
            t.add_row(str(n), *[_f(c["accuracy"], 2) for c in row])
        t.caption = f"mean accuracy {_f(r['accuracy'], 3)} over {r['trials']} keys per cell"
        return t
    t.add_column("measure")
    t.add_column("value", justify="right")
    if task == "ppl":
        rows = [("text", r["source"]), ("documents", r.get("layout", "packed")), ("tokens", str(r["tokens"])),
                ("loss (nats/token)", _f(r["loss_nats"])),
                ("bits per byte", _f(r["bits_per_byte"]))]
    elif task == "mqar":
        rows = [("pairs / length", f"{r['pairs']} / {r['length']}"), ("queries", str(r["queries"])),
                ("accuracy", _f(r["accuracy"], 3)), ("examples all right", _f(r["example_accuracy"], 3)),
                ("chance (a value at random)", _f(r["chance"], 3))]
        rows += [(f"accuracy, gap {b}", f"{_f(v['accuracy'], 3)} ({v['queries']})") for b, v in r["by_gap"].items()]
    else:
        rows = [("segment A", f"{r['segment_a']} ({r['tokens_a']} tokens)"),
                ("segment B", f"{r['segment_b']} ({r['tokens_b']} tokens)"),
                ("loss on A before", _f(r["loss_a_before"])), ("loss on A after learning A", _f(r["loss_a_after_a"])),
                ("loss on A after learning B", _f(r["loss_a_after_b"])), ("loss on B before", _f(r["loss_b_before"])),
                ("loss on B after learning B", _f(r["loss_b_after_b"])),
                ("forgetting (nats/token)", _f(r["forgetting"])),
                ("part of A's gain retained", _f(r["retained"], 3))]
    for name, value in rows:
        t.add_row(name, value)
    return t


__all__ = ["TASKS", "evaluate", "make_mqar", "make_prompt", "result_path", "table", "task_options", "write_results"]
