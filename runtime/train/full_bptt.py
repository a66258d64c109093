"""`bptt full` (semantics.md §5): one outer step's graph kept across its segments.

The CMS weights cannot take part in that graph as parameters: each window's update writes them in place,
and the segments before it saved them for their backward. So for one step the model runs with values in
their place (`torch.func.functional_call`), `LiveWeights`: a copy of each CMS parameter, a leaf of the
step's graph, replaced by a new copy when its level steps or is reset. That is the stop-gradient
additive change θ + sg(Δ): its gradient goes back only to θ's own value, a leaf that nothing upstream
of it in the graph produced (a learned initial state gets its gradient through the member's forward,
layers.py `_through`, as under `bptt truncated`).

A window's gradient comes from a local backward. A copy exists from its window's start (or the step's,
or the last reset), so the gradient of all the step's losses so far with respect to it is the gradient
of the window's own losses, through every path in the kept graph (states carried from earlier segments
of the window included). When windows close, one backward takes it for all of them, going back no
further than the oldest of their starts; at the step's end one backward of the whole step's loss gives
the outer level its gradient and the windows still open theirs. Each lands in the parameters' `.grad`,
where the truncated loop's per-segment backward puts it.
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
        self.losses: list[torch.Tensor] = []  # the step's segment losses so far

    def __call__(self, *args):
        with graph_kept():  # backpropagated more than once: at window ends, then at the step's end
            return functional_call(self.model, self.live, args)

    def close_windows(self, levels: list) -> None:
        """Add to the levels' parameters' `.grad` the gradient of their windows' losses."""
        names = [n for lv in levels for n, _ in lv.params if self.live[n].requires_grad]
        if not names or not self.losses:
            return
        grads = torch.autograd.grad(torch.stack(self.losses).sum(), [self.live[n] for n in names],
                                    retain_graph=True, allow_unused=True)
        for name, g in zip(names, grads):
            _add_grad(self.params[name], g)

    def finish(self, outer: list) -> None:
        """One backward of the whole step: the gradient of its loss for the `outer` parameters, and for the
        windows still open, added to their parameters' `.grad`. The graph is freed."""
        leaves = [t for t in self.live.values() if t.requires_grad]
        if self.losses and (outer or leaves):
            torch.autograd.backward(torch.stack(self.losses).sum(), inputs=outer + leaves)
        for name, t in self.live.items():
            _add_grad(self.params[name], t.grad)
        self.losses.clear()

    def refresh(self, levels: list) -> None:
        """Take up the new values of the levels' parameters (after a step or a reset)."""
        for lv in levels:
            for name, p in lv.params:
                self.live[name] = _leaf(p)


def _leaf(p: torch.Tensor) -> torch.Tensor:
    return p.detach().clone().requires_grad_(p.requires_grad)


def _add_grad(p: torch.Tensor, g) -> None:
    if g is None:
        return
    if p.grad is None:
        p.grad = g.detach().clone()
    else:
        p.grad.add_(g)
