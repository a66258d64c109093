"""How many examples a hypothesis test of the suite draws, and whether they are the same every run.

By default a drawing test draws its own fixed set of examples (`derandomize`), so a run of the suite
says the same thing twice. `NLC_FUZZ_EXAMPLES=N` turns every one of them into a fuzzer: N examples
each, drawn afresh every run (a failure prints the example and the seed that reproduces it)."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FRESH = "NLC_FUZZ_EXAMPLES" in os.environ

# drawn specs are large and filtered (a drawn rule set a level refuses is passed over)
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def drawing(default: int, **more) -> settings:
    """Hypothesis settings: `default` examples, the same every run, unless NLC_FUZZ_EXAMPLES is set."""
    examples = int(os.environ["NLC_FUZZ_EXAMPLES"]) if FRESH else default
    return settings(max_examples=examples, deadline=None, derandomize=not FRESH, suppress_health_check=_QUIET,
                    **more)
