"""A stand-in for a CUDA graph capture (runtime/train/graphs.py's CudaGraphs) on a CPU, as strict as a
graph where the code around it could go wrong: its capture computes nothing (the gradients are left as
they were, the outputs in memory it allocated hold NaN until a replay); a replay reads only the buffers of the capture (what
was copied into them) and writes into the capture's output tensors; and it fails unless every gradient
it accumulates into is the tensor it was captured with."""
from __future__ import annotations

import gc
import warnings

import torch

from nldsl.runtime.train.graphs import flatten


class StandIn:
    """A CUDA graph's behaviour on a CPU (see the module's docstring)."""

    def __init__(self, model):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.recorded = 0

    def warm_up(self, fn):
        fn()

    def record(self, fn):
        existing = _storages()                 # memory a capture does not allocate (kept alive meanwhile,
        pointers = {s.data_ptr() for s in existing}    # so that no new tensor takes its place)
        before = {p: p.grad.clone() for p in self.params if p.grad is not None}
        loss, out = fn()
        grads = {p: p.grad for p in self.params if p.grad is not None}
        assert grads.keys() == before.keys(), "a gradient without a tensor at capture: the graph would lose it"
        for p, g in grads.items():
            g.copy_(before[p])                 # a capture computes nothing
        # the outputs in memory the capture allocated hold nothing until a replay; the others are views of
        # memory that was there (a parameter, a buffer, an input passed on) and hold what it holds
        statics = [t for t in [loss, *flatten(out)[0]] if t.untyped_storage().data_ptr() not in pointers]
        del existing
        for t in statics:
            _dense(t).fill_(float("nan"))
        self.recorded += 1

        def replay():
            for p, g in grads.items():
                assert p.grad is g, "a replay accumulates into the gradient tensors of its capture"
            fresh_loss, fresh_out = fn()
            fresh = {id(s): f for s, f in zip([loss, *flatten(out)[0]], [fresh_loss, *flatten(fresh_out)[0]])}
            for static in statics:
                _dense(static).copy_(_dense(fresh[id(static)]))
        return replay, (loss, out)


def tensors_alive() -> list:
    """Every tensor alive now that Python holds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # isinstance on some of torch's deprecated objects warns
        return [t for t in gc.get_objects() if isinstance(t, torch.Tensor)]


def _graph_tensors() -> list:
    gc.collect()
    return [t for t in tensors_alive() if t.grad_fn is not None]


def graphs_alive(before: frozenset = frozenset()) -> list:
    """The tensors alive now that hold an autograd graph, but for those whose ids are in `before` (what
    `graph_ids()` gave earlier: what other tests keep is not this one's). A graph left over from an
    earlier segment keeps its parameters' AccumulateGrad nodes, which a capture on another stream cannot
    take."""
    return [(tuple(t.shape), type(t.grad_fn).__name__) for t in _graph_tensors() if id(t) not in before]


def graph_ids() -> frozenset:
    """The ids of the tensors alive now that hold an autograd graph."""
    return frozenset(id(t) for t in _graph_tensors())


def _storages() -> list:
    """The storages of every tensor alive now."""
    found = []
    for t in tensors_alive():
        if t.numel():
            try:
                storage = t.untyped_storage()
                storage.data_ptr()
                found.append(storage)
            except (RuntimeError, NotImplementedError):
                pass   # a tensor without storage (fake, functional, meta: left by torch.compile)
    return found


def _dense(t):
    """`t` without the dimensions it broadcasts (stride 0): each element once, so that it can be written."""
    return t[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in t.stride())]


class Failing(StandIn):
    def record(self, fn):
        raise RuntimeError("operation not permitted when stream is capturing")
