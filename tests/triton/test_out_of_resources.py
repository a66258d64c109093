"""A generated kernel that needs more shared memory than the device has (Triton's OutOfResources at
launch) is not an error for the user: a backward kernel that does not fit leaves the forward fused and
the backward to PyTorch, a forward kernel that does not fit sends the level to the chunked path; one
warning each, and the results are those of the reference."""
from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("triton", reason="Triton is not installed: the generated kernels cannot run")

import torch  # noqa: E402
from triton.runtime.errors import OutOfResources  # noqa: E402

from nldsl.runtime import MemoryConfig, MemoryLevel, Rule, standard_objective  # noqa: E402
from nldsl.runtime.triton import TritonFallbackWarning, backend  # noqa: E402
from nldsl.runtime.triton.registry import kernels_for  # noqa: E402
from triton_testkit import DEVICE, Case, compare, ratio, run_path, run_reference, OUTPUT_RATIO  # noqa: E402

pytestmark = pytest.mark.triton


def too_large(*args, **kwargs):
    raise OutOfResources(437760, 232448, "shared memory")


@pytest.mark.parametrize("cfg", [
    MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("momentum")), chunk=4, read="anchor"),
    MemoryConfig("mlp", 8, 8, depth=2, hidden=16, act="silu", residual=True, rules=(Rule("retain"), Rule("momentum")),
                 chunk=4, read="anchor")], ids=["linear", "mlp"])
def test_a_backward_kernel_too_large_for_the_device_leaves_the_backward_to_pytorch(cfg):
    objective = standard_objective("l2")
    found, reason = kernels_for(cfg, objective, f"oor.{cfg.family}")
    assert found is not None and found.bwd is not None, reason
    lk = dataclasses.replace(found, launches={n: 0 for n in found.launches})  # the cached one stays intact
    lk.launch_bwd = too_large
    case = Case(cfg, objective, tokens=10, position=3, eta_max=0.2)
    with pytest.warns(TritonFallbackWarning, match=r"backward kernel does not fit the device .*shared memory"):
        tri = run_path(case, "triton", lk)
    compare(run_reference(case), tri, "a PyTorch backward after OutOfResources")
    assert lk.bwd is None and found.bwd is not None
    assert lk.launches["fwd"] == 1 and lk.launches.get("recompute", 0) + lk.launches.get("bwd_tiles", 0) > 0


def test_a_streamed_backward_too_large_for_the_device_leaves_the_backward_to_pytorch():
    """The same for an MLP level whose state streams: only its streamed backward is given up."""
    cfg = MemoryConfig("mlp", 8, 8, depth=2, hidden=24, act="silu", residual=True,
                       rules=(Rule("retain"), Rule("momentum")), chunk=4, read="after")
    objective = standard_objective("l2")
    found, reason = kernels_for(cfg, objective, "oor.streamed")
    assert found is not None and found.bwd_streamed is not None, reason
    # stream_backward: the streamed backward kernel on any device (on a GPU a streamed forward's backward
    # is otherwise the PyTorch walk, which never launches the kernel)
    lk = dataclasses.replace(found, stream=True, stream_backward=True, launches={n: 0 for n in found.launches})
    lk.bwd_streamed = _Unlaunchable()
    case = Case(cfg, objective, tokens=10, position=3, eta_max=0.2)
    with pytest.warns(TritonFallbackWarning, match=r"backward kernel does not fit the device .*shared memory"):
        tri = run_path(case, "triton", lk)
    compare(run_reference(case), tri, "a PyTorch backward after the streamed backward's OutOfResources")
    assert lk.bwd_streamed is None and lk.bwd is not None and found.bwd_streamed is not None
    assert lk.launches == {"fwd": 1, "bwd": 0, "bwd_tiles": 4}   # positions 3 to 12: four chunks


class _Unlaunchable:
    """A kernel whose every launch runs out of resources."""

    def __getitem__(self, grid):
        return too_large


def test_a_forward_kernel_too_large_for_the_device_sends_the_level_to_the_chunked_path(monkeypatch):
    cfg = MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("gd")), chunk=4, read="after")
    torch.manual_seed(0)
    level = MemoryLevel(cfg, standard_objective("l2"), 2, name="oor.fwd").to(DEVICE)
    found, _ = kernels_for(cfg, level.objective, "oor.fwd")
    monkeypatch.setattr(found, "run", too_large)
    monkeypatch.setattr(backend, "_UNLAUNCHABLE", {})
    gen = torch.Generator().manual_seed(1)
    q, k = (torch.randn(2, 9, 16, generator=gen).to(DEVICE) * 0.3 for _ in range(2))
    v = torch.randn(2, 9, 16, generator=gen).to(DEVICE)
    gates = {"lr": 0.3 * torch.rand(2, 9, 2, generator=gen).to(DEVICE),
             "retain": 0.7 + 0.3 * torch.rand(2, 9, 2, generator=gen).to(DEVICE)}
    level.backend = "triton"
    with pytest.warns(TritonFallbackWarning, match=r"oor\.fwd: .*forward kernel does not fit the device"):
        y, _ = level(q, k, v, gates)
        y_again, _ = level(q, k, v, gates)   # remembered: no second launch, no second warning
    level.backend = "chunked"
    y0, _ = level(q, k, v, gates)
    assert ratio(y0, y) <= OUTPUT_RATIO and torch.equal(y, y_again)
