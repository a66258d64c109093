"""How fast `nlc compile examples/hope.nl` is, end to end.

    python benchmarks/compile_speed.py [--runs 5] [--spec examples/hope.nl] [--profile]

Runs `nlc compile SPEC -o <tmp> --force` as a subprocess `--runs` times and prints the median wall time
(what a user waits for: interpreter start-up, imports, the front end, code generation, writing the
package) next to the goal of 1 s, and the median CPU time of the child (user + system; on a busy machine
wall time also counts the time spent waiting for a core). Then the same compile in process, split into
the front end and code generation, and whether torch was imported (compiling never needs it).
`--profile` prints where the in-process time goes (cProfile). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from check_speed import nlc_command

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.0


def time_compile(spec: str, runs: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run(nlc_command() + ["compile", spec, "-o", out, "--force"], cwd=ROOT,
                                  capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                sys.exit(f"nlc compile failed:\n{proc.stderr}")
    return walls, cpus


def in_process(spec: str) -> dict:
    from nldsl.compiler import generate_files
    from nldsl.pipeline import check_file

    start = time.perf_counter()
    fe = check_file(spec)
    front = time.perf_counter() - start
    start = time.perf_counter()
    files = generate_files(fe)
    generate = time.perf_counter() - start
    return {"front end": front, "code generation": generate, "bytes": sum(len(t) for t in files.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--spec", default="examples/hope.nl")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    walls, cpus = time_compile(args.spec, args.runs)
    median = statistics.median(walls)
    print(f"nlc compile {args.spec}: median {median:.3f} s wall over {args.runs} runs "
          f"(goal < {GOAL_S:.1f} s: {'met' if median < GOAL_S else 'NOT met'}); "
          f"runs {', '.join(f'{w:.3f}' for w in walls)} s")
    print(f"  child CPU time (user + system): median {statistics.median(cpus):.3f} s")

    figures = in_process(args.spec)
    print(f"  in process: front end {figures['front end'] * 1e3:.1f} ms, code generation "
          f"{figures['code generation'] * 1e3:.1f} ms, {figures['bytes']} bytes written")
    print(f"  torch imported while compiling: {'torch' in sys.modules}")
    if args.profile:
        from nldsl.compiler import compile_spec

        profile = cProfile.Profile()
        profile.enable()
        compile_spec(args.spec)
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(20)
        print(text.getvalue())
    print(f"compile_seconds: {median:.3f}")


if __name__ == "__main__":
    main()
