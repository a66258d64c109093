"""Tiny specs for the tests that need a whole model: one block `mix` of memory levels over l2-normed
keys and linear values, an embedding and a tied head; with a CMS chain before it for the training loop.
And a folder of short documents to train them on (`short_documents`)."""

from __future__ import annotations

import json
import random
import string
import textwrap
from pathlib import Path

_MODEL = """\
nl 1
model tiny {{
  vocab   = {vocab}
  dim     = 16
  heads   = 2
  context = 16

  level pretrain : outer {{
    update adamw(lr = 1e-3)
  }}

  block mix(x) {{
{memories}
    k = l2norm(linear(x, dim))
    v = linear(x, dim)
    return linear({read}, dim)
  }}

  network = embed(vocab, dim) -> residual(mix) -> lm_head(tied = true)
}}
"""


def memory(name: str = "m", kind: str = "linear", chunk: int = 1, lr: str = "0.5") -> str:
    """A memory level learning v from k with plain gradient steps."""
    lines = [f"memory {name} : {kind} per head {{", *([f"  chunk  {chunk}"] if chunk > 1 else []),
             "  key    k", "  value  v", f"  lr     {lr}", "  update gd", "}"]
    return "\n".join(lines)


def tiny_spec(vocab: int = 256, memories: tuple[str, ...] = (memory(),), read: str = "m(k)") -> str:
    return _MODEL.format(vocab=vocab, read=read,
                         memories="\n".join(textwrap.indent(m, "    ") for m in memories))


_CMS_MEMORY = """\
nl 1
model tiny_full {
  vocab   = 16
  dim     = 8
  heads   = 2
  context = 16

  level pretrain : outer {
    clock     every 1 step
    objective next_token
    update    sgd(lr = 0.1)
    bptt      BPTT
  }

  cms chain : sequential {
    update sgd(lr = 0.5)
    level fast : mlp(expand = 2) { clock every FAST tokens }
    level slow : mlp(expand = 2) { clock every SLOW tokens }
  }

  block mix(x) {
    memory m : MEMORY per head {
      chunk  2
      key    k
      value  v
      lr     0.5
      update gd
    }
    k = l2norm(linear(x, dim))
    v = linear(x, dim)
    return linear(m(k), dim)
  }

  network = embed(vocab, dim) -> residual(rmsnorm -> chain) -> residual(mix) -> rmsnorm -> lm_head(tied = true)
}
"""


def cms_memory_spec(bptt: str = "full", fast: int = 4, slow: int = 8, memory: str = "linear") -> str:
    """A CMS chain of two members (windows of `fast` and `slow` tokens, plain SGD) before a block with one
    memory level that carries its state from segment to segment; `memory` is its type."""
    return (_CMS_MEMORY.replace("BPTT", bptt).replace("FAST", str(fast)).replace("SLOW", str(slow))
            .replace("MEMORY", memory))


def build_loop(tmp_path, text: str, backend: str = "chunked", seed: int = 0, dtype=None):
    """Compile `text`, build its model on `backend` (float64 unless `dtype`) and a nested loop over it:
    (model, loop, levels.json's runtime part)."""
    import torch

    from nldsl.compiler import _import_package, compile_spec, write_package
    from nldsl.runtime import set_backend
    from nldsl.runtime.optim import make_optimizer
    from nldsl.runtime.train import NestedLoop

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "spec.nl"
    path.write_text(text)
    fe, files = compile_spec(str(path))
    assert files is not None, fe.diagnostics
    package = write_package(files, str(tmp_path / "build"), "model", force=True)
    torch.manual_seed(seed)
    model = set_backend(_import_package(package).Model(), backend).to(dtype or torch.float64)
    info = json.loads((package / "levels.json").read_text())["runtime"]
    return model, NestedLoop(model, info, make_optimizer), info


def short_documents(folder: Path, count: int = 12, seed: int = 0) -> Path:
    """`count` documents of 1 to 40 lower-case letters in `folder` (created): in rows of 16 or 32 tokens,
    the aligned layout pads most rows, each by its own amount."""
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    for i in range(count):
        (folder / f"doc{i:02d}.txt").write_text("".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 40))))
    return folder
