"""Small `.nl` specs with one memory level (linear unless told), for the Triton tests."""
from __future__ import annotations

TEMPLATE = """\
nl 1
model {name} {{
  vocab    = 64
  dim      = 16
  heads    = 2
  head_dim = dim / heads
  layers   = 1
  context  = 64

  level pretrain : outer {{
    clock     every 1 step
    objective next_token
    update    adamw(lr = 1e-3)
  }}

  block mix(x) {{
    memory mem : {kind} per head {{
      clock     every 1 token
      chunk     {chunk}
      key       k
      value     {value}
      lr        eta
{gates}      objective {objective}
      update    {update}
      read      {read}
      init      by pretrain
    }}
    q     = l2norm(linear(x, dim))
    k     = l2norm(linear(x, dim))
    v     = linear(x, dim)
    eta   = 0.5 * sigmoid(linear(x, heads))
    alpha = 1 - 0.2 * sigmoid(linear(x, heads))
    beta  = 0.9 * sigmoid(linear(x, heads))
    return linear(mem(q), dim)
  }}

  layer   = residual(rmsnorm -> mix)
  network = embed(vocab, dim) -> stack(layer, layers) -> rmsnorm -> lm_head(tied = true)
}}
"""


def memory_spec(name: str = "tiny", chunk: int = 4, objective: str = "l2", update: str = "gd",
                read: str = "after write", self_target: bool = False, kind: str = "linear") -> str:
    """A one-level spec; `kind` is the memory function (e.g. "mlp(depth = 2, hidden = 16, act = silu)")."""
    gates = ""
    if "retain" in update or "dgd" in update:
        gates += "      retain    alpha\n"
    if "momentum" in update:
        gates += "      momentum  beta\n"
    return TEMPLATE.format(name=name, kind=kind, chunk=chunk, objective=objective, update=update, read=read, gates=gates,
                           value="self(v)" if self_target else "v")

