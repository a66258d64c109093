"""`sample` refuses a temperature that is not a finite number >= 0 (nan passes every comparison)."""

from __future__ import annotations

import pytest
import torch

from nldsl.runtime.generate import sample


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -0.5])
def test_a_temperature_that_is_not_finite_and_non_negative_is_refused(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        sample(torch.zeros(1, 4), temperature)


@pytest.mark.parametrize("top_p", [float("nan"), 0.0, 1.5])
def test_a_top_p_outside_the_unit_interval_is_refused(top_p):
    with pytest.raises(ValueError, match="top_p in"):
        sample(torch.zeros(1, 4), 1.0, top_p=top_p)


def test_temperature_zero_takes_the_most_likely_token():
    assert sample(torch.tensor([[0.0, 3.0, 1.0]]), 0.0).tolist() == [1]
