"""Training segments replayed as CUDA graphs (`nlc train --cuda-graphs`).

A small model's GPU step is bound by issuing its operators, one Python call each; a CUDA graph replays
a whole segment (forward, summed loss, backward, states out) with one launch. On an H200 hope.nl's
whole training step ran 9.4x faster with its segments replayed on the chunked backend, 7.9x on the
triton backend, with the same losses (docs/training.md).

A graph bakes in everything its segment decided on the host: shapes and the states' positions (where
tiles are cut, when anchors move). So a segment's key is the tokens' shape and the layout, shapes,
dtypes and host values (positions) of its states; a key is captured the second time it comes, so a
key that never recurs (the growing position of a memory with `state persist`) runs eagerly at no cost,
and at most `limit` graphs are kept. A replay runs the eager segment's kernels on the same values: the
same bits.

Buffers: a replay reads its own copies of the tokens, targets and states (each call copies them in)
and writes its own outputs, the loss and the states out, which stay valid until the next replay of any
graph (the graphs share one memory pool): the loop uses them before its next segment, and the states
it carries from step to step (`state persist`) never come out of a replay (their positions grow).
Gradients accumulate into the `.grad` tensors a graph was captured with, one per parameter shared by
every graph; before each replay a parameter whose `.grad` was freed (`zero_grad`) or replaced (a
checkpoint, an eager segment after a free) gets that tensor back, zeroed or holding the new gradient,
so the optimizers see what they see eagerly.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Optional

import torch

Segment = Callable[[torch.Tensor, torch.Tensor, dict], tuple]   # (x, y, state) -> (loss, state out)


class Unsupported(Exception):
    """A state holds something a graph cannot take as a buffer."""


def flatten(state: dict) -> tuple[list, tuple]:
    """The distinct tensors of a model's state (tensors, dicts of them and dataclasses such as MemoryState
    and KVCache) and its layout, a hashable description of the rest: `rebuild(layout, tensors)` makes the
    same state from other tensors, sharing where it shared (a memory whose anchor is its state keeps one
    tensor for both)."""
    tensors, index = [], {}

    def describe(value):
        if isinstance(value, torch.Tensor):
            if id(value) not in index:
                index[id(value)] = len(tensors)
                tensors.append(value)
            return ("tensor", index[id(value)])
        if value is None or isinstance(value, (bool, int, float, str)):
            return ("host", value)
        if isinstance(value, dict):
            return ("dict", tuple((k, describe(v)) for k, v in value.items()))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return ("data", type(value), tuple((f.name, describe(getattr(value, f.name)))
                                               for f in dataclasses.fields(value)))
        raise Unsupported(f"a {type(value).__name__} in a state")

    return tensors, describe(state)


def rebuild(layout: tuple, tensors: list):
    kind = layout[0]
    if kind == "tensor":
        return tensors[layout[1]]
    if kind == "host":
        return layout[1]
    if kind == "dict":
        return {k: rebuild(v, tensors) for k, v in layout[1]}
    cls, fields = layout[1], layout[2]
    return cls(**{name: rebuild(v, tensors) for name, v in fields})


def key_of(x: torch.Tensor, y: torch.Tensor, state: dict):
    """What a captured segment depends on beyond the values of its tensors; None where a graph cannot
    take it (a state tensor that carries a gradient: the graph would cut it)."""
    try:
        tensors, layout = flatten(state)
    except Unsupported:
        return None
    if any(t.requires_grad for t in tensors):
        return None
    shapes = tuple((tuple(t.shape), t.dtype, t.device) for t in (x, y, *tensors))
    return layout, shapes


class CudaGraphs:
    """Capture on the current CUDA device: a warm-up on a side stream (as torch.cuda.graph asks), then
    the capture, into one memory pool for every graph of the loop."""

    def __init__(self):
        self.pool = torch.cuda.graph_pool_handle()

    def warm_up(self, fn) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)

    def record(self, fn):
        """(replay, outputs): `replay()` runs what `fn` issued, writing into `outputs`."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = fn()
        return graph.replay, outputs


class _Call:
    """A segment on its own buffers (the tokens, the targets and the states' tensors): what a graph
    captures."""

    def __init__(self, segment: Segment, x, y, state: dict):
        self.segment, self.x, self.y = segment, x.clone(), y.clone()
        tensors, self.layout = flatten(state)
        self.inputs = [t.clone() for t in tensors]

    def load(self, x, y, state: dict) -> None:
        self.x.copy_(x)
        self.y.copy_(y)
        if not self.inputs:
            return
        sources = flatten(state)[0]
        # a state out of this graph may be one of its buffers (a state passed on unchanged); where one is
        # another slot's buffer, copying in place would overwrite it before it is read
        slot = {t.untyped_storage().data_ptr(): i for i, t in enumerate(self.inputs) if t.numel()}
        if any(slot.get(t.untyped_storage().data_ptr(), i) != i for i, t in enumerate(sources) if t.numel()):
            sources = [t.clone() for t in sources]
        torch._foreach_copy_(self.inputs, sources)

    def __call__(self):
        return self.segment(self.x, self.y, rebuild(self.layout, self.inputs))


class _Graph:
    """One key's captured segment: its call, the replay, its outputs and the parameters it reaches."""

    def __init__(self, call: _Call, replay, loss, out_layout, outputs, reached):
        self.call, self.replay, self.loss, self.out_layout = call, replay, loss, out_layout
        self.outputs, self.reached = outputs, reached


class SegmentGraphs:
    """`graphs(x, y, state)` runs `segment(x, y, state)`, as a replay where its key has a graph; the
    parameters are those whose gradients the segment may accumulate."""

    def __init__(self, segment: Segment, params: list, capture, limit: int = 256):
        self.segment, self.params, self.capture, self.limit = segment, params, capture, limit
        self.graphs: dict = {}
        self.seen: dict = {}
        self.buffers: dict = {}         # parameter -> the .grad tensor every graph accumulates into
        self.failed: Optional[str] = None
        self.counts = {"captured": 0, "replayed": 0, "eager": 0}

    def __call__(self, x, y, state):
        key = None if self.failed else key_of(x, y, state)
        graph = self.graphs.get(key) if key is not None else None
        if graph is None and key is not None and len(self.graphs) < self.limit:
            if len(self.seen) > 16 * self.limit:
                self.seen.clear()       # keys that never came back (growing positions)
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] > 1:
                graph = self._capture(key, x, y, state)
        if graph is None:
            self.counts["eager"] += 1
            return self.segment(x, y, state)
        return self._replay(graph, x, y, state)

    def _replay(self, graph: _Graph, x, y, state):
        graph.call.load(x, y, state)
        self._own_gradients(graph.reached)
        graph.replay()
        self.counts["replayed"] += 1
        return graph.loss, rebuild(graph.out_layout, graph.outputs)

    def _own_gradients(self, params) -> None:
        """Give each parameter its shared gradient tensor back: zeroed where `.grad` was freed, holding
        the new gradient where it was replaced."""
        freed = []
        for p in params:
            buffer = self.buffers[p]
            if p.grad is buffer:
                continue
            if p.grad is None:
                freed.append(buffer)
            else:
                buffer.copy_(p.grad)
            p.grad = buffer
        if freed:
            torch._foreach_zero_(freed)

    def _capture(self, key, x, y, state) -> Optional[_Graph]:
        saved = [None if p.grad is None else p.grad.clone() for p in self.params]
        run = _Call(self.segment, x, y, state)
        try:
            for p in self.params:
                p.grad = None
            self.capture.warm_up(run)    # which parameters the segment reaches: those given a gradient
            reached = [p for p in self.params if p.grad is not None]
            for p in reached:
                self.buffers.setdefault(p, p.grad)
            self._own_gradients(reached)
            torch._foreach_zero_([self.buffers[p] for p in reached])
            replay, (loss, out) = self.capture.record(run)
            outputs, out_layout = flatten(out)
        except Exception as error:  # noqa: BLE001  (any failure to capture: the segment runs eagerly)
            self._restore(saved, set())
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            self.failed = f"{type(error).__name__}: {first}"
            warnings.warn(f"CUDA graphs: capturing a training segment failed ({self.failed}); every segment "
                          "runs eagerly from here on", RuntimeWarning, stacklevel=3)
            return None
        self._restore(saved, set(reached))
        graph = _Graph(run, replay, loss, out_layout, outputs, reached)
        self.graphs[key] = graph
        self.seen.pop(key, None)
        self.counts["captured"] += 1
        return graph

    def _restore(self, saved: list, reached: set) -> None:
        """The gradients as they were before the capture, in the shared tensors where there are some."""
        for p, grad in zip(self.params, saved):
            buffer = self.buffers.get(p)
            if p in reached or (buffer is not None and grad is not None):
                p.grad = buffer
                if grad is None:
                    buffer.zero_()
                else:
                    buffer.copy_(grad)
            else:
                p.grad = grad
