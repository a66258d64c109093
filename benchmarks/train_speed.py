"""Training speed (tokens/s) of a compiled spec against the `nested-learning` package's HOPE and a plain
PyTorch Transformer of the same width, depth, heads and vocabulary, in one process on one batch.

    python benchmarks/train_speed.py [--spec examples/hope.nl] [--batch 8] [--seq 256] [--steps 3]
                                     [--warmup 2] [--threads 2] [--data random|corpus] [--no-peer]
                                     [--peer-mode fast_state|inplace] [--no-apart] [--profile] [--quiet]

Contenders, each timed for a full training step (forward, loss, backward, optimizer step and every
inner/online update the method makes):

(a) nlc: the spec compiled and loaded as `nlc train` does it, stepped by `nldsl.runtime.train.NestedLoop`
    (segments at the CMS window ends, in-context memories, CMS optimizer steps, the outer AdamW).
(b) nested-learning (`pip install nested-learning`, an optional benchmark extra: `pip install
    'nlc[bench]'`): its `HOPEModel` with `block_variant="hope_selfmod"` (self-modifying Titans + CMS),
    sized from the spec, stepped the way its trainer's online branch does it: the sequence is cut into
    chunks of the fastest CMS period; per chunk a differentiable forward, the loss, per-layer teach
    signals, backward, then a no-grad update pass that writes the self-modifying memories and the CMS;
    then gradient clipping and AdamW over all parameters. `--peer-mode fast_state` (default) keeps the
    memories in per-sequence fast state whose initial values are meta-learned (the package's
    paper-faithful setting); `inplace` writes into the module parameters (its default pilot setting).
(c) a plain pre-norm Transformer (causal SDPA, MLP x4, tied head, AdamW), defined below;
(d) when the spec has sibling memories that run as one stack (hope.nl's four generator memories),
    nlc again with each stack's members run one by one (`nldsl.runtime.memory_stack.one_by_one`), as
    the generated code ran them before stacking: what stacking saves (`--no-apart` skips it).

The three run round-robin after their warm-up steps, so a busy machine slows all of them alike; tokens/s
is batch x seq over the median wall time of a step. Both configurations, both parameter counts and every
difference between the two HOPEs that the peer's configuration cannot remove are printed. `--profile`
adds where one nlc training step spends its time (torch.profiler operators and cProfile functions).
The last line is `speedup_vs_nested_learning: X` (nlc tokens/s over nested-learning's; the goal is 2).
On a machine shared with other work, set OMP_WAIT_POLICY=PASSIVE (or --threads 1): OpenMP's default
busy-waiting slows steps made of many small operators far more than steps made of few large ones.
Figures are printed for people to read; nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
GOAL = 2.0
PEER_VERSION = "0.2.0"  # the version these wiring notes were checked against


# ------------------------------------------------------------------------------------------- (a) nlc


class Nlc:
    name = "nlc"

    def __init__(self, spec: str, seed: int):
        from nldsl.compiler import _import_package, compile_spec, write_package
        from nldsl.diagnostics import SpecError
        from nldsl.runtime import set_backend
        from nldsl.runtime.optim import make_optimizer
        from nldsl.runtime.train import NestedLoop

        fe, files = compile_spec(spec)
        if files is None:
            raise SpecError(fe.diagnostics)
        self.stacked = "rt.MemoryStack(" in files["model.py"]
        self._tmp = tempfile.TemporaryDirectory(prefix="nlc-train-speed-")
        package = write_package(files, self._tmp.name, "model", force=True)
        module = _import_package(package)
        torch.manual_seed(seed)
        self.model = set_backend(module.Model(), "chunked")
        levels = json.loads((package / "levels.json").read_text())
        self.info = levels["runtime"]
        self.levels = levels["levels"]
        self.loop = NestedLoop(self.model, self.info, make_optimizer)
        self.ir = fe.model
        consts = dict(fe.model.constants)
        self.sizes = {"vocab": int(fe.model.vocab), "dim": int(fe.model.dim),
                      "heads": int(consts.get("heads", 1)), "layers": int(consts.get("layers", 1))}

    def step(self, batch: torch.Tensor) -> float:
        return self.loop.step(batch).loss

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def cms_periods(self) -> list[int]:
        return [lv["period"] for cms in self.info.get("cms", []) for lv in cms["levels"] if lv["unit"] == "tokens"]

    def memory_chunks(self) -> list[int]:
        return sorted({m["chunk"] for m in self.info.get("memories", []) if m.get("chunk")})

    def describe(self) -> dict:
        mem = [lv for lv in self.levels if lv["kind"] == "memory"]
        cms = [lv for lv in self.levels if lv["kind"] == "cms"]
        outer = self.info["outer"]
        opt = outer["optimizer"]
        cms_opts = sorted({f'{lv["optimizer"]["kind"]}(lr={lv["optimizer"]["args"].get("lr")})'
                           for c in self.info.get("cms", []) for lv in c["levels"]})
        chunks = ", ".join(f'{m["name"].split(".")[-1]} {m["clock"]["chunk"]}' for m in mem) or "-"
        return {
            "vocab / dim / heads / layers": "{vocab} / {dim} / {heads} / {layers}".format(**self.sizes),
            "memories per layer": f"{len(mem)}: {mem[0]['type']}" if mem else "none",
            "memory chunks (tokens)": chunks,
            "memory gradient path": "backprop through the writes inside each segment",
            "memory state": (mem[0]["notes"][1] if mem and len(mem[0]["notes"]) > 1 else "-"),
            "CMS levels (period)": ", ".join(f'{lv["name"].split(".")[-1]} {lv["clock"]["period"] or "-"}'
                                             for lv in cms) or "none",
            "CMS MLP": cms[0]["type"] if cms else "-",
            "CMS update": (", ".join(cms_opts) + ", window-summed LM-loss gradient, state "
                           + "/".join(sorted({c["lifetime"] for c in self.info["cms"]}))) if cms else "-",
            "segments per sequence": "cut at every CMS window end",
            "outer optimizer": f'{opt["kind"]}(lr={opt["args"].get("lr")}, betas={tuple(opt["args"].get("betas", ()))},'
                               f' wd={opt["args"].get("weight_decay")}), clip {outer.get("clip")}',
        }


class NlcApart(Nlc):
    """nlc with every MemoryStack running its members one by one, as the generated code ran them before
    stacking (the same results): what stacking saves, side by side."""

    name = "nlc, one by one"

    def step(self, batch: torch.Tensor) -> float:
        from nldsl.runtime.memory_stack import one_by_one

        with one_by_one():
            return super().step(batch)


# ------------------------------------------------------------------------------ (b) nested-learning


def load_peer():
    """The peer package's pieces, or (None, reason)."""
    try:
        from importlib.metadata import version

        from nested_learning.levels import LevelSpec
        from nested_learning.model import HOPEModel, ModelConfig
        from nested_learning.training import _compute_layer_teach_signals, _iter_online_boundary_chunks
    except ImportError as e:
        return None, f"{e.__class__.__name__}: {e}"
    return {"LevelSpec": LevelSpec, "HOPEModel": HOPEModel, "ModelConfig": ModelConfig,
            "teach": _compute_layer_teach_signals, "chunks": _iter_online_boundary_chunks,
            "version": version("nested-learning")}, None


class Peer:
    name = "nested-learning"

    def __init__(self, api: dict, sizes: dict, cms_periods: list[int], chunks: list[int], mode: str,
                 outer: dict, cms_lr: float, seed: int):
        LevelSpec, ModelConfig = api["LevelSpec"], api["ModelConfig"]
        self.api, self.mode, self.version = api, mode, api["version"]
        # The package's CMS optimizer is DeepMomentum; beta 0 with no preconditioning is plain SGD.
        sgd = {"type": "deep_momentum", "lr": cms_lr, "params": {"beta": 0.0, "variant": "none"}}
        names = ["cms_fast", "cms_mid", "cms_slow", "cms_slower", "cms_slowest"]
        self.cms_periods = cms_periods
        self.chunk_other, self.chunk_memory = chunks[0], chunks[-1]
        self.config = ModelConfig(
            vocab_size=sizes["vocab"], dim=sizes["dim"], num_layers=sizes["layers"], heads=sizes["heads"],
            titan_level=LevelSpec("titan", self.chunk_other, optimizer_key="cms_opt"),  # unused by hope_selfmod
            cms_levels=[LevelSpec(names[i] if i < len(names) else f"cms_{i}", p, optimizer_key="cms_opt")
                        for i, p in enumerate(cms_periods)],
            optimizers={"cms_opt": sgd},
            block_variant="hope_selfmod",
            qk_l2_norm=True,
            self_mod_chunk_size=self.chunk_other,
            self_mod_chunk_size_memory=self.chunk_memory,
            self_mod_local_conv_window=4,
        )
        torch.manual_seed(seed)
        self.model = api["HOPEModel"](self.config)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=outer["lr"], betas=outer["betas"],
                                     weight_decay=outer["weight_decay"])
        self.clip = outer["clip"]
        self.online_chunk = min(cms_periods)  # the trainer's default: the fastest CMS period

    def step(self, batch: torch.Tensor) -> float:
        """One step of the package's online training branch on a (B, T+1) batch: T supervised targets."""
        model, teach_signals = self.model, self.api["teach"]
        fast_state = model.init_fast_state() if self.mode == "fast_state" else None
        self.opt.zero_grad()
        total, count = 0.0, 0
        for chunk, next_tokens, finalize in self.api["chunks"](batch, chunk_size=self.online_chunk):
            targets = chunk[:, 1:] if next_tokens is None else torch.cat([chunk[:, 1:], next_tokens[:, None]], 1)
            if targets.shape[1] == 0:
                continue
            logits, _, outputs = model.forward_with_block_outputs(chunk, fast_state=fast_state)
            loss = F.cross_entropy(logits[:, :targets.shape[1]].reshape(-1, logits.shape[-1]), targets.reshape(-1))
            signals = teach_signals(loss, outputs)
            loss.backward()
            with torch.no_grad():
                model(chunk, teach_signals=signals, fast_state=fast_state, finalize_updates=finalize)
            total += loss.item() * targets.numel()
            count += targets.numel()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=self.clip)
        self.opt.step()
        return total / max(count, 1)

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def unused_params(self) -> int:
        """M_q's parameters: built by the package, read only with adaptive_q (off in its HOPE configs)."""
        return sum(p.numel() for b in self.model.blocks for p in b.selfmod.m_q.parameters())

    def describe(self) -> dict:
        c = self.config
        d = c.dim
        return {
            "vocab / dim / heads / layers": f"{c.vocab_size} / {d} / {c.heads} (unused by hope_selfmod) / "
                                            f"{c.num_layers}",
            "memories per layer": f"6 (k, v, q, eta, alpha, memory): residual mlp {d}->{d}->{d} (eta, alpha: "
                                  f"{d}->{d}->1), gelu, full width, no heads",
            "memory chunks (tokens)": f"k, v, eta, alpha {self.chunk_other}, memory {self.chunk_memory}",
            "memory gradient path": "stop-grad writes in a no-grad pass after backward",
            "memory state": ("per-sequence fast state, initial state meta-learned" if self.mode == "fast_state"
                             else "module parameters written in place (batch mean)"),
            "CMS levels (period)": ", ".join(f"{s.name} {s.update_period}" for s in c.cms_levels),
            "CMS MLP": f"layernorm + mlp {d}->{4 * d}->{d}, gelu, residual",
            "CMS update": f"sgd(lr={c.optimizers['cms_opt']['lr']}) on its local L2 teach-signal loss, "
                          + ("per-sequence fast state" if self.mode == "fast_state" else "persists"),
            "segments per sequence": f"chunks of {self.online_chunk} tokens (fastest CMS period)",
            "outer optimizer": f"adamw(lr={self.opt.defaults['lr']}, betas={self.opt.defaults['betas']}, "
                               f"wd={self.opt.defaults['weight_decay']}), clip {self.clip}",
        }


PEER_MISMATCHES = [
    "memories: nlc's are per head (4 heads x 32 wide, hidden 32, silu); the peer's self-modifying block has "
    "no heads option, so its memories are full width (128 -> 128 -> 128, gelu): about 4x the state and "
    "16x the (dim x dim) preconditioner work per token",
    "the peer builds a sixth memory M_q that its HOPE configs never read (adaptive_q off); its parameters "
    "are in its count",
    "eta and alpha: nlc reads them through linear(.., heads) with eta = 0.25 sigmoid, alpha = 0.5 + "
    "0.5 sigmoid; the peer's M_eta and M_alpha output one scalar, eta = 1e-3 softplus, alpha = sigmoid",
    "v: nlc l2-normalises v; the peer normalises q and k only",
    "wiring: nlc is residual(rmsnorm -> selfmod) -> residual(rmsnorm -> cms) with an output projection "
    "and a final rmsnorm; the peer feeds the self-modifying output straight into CMS blocks that carry "
    "their own layernorm and residual, with a final layernorm",
    "gradients: nlc backpropagates through the memory writes inside each 16-token segment (the initial "
    "states and the k/v/eta/alpha memories learn through them); the peer reads the chunk-start state in "
    "the differentiable pass and writes in a separate no-grad pass, so only w_q, the convolution and "
    "M_memory's initial state get outer gradients on the memory side, and it takes an extra autograd.grad "
    "per chunk for the per-layer teach signals",
    "CMS: nlc's CMS keeps its weights across sequences and steps them with the window-summed LM-loss "
    "gradient; the peer (fast_state mode) keeps CMS deltas per sequence, stepped on its local L2 "
    "teach-signal objective, while AdamW also trains the CMS weights",
]


# ---------------------------------------------------------------------------------- (c) Transformer


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int, dim: int, heads: int, layers: int, context: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(context, dim))
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(dim)

    def forward(self, tokens):
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.norm(h) @ self.embed.weight.t()  # tied head


class Transformer:
    name = "transformer"

    def __init__(self, sizes: dict, context: int, outer: dict, seed: int):
        torch.manual_seed(seed)
        self.model = TinyTransformer(sizes["vocab"], sizes["dim"], sizes["heads"], sizes["layers"], context)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=outer["lr"], betas=outer["betas"],
                                     weight_decay=outer["weight_decay"])
        self.clip = outer["clip"]

    def step(self, batch: torch.Tensor) -> float:
        x, y = batch[:, :-1], batch[:, 1:]
        loss = F.cross_entropy(self.model(x).reshape(-1, self.model.embed.num_embeddings), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        return loss.item()

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# ------------------------------------------------------------------------------------------ timing


def make_batch(kind: str, batch: int, seq: int, seed: int) -> torch.Tensor:
    if kind == "corpus":
        from nldsl.runtime import data as D

        tok = D.ByteTokenizer()
        docs = [tok.encode(text) for _, text in D.load_documents(None)]
        return next(D.PackedStream(docs, seq, batch, seed=seed))
    return torch.randint(0, 256, (batch, seq + 1), generator=torch.Generator().manual_seed(seed))


def timed_step(contender, batch):
    wall, cpu = time.perf_counter(), time.process_time()
    loss = contender.step(batch)
    return time.perf_counter() - wall, time.process_time() - cpu, loss


def run(contenders: list, batch: torch.Tensor, warmup: int, steps: int, log) -> dict:
    """Warm each contender up, then time `steps` rounds of one step each, round-robin."""
    results = {c.name: {"wall": [], "cpu": [], "loss": []} for c in contenders}
    for c in contenders:
        for i in range(warmup):
            w, _, loss = timed_step(c, batch)
            log(f"  warm-up {c.name:16s} step {i + 1}: {w:7.2f} s  loss {loss:.3f}")
    for r in range(steps):
        for c in contenders:
            w, cpu, loss = timed_step(c, batch)
            results[c.name]["wall"].append(w)
            results[c.name]["cpu"].append(cpu)
            results[c.name]["loss"].append(loss)
            log(f"  round {r + 1} {c.name:16s}: {w:7.2f} s wall, {cpu:7.2f} s cpu  loss {loss:.3f}")
    return results


def profile_nlc(contender: Nlc, batch: torch.Tensor, top: int = 10) -> None:
    """Where one nlc training step spends its time: operators (torch.profiler) and Python (cProfile)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        contender.step(batch)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    calls = sum(e.count for e in events)
    print(f"\nnlc, one training step, torch.profiler: {calls:,d} aten operator calls, {total / 1e6:.2f} s of "
          f"operator self time; top {top} by self time")
    print(f"  {'operator':34s} {'self s':>7s} {'share':>6s} {'calls':>7s} {'us/call':>8s}")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        print(f"  {e.key[:34]:34s} {e.self_cpu_time_total / 1e6:7.3f} {100 * e.self_cpu_time_total / total:5.1f}% "
              f"{e.count:7d} {e.self_cpu_time_total / max(e.count, 1):8.1f}")

    pr = cProfile.Profile()
    start = time.perf_counter()
    pr.enable()
    contender.step(batch)
    pr.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(pr, stream=io.StringIO()).stats
    rows = [(tt, ct, nc, file, f"{Path(file).parent.name}/{Path(file).name}:{line} {func}")
            for (file, line, func), (_, nc, tt, ct, _) in stats.items()]
    print(f"\nnlc, one training step, cProfile ({wall:.2f} s under the profiler): top {top} by own time")
    print(f"  {'function':62s} {'s':>6s} {'share':>6s} {'calls':>7s}")
    for r in sorted(rows, key=lambda r: r[0], reverse=True)[:top]:
        print(f"  {r[4][-62:]:62s} {r[0]:6.3f} {100 * r[0] / wall:5.1f}% {r[2]:7d}")
    ours = [r for r in rows if "nlc-train-speed-" in r[3] or str(ROOT) in r[3] or "nldsl" in r[3]]
    ours = [r for r in ours if not r[3].endswith("train_speed.py") and "site-packages" not in r[3]]
    print(f"\n  top {top} of nlc's own functions by cumulative time")
    for r in sorted(ours, key=lambda r: r[1], reverse=True)[:top]:
        print(f"  {r[4][-62:]:62s} {r[1]:6.3f} {100 * r[1] / wall:5.1f}% {r[2]:7d}")


# -------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=str(ROOT / "examples" / "hope.nl"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed rounds (one step of each contender per round)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps of each contender first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", choices=["random", "corpus"], default="random",
                    help="random byte tokens, or the first batch of the bundled corpus")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peer", action="store_true", help="skip nested-learning")
    ap.add_argument("--peer-mode", choices=["fast_state", "inplace"], default="fast_state")
    ap.add_argument("--no-apart", action="store_true",
                    help="skip nlc with its stacked memories run one by one (what stacking saves)")
    ap.add_argument("--profile", action="store_true", help="also profile one nlc training step")
    ap.add_argument("--quiet", action="store_true", help="do not print every step")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    spec = args.spec if Path(args.spec).exists() else str(ROOT / args.spec)
    print(f"machine: {platform.machine()} CPU, {os.cpu_count()} cores visible; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()} (intra-op), {torch.get_num_interop_threads()} (inter-op)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; load average {load:.1f}")
    if load > (os.cpu_count() or 1) - 0.5 and args.threads > 1 and "OMP_WAIT_POLICY" not in os.environ:
        print("note: the machine is busy; with OpenMP's default busy-wait, steps made of many small operators "
              "slow down far more than steps of few large ones when threads > 1. Run with "
              "OMP_WAIT_POLICY=PASSIVE (or --threads 1) for figures that survive the load.")
    print(f"batch {args.batch} x seq {args.seq} = {args.batch * args.seq} tokens per step, {args.data} tokens; "
          f"{args.warmup} warm-up step(s) each, then {args.steps} timed round(s), round-robin")

    nlc = Nlc(spec, args.seed)
    o = nlc.info["outer"]
    outer = {"lr": o["optimizer"]["args"]["lr"], "betas": tuple(o["optimizer"]["args"].get("betas", (0.9, 0.999))),
             "weight_decay": o["optimizer"]["args"].get("weight_decay", 0.0), "clip": o.get("clip") or 1.0}
    contenders = [nlc]
    if nlc.stacked and not args.no_apart:
        contenders.append(NlcApart(spec, args.seed))

    peer, reason = None, None
    if args.no_peer:
        reason = "skipped (--no-peer)"
    else:
        api, reason = load_peer()
        if api is not None:
            periods = nlc.cms_periods() or [16, 64, 256]
            chunks = nlc.memory_chunks() or [8, 16]
            cms_lrs = [lv["optimizer"]["args"]["lr"] for c in nlc.info.get("cms", []) for lv in c["levels"]]
            peer = Peer(api, nlc.sizes, periods, chunks, args.peer_mode, outer,
                        cms_lrs[0] if cms_lrs else 1e-2, args.seed)
            contenders.append(peer)
            if nlc.ir.name != "hope":
                print(f"note: the peer is nested-learning's HOPE and {Path(spec).name} defines `{nlc.ir.name}`, so "
                      "the ratio compares different architectures; the mismatch list below is written for hope.nl")
            if not nlc.cms_periods():
                print(f"note: {Path(spec).name} has no CMS on a token clock; the peer takes hope.nl's periods {periods}")
            if not nlc.memory_chunks():
                print(f"note: {Path(spec).name} has no chunked memory; the peer takes hope.nl's chunks {chunks}")
        else:
            print(f"nested-learning is not available ({reason}); install it with `pip install 'nlc[bench]'` "
                  f"(or `pip install nested-learning=={PEER_VERSION}`). Measuring nlc and the Transformer only.")
    tf = Transformer(nlc.sizes, args.seq, outer, args.seed)
    contenders.append(tf)

    # ---- configurations side by side
    against = (f"{peer.version} HOPEModel(block_variant=hope_selfmod), {args.peer_mode} mode" if peer
               else "(absent)")
    print(f"\nconfigurations ({Path(spec).name} against nested-learning {against})")
    mine = nlc.describe()
    theirs = peer.describe() if peer else {}
    width = max(len(k) for k in mine)
    for key, value in mine.items():
        print(f"  {key:{width}s}  nlc: {value}")
        if peer:
            print(f"  {'':{width}s}  nl : {theirs.get(key, '-')}")
    print("\nparameters")
    print(f"  nlc ({nlc.ir.name}):        {nlc.params():>10,d}")
    if peer:
        print(f"  nested-learning HOPE:  {peer.params():>10,d}  ({peer.unused_params():,d} of them in the unused M_q)")
    print(f"  transformer:           {tf.params():>10,d}  "
          "(pre-norm, causal SDPA, MLP x4, tied head, learned positions)")
    if peer:
        print("\nmismatches the peer's configuration cannot remove:")
        for m in PEER_MISMATCHES:
            print(f"  - {m}")

    # ---- timing
    batch = make_batch(args.data, args.batch, args.seq, args.seed)
    print()
    results = run(contenders, batch, args.warmup, args.steps, log)
    tokens = args.batch * args.seq
    rate = {}
    print(f"\nresults (median of {args.steps} timed step(s); {torch.get_num_threads()} threads)")
    print(f"  {'contender':18s} {'s/step':>8s} {'tokens/s':>10s} {'cpu s/step':>11s} {'last loss':>10s}")
    for c in contenders:
        r = results[c.name]
        wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
        rate[c.name] = (tokens / wall, tokens / cpu if cpu > 0 else math.nan)
        print(f"  {c.name:18s} {wall:8.3f} {rate[c.name][0]:10.1f} {cpu:11.3f} {r['loss'][-1]:10.3f}")
    if peer:
        speedup = rate["nlc"][0] / rate[peer.name][0]
        print(f"  nlc / nested-learning: {speedup:.2f}x tokens/s (goal >= {GOAL:g}x; by cpu time "
              f"{rate['nlc'][1] / rate[peer.name][1]:.2f}x)")
    if NlcApart.name in rate:
        print(f"  nlc / nlc one by one:  {rate['nlc'][0] / rate[NlcApart.name][0]:.2f}x tokens/s (sibling memories "
              "run as one stack against one call each)")
    price = rate["nlc"][0] / rate["transformer"][0]
    print(f"  nlc / transformer:     {price:.2f}x tokens/s (the price of the memory: the Transformer is "
          f"{1 / price:.1f}x faster)")

    if args.profile:
        profile_nlc(nlc, batch)

    print(f"speedup_vs_nested_learning: {speedup:.2f}" if peer else
          f"speedup_vs_nested_learning: n/a ({'skipped' if args.no_peer else 'nested-learning not installed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
