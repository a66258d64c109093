"""`bptt full` on the Triton backend: each CMS window's backward and the step's run through the generated
kernels of one kept graph, and the step equals the token-by-token reference's."""
from __future__ import annotations

import warnings

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402

from nldsl.runtime.triton import TritonFallbackWarning  # noqa: E402
from tiny_specs import build_loop, cms_memory_spec  # noqa: E402
from triton_testkit import DEVICE  # noqa: E402

pytestmark = pytest.mark.triton


def test_a_full_bptt_step_on_the_kernels_matches_the_reference(tmp_path):
    data = torch.randint(0, 16, (2, 17), generator=torch.Generator().manual_seed(0))
    updates = {}
    for backend in ("reference", "triton"):
        model, loop, _ = build_loop(tmp_path / backend, cms_memory_spec(), backend, dtype=torch.float32)
        model.to(DEVICE)  # the parameters stay the loop's: moved in place
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        with warnings.catch_warnings():
            warnings.simplefilter("error", TritonFallbackWarning)  # the kernels must run
            loop.step(data.to(DEVICE))
        updates[backend] = {n: (p.detach() - before[n]).cpu() for n, p in model.named_parameters()}
    for name, want in updates["reference"].items():
        got = updates["triton"][name]
        assert float((got - want).norm()) <= 2e-3 * float(want.norm()) + 1e-7, name
