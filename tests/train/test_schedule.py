"""The outer level's learning-rate schedule: warm-up, then constant or a half cosine in which every step
learns."""

from __future__ import annotations

import math

import pytest

from nldsl.runtime.train.run import lr_factor


@pytest.mark.parametrize("total, warm", [(1, 0), (2, 0), (10, 0), (10, 3), (7, 6)])
def test_cosine_starts_at_one_after_the_warm_up_and_every_step_learns(total, warm):
    outer = {"schedule": "cosine", "warmup": warm}
    factors = [lr_factor(step, outer, total) for step in range(1, total + 1)]
    assert factors[:warm] == pytest.approx([(s + 1) / warm for s in range(warm)])
    assert factors[warm] == 1.0
    assert all(f > 0 for f in factors)
    assert all(a >= b for a, b in zip(factors[warm:], factors[warm + 1:]))
    if total - warm > 1:  # the last step: one step's worth of the half cosine above 0
        assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * (total - warm - 1) / (total - warm))))


def test_constant_is_one_after_the_warm_up():
    outer = {"schedule": "constant", "warmup": 4}
    assert [lr_factor(s, outer, 10) for s in range(1, 11)] == [0.25, 0.5, 0.75] + [1.0] * 7
