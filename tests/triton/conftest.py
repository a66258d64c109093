"""The Triton tests run the generated kernels under the Triton interpreter on a CPU (or natively on a
GPU). TRITON_INTERPRET must be set before any kernel module is imported: a kernel decorated without it
stays a compiled-kernel object that needs a GPU. Generated kernel modules go to a private cache."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

try:
    import torch
    _CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _CUDA = False

if not _CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ["TRITON_INTERPRET"] == "1" and "triton.language" in sys.modules:
        # Triton's own jitted helpers (tl.zeros, ...) are made interpretable only when triton.language
        # is imported with TRITON_INTERPRET set; a test module collected before this folder that imports
        # it (torch.utils.flop_counter does) would leave every kernel failing with "Cannot call
        # @triton.jit'd outside of the scope of a kernel".
        from triton.runtime.interpreter import InterpretedFunction
        import triton.language as tl

        if not isinstance(tl.zeros, InterpretedFunction):
            raise RuntimeError("triton.language was imported before tests/triton set TRITON_INTERPRET=1: "
                               "import Triton (or torch.utils.flop_counter) inside the test that needs it")

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session", autouse=True)
def private_kernel_cache(tmp_path_factory):
    """NLC_CACHE points at a fresh directory for the session (rendered kernel modules land there)."""
    old = os.environ.get("NLC_CACHE")
    os.environ["NLC_CACHE"] = str(tmp_path_factory.mktemp("nlc-kernels"))
    yield os.environ["NLC_CACHE"]
    if old is None:
        os.environ.pop("NLC_CACHE", None)
    else:
        os.environ["NLC_CACHE"] = old


@pytest.fixture(autouse=True)
def gpu_rounding(monkeypatch):
    """Under the interpreter, float32 converted to bf16 rounds to the nearest as on a GPU (the
    interpreter truncates; triton_testkit.round_bf16_to_nearest)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        from triton_testkit import round_bf16_to_nearest
        round_bf16_to_nearest(monkeypatch)


@pytest.fixture(autouse=True)
def fresh_fallback_warnings(monkeypatch):
    """Each test sees the triton backend's fallback warnings anew (given once per level and reason)."""
    from nldsl.runtime.triton import backend
    monkeypatch.setattr(backend, "_WARNED", set())


def pytest_runtest_logreport(report):
    """With NLC_FAILURE_LOG set, every failure is appended to that file as it happens, so that a run
    stopped by a time limit (a lent GPU) still says what failed and why."""
    path = os.environ.get("NLC_FAILURE_LOG")
    forwarded = getattr(report, "node", None) is not None  # pytest-xdist's controller: its worker wrote it
    if path and report.failed and not forwarded:
        lines = report.longreprtext.strip().splitlines()
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"FAILED {report.nodeid} ({report.when})\n" + "\n".join(lines[-15:]) + "\n\n")
