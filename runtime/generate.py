"""Loading a trained run and generating text from it (`nlc generate`).

`load_run(RUN)` rebuilds the model of a run directory: the compiled package in RUN/model/ and the
weights of RUN/checkpoint.json. `Decoder` runs it as a language model that carries its state:
`prefill(tokens)` is one forward pass over the prompt (the chunk-parallel path for memories), then
`step(token)` feeds one token at a time with the state of every level carried along — a memory's fast
weights (constant work per token), a short convolution's last inputs, an attention layer's KV cache —
so that the logits of a prefix decoded token by token equal those of one pass over it (semantics.md
§3.8, the split rule with a split at every position). `generate` samples from those logits with
temperature, top-k and top-p (nucleus) filtering.

No level learns while generating: the outer weights and the CMS members are fixed, and only the
in-context memories advance, inside the forward pass. A memory file (`nlc learn`) supplies learned
CMS members and persistent memory states; see `nldsl.runtime.continual`.
"""

from __future__ import annotations

import codecs
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from .data import EOS, ByteTokenizer

CHECKPOINT = "checkpoint.json"
DTYPES = ("float32", "float64", "bfloat16")


class RunError(Exception):
    """A run directory (or a file given with it) that cannot be used; the message says why."""


@dataclass
class Run:
    """A trained model rebuilt from its run directory."""

    path: Path
    model: nn.Module
    info: dict  # the runtime section of levels.json: clocks, memories, CMS levels, attention
    manifest: dict  # RUN/model/manifest.json: the model name and the spec's sha256
    config: dict = field(default_factory=dict)  # RUN/config.json (empty when absent)
    step: int = 0  # the outer step of the checkpoint loaded (0: freshly initialised)

    @property
    def spec_sha256(self) -> str:
        return self.manifest["spec_sha256"]

    @property
    def context(self) -> int:
        return int(self.config.get("seq") or self.info.get("context") or 256)


def load_run(run: Union[str, Path], *, device: str = "cpu", dtype: Optional[str] = None,
             backend: str = "chunked", compile: bool = False, require_checkpoint: bool = True) -> Run:
    """The model of run directory RUN with its last checkpoint's weights, in eval mode; `compile`: the
    chunked path's loops compiled by torch.compile (set_backend).

    `dtype` defaults to the run's training dtype. Without a checkpoint the weights stay freshly
    initialised when `require_checkpoint` is False, and a RunError is raised otherwise.
    """
    from safetensors.torch import load_file

    from nldsl.compiler import MANIFEST, _import_package

    from . import set_backend
    from .fits import check_fits

    path = Path(run)
    package = path / "model"
    if not (package / MANIFEST).is_file():
        raise RunError(f"{run} is not a run directory: it has no model/{MANIFEST} (make one with `nlc train`)")
    config_path = path / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    dtype = dtype or config.get("dtype") or "float32"
    if dtype not in DTYPES:
        raise RunError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    module = _import_package(package)
    check_fits(package, getattr(torch, dtype), device)
    model = set_backend(module.Model(), backend, compile)
    step = 0
    checkpoint = path / CHECKPOINT
    if checkpoint.is_file():
        doc = json.loads(checkpoint.read_text())
        tensors = load_file(str(path / doc["weights"]))
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise RunError(f"the checkpoint in {run} does not fit its model: {e}") from None
        step = int(doc.get("step", 0))
    elif require_checkpoint:
        raise RunError(f"{run} has no {CHECKPOINT}: train it first (`nlc train SPEC --out {run}`)")
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    info = json.loads((package / "levels.json").read_text())["runtime"]
    manifest = json.loads((package / MANIFEST).read_text())
    return Run(path, model, info, manifest, config, step)


# ------------------------------------------------------------------------------------------ sampling


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Logits (B, V) with every token outside the top k and outside the nucleus of mass top_p set to -inf.

    The nucleus is the smallest set of most likely tokens whose probability reaches top_p; the most
    likely token is always kept. `top_k=0` and `top_p=1` leave the logits unchanged.
    """
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got {top_k} and {top_p}")
    out = logits.clone()
    if 0 < top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out[out < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits.float(), dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens strictly more likely
        drop = before >= top_p
        drop[..., 0] = False
        out.scatter_(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return out


def sample(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: Optional[torch.Generator] = None) -> Tensor:
    """The next token (B,) for logits (B, V): the argmax when temperature is 0, else a filtered sample."""
    if not math.isfinite(temperature) or temperature < 0:  # nan passes every comparison
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ------------------------------------------------------------------------------------------ decoding


class Decoder:
    """A model run as a stateful language model: one prefill pass, then one token per step."""

    def __init__(self, model: nn.Module, state: Optional[dict] = None):
        self.model = model
        self.state = dict(state) if state else None
        self.tokens_seen = 0

    @torch.no_grad()
    def prefill(self, tokens: Tensor) -> Tensor:
        """Run the prompt (B, T) in one forward pass; returns its logits (B, T, V)."""
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise ValueError("prefill needs a (batch, time) tensor with at least one token")
        logits, self.state = self.model(tokens, self.state)
        self.tokens_seen += tokens.shape[1]
        return logits

    @torch.no_grad()
    def step(self, token: Tensor) -> Tensor:
        """Feed one token per row (B,) with the carried state; returns the next logits (B, V)."""
        logits, self.state = self.model(token.reshape(-1, 1), self.state)
        self.tokens_seen += 1
        return logits[:, -1]


def generate(model: nn.Module, prompt: list[int], max_new_tokens: int = 200, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: Optional[int] = 0, state: Optional[dict] = None,
             stop: Optional[int] = None, on_token: Optional[Callable[[int], None]] = None) -> list[int]:
    """Sample up to `max_new_tokens` tokens after `prompt` (an empty prompt starts a new document).

    `state` is the model state to start from (e.g. a memory file's); `stop` ends generation when that
    token is produced (it is not returned); `on_token` sees every new token as it comes.
    """
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    decoder = Decoder(model, state)
    ids = list(prompt) or [EOS]
    logits = decoder.prefill(torch.tensor([ids], dtype=torch.long, device=device))[:, -1]
    out: list[int] = []
    for i in range(max_new_tokens):
        token = sample(logits, temperature, top_k, top_p, generator)
        value = int(token[0])
        if stop is not None and value == stop:
            break
        out.append(value)
        if on_token is not None:
            on_token(value)
        if i + 1 < max_new_tokens:
            logits = decoder.step(token)
    return out


class TextStream:
    """Decodes byte tokens to text as they come, holding back an incomplete UTF-8 character."""

    def __init__(self, write: Callable[[str], None]):
        self.write = write
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, token: int) -> None:
        text = self._decoder.decode(bytes([token]))
        if text:
            self.write(text)

    def close(self) -> None:
        text = self._decoder.decode(b"", final=True)
        if text:
            self.write(text)


def generate_text(run: Run, prompt: str, max_new_tokens: int = 200, *, state: Optional[dict] = None,
                  write: Optional[Callable[[str], None]] = None, **sampling) -> str:
    """Generate a continuation of `prompt` with a loaded run; `write` receives the text as it is made."""
    tok = ByteTokenizer()
    stream = TextStream(write) if write is not None else None
    ids = generate(run.model, tok.encode(prompt), max_new_tokens, state=state, stop=EOS,
                   on_token=stream, **sampling)
    if stream is not None:
        stream.close()
    return tok.decode(ids)
