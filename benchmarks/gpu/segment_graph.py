"""One training segment of a spec (default examples/hope.nl) replayed as a CUDA graph, against the same
segment issued operator by operator: how much of a small model's GPU step is the cost of issuing it.

    python benchmarks/gpu/segment_graph.py                        # on a GPU: B=8, both backends, float32
    python benchmarks/gpu/segment_graph.py --backend triton --batch 32 --dtype bfloat16
    python benchmarks/gpu/segment_graph.py --tiny                 # any machine: B=1, eagerly only

A segment is what `nlc train` runs between two CMS window ends (`NestedLoop.step`): the forward from
the carried memory states, the summed cross-entropy, its backward (the gradients accumulating into
each parameter's .grad), the new states detached. A hope.nl step of T = 512 tokens is 32 segments of
its shortest window, 16 tokens, and the optimizer steps between them; on a GPU such a step is bound by
issuing its operators (docs/triton.md), which a graph replays with one launch.

The script times the segment eagerly (the model's own call, as the trainer makes it), then captures it
in a CUDA graph with static token, target and state buffers (the states a first eager segment left,
so that every memory level runs from a carried state, as all but a sequence's first segment do) and
times replays, each followed by the copy of the new states into the state buffers (one multi-tensor
copy). Both times are medians over CUDA events with the host waiting for each call, so that a call
pays for issuing its operators (timing.time_call); the ratio is what graphs would give the segments
of a step. It also replays once from the weights and states of an eager segment and prints the
largest RMS difference, relative, of the loss, any gradient and any state out: a graph that did not
capture the whole segment (an operator that reads host values, a kernel that branches on the host)
shows there. A capture that fails prints the error and the backend goes on to the next.

This is an experiment for the trainer, which does not capture graphs: the optimizer steps between
segments, a sequence's first segment (from the learned initial states, whose gradient the graph would
have to carry) and the host-side checks of each segment stay outside it. Without a GPU the script
runs the eager segment under the Triton interpreter at a tiny size and says that it captured nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

from timing import rel, time_call  # noqa: E402  (benchmarks/gpu/timing.py)
from train_step import build, check_counts  # noqa: E402  (benchmarks/gpu/train_step.py)

from nldsl.runtime.memory import MemoryState  # noqa: E402

GROUPS = ("params", "anchor", "momentum")


def flatten(state: dict) -> tuple[list, dict]:
    """The distinct tensors of a model's state (a dict of tensors and MemoryStates), and its layout:
    `rebuild(layout, tensors)` makes the same state from other tensors, sharing where it shared (a
    memory whose anchor is its state keeps one tensor for both)."""
    tensors, index = [], {}

    def slot(t):
        if id(t) not in index:
            index[id(t)] = len(tensors)
            tensors.append(t)
        return index[id(t)]

    layout = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            layout[name] = slot(value)
        elif isinstance(value, MemoryState):
            groups = [None if getattr(value, g) is None else {n: slot(t) for n, t in getattr(value, g).items()}
                      for g in GROUPS]
            layout[name] = (groups, value.position)
        else:
            raise TypeError(f"state {name}: a {type(value).__name__}, neither a tensor nor a MemoryState")
    return tensors, layout


def rebuild(layout: dict, tensors: list) -> dict:
    out = {}
    for name, where in layout.items():
        if isinstance(where, int):
            out[name] = tensors[where]
        else:
            groups, position = where
            out[name] = MemoryState(*(None if g is None else {n: tensors[i] for n, i in g.items()} for g in groups),
                                    position)
    return out


def slots(layout: dict) -> dict:
    """A layout without the memories' positions: which tensor stands where."""
    return {name: where if isinstance(where, int) else where[0] for name, where in layout.items()}


def segment(model, x, y, state):
    """What the trainer runs for one segment: forward, summed cross-entropy, backward, states detached."""
    logits, new = model(x, state)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum")
    loss.backward()
    tensors, layout = flatten(new)
    return loss.detach(), rebuild(layout, [t.detach() for t in tensors])


def largest_difference(got: list, expected: list) -> float:
    """The largest `rel` (RMS relative difference) over pairs of tensors (0 for none)."""
    return max((rel(g, e) for g, e in zip(got, expected)), default=0.0)


class Graphed:
    """The segment captured in a CUDA graph with static inputs; `__call__` replays it and copies the new
    states into the state buffers."""

    def __init__(self, model, x, y, state, warmup: int = 3):
        self.x, self.y = x.clone(), y.clone()
        tensors, self.layout = flatten(state)
        self.state = [t.clone() for t in tensors]
        for p in model.parameters():   # the graph accumulates into static gradients
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm-up on a side stream, as torch.cuda.graph asks
            for _ in range(warmup):
                segment(model, self.x, self.y, rebuild(self.layout, self.state))
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, out = segment(model, self.x, self.y, rebuild(self.layout, self.state))
        out_tensors, out_layout = flatten(out)
        if slots(out_layout) != slots(self.layout):
            raise RuntimeError("the segment's states out are not laid out as its states in")
        self.out = out_tensors

    def __call__(self):
        self.graph.replay()
        torch._foreach_copy_(self.state, self.out)

    def load(self, x, y, state):
        self.x.copy_(x)
        self.y.copy_(y)
        torch._foreach_copy_(self.state, flatten(state)[0])


def compare(model, graphed: Graphed, x, y, state) -> dict:
    """The largest relative differences between an eager segment and a replay from the same weights and
    states: loss, gradients, states out."""
    params = [p for p in model.parameters() if p.requires_grad]

    def zero():
        for p in params:
            if p.grad is not None:
                p.grad.zero_()
    zero()
    loss, new = segment(model, x, y, state)
    grads = [p.grad.clone() for p in params if p.grad is not None]
    expected = flatten(new)[0]
    zero()
    graphed.load(x, y, state)
    graphed.graph.replay()
    return {"loss": largest_difference([graphed.loss], [loss]),
            "gradients": largest_difference([p.grad for p in params if p.grad is not None], grads),
            "states": largest_difference(graphed.out, expected)}


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
    eager = time_call(lambda: segment(model, x, y, state), args.repeats, args.warmup, synchronise=True)
    print(f"  {backend:8s} eager    {eager:9.3f} ms a segment of {tokens} tokens, B={args.batch}")
    if device.type != "cuda":
        return
    try:
        graphed = Graphed(model, x, y, state)
    except Exception as error:  # noqa: BLE001  (the capture's failure is the finding)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"  {backend:8s} capture failed: {type(error).__name__}: {first}")
        return
    replay = time_call(graphed, args.repeats, 1, synchronise=True)
    diff = compare(model, graphed, x, y, state)
    print(f"  {backend:8s} graphed  {replay:9.3f} ms a segment (replay + state copy): {eager / replay:.2f}x; "
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
