"""Fixtures of the compile tests: `nldsl.load` of a `.nl` spec compiles into a private cache."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_compile_cache(tmp_path_factory):
    """NLC_CACHE points at a fresh directory for the whole session (never the user's cache)."""
    old = os.environ.get("NLC_CACHE")
    os.environ["NLC_CACHE"] = str(tmp_path_factory.mktemp("nlc-cache"))
    yield os.environ["NLC_CACHE"]
    if old is None:
        os.environ.pop("NLC_CACHE", None)
    else:
        os.environ["NLC_CACHE"] = old
