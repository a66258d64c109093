"""`nlc doctor`: what this machine gives nlc, and whether every backend computes the same model here.

Four sections of findings: the packages nlc needs and the optional ones (with what each one enables),
the devices torch sees, which backends can run on the chosen device (and why not), and a check that
runs a model (a small built-in one with a memory of each kernel family, or the user's spec) forward
and backward on every backend that can run, against the float64 token-by-token reference. The check
reports each memory level that falls back from the triton backend, with the reason, as its warning
says it. On a CUDA device it also replays a training segment of each backend as a CUDA graph, as
`nlc train --cuda-graphs` does, against the same segment run eagerly.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import __version__

BUILTIN_SPEC = Path(__file__).with_name("doctor.nl")

# (import name, distribution name, what needs it)
REQUIRED = (("torch", "torch", "everything"), ("lark", "lark", "the parser"), ("networkx", "networkx", "the level graph"),
            ("jinja2", "Jinja2", "the code generator"), ("click", "click", "the command line"),
            ("rich", "rich", "terminal output"), ("safetensors", "safetensors", "checkpoints"),
            ("numpy", "numpy", "data loading"), ("matplotlib", "matplotlib", "nlc plot"))
# what compiling and running a model needs: without one of these the report stops at the packages
NEEDED_BY_THE_CHECK = ("torch", "lark", "jinja2", "networkx")
OPTIONAL = (("triton", "triton", "the triton backend (Linux)"),
            ("transformers", "transformers", "nlc export --hf (pip install 'nlc[hf]')"),
            ("titans_pytorch", "titans-pytorch", "benchmarks/peer_titans.py (pip install 'nlc[titans]')"),
            ("fla", "fla-core", "benchmarks/gpu/kernels_vs_fla.py (pip install fla-core)"),
            ("pytest", "pytest", "the test suite (pip install 'nlc[test]')"),
            ("hypothesis", "hypothesis", "the test suite (pip install 'nlc[test]')"))

# The largest relative difference from the float64 reference a float32 backend may show: rounding
# gives 1e-6 to 1e-5 on the built-in model; a wrong kernel or a wrong chunked form gives far more.
TOLERANCE = 1e-3
SMOKE_TOKENS = 40      # not a multiple of a chunk: the last one is partial
# A replay runs the eager segment's kernels on the same values: any difference is a graph that missed
# part of the segment
GRAPH_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Finding:
    section: str       # 'packages', 'devices', 'backends', 'check'
    name: str
    status: str        # 'ok', 'note' (optional, or informative), 'missing' (required), 'fail'
    detail: str

    @property
    def bad(self) -> bool:
        return self.status in ("missing", "fail")


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def packages() -> list[Finding]:
    found = []
    for required, table in ((True, REQUIRED), (False, OPTIONAL)):
        for module, dist, use in table:
            present = importlib.util.find_spec(module) is not None
            version = _version(dist) if present else None
            if present:
                found.append(Finding("packages", dist, "ok", f"{version or 'installed'}: {use}"))
            else:
                found.append(Finding("packages", dist, "missing" if required else "note", f"not installed: {use}"))
    return found


def devices() -> list[Finding]:
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    found = [Finding("devices", "python", "ok", f"{platform.python_version()} on {platform.system()} {platform.machine()}"),
             Finding("devices", "torch", "ok", f"{torch.__version__} ({build})"),
             Finding("devices", "cpu", "ok", f"{torch.get_num_threads()} threads")]
    if not torch.cuda.is_available():
        found.append(Finding("devices", "cuda", "note", "no CUDA device" + ("" if torch.version.cuda else
                                                                             " (this torch is a CPU build)")))
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        major, minor = torch.cuda.get_device_capability(i)
        bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16"
        found.append(Finding("devices", f"cuda:{i}", "ok", f"{torch.cuda.get_device_name(i)}, sm_{major}{minor}, {bf16}"))
    return found


def device_problem(device: str) -> Optional[str]:
    """Why `device` cannot be used on this machine (None when it can)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as e:
        return f"{device!r} is not a torch device ({str(e).splitlines()[0]})"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "no CUDA device is visible" if torch.version.cuda else "this torch is a CPU build"
            return f"{device}: CUDA is not available here ({why}: torch {torch.__version__})"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        return f"{device}: MPS is not available here"
    return None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def backends(device: str) -> tuple[list[Finding], list[str]]:
    """Findings for each backend on `device`, and the backends that can run there."""
    import torch

    from .runtime.triton.backend import interpreting, triton_unavailable

    found = [Finding("backends", "reference", "ok", "token by token in float64: the ground truth"),
             Finding("backends", "chunked", "ok", "chunk-parallel PyTorch")]
    runnable = ["reference", "chunked"]
    why_not = triton_unavailable(torch.empty(0, device=device))
    if why_not is None:
        how = "the Triton interpreter (slow: for tests)" if interpreting() and device == "cpu" else "generated kernels"
        found.append(Finding("backends", "triton", "ok", f"{how} on {device}"))
        runnable.append("triton")
    else:
        found.append(Finding("backends", "triton", "note", f"cannot run on {device}: {why_not}"))
    return found, runnable


def check(spec: Path, device: str, runnable: list[str], compiled: bool = False) -> list[Finding]:
    """The model of `spec` forward and backward on each runnable backend (float32 on `device`) against
    the reference (float64 on the CPU): logits and every parameter's gradient; `compiled`: the chunked
    backend with its tile steps compiled too."""
    import torch

    from . import load
    from .runtime import set_backend
    from .runtime.memory.compiled import CompileFallbackWarning
    from .runtime.triton.backend import TritonFallbackWarning

    torch.manual_seed(0)
    base = load(str(spec))
    tokens = torch.randint(0, base.vocab_size, (2, SMOKE_TOKENS), generator=torch.Generator().manual_seed(0))

    def run(backend: str, dtype, on: str, compile: bool = False) -> tuple[dict, float, list[str]]:
        model = set_backend(copy.deepcopy(base), backend, compile).to(device=on, dtype=dtype)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TritonFallbackWarning)
            warnings.simplefilter("always", CompileFallbackWarning)
            start = time.perf_counter()
            logits, _ = model(tokens.to(on))
            logits.float().square().mean().backward()
            seconds = time.perf_counter() - start
        values = {"logits": logits.detach().double().cpu()}
        values.update((name, p.grad.double().cpu()) for name, p in model.named_parameters() if p.grad is not None)
        fallbacks = [str(w.message) for w in caught
                     if issubclass(w.category, (TritonFallbackWarning, CompileFallbackWarning))]
        return values, seconds, fallbacks

    truth, seconds, _ = run("reference", torch.float64, "cpu")
    if device.startswith("cuda"):
        graphed = cuda_graphs(base, tokens, device, runnable[1:])
    else:
        graphed = [Finding("check", "cuda graphs", "note", f"need a CUDA device, not {device} "
                                                           "(what `nlc train --cuda-graphs` replays)")]
    found = [Finding("check", "reference", "ok", f"float64 on cpu, {seconds:.2f} s")]
    variants = [(backend, backend, False) for backend in runnable[1:]]
    variants += [("compiled", "chunked", True)] if compiled else []
    for label, backend, compile in variants:
        try:
            got, seconds, fallbacks = run(backend, torch.float32, device, compile)
        except Exception as e:  # noqa: BLE001 - a backend that cannot run this model is the finding
            found.append(Finding("check", label, "fail", f"raised {type(e).__name__}: {e}"))
            continue
        name, worst = max(((n, _relative(got[n], truth[n])) for n in truth), key=lambda item: item[1])
        status = "ok" if worst <= TOLERANCE else "fail"
        how = "chunked with compiled tile steps (the first call compiles), " if compile else ""
        found.append(Finding("check", label, status, f"{how}float32 on {device}, {seconds:.2f} s: largest difference "
                                                     f"from the reference {worst:.1e} ({name}; at most {TOLERANCE:.0e})"))
        found += [Finding("check", label, "note", message) for message in dict.fromkeys(fallbacks)]
    return found + graphed


def cuda_graphs(base, tokens, device: str, backends: list[str], capture=None) -> list[Finding]:
    """On each backend, a training segment from carried states replayed as a CUDA graph (`capture(model)`,
    by default a CUDA capture), against the same segment run eagerly: the loss, every gradient and
    every state out."""
    import torch

    from .runtime import set_backend
    from .runtime.train.graphs import CudaGraphs, SegmentGraphs, flatten
    from .runtime.train.loop import train_segment

    capture = capture or (lambda model: CudaGraphs())
    half = tokens.shape[1] // 2
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    found = []
    for backend in backends:
        model = set_backend(copy.deepcopy(base), backend).to(device=device, dtype=torch.float32)
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            _, state = model(x[:, :half])
        seg = (x[:, half:], y[:, half:])

        def segment(*args):
            return train_segment(model, *args)

        def grads():
            out = [None if p.grad is None else p.grad.clone() for p in params]
            for p in params:
                p.grad = None
            return out

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                graphs = SegmentGraphs(segment, params, capture(model))
                graphs(*seg, state)                   # the segment seen
                graphs(*seg, state)                   # captured and replayed
                grads()
                loss, out = segment(*seg, state)
                want = [loss, *grads(), *flatten(out)[0]]
                loss, out = graphs(*seg, state)
                got = [loss, *grads(), *flatten(out)[0]]
        except Exception as e:  # noqa: BLE001 - a segment that cannot be captured is the finding
            found.append(Finding("check", "cuda graphs", "fail", f"{backend}: raised {type(e).__name__}: {e}"))
            continue
        if graphs.failed or graphs.counts["replayed"] < 2:
            why = graphs.failed or "; ".join(str(w.message) for w in caught) or "no replay"
            found.append(Finding("check", "cuda graphs", "fail", f"{backend}: the segment was not replayed: {why}"))
            continue
        worst = max((_relative(g.double().cpu(), w.double().cpu()) for g, w in zip(got, want) if w is not None),
                    default=0.0)
        status = "ok" if worst <= GRAPH_TOLERANCE else "fail"
        found.append(Finding("check", "cuda graphs", status, f"{backend}: a training segment replayed against the "
                                                              f"same segment run eagerly: largest difference "
                                                              f"{worst:.1e} (at most {GRAPH_TOLERANCE:.0e})"))
    return found


def _relative(got, want) -> float:
    """The largest difference relative to the largest magnitude; inf where either holds NaN (which no
    comparison would let through as the worst)."""
    scale = want.abs().max().item()
    diff = (got - want).abs().max().item()
    diff = diff / scale if scale > 0 else diff
    return diff if diff == diff else float("inf")


def diagnose(spec: Optional[Path], device: Optional[str], run_check: bool, compiled: bool = False) -> list[Finding]:
    found = packages()
    blocking = {dist for module, dist, _ in REQUIRED if module in NEEDED_BY_THE_CHECK}
    if any(f.bad and f.name in blocking for f in found):
        return found
    device = device or default_device()
    found += devices()
    backend_findings, runnable = backends(device)
    found += backend_findings
    if run_check:
        found += check(spec or BUILTIN_SPEC, device, runnable, compiled)
    return found


def render_text(findings: list[Finding], styled: bool) -> str:
    import click

    colours = {"ok": "green", "note": "yellow", "missing": "red", "fail": "red"}
    lines = [f"nlc {__version__}"]
    section = None
    for f in findings:
        if f.section != section:
            section = f.section
            lines.append(f"{section}:")
        status = f"{f.status:7s}"
        if styled:
            status = click.style(status, fg=colours[f.status])
        lines.append(f"  {status} {f.name:14s} {f.detail}")
    bad = sum(f.bad for f in findings)
    lines.append("all good" if not bad else f"{bad} problem{'s' if bad > 1 else ''}")
    return "\n".join(lines)


def to_json(findings: list[Finding]) -> dict:
    return {"nlc": __version__, "ok": not any(f.bad for f in findings),
            "findings": [{"section": f.section, "name": f.name, "status": f.status, "detail": f.detail}
                         for f in findings]}
