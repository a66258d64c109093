"""One training segment of a spec (default examples/hope.nl) replayed as a CUDA graph, the way `nlc
train --cuda-graphs` replays it (runtime/train/graphs.py), against the same segment issued operator by
operator: how much of a small model's GPU step is the cost of issuing it.

    python benchmarks/gpu/segment_graph.py                        # on a GPU: B=8, both backends, float32
    python benchmarks/gpu/segment_graph.py --backend triton --batch 32 --dtype bfloat16
    python benchmarks/gpu/segment_graph.py --tiny                 # any machine: B=1, eagerly only

A segment is what `nlc train` runs between two CMS window ends (`NestedLoop.run_segment`): the forward
from the carried memory states, the summed cross-entropy, its backward (the gradients accumulating into
each parameter's .grad), the new states detached. A hope.nl step of T = 512 tokens is 32 segments of
its shortest window, 16 tokens, and the optimizer steps between them; on a GPU such a step is bound by
issuing its operators (docs/triton.md).

The script times the segment eagerly, then through the loop's SegmentGraphs, from the states a first
segment left (so that every memory level runs from a carried state, as all but a sequence's first
segment do): the first call sees the key, the second captures it, the timed calls replay it, each with
the copies of the tokens, targets and states into the graph's buffers. Both times are medians over
CUDA events with the host waiting for each call, so that a call pays for issuing its operators
(timing.time_call). It also compares one eager segment with one replay from the same weights and
states and prints the largest RMS difference, relative, of the loss, any gradient and any state out: a
graph that did not capture the whole segment shows there. A capture that fails prints the error and
the backend goes on to the next. Without a GPU the script runs the eager segment under the Triton
interpreter at a tiny size and says that it captured nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

from timing import rel, time_call  # noqa: E402  (benchmarks/gpu/timing.py)
from train_step import build, check_counts  # noqa: E402  (benchmarks/gpu/train_step.py)

from nldsl.runtime.train.graphs import CudaGraphs, SegmentGraphs, flatten  # noqa: E402


def largest_difference(got: list, expected: list) -> float:
    """The largest `rel` (RMS relative difference) over pairs of tensors (0 for none)."""
    return max((rel(g, e) for g, e in zip(got, expected)), default=0.0)


def compare(loop, graphs: SegmentGraphs, x, y, state) -> dict:
    """The largest relative differences between an eager segment and a replay from the same weights and
    states: loss, gradients, states out."""
    params = [p for p in loop.model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    loss, new = loop.run_segment(x, y, state)
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    expected = [t.clone() for t in flatten(new)[0]]
    for p in params:
        p.grad = None
    got_loss, got = graphs(x, y, state)
    pairs = [(p.grad, g) for p, g in zip(params, grads) if g is not None]
    return {"loss": largest_difference([got_loss], [loss]),
            "gradients": largest_difference(*zip(*pairs)) if pairs else 0.0,
            "states": largest_difference(flatten(got)[0], expected)}


def run_backend(args, backend, device, dtype, workdir) -> None:
    from nldsl.runtime.train.levels import longest_segment

    model, loop = build(args.spec, backend, device, dtype, args.seed, os.path.join(workdir, backend))
    tokens = longest_segment(loop.info, args.seq)
    gen = torch.Generator().manual_seed(args.seed)
    batch = torch.randint(0, model.vocab_size, (args.batch, 2 * tokens + 1), generator=gen).to(device)
    with torch.no_grad():   # the states a first segment leaves: every later segment starts from such
        _, state = model(batch[:, :tokens], None)
    x, y = batch[:, tokens:2 * tokens], batch[:, tokens + 1:2 * tokens + 1]
    # each call waited for, so that a call also pays for issuing its operators
    eager = time_call(lambda: loop.run_segment(x, y, state), args.repeats, args.warmup, synchronise=True)
    print(f"  {backend:8s} eager    {eager:9.3f} ms a segment of {tokens} tokens, B={args.batch}")
    if device.type != "cuda":
        return
    graphs = SegmentGraphs(loop.run_segment, [p for p in model.parameters() if p.requires_grad], CudaGraphs())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        graphs(x, y, state)   # the key seen
        graphs(x, y, state)   # captured, and replayed once
    if graphs.failed:
        print(f"  {backend:8s} capture failed: {graphs.failed}")
        return
    for w in caught:
        print(f"  {backend:8s} warning: {w.message}")
    replay = time_call(lambda: graphs(x, y, state), args.repeats, 1, synchronise=True)
    diff = compare(loop, graphs, x, y, state)
    print(f"  {backend:8s} graphed  {replay:9.3f} ms a segment (inputs copied in, replay): {eager / replay:.2f}x; "
          f"replay against eager: loss {diff['loss']:.1e}, gradients {diff['gradients']:.1e}, "
          f"states {diff['states']:.1e} (relative)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="examples/hope.nl")
    ap.add_argument("--backend", choices=("both", "triton", "chunked"), default="both")
    ap.add_argument("--batch", type=int, help="rows (default 8 on a GPU, 1 with --tiny)")
    ap.add_argument("--seq", type=int, default=512, help="the training sequence whose segment is timed")
    ap.add_argument("--repeats", type=int, help="timed repeats (default 20 on a GPU, 1 with --tiny)")
    ap.add_argument("--warmup", type=int, help="untimed eager segments first (default 2 on a GPU, 0 with --tiny)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--tiny", action="store_true", help="a tiny batch (implied without a GPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    check_counts(ap, args, ("batch", "seq", "repeats"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    tiny = args.tiny or not cuda
    args.batch = args.batch or (1 if tiny else 8)
    args.repeats = args.repeats or (1 if tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (0 if tiny else 2)
    if not cuda and args.dtype != "float32":
        print("the Triton interpreter runs float32 only; using float32")
        args.dtype = "float32"
    card = torch.cuda.get_device_name(device) if cuda else "no GPU (CPU, Triton interpreter)"
    print(f"spec {args.spec}; device: {card}; B={args.batch}, {args.dtype}")
    backends = ("chunked", "triton") if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory(prefix="nlc-segment-graph-") as workdir:
        for backend in backends:
            run_backend(args, backend, device, getattr(torch, args.dtype), workdir)
    if not cuda:
        print("No GPU: a CUDA graph cannot be captured here, so this run captured nothing and made no GPU "
              "figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
