"""benchmarks/train_speed.py runs end to end at tiny sizes, and nlc with its stacked memories run one by
one trains to the same losses as with the stack (the script prints figures; nothing here times them)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_training_speed_script_compares_the_stack_with_its_members_one_by_one(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("train_speed", None)
    import train_speed

    assert train_speed.main(["--batch", "2", "--seq", "32", "--steps", "1", "--warmup", "1", "--threads", "1",
                             "--no-peer"]) == 0
    out = capsys.readouterr().out
    losses = dict(re.findall(r"^  (nlc|nlc, one by one)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)$", out, re.M))
    assert set(losses) == {"nlc", "nlc, one by one"}
    assert losses["nlc"] == losses["nlc, one by one"]
    assert "nlc / nlc one by one:" in out and "speedup_vs_nested_learning: n/a (skipped)" in out
