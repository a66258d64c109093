"""Shared helpers of the Triton tests: running one memory configuration through the reference
(float64), the chunked path and the generated kernels (float32, or bf16 on a GPU), and the error ratios
of the correctness contract (docs/semantics.md §6: RMS(x - y) / RMS(x)). The reference runs on the CPU;
the other paths run on DEVICE: the GPU where there is one, else the CPU under the Triton interpreter."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from memory_testkit import ANCHOR_RATIO, GATE_RATIO, OUTPUT_RATIO, Inputs, gradients, make_inputs, probe_loss, \
    random_state, ratio, state_leaves  # noqa: E402,F401  (the ratios: re-exported to the Triton tests)

from nldsl.runtime.memory import MemoryConfig, MemoryState, chunked, reference  # noqa: E402
from nldsl.runtime.memory.inputs import start_state  # noqa: E402

# two float32 paths of the same arithmetic (the kernels against the chunked path): every output, state
# and gradient, so that an error of a per cent in one term cannot hide under the bounds above
FLOAT32_RATIO = 1e-4

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _leaves_like(x, make):
    """x (a tensor, a dict of them or a memory state) with every tensor replaced by make(tensor); an
    anchor that is its theta stays shared."""
    if x is None:
        return None
    if isinstance(x, dict):
        return {n: _leaves_like(t, make) for n, t in x.items()}
    if isinstance(x, MemoryState):
        params = _leaves_like(x.params, make)
        anchor = {n: params[n] if t is x.params[n] else make(t) for n, t in x.anchor.items()}
        return MemoryState(params, anchor, _leaves_like(x.momentum, make), x.position)
    return make(x)


def to32(x, dtype: torch.dtype = torch.float32):
    """A fresh leaf copy on DEVICE in `dtype` (tensors, dicts of them, memory states)."""
    return _leaves_like(x, lambda t: t.detach().to(DEVICE, dtype).requires_grad_(True))


def rounded(x, dtype: torch.dtype):
    """A float64 leaf copy of x rounded through `dtype` (the values a `dtype` path receives)."""
    return _leaves_like(x, lambda t: t.detach().to(dtype).double().requires_grad_(True))


@dataclass
class Case:
    cfg: MemoryConfig
    objective: object
    batch: int = 2
    heads: int = 2
    tokens: int = 10
    position: Optional[int] = None       # a carried-in state at this position, or a fresh sequence
    seed: int = 0
    eta_max: float = 0.4                 # write rates drawn in (0.02, eta_max)
    dtype: torch.dtype = torch.float32   # of the chunked and triton paths' inputs


@dataclass
class Run:
    y: torch.Tensor
    state: MemoryState
    grads: dict

    def bounded(self, limit: float = 1e6) -> bool:
        """Outputs and state all below `limit`: some drawn rule combinations diverge (momentum with no
        retention, a self-generated target) and a float32 path then overflows where float64 does not;
        comparing such runs proves nothing."""
        values = [self.y, *(t for n, t in self.state.to_tensors().items() if n != "position")]
        return all(bool(t.detach().abs().max() < limit) for t in values if t.numel())


def _gates(case: Case, gates: dict) -> dict:
    return {n: gates[n] for n in case.cfg.required_gates()}


def run_reference(case: Case) -> Run:
    """float64 ground truth: outputs, final state and the gradients of a fixed probe loss."""
    inp = make_inputs(case.cfg, case.batch, case.heads, case.tokens, case.seed, eta_max=case.eta_max)
    st = None if case.position is None else random_state(case.cfg, case.batch, case.heads, case.position,
                                                         case.seed + 1)
    gates = _gates(case, inp.gates)
    if case.dtype != torch.float32:  # the values the lower-precision path sees, in float64
        inp = Inputs(*(rounded(t, case.dtype) for t in (inp.q, inp.k, inp.v)), rounded(inp.gates, case.dtype),
                     rounded(inp.params0, case.dtype))
        gates, st = _gates(case, inp.gates), rounded(st, case.dtype)
    y, end = reference(case.cfg, case.objective, inp.q, inp.k, inp.v, gates, inp.params0, st)
    leaves = _leaves(inp, gates, st)
    return Run(y, end, gradients(probe_loss(y, end, case.seed + 2), leaves))


def _case_inputs(case: Case) -> tuple:
    """q, k, v, gates, params0 and the carried-in state (or None) of a case, in case.dtype on DEVICE."""
    inp = make_inputs(case.cfg, case.batch, case.heads, case.tokens, case.seed, eta_max=case.eta_max)
    st = None if case.position is None else random_state(case.cfg, case.batch, case.heads, case.position,
                                                         case.seed + 1)
    q, k, v = (to32(t, case.dtype) for t in (inp.q, inp.k, inp.v))
    return q, k, v, to32(_gates(case, inp.gates), case.dtype), to32(inp.params0, case.dtype), to32(st, case.dtype)


def run_forward(case: Case, kernels) -> Run:
    """The case's forward alone on `kernels`, under no_grad (so it keeps nothing for a backward)."""
    q, k, v, gates, params0, st32 = _case_inputs(case)
    with torch.no_grad():
        y, end = kernels.run(case.cfg, case.objective, q, k, v, gates, start_state(case.cfg, params0, st32, k))
    return Run(y, end, {})


def run_path(case: Case, path: str, kernels=None) -> Run:
    """The same case in case.dtype on DEVICE, on the chunked path or on `kernels` (a LevelKernels)."""
    q, k, v, gates, params0, st32 = _case_inputs(case)
    if path == "chunked":
        y, end = chunked(case.cfg, case.objective, q, k, v, gates, params0, st32)
    else:
        start = start_state(case.cfg, params0, st32, k)
        y, end = kernels.run(case.cfg, case.objective, q, k, v, gates, start)
    leaves = {"q": q, "k": k, "v": v}
    leaves.update({f"gate.{n}": g for n, g in gates.items()})
    leaves.update({f"theta0.{n}": p for n, p in params0.items()})
    if st32 is not None:
        leaves.update(state_leaves(st32))
        for n in list(leaves):
            if n.startswith("theta0."):
                del leaves[n]
    loss = probe_loss(y.cpu().double(), _double_state(end), case.seed + 2)
    return Run(y, end, gradients(loss, leaves))


def _double_state(state: MemoryState) -> MemoryState:
    d = lambda g: None if g is None else {n: t.cpu().double() for n, t in g.items()}  # noqa: E731
    return MemoryState(d(state.params), d(state.anchor), d(state.momentum), state.position)


def _leaves(inp, gates, st) -> dict:
    leaves = {"q": inp.q, "k": inp.k, "v": inp.v}
    leaves.update({f"gate.{n}": g for n, g in gates.items()})
    if st is None:
        leaves.update({f"theta0.{n}": p for n, p in inp.params0.items()})
    else:
        leaves.update(state_leaves(st))
    return leaves


def compare(expected: Run, actual: Run, what: str, grads: bool = True, limit: Optional[float] = None) -> None:
    """Outputs and states within OUTPUT_RATIO; gradients within the gate / anchor ratios; everything within
    `limit` where given."""
    output_ratio = OUTPUT_RATIO if limit is None else limit
    assert ratio(expected.y, actual.y) <= output_ratio, f"{what}: y ratio {ratio(expected.y, actual.y):.2e}"
    exp, act = expected.state.to_tensors(), actual.state.to_tensors()
    assert set(exp) == set(act), f"{what}: state entries {sorted(act)} != {sorted(exp)}"
    assert expected.state.position == actual.state.position
    for key in exp:
        if key != "position":
            r = ratio(exp[key], act[key])
            assert r <= output_ratio, f"{what}: state {key} ratio {r:.2e}"
    if not grads:
        return
    assert set(expected.grads) == set(actual.grads), f"{what}: {sorted(actual.grads)} != {sorted(expected.grads)}"
    for name in expected.grads:
        bound = limit if limit is not None else GATE_RATIO if name.startswith("gate.") else ANCHOR_RATIO
        r = ratio(expected.grads[name], actual.grads[name])
        assert r <= bound, f"{what}: d/d{name} ratio {r:.2e} (limit {bound})"


def float32_can_match(case: Case) -> bool:
    """Whether float32 itself, on the chunked path, stays within FLOAT32_RATIO of the float64 reference
    on this case. Drawn rule combinations can be ill-conditioned (a memory that grows, two gradient
    steps a token): where the chunked path's own rounding already exceeds the ratio, a kernel's
    difference from the reference says nothing about its exactness, and the random tests skip it."""
    reference = run_reference(case)
    if not reference.bounded():
        return False
    try:
        compare(reference, run_path(case, "chunked"), "float32 chunked vs reference", limit=FLOAT32_RATIO)
    except AssertionError:
        return False
    return True


def split_run(kernels, case: Case, cuts) -> tuple[torch.Tensor, MemoryState]:
    """The case's tokens run on `kernels` as calls cut at `cuts` (no gradients), each carrying the state
    the last left: y of all calls and the final state."""
    inp = make_inputs(case.cfg, case.batch, case.heads, case.tokens, case.seed, grad=False)
    q, k, v = to32(inp.q), to32(inp.k), to32(inp.v)
    gates = {n: to32(inp.gates[n]) for n in case.cfg.required_gates()}
    params0 = to32(inp.params0)
    state, outs = None, []
    bounds = [0, *cuts, case.tokens]
    for a, b in zip(bounds, bounds[1:]):
        start = start_state(case.cfg, params0, state, k)
        y, state = kernels.run(case.cfg, case.objective, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b],
                               {n: g[:, :, a:b] for n, g in gates.items()}, start)
        outs.append(y)
    return torch.cat(outs, 2), state


def kernels(cfg: MemoryConfig, objective, level: str = "tests.mem"):
    """The generated kernels of a memory configuration (the test fails with the reason if there are none)."""
    from nldsl.runtime.triton.registry import kernels_for

    found, reason = kernels_for(cfg, objective, level)
    assert found is not None, reason
    return found


def compare_model_runs(expected, actual, bound: float = FLOAT32_RATIO) -> None:
    """(logits, grads) of two model_run calls: gradients for the same parameters, logits within
    OUTPUT_RATIO, every gradient within ANCHOR_RATIO, and both within `bound` (FLOAT32_RATIO unless the
    caller measured the model's own float32 error) when both runs are float32."""
    (logits0, grads0), (logits, grads) = expected, actual
    exact = logits0.dtype == logits.dtype == torch.float32
    assert sorted(grads) == sorted(grads0), f"gradients for one run only: {sorted(set(grads) ^ set(grads0))}"
    assert ratio(logits0, logits) <= (bound if exact else OUTPUT_RATIO)
    for name in grads0:
        assert ratio(grads0[name], grads[name]) <= (bound if exact else ANCHOR_RATIO), name


def float32_error(exact, run) -> float:
    """The largest ratio between a float64 model_run and a float32 one of the same model: logits and
    every gradient. How far float32 rounding alone takes this model."""
    (logits0, grads0), (logits, grads) = exact, run
    return max([ratio(logits0, logits.double())] + [ratio(grads0[n], grads[n].double()) for n in grads0])


def model_run(model, tokens: int = 10):
    """Logits of a fixed random batch (2 rows) and every parameter's gradient of its next-token loss
    (the model is moved to DEVICE)."""
    torch.manual_seed(3)
    model.to(DEVICE)
    x = torch.randint(0, model.vocab_size, (2, tokens)).to(DEVICE)
    logits, _ = model(x)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, model.vocab_size), x[:, 1:].reshape(-1))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return logits, grads


def tf32_truncated(x):
    """float32 values as an NVIDIA tensor core reads them in tf32: the low 13 mantissa bits dropped."""
    import numpy as np

    return (np.asarray(x, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def round_bf16_to_nearest(monkeypatch) -> None:
    """Under the Triton interpreter, float32 converted to bf16 rounds to the nearest, as a GPU's
    conversion does (the interpreter truncates: an error of one sign, which a stored term or state that
    is read back accumulates)."""
    import numpy as np
    import triton.language as tl
    import triton.runtime.interpreter as interpreter

    truncating = interpreter.InterpreterBuilder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.array(src.data, dtype=np.float32)).to(torch.bfloat16)
            return interpreter.TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)
        return truncating(self, src, dst_type)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "cast_impl", cast_impl)


def emulate_tensor_cores(monkeypatch) -> None:
    """Under the Triton interpreter, tl.dot as a GPU's tensor cores compute it: in tf32 each float32
    operand read as tf32 by truncation; bf16 and fp16 operands multiplied exactly and accumulated in
    float32 (the interpreter multiplies bf16's bits as integers); float32 rounded to bf16 to the nearest
    (the interpreter truncates, an error of one sign); and the launchers choosing tf32 for
    half-precision callers, and bf16 operands read from memory multiplied as stored, as on a GPU. The interpreter's own tl.dot ignores the precision
    (exact float32), which hides what tf32 does to a carried state."""
    import numpy as np
    import triton.runtime.interpreter as interpreter
    from triton._C.libtriton import ir

    from nldsl.runtime.triton import launch

    exact = interpreter.InterpreterBuilder.create_dot

    def as_float32(data):   # the interpreter keeps bf16 as its bits, in uint16
        return (data.astype(np.uint32) << 16).view(np.float32) if data.dtype == np.uint16 else data.astype(np.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.data.dtype in (np.uint16, np.float16):
            out = np.matmul(as_float32(a.data), as_float32(b.data))
        elif a.data.dtype != np.float32 or input_precision == ir.INPUT_PRECISION.IEEE:
            return exact(self, a, b, d, input_precision, max_num_imprecise_acc)
        else:
            out = np.matmul(tf32_truncated(a.data), tf32_truncated(b.data))
        return interpreter.TensorHandle(out.astype(np.float32) + d.data, d.dtype.scalar)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)
    round_bf16_to_nearest(monkeypatch)
    gpu_precision = lambda dtype: "ieee" if dtype in (torch.float32, torch.float64) else "tf32"  # noqa: E731
    monkeypatch.setattr(launch.LevelKernels, "precision", staticmethod(gpu_precision))
    as_stored = lambda self, *tensors: (self.stored_products and launch.shares_half_dtype(*tensors)  # noqa: E731
                                        and tensors[0].dtype == torch.bfloat16)
    monkeypatch.setattr(launch.LevelKernels, "multiplies_as_stored", as_stored)
