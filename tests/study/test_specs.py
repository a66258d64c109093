"""The four study specs check without a diagnostic, and their sizes lie in 5–20M parameters, within
±5% of each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from nldsl.compiler import load
from nldsl.pipeline import check_file

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "examples" / "study").glob("*.nl"))


def test_the_four_models_are_there():
    assert [p.stem for p in SPECS] == ["gated_deltanet", "hope", "titans", "transformer"]


@pytest.fixture(scope="module")
def counts() -> dict:
    return {p.stem: sum(t.numel() for t in load(p).parameters()) for p in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_spec_checks_clean(spec):
    fe = check_file(str(spec))
    assert list(fe.diagnostics) == [], fe.diagnostics  # no errors and no warnings


def test_sizes_are_between_5_and_20_million(counts):
    for name, n in counts.items():
        assert 5_000_000 <= n <= 20_000_000, f"{name}: {n:,} parameters"


def test_sizes_agree_within_five_percent(counts):
    low, high = min(counts.values()), max(counts.values())
    assert high <= 1.05 * low, {k: f"{v:,}" for k, v in counts.items()}
