"""`--shard I/N` and `--skip-passed FILE` (tests/conftest.py): the suite in parts, for a machine lent a few
minutes at a time."""
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


def test_skip_passed_leaves_out_what_an_earlier_verbose_run_passed_or_skipped(tmp_path):
    whole = ids()
    assert len(whole) >= 6
    earlier = tmp_path / "earlier.txt"
    earlier.write_text("\n".join([
        f"[gw3] [ 10%] PASSED {whole[0]} ",                # xdist -v
        f"{whole[1]} SKIPPED (no GPU)                [ 20%]",  # -v without xdist
        f"{whole[2]} PASSED                          [ 30%]",
        f"[gw1] [ 40%] FAILED {whole[3]} ",                # failed: runs again
        whole[4],                                          # xdist's line for a test it scheduled: no outcome
        f"96.15s call     {whole[5]}",                     # --durations names a test whatever its outcome
        f"FAILED {whole[5]} - AssertionError",
    ]))
    assert ids("--skip-passed", str(earlier)) == whole[3:]
    left = ids("--skip-passed", str(earlier), "--shard", "0/2")
    assert left == whole[3:][::2]                           # the shards split what is left


def test_skip_passed_of_a_missing_file_is_a_usage_error(tmp_path):
    result = collect("--skip-passed", str(tmp_path / "none.txt"))
    assert result.returncode == 4 and "--skip-passed" in result.stderr, result.stderr


def test_skip_passed_twice_leaves_out_what_either_run_passed(tmp_path):
    whole = ids()
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(f"PASSED {whole[0]}\n[gw0] [ 50%] FAILED {whole[1]} \n")
    second.write_text(f"[gw2] [ 90%] PASSED {whole[1]} \n")     # the failure of the first run, passed again
    assert ids("--skip-passed", str(first), "--skip-passed", str(second)) == whole[2:]
