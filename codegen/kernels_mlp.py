"""The Triton kernel plan of an MLP memory level (codegen/kernels.py renders it into kernels.py).

Fused: a depth-2 MLP W2 act(W1 k + b1) + b2 (+ k with a residual; biases optional), chunk C > 1 (every gradient at
the chunk anchor), the rules retain, gd, momentum, delta and dgd in any order (but not a transition
together with momentum), any objective with a kernel form (codegen/kernel_objectives.py), a value
target or a self-generated one M_anchor(v), and every read mode. A tile is the chunk, or SUB_TILE
tokens of it when the chunk is a larger multiple of SUB_TILE. Inside a tile retain, gd
and momentum act on W1 and W2 as scalars, so the state after token t is
    W_t = g_t W_0 + c_t S_0 + sum_{s <= t} C[t, s] delta_s x_s^T
(S the momentum, g, c, C products of the folded per-token coefficients, delta_s x_s^T the gradient of
token s at the anchor) and the read goes through the dual form, layer by layer, without per-token
weights. delta / dgd add the transition W1 (a I + cp k k^T) on the key-input layer (W2 sees dgd as
retention and a step, delta not at all): W1's update columns then solve a triangular system per tile,
as in the linear family. A bias is a weight whose input is the constant 1 under the scalar rules (its
columns are layer's deltas with the weights C2). Per-layer transitions, other depths and chunk size 1
have no fused form and fall back (`mlp_kernel_form` names the reason). Every fused level also gets
`<level>_fwd_streamed` and, without biases, `<level>_bwd_streamed` and `<level>_fwd_streamed_out`:
the kernels with the state in global memory, for heads too large for the registers (launch_mlp.py).

Like the rest of the generator, this module does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .kernel_coefs import VARIABLES, Poly, _has_gradient, _has_momentum, fold_dual
from .kernel_objectives import ObjectiveCode
from .kernels import Coef, PlanNames, _affine_text, _block, _dgate_lines, rules_text, tile_length
from .names import py

TRANSITION_RULES = ("delta", "dgd")

# activation -> Triton code of act(z), act'(z) and act''(z); gelu is the exact (erf) one, as the runtime's
_SIG = "tl.sigmoid(z)"
_PHI = "tl.exp(-0.5 * z * z) * 0.3989422804014327"
ACTIVATIONS = {
    "silu": ("z * tl.sigmoid(z)", f"{_SIG} * (1.0 + z * (1.0 - {_SIG}))",
             f"{_SIG} * (1.0 - {_SIG}) * (2.0 + z * (1.0 - 2.0 * {_SIG}))"),
    "gelu": ("0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))",
             f"0.5 * (1.0 + tl.erf(z * 0.7071067811865476)) + z * {_PHI}", f"{_PHI} * (2.0 - z * z)"),
    "relu": ("tl.maximum(z, 0.0)", "tl.where(z > 0, 1.0, 0.0)", "0.0 * z"),
    "tanh": ("_nl_tanh(z)", "1.0 - _nl_tanh(z) * _nl_tanh(z)",
             "-2.0 * _nl_tanh(z) * (1.0 - _nl_tanh(z) * _nl_tanh(z))"),
    "sigmoid": (_SIG, f"{_SIG} * (1.0 - {_SIG})", f"{_SIG} * (1.0 - {_SIG}) * (1.0 - 2.0 * {_SIG})"),
    "identity": ("z", "1.0 + 0.0 * z", "0.0 * z"),
}


def mlp_kernel_form(cfg, objective: ObjectiveCode) -> tuple[str, str]:
    """('dual', reason) for an MLP memory the kernels fuse, else ('none', the reason it falls back)."""
    if cfg.family != "mlp":
        return "none", "not an MLP memory"
    if cfg.depth != 2:
        return "none", f"an MLP memory of depth {cfg.depth} has no fused kernel (only depth 2)"
    if cfg.chunk < 2:
        return "none", ("chunk 1 with an MLP memory: the gradient is not linear in the state, no chunk-parallel "
                        "form")
    kinds = [r.kind for r in cfg.rules]
    transitions = [k for k in kinds if k in TRANSITION_RULES]
    if any(getattr(r, "per_layer", False) for r in cfg.rules):
        return "none", "a per-layer delta / dgd transition on an MLP memory has no fused kernel"
    if transitions and "momentum" in kinds:
        return "none", (f"rule {transitions[0]} together with momentum on an MLP memory has no fused kernel "
                        "(the transition would act on the momentum term)")
    if not _has_gradient(cfg):
        return "none", "an MLP memory with no gradient rule has no fused kernel"
    if cfg.act not in ACTIVATIONS:
        return "none", f"activation {cfg.act} has no kernel form"
    return "dual", (f"chunk {cfg.chunk}: gradients at the chunk anchor, the dual form of a depth-2 MLP per "
                    "tile, W1 and W2 kept on chip across tiles")


@dataclass(frozen=True)
class MlpKernelPlan(PlanNames):
    """Everything the MLP templates print for one level; every field is a flag, a number or code."""

    level: str
    prefix: str
    doc: str
    reason: str
    dk: int
    hidden: int
    dv: int
    chunk: int
    tile_tokens: int              # tokens per tile: the chunk, or SUB_TILE when the chunk is a larger multiple of it
    read: str                  # after | before | anchor
    residual: bool
    self_target: bool
    momentum: bool
    bias: bool                 # biases b1 (hidden), b2 (dv): weights whose input is 1, under the scalar rules
    transition: bool           # delta / dgd: W1 (the key-input layer) has the transition W (a I + cp k k^T)
    act: str
    act_code: str
    dact_code: str
    ddact_code: str
    objective: ObjectiveCode
    uses: tuple                # the gates the coefficients read
    coefs: tuple               # Coef lines (c_a, c_cw, c_r, c_cm)
    dgate_lines: tuple         # backward: gate gradients from the coefficient gradients
    rules_text: str
    shared: str = ""           # the kernels' prefix of an earlier level of the same configuration, if any
    clip: Optional[float] = None  # per-token gradient-norm bound (the level then has no streamed kernels)

    @property
    def block_t(self) -> int:
        return _block(self.tile_tokens)

    @property
    def n_sub(self) -> int:
        """Tiles per chunk."""
        return self.chunk // self.tile_tokens

    @property
    def block_h(self) -> int:
        return _block(self.hidden)

    @property
    def hidden_block(self) -> int:
        """Hidden units per block of the streamed kernels: blocks of W1 and W2 of about 1,024 values (at
        least 16 units). ptxas for sm_90, 8 warps, 64-token chunks of Titans' rules, read after the
        write, the forward's spills per thread at 16 units: 28 B at width 64 (204 B at 32 units, 1.4 KB at 64), 0.6 KB at width 128 (1.6 KB
        at 32 units), 2.0 KB at width 256."""
        return max(16, min(self.block_h, 1024 // max(self.block_k, self.block_v)))

    @property
    def affine_expr(self) -> str:
        a, b = self.objective.affine
        return _affine_text(a, b, "O", "TG")

    @property
    def affine_grads(self) -> tuple[str, str]:
        """An affine objective's d D / d O and d D / d target, as literals."""
        a, b = self.objective.affine
        return repr(float(a)), repr(float(-b))

    @property
    def rg(self) -> str:
        """The in-tile products the read uses: 'a' (after: up to t) or 'b' (before: up to t - 1)."""
        return "a" if self.read == "after" else "b"

    @property
    def uses_n2(self) -> bool:
        return "n2" in self.uses

    @property
    def reads_before(self) -> bool:
        return self.read == "before"

    @property
    def n2_from_grams(self) -> bool:
        """|k|^2 from a Gram matrix (the linear family's wy form); here from the keys."""
        return False

    @property
    def needs_before(self) -> bool:
        """The in-tile products up to t - 1 (Gb, gb): the read before the write, or a transition's system."""
        return self.read == "before" or self.transition

    @property
    def log2_bt(self) -> int:
        return int(math.log2(self.block_t))

    @property
    def read_text(self) -> str:
        return {"after": "y_t = M_(W_t)(q_t) (after the write)",
                "before": "y_t = M_(W_(t-1))(q_t) (before the write)",
                "anchor": "y_t = M_(W_anchor)(q_t) (the chunk's start state)"}[self.read]

    @staticmethod
    def gate_default(gate: str) -> str:
        return "0.0" if gate == "eta" else "1.0"


def plan_mlp_level(level: str, cfg, objective: ObjectiveCode, doc: str = "") -> MlpKernelPlan:
    """The kernel plan of a fused MLP memory level (raises ValueError for one that falls back)."""
    form, reason = mlp_kernel_form(cfg, objective)
    if form == "none":
        raise ValueError(f"memory level {level}: {reason}")
    momentum = _has_momentum(cfg)
    co = fold_dual(cfg.rules)
    transition = not co["cp"].is_zero
    coefs = [Coef("c_a", co["a"], 1.0)]
    if not co["cw"].is_zero:
        coefs.append(Coef("c_cw", co["cw"], 0.0))
    if transition:
        coefs.append(Coef("c_cp", co["cp"], 0.0))
        coefs.append(Coef("c_cw2", fold_dual(_scalar_rules(cfg.rules))["cw"], 0.0))
    if momentum:
        coefs.append(Coef("c_r", co["r"], 0.0))
        coefs.append(Coef("c_cm", -Poly.var("eta"), 0.0))
    uses = tuple(v for v in VARIABLES if any(c.poly.uses(v) for c in coefs) or (v == "beta" and momentum))
    act, dact, ddact = ACTIVATIONS[cfg.act]
    return MlpKernelPlan(
        level=level, prefix=py(level), doc=doc or f"memory level {level}", reason=reason, dk=cfg.dk,
        hidden=cfg.hidden, dv=cfg.dv, chunk=cfg.chunk, tile_tokens=tile_length(cfg.chunk), read=cfg.read,
        residual=cfg.residual, self_target=cfg.self_target, momentum=momentum, bias=cfg.bias, transition=transition,
        act=cfg.act, act_code=act,
        dact_code=dact, ddact_code=ddact, objective=objective, uses=uses, coefs=tuple(coefs),
        dgate_lines=_dgate_lines(coefs, uses), rules_text=rules_text(cfg.rules), clip=cfg.clip)


@dataclass(frozen=True)
class _ScalarRule:
    kind: str


def _scalar_rules(rules) -> tuple:
    """The rules as W2 (a layer whose input is not k) sees them: dgd retains and steps, delta does nothing."""
    out = []
    for rule in rules:
        if rule.kind == "dgd":
            out += [_ScalarRule("retain"), _ScalarRule("gd")]
        elif rule.kind != "delta":
            out.append(_ScalarRule(rule.kind))
    return tuple(out)
