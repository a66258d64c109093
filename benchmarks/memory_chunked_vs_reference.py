"""Time the chunk-parallel memory path against the token-by-token reference.

    python benchmarks/memory_chunked_vs_reference.py [--backward] [--tokens 2048] [--only titans]
    python benchmarks/memory_chunked_vs_reference.py --threads 1 --clock cpu    # on a busy machine
    python benchmarks/memory_chunked_vs_reference.py --compile     # and the tile steps compiled
    python benchmarks/memory_chunked_vs_reference.py --float64-reference   # and the reference in float64

Shapes follow a small layer: batch 2, model width 256 as 4 heads of dk = dv = 64, float32, CPU.
Prints one row per memory family: the best of --repeats interleaved timings in milliseconds for the
reference and the chunked path (forward, or forward + backward with --backward), their ratio, and the
largest output difference between them; with --compile also the chunked path with its tile steps
compiled by torch.compile (`chunked(..., compile=True)`: the general dual loop's tile step, and the
linear memories' lean loops in blocks of tiles; the compiling call, timed apart, is its warm-up); with --float64-reference also the reference run in
float64, as the tests run it to check the other paths, against the same float32 chunked path. Then the same rows as a FLOP budget: the matmul FLOPs each path
does (counted by torch.utils.flop_counter: matmuls only; the wy form's triangular solves are not
counted), the rate the chunked path reaches, and `bound`: the ratio the chunked path would reach if it
ran at this machine's matmul peak (a 1024 x 1024 matmul, timed first) with nothing else to do. A goal
above the bound cannot be met by making the chunked path faster, only by doing fewer FLOPs. Then the
kernel floor (benchmarks/flops.py; --no-floor skips it): every operator the chunked call runs, timed
alone on fresh inputs of the same layout and summed (`floor ms`, of which `matmuls`, over `ops` operator
calls), and the ratio the chunked path would reach at that floor (`bound`): the most that removing the
cost between its operators (the Python loop, dispatch) could give; with the costliest operators of
each floor below.
"""
from __future__ import annotations

import argparse
import functools
import time

import torch

from flops import kernel_floor, matmul_flops, matmul_peak

from nldsl.runtime.memory import MemoryConfig, Rule, chunk_form, chunked, init_params, reference, \
    standard_objective

HEADS, WIDTH = 4, 64
MLP = dict(family='mlp', depth=2, hidden=4 * WIDTH, act='silu')

FAMILIES = {
    'linear gd (TTT-linear)': (MemoryConfig('linear', WIDTH, WIDTH, rules=(Rule('gd'),), chunk=64), 'l2'),
    'linear delta (Gated DeltaNet)': (
        MemoryConfig('linear', WIDTH, WIDTH, rules=(Rule('retain'), Rule('gd', at='current'))), 'l2'),
    'linear Titans (retain+momentum)': (
        MemoryConfig('linear', WIDTH, WIDTH, rules=(Rule('retain'), Rule('momentum')), chunk=64), 'sq'),
    'mlp Titans depth 2': (
        MemoryConfig(dk=WIDTH, dv=WIDTH, residual=True, rules=(Rule('retain'), Rule('momentum')), chunk=64,
                     **MLP), 'mse'),
    'HOPE dgd mlp (self target)': (
        MemoryConfig(dk=WIDTH, dv=WIDTH, residual=True, rules=(Rule('dgd'),), chunk=16, read='anchor',
                     self_target=True, **MLP), 'l2'),
}


def make_inputs(cfg: MemoryConfig, batch: int, tokens: int, grad: bool, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    def unit(x):
        return torch.nn.functional.normalize(x, dim=-1)

    q, k = unit(rand(batch, HEADS, tokens, cfg.dk)), unit(rand(batch, HEADS, tokens, cfg.dk))
    v = rand(batch, HEADS, tokens, cfg.dv)
    gates = {'eta': 0.1 * torch.sigmoid(rand(batch, HEADS, tokens)),
             'alpha': torch.sigmoid(4.0 + rand(batch, HEADS, tokens)),
             'beta': 0.9 * torch.sigmoid(rand(batch, HEADS, tokens))}
    params0 = init_params(cfg, HEADS, generator=gen)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    gates = {name: gate.to(dtype) for name, gate in gates.items()}
    params0 = {name: p.to(dtype) for name, p in params0.items()}
    leaves = [q, k, v, *gates.values(), *params0.values()]
    for leaf in leaves:
        leaf.requires_grad_(grad)
    return (q, k, v, gates, params0), leaves


def timed(fns, repeats: int, clock) -> tuple[list[float], list[torch.Tensor]]:
    """Best milliseconds of each function over `repeats` interleaved rounds (after one warm-up call),
    and each one's output. The minimum is the figure least disturbed by other load on the machine."""
    outs = [fn() for fn in fns]
    best = [float('inf')] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = clock()
            outs[i] = fn()
            best[i] = min(best[i], 1000.0 * (clock() - start))
    return best, outs


def step(runner, cfg, objective, args, leaves, backward: bool):
    def call():
        with torch.set_grad_enabled(backward):
            y, state = runner(cfg, objective, *args)
            if backward:
                loss = y.square().mean() + sum(p.square().mean() for p in state.params.values())
                torch.autograd.grad(loss, leaves, allow_unused=True)
            return y.detach()
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--backward', action='store_true', help='time forward + backward')
    parser.add_argument('--tokens', type=int, default=2048)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3, help='timed rounds (the best one is printed)')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (default: torch decides)')
    parser.add_argument('--only', default='', help='run the families whose name contains this text')
    parser.add_argument('--compile', action='store_true',
                        help='also time the chunked path with its tile steps compiled by torch.compile')
    parser.add_argument('--float64-reference', dest='float64', action='store_true',
                        help='also time the reference in float64, the dtype it checks the other paths in '
                             '(column `ref f64 ms`, and the float32 chunked path against it)')
    parser.add_argument('--no-floor', dest='floor', action='store_false',
                        help="skip the kernel floor (every operator of the chunked call timed alone)")
    parser.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                        help='wall time, or the process CPU time (steadier on a shared machine; with '
                             'several threads it adds up every thread)')
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    mode = 'fwd+bwd' if opts.backward else 'fwd'
    clock = time.perf_counter if opts.clock == 'wall' else time.process_time
    peak = matmul_peak()
    print(f"B={opts.batch} T={opts.tokens} heads={HEADS} dk=dv={WIDTH} float32 {mode}, "
          f"{torch.get_num_threads()} threads, {opts.clock} clock; matmul peak {peak:.0f} GFLOP/s")
    header = f"{'family':34s} {'form':10s} {'C':>3s} {'reference ms':>13s} {'chunked ms':>11s} " \
             f"{'ratio':>7s} {'max |dy|':>9s}"
    if opts.compile:
        header += f" {'compiled ms':>12s} {'ratio':>7s} {'compile s':>10s}"
    if opts.float64:
        header += f" {'ref f64 ms':>12s} {'ratio':>7s}"
    print(header)
    print('-' * len(header))
    budgets = []
    for name, (cfg, objective_name) in FAMILIES.items():
        if opts.only.lower() not in name.lower():
            continue
        objective = standard_objective(objective_name)
        args, leaves = make_inputs(cfg, opts.batch, opts.tokens, opts.backward)
        runners = (reference, chunked, functools.partial(chunked, compile=True))[:3 if opts.compile else 2]
        calls = [step(runner, cfg, objective, args, leaves, opts.backward) for runner in runners]
        if opts.float64:
            calls.append(step(reference, cfg, objective, *make_inputs(cfg, opts.batch, opts.tokens, opts.backward,
                                                                      torch.float64), opts.backward))
        if opts.compile:
            start = time.perf_counter()
            calls[2]()
            compile_s = time.perf_counter() - start
        times, (y_ref, y_chk, *_) = timed(calls, opts.repeats, clock)
        ref_ms, chk_ms = times[:2]
        diff = (y_ref - y_chk).abs().max().item()
        form = chunk_form(cfg, objective)[0]
        row = f"{name:34s} {form:10s} {cfg.chunk:3d} {ref_ms:13.1f} {chk_ms:11.1f} {ref_ms / chk_ms:6.1f}x {diff:9.1e}"
        if opts.compile:
            row += f" {times[2]:12.1f} {ref_ms / times[2]:6.1f}x {compile_s:10.1f}"
        if opts.float64:
            row += f" {times[-1]:12.1f} {times[-1] / chk_ms:6.1f}x"
        print(row, flush=True)
        budgets.append((name, ref_ms, chk_ms, *(matmul_flops(call) / 1e9 for call in calls[:2]),
                        kernel_floor(calls[1]) if opts.floor else None))
    print()
    header = f"{'family':34s} {'reference GFLOP':>15s} {'chunked GFLOP':>13s} {'chunked GFLOP/s':>15s} " \
             f"{'bound':>7s}"
    if opts.floor:
        header += f" {'floor ms':>9s} {'matmuls':>8s} {'ops':>6s} {'bound':>7s}"
    print(header)
    print('-' * len(header))
    for name, ref_ms, chk_ms, ref_gflop, chk_gflop, floor in budgets:
        row = f"{name:34s} {ref_gflop:15.2f} {chk_gflop:13.2f} {chk_gflop / chk_ms * 1e3:15.1f} " \
              f"{ref_ms / (chk_gflop / peak * 1e3):6.1f}x"
        if floor is not None:
            row += f" {floor.total_ms:9.1f} {floor.matmul_ms:8.1f} {floor.operators:6d} " \
                   f"{ref_ms / floor.total_ms:6.1f}x"
        print(row)
    if opts.floor:
        print()
        for name, *_, floor in budgets:
            print(f"{name}: costliest operators of the floor ({floor.distinct} distinct, "
                  f"{floor.unreplayed} calls not replayed)")
            for what, count, ms in floor.top:
                print(f"  {ms:8.1f} ms {count:5d} x {what}")


if __name__ == '__main__':
    main()
