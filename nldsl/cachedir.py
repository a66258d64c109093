"""The user's nlc cache folder: compiled specs and the parser's tables (never a shared temporary folder)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$NLC_CACHE, else $XDG_CACHE_HOME/nlc, else ~/.cache/nlc."""
    root = os.environ.get("NLC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nlc")
    return Path(root)
