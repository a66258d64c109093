"""benchmarks/memory_chunked_vs_reference.py runs end to end at a tiny size, compiled tile steps included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_benchmark_prints_a_row_per_family_with_the_compiled_path():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_chunked_vs_reference.py"),
                             "--tokens", "40", "--repeats", "1", "--only", "mlp", "--compile", "--backward"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("family"))
    assert "compiled ms" in header and header.endswith("compile s")
    fields = next(line for line in lines if line.startswith("mlp Titans depth 2")).split()
    # ... chunked ms, ratio, max |dy|, compiled ms, ratio, compile s
    assert fields[-5].endswith("x") and fields[-2].endswith("x")
    assert float(fields[-4]) < 1e-4
    assert float(fields[-3]) > 0 and float(fields[-1]) > 0
