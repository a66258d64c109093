"""Tiny specs for the tests that need a whole model: one block `mix` of memory levels over l2-normed
keys and linear values, an embedding and a tied head."""

from __future__ import annotations

import textwrap

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
