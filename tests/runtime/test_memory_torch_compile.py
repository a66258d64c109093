"""A memory level under `torch.compile` computes what it computes eagerly, in every chunked form:
outputs, end states and the gradients of the inputs and the learned initial state.

(Peers' kernels have returned wrong values under torch.compile; a graph break is allowed here, a
different number is not.) Compiling takes 15 to 40 s per form on a 2-core CPU, hence `slow`."""

from __future__ import annotations

import pytest
import torch

from nldsl.runtime import MemoryConfig, MemoryLevel, Rule, standard_objective
from nldsl.runtime.memory import chunk_form

pytestmark = pytest.mark.slow

MLP = dict(family="mlp", depth=2, hidden=16, act="silu", residual=True)
CASES = {
    "wy": (MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("gd", at="current"))), "l2"),
    "dual linear": (MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("momentum")), chunk=4), "sq"),
    "dual mlp": (MemoryConfig(dk=8, dv=8, rules=(Rule("retain"), Rule("momentum")), chunk=4, **MLP), "mse"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_compiled_memory_level_equals_the_eager_one(name):
    cfg, objective = CASES[name]
    assert chunk_form(cfg, objective)[0] == name.split()[0]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    level = MemoryLevel(cfg, standard_objective(objective), heads=2)
    q, k, v = (torch.randn(2, 10, 16, generator=gen) for _ in range(3))   # 10 tokens: a partial last chunk
    gates = {"lr": 0.1 * torch.rand(2, 10, 2, generator=gen), "retain": 0.9 + 0.1 * torch.rand(2, 10, 2, generator=gen)}
    if cfg.has_momentum:
        gates["momentum"] = 0.5 * torch.rand(2, 10, 2, generator=gen)

    def run(module):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        level.zero_grad()
        y, state = module(*leaves, gates)
        (y.square().sum() + sum(p.square().sum() for p in state.params.values())).backward()
        return [y.detach(), *(p.detach() for p in state.params.values()), *(t.grad for t in leaves),
                *(p.grad.clone() for p in level.parameters())]

    torch._dynamo.reset()
    eager, compiled = run(level), run(torch.compile(level))
    assert len(eager) == len(compiled)
    for want, got in zip(eager, compiled):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
