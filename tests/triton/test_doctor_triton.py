"""`nlc doctor` with the triton backend able to run (a GPU, or the interpreter): the generated kernels
are checked against the reference, and a level without kernels is named with the reason it falls back."""

from __future__ import annotations

import pytest
import torch

from nldsl import doctor
from tiny_specs import memory, tiny_spec

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# a linear memory the kernels run, and an MLP memory token by token, which has no kernel
SPEC = tiny_spec(vocab=32, memories=(memory("fast", chunk=4), memory("slow", "mlp(depth = 2, hidden = 8, act = silu)", lr="0.1")),
                 read="slow(fast(k))")


def test_the_triton_backend_is_checked_and_its_fallbacks_named(tmp_path):
    spec = tmp_path / "mixed.nl"
    spec.write_text(SPEC)
    findings = doctor.diagnose(spec, DEVICE, run_check=True)
    assert not any(f.bad for f in findings), [f for f in findings if f.bad]
    triton = [f for f in findings if f.section == "check" and f.name == "triton"]
    assert triton[0].status == "ok" and "largest difference" in triton[0].detail
    notes = [f.detail for f in triton[1:]]
    assert len(notes) == 1 and notes[0].startswith("memory level mix.slow: triton backend falls back"), notes
    assert "fast" not in notes[0]
