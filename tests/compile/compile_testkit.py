"""Shared helpers for the compile tests: compiling specs, loading models, flattening carried states and
the float64 comparison of the correctness contract (docs/semantics.md §6)."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Optional

import torch

from nldsl.compiler import compile_spec, load, write_package
from nldsl.runtime import KVCache, MemoryLevel, MemoryState, set_backend

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "examples").glob("*.nl"))
DTYPE = torch.float64


def example_id(spec: str) -> str:
    return Path(spec).stem


def in_root():
    """A context that runs with the repository root as the working directory (relative spec paths)."""
    class _Cwd:
        def __enter__(self):
            self.old = os.getcwd()
            os.chdir(ROOT)

        def __exit__(self, *exc):
            os.chdir(self.old)
    return _Cwd()


def write_spec(directory: Path, text: str, name: str = "spec.nl") -> Path:
    path = Path(directory) / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def compile_ok(spec) -> dict:
    """The compiled files of a spec that must check clean (warnings allowed)."""
    fe, files = compile_spec(str(spec))
    errors = [d for d in fe.diagnostics if d.is_error]
    assert files is not None and not errors, "\n".join(f"{d.code}: {d.message}" for d in fe.diagnostics)
    return files


def build(spec, out_dir: Path, backend: str = "chunked", seed: int = 0):
    """Compile `spec` into out_dir, import it and build its model in float64 with a fixed seed."""
    fe, files = compile_spec(str(spec))
    assert files is not None, "\n".join(f"{d.code}: {d.message}" for d in fe.diagnostics)
    target = write_package(files, str(out_dir), fe.model.name, force=True)
    torch.manual_seed(seed)
    return load(target, backend=backend).double()


def memory_levels(model) -> dict[str, MemoryLevel]:
    return {name: m for name, m in model.named_modules() if isinstance(m, MemoryLevel)}


def flatten_state(state: dict) -> dict[str, torch.Tensor]:
    """Every tensor a model carries between calls, by a stable name."""
    flat = {}
    for key in sorted(state):
        value = state[key]
        if value is None:
            continue
        if isinstance(value, MemoryState):
            for name, t in value.to_tensors().items():
                flat[f"{key}/{name}"] = t
        elif isinstance(value, KVCache):
            flat[f"{key}/k"], flat[f"{key}/v"] = value.k, value.v
            flat[f"{key}/position"] = torch.tensor(value.position)
        elif isinstance(value, torch.Tensor):
            flat[key] = value
        else:
            raise TypeError(f"unexpected carried state {key}: {type(value).__name__}")
    return flat


def scale(x: torch.Tensor) -> float:
    return max(1.0, x.detach().double().pow(2).mean().sqrt().item()) if x.numel() else 1.0


def assert_close(expected: torch.Tensor, actual: torch.Tensor, what: str, rtol: float = 1e-9) -> None:
    """max |x - y| <= rtol * max(1, RMS(x)): the float64 tolerance of the correctness contract."""
    assert tuple(expected.shape) == tuple(actual.shape), f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if not expected.numel():
        return
    err = (expected.detach().double() - actual.detach().double()).abs().max().item()
    assert err <= rtol * scale(expected), f"{what}: max abs diff {err:.3e} (scale {scale(expected):.3e})"


def assert_states_close(expected: dict, actual: dict, what: str) -> None:
    exp, act = flatten_state(expected), flatten_state(actual)
    assert sorted(exp) == sorted(act), f"{what}: carried entries differ: {sorted(act)} != {sorted(exp)}"
    for key in exp:
        assert_close(exp[key], act[key], f"{what} {key}")


def assert_split_runs_equal(run, x: torch.Tensor, splits, what: str = "") -> None:
    """`run(x)` against `run(x[:, :a])` then `run(x[:, a:], state)` for each a in `splits`: the outputs
    and the states out (`run(inputs, state=None) -> (outputs, state)`: a model, a block layer)."""
    with torch.no_grad():
        whole, whole_state = run(x)
        for a in splits:
            first, state = run(x[:, :a])
            second, state = run(x[:, a:], state)
            assert_close(whole, torch.cat([first, second], dim=1), f"{what}outputs split at {a}")
            assert_states_close(whole_state, state, f"{what}state split at {a}")


def inputs_and_outputs(model, cls, x):
    """(module, input, output): the first module of class `cls` inside `model` and what it receives and
    returns when `model` reads x; (None, None, None) when `model` has none."""
    seen = {}
    target = next((m for m in model.modules() if type(m) is cls), None)
    if target is None:
        return None, None, None

    def hook(module, args, output):
        seen.setdefault("io", (args[0].detach().clone(), output.detach().clone()))

    handle = target.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return (target, *seen["io"])


def probe(outputs: torch.Tensor, state: Optional[dict], seed: int) -> torch.Tensor:
    """A fixed random linear functional of the outputs and of every floating carried tensor."""
    gen = torch.Generator().manual_seed(seed)
    total = (outputs * torch.randn(outputs.shape, generator=gen, dtype=outputs.dtype)).sum()
    for key, value in (flatten_state(state) if state else {}).items():
        if value.is_floating_point():  # every one, so both backends draw the same weights for the same entry
            total = total + (value * torch.randn(value.shape, generator=gen, dtype=value.dtype)).sum()
    return total


def tokens(model, batch: int, length: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.vocab_size, (batch, length), generator=gen)


def run_with_gradients(model, prefix: torch.Tensor, continuation: torch.Tensor, seed: int):
    """Logits and states of `prefix` then `continuation` (carrying the state), and the gradients of a probe
    of both with respect to every parameter and to both calls' embedding outputs."""
    embedded = []
    hook = model.embed.register_forward_hook(lambda module, inputs, output: embedded.append(output))
    try:
        logits_p, state_p = model(prefix)
        logits_c, state_c = model(continuation, state_p)
    finally:
        hook.remove()
    loss = probe(logits_p, None, seed) + probe(logits_c, state_c, seed + 1)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    leaves = [params[n] for n in names] + embedded
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    named = {f"d/d {n}": g for n, g in zip(names + ["embedded prefix", "embedded continuation"], grads)}
    return logits_p, state_p, logits_c, state_c, named


def assert_runs_agree(ref, chk) -> list[str]:
    """Two `run_with_gradients` results equal to the float64 bound: logits, carried states and every
    gradient, for the same parameters (a parameter that neither depends on has none on both: the keys
    and values of a memory that never writes, say). The parameters neither run depends on."""
    assert_close(ref[0], chk[0], "prefix logits")
    assert_states_close(ref[1], chk[1], "state after the prefix")
    assert_close(ref[2], chk[2], "continuation logits")
    assert_states_close(ref[3], chk[3], "state after the continuation")
    assert sorted(ref[4]) == sorted(chk[4])
    unused = []
    for name, g_ref in ref[4].items():
        g_chk = chk[4][name]
        if g_ref is None or g_chk is None:
            assert g_ref is None and g_chk is None, f"{name}: a gradient on one backend only"
            unused.append(name)
        else:
            assert_close(g_ref, g_chk, name)
    return unused


__all__ = ["DTYPE", "EXAMPLES", "ROOT", "assert_close", "assert_runs_agree", "assert_split_runs_equal",
           "assert_states_close", "build", "compile_ok", "example_id", "flatten_state", "in_root", "inputs_and_outputs",
           "memory_levels", "probe", "run_with_gradients", "scale", "set_backend", "tokens", "write_spec"]
