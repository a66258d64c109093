"""The side-by-side study (docs/results.md): Transformer, Titans, Gated DeltaNet and HOPE at equal size.

    .venv/bin/python benchmarks/study.py                 # the full study (make study), 20-60 minutes
    .venv/bin/python benchmarks/study.py --steps 500     # a bigger token budget
    .venv/bin/python benchmarks/study.py --models titans # redo one model, keep the others' results
    .venv/bin/python benchmarks/study.py --report-only   # redraw plots and table from the JSON
    .venv/bin/python benchmarks/study.py --quick --out build/study --doc build/study/results.md  # smoke test

From scratch, for each spec of examples/study/ (about 5.5M parameters each), the same way for all:

1. language modelling: `nlc train` on the bundled corpus with the same steps, batch, sequence length,
   seed and outer optimizer; tokens/s is the median over the steps without a validation pass, with the
   1-minute load average sampled during training beside it (the machine may be shared);
2. `nlc eval` of that run: ppl (validation bits per byte), mqar (on a text-trained model: near chance,
   reported for completeness), niah (accuracy by prompt length) and forgetting (only for a model with
   a persistent level; the others keep nothing between sequences, so it does not apply);
3. Zoology-style recall: the same spec trained for the same number of steps on synthetic MQAR
   sequences (written as a text file the trainer reads: one example per line), then `nlc eval --task
   mqar` on unseen examples of the same shape.

Each spec is compiled once, and both of its runs train that package. Training and evaluation run in
this process through the functions behind `nlc train` and `nlc eval` (the CLI is a thin wrapper around
them), which saves a Python start per step of the pipeline. Results go to OUT/results.json (everything
the document is built from, written after each model); plots to IMAGES/study_*.png; the table between
the study markers of DOC is rewritten from the JSON, the prose around it is left alone.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported, as `nlc train` does

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "examples" / "study"
MODELS = ("transformer", "titans", "gated_deltanet", "hope")
LABELS = {"transformer": "Transformer", "titans": "Titans (LMM)", "gated_deltanet": "Gated DeltaNet",
          "hope": "HOPE"}
TABLE_START = "<!-- study:table:start -->"
TABLE_END = "<!-- study:table:end -->"


@dataclass(frozen=True)
class Budget:
    """Everything that sizes the study; the same for every model."""

    steps: int = 320  # language-modelling steps
    batch: int = 8
    seq: int = 256
    evals: int = 6  # validation passes during training (evenly spaced)
    mqar_steps: int = 300  # steps on synthetic MQAR
    mqar_batch: int = 16
    mqar_seq: int = 128
    mqar_pairs: int = 8
    mqar_length: int = 64
    mqar_train_examples: int = 40000
    mqar_examples: int = 256  # evaluation examples
    ppl_tokens: int = 16384
    niah_lengths: tuple = (256, 512, 1024)
    niah_depths: tuple = (0.0, 0.5, 1.0)
    niah_trials: int = 3
    forgetting_tokens: int = 2048
    seed: int = 0


QUICK = Budget(steps=2, batch=2, seq=32, evals=1, mqar_steps=2, mqar_batch=2, mqar_seq=40, mqar_pairs=4,
               mqar_length=24, mqar_train_examples=200, mqar_examples=8, ppl_tokens=128, niah_lengths=(128, 160),
               niah_depths=(0.5,), niah_trials=1, forgetting_tokens=64)


# ------------------------------------------------------------------------------------------ measuring


class LoadMonitor:
    """Samples the 1-minute load average every `period` seconds while open (a shared machine's load)."""

    def __init__(self, period: float = 2.0):
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.period):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        return {"mean": statistics.fmean(self.samples), "max": max(self.samples)} if self.samples else {}


def compile_once(spec: Path, target: Path) -> Path:
    """`nlc compile SPEC -o TARGET`: both runs of a model train this one package."""
    from nldsl.compiler import compile_spec, write_package
    from nldsl.diagnostics import SpecError

    fe, files = compile_spec(str(spec))
    if files is None:
        raise SpecError(fe.diagnostics)
    return write_package(files, str(target), fe.model.name, force=True)


def count_parameters(package: Path) -> int:
    from nldsl.compiler import load

    return sum(p.numel() for p in load(package).parameters())


def _step_rate(times: list, records: list, tokens: int) -> Optional[float]:
    """Tokens per second over the steps that ran no validation pass (median step time)."""
    plain = [t for t, r in zip(times, records) if "val_loss" not in r]
    return tokens / statistics.median(plain) if plain else None


def train(spec: Path, package: Path, out: Path, steps: int, batch: int, seq: int, evals: int, seed: int,
          data: Optional[Path] = None) -> dict:
    """`nlc train SPEC --steps --batch --seq --out OUT [--data DATA]`, from scratch, timed; PACKAGE is
    SPEC compiled."""
    from nldsl.runtime.train.run import TrainConfig, Trainer

    if out.exists():
        shutil.rmtree(out)
    every = max(1, steps // max(evals, 1))
    cfg = TrainConfig(spec=str(package), data=str(data) if data else None, steps=steps, batch=batch, seq=seq,
                      out=str(out), checkpoint_every=steps, eval_every=every, seed=seed)
    records, times = [], []
    last = [time.perf_counter()]

    def progress(record):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        records.append(record)
        if record["step"] % every == 0 or record["step"] == steps:
            val = f"  val {record['val_bits_per_byte']:.3f} bpb" if "val_loss" in record else ""
            print(f"  step {record['step']}/{steps}  loss {record['loss']:.3f}{val}", flush=True)

    started = time.perf_counter()
    with LoadMonitor() as load:
        trainer = Trainer(cfg, log=lambda msg: None)
        last[0] = time.perf_counter()
        trainer.train(progress)
    wall = time.perf_counter() - started
    tokens = batch * seq
    return {
        "command": f"nlc train {spec.relative_to(ROOT)} --steps {steps} --batch {batch} --seq {seq} "
                   f"--eval-every {every} --seed {seed}" + (" --data <synthetic MQAR text>" if data else ""),
        "steps": steps, "tokens": steps * tokens, "wall_s": wall,
        "tokens_per_s": _step_rate(times, records, tokens), "load_average": load.summary(),
        "curve": [{"step": r["step"], "tokens": r["step"] * tokens, "loss_bpb": r["bits_per_byte"],
                   **({"val_bpb": r["val_bits_per_byte"]} if "val_loss" in r else {})} for r in records],
        "final_val_bpb": next((r["val_bits_per_byte"] for r in reversed(records) if "val_loss" in r), None),
    }


def evaluate(run: Path, task: str, options: dict) -> dict:
    """`nlc eval RUN --task TASK ...`; a task the model cannot do (forgetting without a persistent
    level) is recorded as not applicable, with the reason."""
    from nldsl.runtime.continual import RunError
    from nldsl.runtime.evals import evaluate as run_task
    from nldsl.runtime.evals import write_results

    try:
        doc = run_task(run, task, options=options)
    except RunError as e:
        return {"task": task, "applicable": False, "reason": str(e).replace(str(run), "the run")}
    write_results(doc)
    return {"task": task, "applicable": True, "options": doc["options"], "results": doc["results"]}


# ------------------------------------------------------------------------------------------ the pipeline


def mqar_text(budget: Budget, path: Path) -> Path:
    """Synthetic MQAR examples as text, one per line, from a seed far from the evaluation's."""
    from nldsl.runtime.evals.mqar import MqarOptions, make_mqar

    data = make_mqar(MqarOptions(pairs=budget.mqar_pairs, length=budget.mqar_length,
                                 examples=budget.mqar_train_examples, seed=budget.seed + 1000))
    tokens = data.tokens.clone()
    asked = data.targets != -100
    # the evaluation reads the prediction at each query key; to learn it by next-token prediction, the
    # value must follow the key (the byte after a query key is filler in the evaluation's inputs)
    tokens[:, 1:][asked[:, :-1]] = data.targets[asked]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(bytes(row.tolist()).decode("ascii") + "\n" for row in tokens))
    return path


def study_model(name: str, budget: Budget, runs: Path, mqar_data: Path) -> dict:
    from nldsl.runtime.train.loop import Diverged

    spec = SPECS / f"{name}.nl"
    print(f"== {LABELS[name]} ({spec.relative_to(ROOT)})", flush=True)
    package = compile_once(spec, runs / f"{name}-compiled")
    entry = {"spec": spec.relative_to(ROOT).as_posix(), "parameters": count_parameters(package)}
    run = runs / name
    try:
        entry["train"] = train(spec, package, run, budget.steps, budget.batch, budget.seq, budget.evals, budget.seed)
    except Diverged as e:  # recorded, and the study goes on with the next model
        print(f"  {e}", flush=True)
        return {**entry, "diverged": str(e)}
    entry["ppl"] = evaluate(run, "ppl", {"max_tokens": budget.ppl_tokens})
    mqar_opts = {"mqar_pairs": budget.mqar_pairs, "mqar_length": budget.mqar_length,
                 "mqar_examples": budget.mqar_examples, "seed": budget.seed}
    entry["mqar_text"] = evaluate(run, "mqar", mqar_opts)
    entry["niah"] = evaluate(run, "niah", {"niah_lengths": list(budget.niah_lengths),
                                           "niah_depths": list(budget.niah_depths),
                                           "niah_trials": budget.niah_trials, "seed": budget.seed})
    entry["forgetting"] = evaluate(run, "forgetting", {"max_tokens": budget.forgetting_tokens})
    print(f"  -- synthetic MQAR: {budget.mqar_steps} steps", flush=True)
    recall_run = runs / f"{name}-mqar"
    try:
        entry["mqar_train"] = train(spec, package, recall_run, budget.mqar_steps, budget.mqar_batch,
                                    budget.mqar_seq, budget.evals, budget.seed, data=mqar_data)
    except Diverged as e:
        print(f"  {e}", flush=True)
        return {**entry, "diverged": f"on synthetic MQAR: {e}"}
    entry["mqar_synthetic"] = evaluate(recall_run, "mqar", mqar_opts)
    return entry


def _previous(out: Path, budget: Budget) -> dict:
    """The models of an earlier results.json made with the same budget (a `--models` rerun adds to it)."""
    source = out / "results.json"
    if not source.is_file():
        return {}
    doc = json.loads(source.read_text())
    same = doc.get("budget") == json.loads(json.dumps(asdict(budget)))
    return doc.get("models", {}) if same else {}


def run_study(budget: Budget, out: Path, runs: Path, models=MODELS) -> dict:
    """Study `models`, writing OUT/results.json after each one; models studied earlier with the same
    budget and not named now are kept, in the order of MODELS."""
    import torch

    mqar_data = mqar_text(budget, runs / "mqar-train.txt")
    done = _previous(out, budget)
    doc = {
        "budget": asdict(budget),
        "hardware": {"cpus": os.cpu_count(), "machine": platform.machine(), "torch_threads": torch.get_num_threads(),
                     "torch": torch.__version__, "python": platform.python_version()},
        "models": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    for name in models:
        done[name] = study_model(name, budget, runs, mqar_data)
        doc["models"] = {m: done[m] for m in MODELS if m in done}
        (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


# ------------------------------------------------------------------------------------------ reporting


def _dig(doc, *keys):
    """doc[k0][k1]…, or None where a key is missing (a model that diverged has no later figures)."""
    for k in keys:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


def niah_by_length(entry: dict, key: str = "accuracy") -> dict:
    """NIAH `key` (accuracy: whole keys; digit_accuracy: digits) per prompt length, averaged over depths."""
    by = {}
    for c in _dig(entry, "niah", "results", "cells") or []:
        by.setdefault(c["length"], []).append(c[key])
    return {length: statistics.fmean(v) for length, v in sorted(by.items())}


def _fmt(value, spec: str = ".3f", missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def _forgetting_cell(entry: dict) -> str:
    from nldsl.runtime.data import bits_per_byte

    f = entry.get("forgetting")
    if f is None:
        return "—"
    if not f["applicable"]:
        return "n/a"
    r = f["results"]
    return " → ".join(f"{bits_per_byte(r[k]):.3f}" for k in ("loss_a_before", "loss_a_after_a", "loss_a_after_b"))


def _row(name: str, e: dict, lengths: list) -> list:
    niah, digits = niah_by_length(e), niah_by_length(e, "digit_accuracy")
    speed = f"{_fmt(_dig(e, 'train', 'tokens_per_s'), '.0f')} ({_fmt(_dig(e, 'train', 'load_average', 'mean'), '.1f')})"
    return ([LABELS.get(name, name), f"{e['parameters'] / 1e6:.2f}M",
             _fmt(_dig(e, "ppl", "results", "bits_per_byte")),
             _fmt(_dig(e, "mqar_text", "results", "accuracy")),
             _fmt(_dig(e, "mqar_synthetic", "results", "accuracy"))]
            + [f"{_fmt(niah.get(n), '.2f')} ({_fmt(digits.get(n), '.2f')})" for n in lengths]
            + [_forgetting_cell(e), speed])


def table(doc: dict) -> str:
    """The figures table of docs/results.md, from the results JSON."""
    models = doc["models"]
    lengths = sorted({length for e in models.values() for length in niah_by_length(e)})
    head = (["model", "parameters", "val bits/byte", "MQAR acc. (text-trained)", "MQAR acc. (MQAR-trained)"]
            + [f"NIAH @{n}: keys (digits)" for n in lengths]
            + ["forgetting: bits/byte on A before → after A → after B", "tokens/s (load avg)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_row(name, e, lengths)) + " |" for name, e in models.items()]
    b = doc["budget"]
    chance = next((_dig(e, "mqar_text", "results", "chance") for e in models.values() if "mqar_text" in e), None)
    lines.append("")
    lines += [f"{LABELS.get(name, name)} diverged ({e['diverged']}); the figures after that point are missing."
              for name, e in models.items() if "diverged" in e]
    lines.append(f"Language modelling: {b['steps']} steps × {b['batch']} × {b['seq']} bytes = "
                 f"{b['steps'] * b['batch'] * b['seq']:,} training bytes per model. MQAR-trained: "
                 f"{b['mqar_steps']} steps × {b['mqar_batch']} × {b['mqar_seq']} bytes of synthetic MQAR "
                 f"({b['mqar_pairs']} pairs in {b['mqar_length']} bytes); evaluated on {b['mqar_examples']} "
                 f"unseen examples; chance ≈ {_fmt(chance)}. NIAH: accuracy over depths "
                 f"{', '.join(str(d) for d in b['niah_depths'])} × {b['niah_trials']} keys per cell (digits: "
                 "the fraction of digits right; chance 0.1). "
                 "Forgetting applies only to a model with a persistent level.")
    return "\n".join(lines)


def write_table(doc: dict, path: Path) -> None:
    """Replace what lies between the study markers of PATH with the table (a new file gets the markers)."""
    text = path.read_text() if path.exists() else f"# Results\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"error: {path} has no `{TABLE_START}` … `{TABLE_END}` markers for the table")
    before, rest = text.split(TABLE_START, 1)
    _, after = rest.split(TABLE_END, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{before}{TABLE_START}\n{table(doc)}\n{TABLE_END}{after}")


def plots(doc: dict, images: Path) -> list:
    """study_loss.png (training curves), study_niah.png (accuracy by length), study_bars.png (the rest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images.mkdir(parents=True, exist_ok=True)
    models = doc["models"]
    paths = [images / "study_loss.png", images / "study_niah.png", images / "study_bars.png"]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, e in models.items():
        for ax, key in zip(axes, ("train", "mqar_train")):
            curve = _dig(e, key, "curve")
            if not curve:
                continue
            color = f"C{MODELS.index(name)}"
            ax.plot([c["tokens"] for c in curve], [c["loss_bpb"] for c in curve], label=LABELS[name], color=color,
                    alpha=0.8)
            val = [c for c in curve if "val_bpb" in c]
            ax.plot([c["tokens"] for c in val], [c["val_bpb"] for c in val], "o", color=color, ms=4)
    axes[0].set_title("language modelling (line: training, dots: validation)")
    axes[1].set_title("trained on synthetic MQAR")
    for ax in axes:
        ax.set_xlabel("training tokens (bytes)")
        ax.set_ylabel("bits per byte")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (key, title, chance) in zip(axes, (("accuracy", "whole passkey right", None),
                                               ("digit_accuracy", "passkey digits right", 0.1))):
        for name, e in models.items():
            niah = niah_by_length(e, key)
            if not niah:
                continue
            ax.plot(list(niah), list(niah.values()), "o-", label=LABELS[name], color=f"C{MODELS.index(name)}")
        if chance is not None:
            ax.axhline(chance, color="k", ls="--", lw=1, label="chance")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt length (bytes)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"needle in a haystack: {title}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)

    panels = [
        ("validation bits per byte (lower is better)", ("ppl", "results", "bits_per_byte"), "%.3f"),
        ("MQAR accuracy, MQAR-trained", ("mqar_synthetic", "results", "accuracy"), "%.3f"),
        ("MQAR accuracy, text-trained", ("mqar_text", "results", "accuracy"), "%.3f"),
        ("training tokens/s", ("train", "tokens_per_s"), "%.0f"),
    ]
    chance = next((_dig(e, "mqar_text", "results", "chance") for e in models.values() if "mqar_text" in e), None)
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.6))
    for ax, (title, keys, fmt) in zip(axes, panels):
        shown = [(n, _dig(e, *keys)) for n, e in models.items() if _dig(e, *keys) is not None]
        bars = ax.bar([LABELS[n] for n, _ in shown], [v for _, v in shown],
                      color=[f"C{MODELS.index(n)}" for n, _ in shown])
        ax.bar_label(bars, fmt=fmt, fontsize=8)
        top = max([v for _, v in shown] + [0.1 if keys[0].startswith("mqar") else 1e-9])
        ax.set_ylim(0, 1.15 * top)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        if keys[0].startswith("mqar") and chance is not None:
            ax.axhline(chance, color="k", ls="--", lw=1, label="chance")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------------ command line


def _parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budget: a smoke test of the whole pipeline")
    p.add_argument("--steps", type=int, help="language-modelling steps per model")
    p.add_argument("--batch", type=int, help="rows per step")
    p.add_argument("--seq", type=int, help="bytes per row")
    p.add_argument("--mqar-steps", type=int, help="steps on synthetic MQAR per model")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    p.add_argument("--out", type=Path, default=ROOT / "results" / "study", help="where results.json goes")
    p.add_argument("--runs", type=Path, help="run directories (default: runs/study, or OUT/runs with --quick)")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "results.md", help="document whose table to rewrite")
    p.add_argument("--images", type=Path, help="where the plots go (default: docs/images, or OUT with --quick)")
    p.add_argument("--report-only", action="store_true", help="redraw plots and table from OUT/results.json")
    return p.parse_args(argv)


def _budget(args) -> Budget:
    budget = QUICK if args.quick else Budget()
    changes = {k: getattr(args, k) for k in ("steps", "batch", "seq", "mqar_steps") if getattr(args, k) is not None}
    bad = [f"--{k.replace('_', '-')}" for k, v in changes.items() if v < 1]
    if bad:
        raise SystemExit(f"error: {', '.join(bad)} must be at least 1")
    return replace(budget, **changes)


def main(argv=None) -> int:
    args = _parse(argv)
    budget = _budget(args)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise SystemExit(f"error: unknown model(s) {', '.join(unknown) or '(none)'}; choose among {', '.join(MODELS)}")
    runs = args.runs or (args.out / "runs" if args.quick else ROOT / "runs" / "study")
    images = args.images or (args.out if args.quick else ROOT / "docs" / "images")
    if args.report_only:
        source = args.out / "results.json"
        if not source.is_file():
            raise SystemExit(f"error: no {source}; run the study first")
        doc = json.loads(source.read_text())
    else:
        doc = run_study(budget, args.out, runs, models)
    for path in plots(doc, images):
        print(f"wrote {path}")
    write_table(doc, args.doc)
    print(f"wrote {args.out / 'results.json'} and the table of {args.doc}")
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
