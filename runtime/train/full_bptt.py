"""`bptt full` (semantics.md §5): one outer step's graph kept across its segments.

The CMS weights cannot take part in that graph as parameters: each window's update writes them in place,
and the segments before it saved them for their backward. So for one step the model runs with values in
their place (`torch.func.functional_call`), `LiveWeights`: a copy of each CMS parameter, a leaf of the
step's graph, replaced by a new copy when its level steps or is reset. That is the stop-gradient
additive change θ + sg(Δ): its gradient goes back only to θ's own value, a leaf that nothing upstream
of it in the graph produced (a learned initial state gets its gradient through the member's forward,
layers.py `_through`, as under `bptt truncated`).

A window's gradient comes from a local backward: after each segment, the gradient of that segment's
loss with respect to the values of the weights now in use, through every path in the kept graph (the
states carried from earlier segments of the window included), added to the parameters' `.grad`, where
the truncated loop's per-segment backward puts it. The outer level's gradient comes from one backward of
the whole step's loss at its end, into the outer parameters only.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from ..memory.recompute import graph_kept


class LiveWeights:
    def __init__(self, model: torch.nn.Module, cms_levels: list):
        self.model = model
        self.params = {name: p for lv in cms_levels for name, p in lv.params}
        self.live = {name: _leaf(p) for name, p in self.params.items()}

    def __call__(self, *args):
        with graph_kept():  # its backward runs twice: each window's, then the step's
            return functional_call(self.model, self.live, args)

    def add_window_grads(self, loss: torch.Tensor) -> None:
        """Add the gradient of `loss` with respect to the weights in use to their parameters' `.grad`."""
        names = [n for n, t in self.live.items() if t.requires_grad]
        if not names:
            return
        grads = torch.autograd.grad(loss, [self.live[n] for n in names], retain_graph=True, allow_unused=True)
        for name, g in zip(names, grads):
            if g is None:
                continue
            p = self.params[name]
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)

    def refresh(self, levels: list) -> None:
        """Take up the new values of the levels' parameters (after a step or a reset)."""
        for lv in levels:
            for name, p in lv.params:
                self.live[name] = _leaf(p)


def _leaf(p: torch.Tensor) -> torch.Tensor:
    return p.detach().clone().requires_grad_(p.requires_grad)
