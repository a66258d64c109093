"""`nlc train`: compile (if needed), build the data stream, run the nested loop, log, checkpoint, plot.

A run directory holds everything: `config.json` (the arguments), `model/` (the compiled package),
`metrics.jsonl`, `checkpoint.json` + `weights-*.safetensors`, and the plots. `--resume RUN` continues
bit-exactly from the last checkpoint up to the total `--steps`. A new run refuses a directory that holds
anything (an earlier run, other files) unless it is forced (`--force`): then the files of an earlier run
are deleted first (RUN_FILES) and other files are left alone.

Under torchrun (WORLD_SIZE > 1) the run is data-parallel (distributed.py): `--batch` is the global
batch, each process reads its rows of it, and only rank 0 compiles the spec and writes the run
directory (metrics, checkpoints, plots).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch


class TrainInputError(Exception):
    """What the run was given cannot be trained on (the data, or a spec the data does not fit); the message
    says why."""


class RunDirInUse(TrainInputError):
    """A new run was pointed at a directory that holds files (an earlier run's, or others) without force."""


_clock = time.perf_counter  # the clock of the tokens/s figure (a test gives it a fake one)

# what a run writes into its directory: a forced new run deletes these first
RUN_FILES = ("model", "config.json", "checkpoint.json", "metrics.jsonl", "loss.png", "update_norms.png",
             "tensorboard", "evals")
RUN_PATTERNS = ("weights-*.safetensors", ".checkpoint.json.*.tmp", ".weights-*.tmp")


@dataclass
class TrainConfig:
    spec: str
    data: Optional[str] = None
    steps: int = 200
    batch: int = 8
    seq: Optional[int] = None
    out: str = "runs/latest"
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    checkpoint_every: int = 50
    eval_every: int = 50
    eval_batches: int = 4
    backend: str = "chunked"
    parallel: str = "ddp"  # with several processes: ddp (replicas) or fsdp (sharded parameters)
    compile: bool = False  # the chunked path's tile steps compiled by torch.compile
    cuda_graphs: bool = False  # segments replayed as CUDA graphs (graphs.py)
    documents: str = "packed"  # packed (rows stream across documents) or aligned (a row starts a document)
    force: bool = True  # a new run replaces what `out` holds; False (`nlc train` without --force) refuses it

    def saved(self) -> dict:
        """The configuration as config.json and checkpoints keep it (without `force`, a one-time choice)."""
        doc = asdict(self)
        doc.pop("force")
        return doc


def _unstarted(run: Path) -> bool:
    """RUN holds at most a run that stopped before its first step (its model/, config.json, tensorboard/)."""
    from nldsl.compiler import MANIFEST

    names = {p.name for p in run.iterdir()}
    if not names <= {"model", "config.json", "tensorboard"}:
        return False
    return "model" not in names or (run / "model" / MANIFEST).is_file()


def in_use(run: Path) -> list[str]:
    """The entries of directory RUN that a new run there would replace or sit beside (empty: free)."""
    if not run.is_dir() or _unstarted(run):
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in run.iterdir())


def check_out_dir(run: Path) -> None:
    """Raise RunDirInUse when RUN holds anything but an unstarted run; the message says what and how out."""
    held = in_use(run)
    if not held:
        return
    shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
    if (run / "config.json").is_file():
        ways = f"continue that run with --resume {run}, choose another --out, or pass --force to replace it"
    else:
        ways = "choose another --out, or pass --force to train there all the same (a model/ there is replaced)"
    raise RunDirInUse(f"{run} is not empty (it holds {shown})\n  = help: {ways}")


def clear_run(run: Path) -> None:
    """Delete what an earlier run wrote into RUN (RUN_FILES); other files stay."""
    for name in RUN_FILES:
        path = run / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for pattern in RUN_PATTERNS:
        for path in run.glob(pattern):
            path.unlink()


def _prepare_model_dir(cfg: TrainConfig, run: Path) -> Path:
    from nldsl.compiler import MANIFEST, compile_spec, write_package
    from nldsl.diagnostics import SpecError

    src = Path(cfg.spec)
    if src.is_dir():
        package = src if (src / MANIFEST).is_file() else next((p for p in src.iterdir() if (p / MANIFEST).is_file()),
                                                              None)
        if package is None:
            raise TrainInputError(f"{src} is a directory with no compiled package in it (no {MANIFEST}): give a "
                                  "`.nl` spec or a directory made by `nlc compile`")
        target = run / "model"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__"))
        return target
    fe, files = compile_spec(str(src))
    if files is None:
        raise SpecError(fe.diagnostics)
    return write_package(files, str(run), "model", force=True)


def _aligned_memories(info: dict) -> None:
    """Raise TrainInputError when a memory keeps its state across sequences: in the aligned layout a row
    of one batch does not continue the same row of the one before."""
    kept = [m["name"] for m in info["memories"] if m["lifetime"] == "persist"]
    if kept:
        raise TrainInputError(
            f"--documents aligned starts every row afresh, and `{kept[0]}` keeps its state from one batch to "
            f"the next (`state persist`): its rows would carry one document into another\n"
            f"  = help: train it with --documents packed (the default), or give it `state reset per sequence`")


def lr_factor(step: int, outer: dict, total: int) -> float:
    """The outer learning rate's factor at step `step` (1 to `total`): linear warm-up over `warmup` steps,
    then, for `schedule cosine`, a half cosine from 1 at the first step after the warm-up towards 0 after
    the last, so that every step learns."""
    warm = outer.get("warmup") or 0
    f = min(1.0, step / warm) if warm else 1.0
    if outer.get("schedule") == "cosine" and total > warm:
        progress = min(1.0, max(0.0, (step - 1 - warm) / (total - warm)))
        f *= 0.5 * (1 + math.cos(math.pi * progress))
    return f


class Trainer:
    """One process's part of a run. `comm` (distributed.py) defaults to what the environment says:
    data-parallel under torchrun with several processes, else a single process."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, log=None, comm=None):
        from nldsl.compiler import _import_package
        from nldsl.runtime import data as D
        from nldsl.runtime import set_backend
        from nldsl.runtime.fits import check_fits, check_training_fits
        from nldsl.runtime.optim import make_optimizer

        from .distributed import PeerFailed, from_env
        from .levels import longest_segment
        from .loop import NestedLoop
        from .metrics import MetricsLog

        self.cfg, self.log = cfg, log or (lambda msg: print(msg, file=sys.stderr))
        self.comm = comm if comm is not None else from_env(cfg.parallel, cfg.device)
        self.main = self.comm.is_main
        if cfg.cuda_graphs and self.comm.device.type != "cuda":
            raise TrainInputError(f"--cuda-graphs replays segments on a GPU, and this run is on {self.comm.device}: "
                                  "add --device cuda, or leave --cuda-graphs out")
        if cfg.cuda_graphs and self.comm.sharded:  # FSDP gathers and scatters inside the segment
            raise TrainInputError("--cuda-graphs does not combine with --parallel fsdp (its gathers run inside each "
                                  "segment): use --parallel ddp, or leave --cuda-graphs out")
        self.run = Path(cfg.out)
        self.run.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        model_dir, failure = self.run / "model", None
        if self.main and not resume:  # rank 0 compiles; the others wait and import what it wrote
            try:
                if not cfg.force:
                    check_out_dir(self.run)
                clear_run(self.run)
                model_dir = _prepare_model_dir(cfg, self.run)
            except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
                failure = e
        if not self.comm.all(failure is None):
            raise failure or PeerFailed("rank 0 could not prepare the model")
        module = _import_package(model_dir)
        self.device = self.comm.device
        check_fits(model_dir, getattr(torch, cfg.dtype), str(self.device), training=True)
        self.model = set_backend(module.Model(), cfg.backend, cfg.compile).to(device=self.device, dtype=getattr(torch, cfg.dtype))
        tok = D.ByteTokenizer()
        if getattr(self.model, "vocab_size", tok.vocab_size) < tok.vocab_size:
            raise TrainInputError(f"the model's vocabulary has {self.model.vocab_size} tokens and the byte tokenizer "
                             f"{tok.vocab_size}: set `vocab = {tok.vocab_size}` in the spec to train it on text")
        levels = json.loads((model_dir / "levels.json").read_text())
        self.info = levels["runtime"]
        self.comm.check_levels(self.info)
        self.seq = cfg.seq or self.info["context"]
        check_training_fits(model_dir, self.model, self.device, max(cfg.batch // self.comm.world, 1),
                            longest_segment(self.info, self.seq))
        self.model = self.comm.wrap(self.model)
        try:
            train_docs, val_docs = D.split(D.load_documents(cfg.data), seed=cfg.seed)
        except (OSError, ValueError) as e:
            raise TrainInputError(f"--data {cfg.data}: {e}") from None
        train_ids, val_ids = [tok.encode(t) for _, t in train_docs], [tok.encode(t) for _, t in val_docs]
        if cfg.documents == "aligned":
            _aligned_memories(self.info)
            stream = D.AlignedStream(train_ids, self.seq, cfg.batch, seed=cfg.seed)
            val = D.aligned_val_batches(val_ids, self.seq, cfg.batch, cfg.eval_batches)
            if self.main:
                self.log(f"documents aligned: every row starts a document or a piece of one; "
                         f"{100 * stream.padding:.1f}% of the targets are padding")
        else:
            stream = D.PackedStream(train_ids, self.seq, cfg.batch, seed=cfg.seed)
            val = D.val_batches(val_ids, self.seq, cfg.batch, cfg.eval_batches)
        self.stream = self.comm.shard_stream(stream)  # this process's rows of the global batch
        self.val = [self.comm.rows(b).to(self.device) for b in val]
        graphs = None
        if cfg.cuda_graphs:
            from .graphs import CudaGraphs

            graphs = CudaGraphs()
        self.loop = NestedLoop(self.model, self.info, make_optimizer, comm=self.comm, graphs=graphs)
        self.base_lr = [g["lr"] for g in self.loop.outer_opt.param_groups]
        resume_step = None
        if resume:
            from .checkpoint import load

            doc = load(self.run, self.model, self.loop)
            self.stream.load_state_dict(doc["data"])
            resume_step = doc["step"]
            if self.main:
                self.log(f"resumed {self.run} at step {resume_step}")
        self.metrics = None
        if self.main:  # only rank 0 writes the run directory
            self.metrics = MetricsLog(self.run, resume_step)
            (self.run / "config.json").write_text(json.dumps(cfg.saved(), indent=2) + "\n")

    def _set_lr(self):
        f = lr_factor(self.loop.step_count + 1, self.info["outer"], self.cfg.steps)
        for g, base in zip(self.loop.outer_opt.param_groups, self.base_lr):
            g["lr"] = base * f
        return self.base_lr[0] * f

    def checkpoint(self):
        from .checkpoint import save

        save(self.run, self.model, self.loop, {"data": self.stream.state_dict(), "config": self.cfg.saved(),
                                               "processes": self.comm.world})

    def train(self, progress=None) -> dict:
        from nldsl.runtime.data import bits_per_byte
        from nldsl.runtime.fits import peak_memory_mb

        from .loop import Diverged

        last = {}
        busy = 0.0       # seconds spent in training steps: validation and checkpoints are not counted
        done_tokens = 0
        resets = {lv.name for lv in self.loop.own.cms if lv.initial}  # CMS members that go back to a state
        while self.loop.step_count < self.cfg.steps:
            started = _clock()
            lr = self._set_lr()
            batch = next(self.stream).to(self.device)
            try:
                result = self.loop.step(batch, self.stream.last_targets)
            except Diverged:
                self.close()
                raise
            done_tokens += result.tokens
            busy += _clock() - started
            step = self.loop.step_count
            record = {"step": step, "loss": result.loss, "bits_per_byte": bits_per_byte(result.loss), "lr": lr,
                      "tokens": result.tokens, "tokens_per_s": done_tokens / max(busy, 1e-9),
                      **({"peak_memory_mb": peak} if (peak := peak_memory_mb(self.device)) is not None else {}),
                      **({"cuda_graphs": dict(self.loop.graphs.counts)} if self.loop.graphs is not None else {}),
                      "levels": {k: {"updates": v.updates, "norm": v.last_norm, **({"resets": v.resets} if k in resets else {})}
                                 for k, v in self.loop.stats.items()}}
            if step % self.cfg.eval_every == 0 or step == self.cfg.steps:
                self.model.eval()
                record["val_loss"] = self.loop.evaluate(self.val)
                record["val_bits_per_byte"] = bits_per_byte(record["val_loss"])
                self.model.train()
            if self.metrics is not None:
                self.metrics.write(record)
            last = record
            if progress is not None:
                progress(record)
            if step % self.cfg.checkpoint_every == 0 or step == self.cfg.steps:
                self.checkpoint()
        self.close()
        if self.main:
            from .metrics import plot

            plot(self.run)
        return last

    def close(self):
        if self.metrics is not None:
            self.metrics.close()
