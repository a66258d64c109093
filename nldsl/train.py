"""`python -m nldsl.train ...` (also under torchrun) and the progress display of `nlc train`."""

from __future__ import annotations

import sys


class Progress:
    """A rich progress bar with tokens/s, loss, learning rate and per-level update counts (or plain lines)."""

    def __init__(self, total: int, start: int, levels: list[str]):
        self.total, self.levels = total, levels
        self.live = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           TextColumn("{task.fields[info]}"), console=Console(stderr=True))
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()
            self.live = True
        self.every = max(1, total // 20)

    def __call__(self, rec: dict):
        counts = " ".join(f"{name.split('.')[-1]}:{rec['levels'][name]['updates']}" for name in self.levels
                          if name in rec["levels"])
        info = (f"loss {rec['loss']:.3f}  {rec['tokens_per_s']:.0f} tok/s  lr {rec['lr']:.2e}"
                + (f"  peak {rec['peak_memory_mb']:,.0f} MB" if "peak_memory_mb" in rec else "")
                + (f"  val {rec['val_loss']:.3f}" if "val_loss" in rec else "") + f"  [{counts}]")
        if self.live:
            self.bar.update(self.task, completed=rec["step"], info=info)
        elif rec["step"] % self.every == 0 or rec["step"] == self.total or "val_loss" in rec:
            print(f"step {rec['step']}/{self.total}  {info}", file=sys.stderr, flush=True)

    def close(self):
        if self.live:
            self.bar.stop()


def run_training(cfg, resume: bool) -> int:
    """Train and report; returns the process exit code (1 for a diverged run or a bad spec).

    Under torchrun every process calls this; rank 0 alone shows progress and writes the run."""
    from nldsl.diagnostics import SpecError, render_all
    from nldsl.runtime.train import TrainInputError
    from nldsl.runtime.train.distributed import ParallelError, PeerFailed, from_env

    try:
        comm = from_env(cfg.parallel, cfg.device)
    except ParallelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        code = _train(cfg, resume, comm)
    except SpecError as e:
        if comm.is_main:
            print(render_all(e.diagnostics, {}), file=sys.stderr)
        code = 1
    except (ParallelError, TrainInputError) as e:
        if comm.is_main:
            print(f"error: {e}", file=sys.stderr)
        code = 1
    except PeerFailed:  # rank 0 reports why
        code = 1
    except BaseException:
        comm.close(together=False)  # the others may be anywhere: do not wait for them
        raise
    # every rank gets here at the same point (these errors are met by all, or announced by rank 0):
    # leave together, so that none is stopped by torchrun before rank 0 has written or reported
    comm.close()
    return code


def _train(cfg, resume: bool, comm) -> int:
    from nldsl.runtime.train import Diverged, Trainer

    trainer = Trainer(cfg, resume=resume, comm=comm)
    progress = Progress(cfg.steps, trainer.loop.step_count, list(trainer.loop.stats)) if comm.is_main else None
    try:
        last = trainer.train(progress)
    except Diverged as e:
        if progress is not None:
            progress.close()
            print(f"error: training diverged: {e}\n  = note: the last good checkpoint in {trainer.run} is intact\n"
                  f"  = help: lower that level's learning rate or bound its gates", file=sys.stderr)
        return 1
    if progress is None:
        return 0
    progress.close()
    if last:
        summary = f"step {last['step']}: loss {last['loss']:.3f} ({last['bits_per_byte']:.3f} bits/byte)"
        if "val_loss" in last:
            summary += f", validation {last['val_loss']:.3f} ({last['val_bits_per_byte']:.3f} bits/byte)"
        if comm.world > 1:
            summary += f" [{comm.world} processes, {cfg.parallel}]"
        print(summary, file=sys.stderr)
    print(f"run: {trainer.run}  (metrics.jsonl, loss.png, update_norms.png, checkpoint.json)", file=sys.stderr)
    return 0


def launch(nproc: int, args: list[str]) -> int:
    """`nlc train --nproc N`: run `python -m nldsl.train ARGS` in N processes on this machine with torchrun
    (`torch.distributed.run --standalone`) in a subprocess; returns its exit code.

    A run stopped from outside stops whole: SIGTERM and SIGHUP sent to this process are passed on to
    torchrun, which stops its workers (Ctrl-C reaches them all through the terminal); on Linux torchrun
    gets SIGTERM if this process dies, even by SIGKILL, and each worker if torchrun dies, so that no
    orphaned worker goes on writing the run."""
    import os
    import signal
    import subprocess

    env = dict(os.environ)
    # torchrun would set 1 thread per process (with a warning); share the cores out instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-c", "import nldsl.train as t; t.torchrun()", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "nldsl.train", *args]
    proc = subprocess.Popen(cmd, env=env)

    stopped = []

    def forward(signum, _frame):
        stopped.append(signal.Signals(signum).name)
        proc.send_signal(signum)

    passed_on = (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGTERM,)
    previous = {s: signal.signal(s, forward) for s in passed_on}
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # torchrun got the same Ctrl-C: let it stop its workers
                stopped.append("SIGINT")
        if stopped:
            print(f"stopped by {stopped[0]}: `nlc train --resume RUN` continues from the last checkpoint",
                  file=sys.stderr)
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent process dies (prctl PR_SET_PDEATHSIG); elsewhere
    nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import os
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def torchrun() -> None:
    """torchrun (`torch.distributed.run`) on this process's arguments, ended when `nlc train` is."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun_main

    die_with_parent()
    try:
        torchrun_main(sys.argv[1:])
    except SignalException as e:  # it has stopped the workers; the launcher says what to do next
        sys.exit(128 + int(e.sigval))


def _exit_now(code) -> None:
    """Leave a torchrun worker without the interpreter's teardown. Even after the process group is
    destroyed, a worker sometimes aborts in that teardown ("terminate called without an active
    exception", seen with gloo on CPU on a busy machine, in C++ with no Python frame), which would
    turn a finished run into a failed one."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":  # pragma: no cover
    import os

    from nldsl.cli import main

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        die_with_parent()  # a worker of `nlc train --nproc N`: stop with torchrun
    try:
        main(["train", *sys.argv[1:]], prog_name="nlc")  # the options and usage of `nlc train`
    except SystemExit as e:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            _exit_now(e.code)
        raise
