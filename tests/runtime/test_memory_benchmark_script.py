"""benchmarks/memory_chunked_vs_reference.py runs end to end at a tiny size, compiled tile steps and the
kernel floor included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_benchmark_prints_a_row_per_family_with_the_compiled_path_and_the_floor():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_chunked_vs_reference.py"),
                             "--tokens", "40", "--repeats", "1", "--only", "mlp titans", "--compile", "--backward"],
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
    # the budget: FLOPs, rate, bound at the matmul peak, then the kernel floor and its bound
    budget = next(line for line in lines if line.startswith("family") and "floor ms" in line)
    assert budget.split()[-5:] == ["floor", "ms", "matmuls", "ops", "bound"]
    row = [line for line in lines if line.startswith("mlp Titans depth 2")][1].split()
    floor_ms, matmul_ms, operators = float(row[-4]), float(row[-3]), int(row[-2])
    assert 0 < matmul_ms <= floor_ms and operators > 10 and row[-1].endswith("x")
    assert any(line.startswith("mlp Titans depth 2: costliest operators") for line in lines)
