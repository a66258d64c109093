"""Every example, compiled: the reference and chunked backends agree, and split runs equal whole runs.

float64 throughout (`model.double()`), B = 2, lengths that are not multiples of any chunk size (the
examples use chunks of 8 and 16), and a carried-in state: a prefix runs first and the comparison is on
the continuation, so every memory starts mid-chunk from a non-trivial state. Gradients are taken of a
random linear functional of the logits and of every carried tensor, with respect to every parameter
(projections, initial memory states, gate parameters) and the embedding outputs of both calls.
"""
from __future__ import annotations

import pytest
import torch

from compile_testkit import (EXAMPLES, assert_close, assert_runs_agree, assert_split_runs_equal, assert_states_close,
                             build, example_id, flatten_state, run_with_gradients, set_backend, tokens)

B = 2
PREFIX, CONTINUATION = 11, 10  # 21 tokens in all: inside the second 8-token chunk, the second 16-token chunk
SPLITS = (5, 8, 16)  # inside a chunk, at the end of an 8-token chunk, at the end of a 16-token chunk

_MODELS: dict = {}


@pytest.fixture
def model_of(tmp_path_factory):
    def get(spec):
        if spec not in _MODELS:
            _MODELS[spec] = build(spec, tmp_path_factory.mktemp(example_id(spec)))
        return _MODELS[spec]
    return get


@pytest.mark.parametrize("spec", EXAMPLES, ids=example_id)
def test_reference_and_chunked_agree(spec, model_of):
    model = model_of(spec)
    prefix, continuation = tokens(model, B, PREFIX, 1), tokens(model, B, CONTINUATION, 2)
    runs = {}
    for backend in ("reference", "chunked"):
        set_backend(model, backend)
        runs[backend] = run_with_gradients(model, prefix, continuation, seed=3)
    unused = assert_runs_agree(runs["reference"], runs["chunked"])
    # every parameter reaches the loss, the memories' initial states and gate projections included
    assert not unused, f"parameters that get no gradient: {unused}"


@pytest.mark.parametrize("backend", ["chunked", "reference"])
@pytest.mark.parametrize("spec", EXAMPLES, ids=example_id)
def test_split_runs_equal_the_whole_run(spec, backend, model_of):
    model = set_backend(model_of(spec), backend)
    assert_split_runs_equal(model, tokens(model, B, PREFIX + CONTINUATION, 4), SPLITS)


@pytest.mark.parametrize("spec", ["examples/gated_deltanet.nl", "examples/titans.nl", "examples/titans_mac.nl"],
                         ids=example_id)
def test_decoding_token_by_token_equals_the_whole_run(spec, model_of):
    """The split at every position: one call per token (the chunked backend)."""
    model = set_backend(model_of(spec), "chunked")
    x = tokens(model, B, 19, 5)
    with torch.no_grad():
        whole, whole_state = model(x)
        state, outs = None, []
        for t in range(x.shape[1]):
            y, state = model(x[:, t:t + 1], state)
            outs.append(y)
    assert_close(whole, torch.cat(outs, dim=1), "logits decoded token by token")
    assert_states_close(whole_state, state, "state decoded token by token")
    assert all(t.shape[0] == B for t in flatten_state(state).values() if t.dim() > 0)
