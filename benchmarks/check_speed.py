"""How fast `nlc check` is, end to end, and that checking a spec never imports torch.

    python benchmarks/check_speed.py [--runs 5] [--lines 5000] [--profile]

1. `nlc check examples/hope.nl` as a subprocess, the median of `--runs` runs (goal: < 0.5 s). This is
   what a user waits for, interpreter start-up and imports included.
2. The imports of that command (`python -X importtime`): torch must not be among them (the front end
   is pure Python; torch is imported only by `nlc compile` and the runtime). Also checked in process.
3. A generated spec of about `--lines` lines (many blocks, each with a few memories, constants, a CMS
   chain and optimizers, all used by the network) checked as a subprocess (goal: < 3 s), and in
   process pass by pass. `--profile` prints where the in-process time goes (cProfile).

Prints the figures next to the goals and exits 0; the goals are for people to read, not assertions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOPE = ROOT / "examples" / "hope.nl"
GOAL_HOPE_S = 0.5
GOAL_LARGE_S = 3.0


def nlc_command() -> list[str]:
    """The installed `nlc` next to this interpreter, else the same entry point through `-m`."""
    script = Path(sys.executable).parent / "nlc"
    if script.exists():
        return [str(script)]
    found = shutil.which("nlc")
    return [found] if found else [sys.executable, "-m", "nldsl.cli"]


def time_check(path: Path, runs: int) -> tuple[float, list[float], float, int]:
    """(median wall seconds, every run, median CPU seconds, exit code of the last run) of `nlc check path`.

    CPU time (user + system of the child) is what to compare on a busy machine: wall time also counts
    the time the process waited for a core."""
    times, cpu, code = [], [], 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(nlc_command() + ["check", str(path)], capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        code = proc.returncode
        if code not in (0, 1):
            sys.stderr.write(proc.stderr)
    return statistics.median(times), times, statistics.median(cpu), code


def imported_modules(path: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """Every module `nlc check path` imports, and the ten slowest (cumulative microseconds, name)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "nldsl.cli", "check", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    modules, slow = [], []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if cumulative.isdigit():
            modules.append(name.strip())
            slow.append((int(cumulative), name.strip()))
    return modules, sorted(slow, reverse=True)[:10]


def torch_free_in_process(path: Path) -> bool:
    """Run the whole front end here and look at sys.modules (a fresh interpreter: this one may have torch)."""
    code = ("import sys\n"
            "from nldsl.pipeline import check_file\n"
            "from nldsl.graph import to_doc\n"
            "from nldsl.render import render\n"
            f"fe = check_file({str(path)!r})\n"
            "render(to_doc(fe.graph, fe.model, 'x', fe.diagnostics), 'text')\n"
            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return proc.returncode == 0 and proc.stdout.strip() == "False"


# ---------------------------------------------------------------- the generated spec

HEADER = """\
nl 1
# A generated spec for the speed benchmark: {blocks} blocks of {memories} memories each.
model large {{
  vocab    = 256
  dim      = 64
  heads    = 4
  head_dim = dim / heads
  context  = 256

  level pretrain : outer {{
    clock     every 1 step
    objective next_token
    update    adamw(lr = 3e-4, betas = (0.9, 0.95), weight_decay = 0.1)
    clip      1.0
  }}

  optimizer cms_sgd : sgd(lr = 1e-2)
  optimizer cms_momentum : momentum(lr = 1e-2, beta = 0.9)

  memory fastmem : linear per head {{
    clock     every 1 token
    key       k
    value     v
    lr        eta
    retain    alpha
    objective l2
    update    retain, gd
    read      after write
  }}

  cms continuum : sequential {{
    taught by pretrain
    update cms_sgd
    level fast : mlp(expand = 2) {{ clock every 16 tokens }}
    level mid  : mlp(expand = 2) {{
      clock  every 64 tokens
      update cms_momentum
    }}
  }}
"""

BLOCK = """
  # block {i}
  scale_{i}  = 0.5 + {i} % 7 / 100
  width_{i}  = dim * {w}
  chunk_{i}  = {chunk}
  block mixer_{i}(x) {{
    memory a_{i} : fastmem
    memory b_{i} : fastmem
    memory c_{i} : mlp(depth = 2, hidden = head_dim, act = silu) per head {{
      chunk     chunk_{i}
      key       kc
      value     linear(x, dim)
      lr        0.1 * sigmoid(linear(x, heads))
      retain    0.9
      objective l2
      update    retain, gd
      read      at anchor
      state     reset per sequence
    }}
    h     = rmsnorm(linear(x, width_{i}))
    k     = l2norm(conv(linear(h, dim), window = 4))
    v     = linear(h, dim)
    kc    = l2norm(linear(x, dim))
    eta   = scale_{i} * sigmoid(linear(x, heads))
    alpha = 0.9 + 0.1 * sigmoid(linear(x, heads))
    y     = a_{i}(l2norm(linear(x, dim))) + b_{i}(k) + c_{i}(kc)
    return linear(silu(y), dim)
  }}
  layer_{i} = residual(rmsnorm -> mixer_{i})
"""


def generate(lines: int) -> str:
    per_block = BLOCK.count("\n")
    blocks = max(1, (lines - HEADER.count("\n") - 12) // per_block)
    parts = [HEADER.format(blocks=blocks, memories=3)]
    parts += [BLOCK.format(i=i, w=1 + i % 3, chunk=8 * (1 + i % 4)) for i in range(blocks)]
    groups = []
    for g in range(0, blocks, 16):
        name = f"group_{g // 16}"
        stages = " -> ".join(f"layer_{i}" for i in range(g, min(g + 16, blocks)))
        parts.append(f"  {name} = {stages}\n")
        groups.append(name)
    pipeline = " -> ".join(["embed(vocab, dim)"] + groups + ["residual(rmsnorm -> continuum)", "rmsnorm",
                                                             "lm_head(tied = true)"])
    parts.append(f"\n  network = {pipeline}\n}}\n")
    return "".join(parts)


def time_passes(path: Path) -> list[tuple[str, float]]:
    """Seconds spent in each front-end pass, in this process (the grammar is built beforehand)."""
    from nldsl.checks import check_graph, check_model
    from nldsl.elaborate import elaborate
    from nldsl.graph import build_graph
    from nldsl.parser import parse
    from nldsl.pipeline import read_source
    from nldsl.resolve import resolve

    parse("model warm_up {\n}\n")
    text = read_source(str(path))
    out = []

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        out.append((name, time.perf_counter() - start))
        return result

    module = timed("parse", lambda: parse(text, str(path)))
    program = timed("resolve", lambda: resolve(module, read_source, text))
    model, _ = timed("elaborate", lambda: elaborate(program))
    timed("check", lambda: check_model(model))
    graph = timed("graph", lambda: build_graph(model))
    timed("check_graph", lambda: check_graph(graph, model))
    return out


def profile(path: Path) -> str:
    from nldsl.pipeline import check_file

    check_file(str(path))  # warm: grammar and imports are not what is measured here
    prof = cProfile.Profile()
    prof.enable()
    check_file(str(path))
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(25)
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of checking the large spec")
    args = parser.parse_args()

    print(f"nlc check speed ({' '.join(Path(c).name for c in nlc_command())}, Python {sys.version.split()[0]})")
    median, runs, cpu, code = time_check(HOPE, args.runs)
    verdict = "ok" if median < GOAL_HOPE_S else "SLOWER THAN THE GOAL"
    print(f"  examples/hope.nl          median {median:.3f} s of {len(runs)} runs "
          f"({', '.join(f'{t:.3f}' for t in runs)}; CPU {cpu:.3f} s), exit {code}; "
          f"goal < {GOAL_HOPE_S} s: {verdict}")

    modules, slow = imported_modules(HOPE)
    torch = [m for m in modules if m == "torch" or m.startswith("torch.")]
    print(f"  imports of `nlc check`    {len(modules)} modules; torch imported: {'YES' if torch else 'no'}"
          f" (in process: {'no' if torch_free_in_process(HOPE) else 'YES'})")
    print("  slowest imports (cumulative ms): " + ", ".join(f"{name} {us / 1000:.0f}" for us, name in slow[:6]))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.nl"
        path.write_text(generate(args.lines), encoding="utf-8")
        n_lines = path.read_text(encoding="utf-8").count("\n")
        median, runs, cpu, code = time_check(path, max(3, args.runs // 2 + 1))
        verdict = "ok" if median < GOAL_LARGE_S and code == 0 else (
            "SLOWER THAN THE GOAL" if code == 0 else f"the spec does not check (exit {code})")
        print(f"  generated spec            {n_lines} lines: median {median:.3f} s of {len(runs)} runs "
              f"(CPU {cpu:.3f} s), exit {code}; goal < {GOAL_LARGE_S} s: {verdict}")
        passes = time_passes(path)
        print("  in process, per pass (s): " + ", ".join(f"{name} {t:.3f}" for name, t in passes))
        if args.profile:
            print(textwrap.indent(profile(path), "    "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
