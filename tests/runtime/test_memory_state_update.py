"""The hand-written backward of a tile's state update (scan.state_update) against autograd's."""
from __future__ import annotations

import pytest
import torch

from nldsl.runtime.memory.scan import state_update


@pytest.mark.parametrize('momentum', [False, True])
@pytest.mark.parametrize('expanded', [False, True])
def test_state_update_gradcheck(momentum, expanded):
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    # expanded: the learned initial state (3, 4, 5), broadcast over the batch as the first tile sees it
    args = [rand(3, 4, 5) if expanded else rand(2, 3, 4, 5), rand(2, 3), rand(2, 3, 6, 4), rand(2, 3, 6, 5)]
    if momentum:
        args += [rand(2, 3, 4, 5), rand(2, 3)]

    def update(start, *rest):
        return state_update(start.expand(2, 3, 4, 5), *rest)
    assert torch.autograd.gradcheck(update, args)
    args[0] = args[0].expand(2, 3, 4, 5)
    expected = args[1][..., None, None] * args[0] + args[2].transpose(-1, -2) @ args[3]
    if momentum:
        expected = expected + args[5][..., None, None] * args[4]
    torch.testing.assert_close(state_update(*args), expected)
