"""`--shard I/N` (tests/conftest.py): the suite in N parts, for a machine lent a few minutes at a time."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests/frontend/test_errors.py"


def collect(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *options, TARGET], cwd=ROOT, capture_output=True, text=True)


def ids(*options: str) -> list[str]:
    result = collect(*options)
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_shards_partition_the_suite_in_collection_order():
    whole = ids()
    parts = [ids("--shard", f"{i}/3") for i in range(3)]
    assert len(whole) >= 6 and all(parts)
    assert sorted(sum(parts, [])) == sorted(whole)           # every test in exactly one part
    assert parts[1] == whole[1::3]                              # every third one, from the second


def test_a_malformed_shard_is_a_usage_error():
    for text in ("3/3", "1", "a/b", "-1/2"):
        result = collect("--shard", text)
        assert result.returncode == 4 and "--shard" in result.stderr, (text, result.stderr)
