"""A stand-in for a CUDA graph capture (runtime/train/graphs.py's CudaGraphs) on a CPU, as strict as a
graph where the code around it could go wrong: its capture computes nothing (the gradients are left as
they were, the outputs hold NaN until a replay); a replay reads only the buffers of the capture (what
was copied into them) and writes into the capture's output tensors; and it fails unless every gradient
it accumulates into is the tensor it was captured with."""
from __future__ import annotations

from nldsl.runtime.train.graphs import flatten


class StandIn:
    """A CUDA graph's behaviour on a CPU (see the module's docstring)."""

    def __init__(self, model):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.recorded = 0

    def warm_up(self, fn):
        fn()

    def record(self, fn):
        before = {p: p.grad.clone() for p in self.params if p.grad is not None}
        loss, out = fn()
        grads = {p: p.grad for p in self.params if p.grad is not None}
        assert grads.keys() == before.keys(), "a gradient without a tensor at capture: the graph would lose it"
        for p, g in grads.items():
            g.copy_(before[p])                 # a capture computes nothing
        statics = [loss, *flatten(out)[0]]
        for t in statics:
            t.fill_(float("nan"))              # nothing in the outputs until a replay
        self.recorded += 1

        def replay():
            for p, g in grads.items():
                assert p.grad is g, "a replay accumulates into the gradient tensors of its capture"
            fresh_loss, fresh_out = fn()
            for static, fresh in zip(statics, [fresh_loss, *flatten(fresh_out)[0]]):
                static.copy_(fresh)
        return replay, (loss, out)


class Failing(StandIn):
    def record(self, fn):
        raise RuntimeError("operation not permitted when stream is capturing")
