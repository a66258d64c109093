"""Rendering `kernels.py`: the Triton kernels of a compiled package's linear in-context memories.

For every linear memory level the generator fixes, from its configuration, what the kernels compute:

- the **form**: `dual` (chunk C > 1: every gradient at the chunk anchor, one tile per chunk), `wy`
  (C = 1, no momentum, gradient affine in W: tiles of free size) or `recurrent` (C = 1 otherwise:
  token by token). The token-by-token `step` kernel is generated for every level (decoding, and the
  fused form of the `recurrent` levels);
- the **rule order**, folded into per-token coefficients. Within one token every rule multiplies W on
  the right by (c I + d k kᵀ) or adds a rank-one term; the folding (the same as the chunked path's,
  runtime/memory/coeffs.py, which the tests check) runs here on polynomials of the gates (η, α, β)
  and of ‖k‖², and the polynomials are printed as Triton expressions, with their partial derivatives
  for the backward kernel. The step kernel applies the rules one statement per rule, in order;
- the **objective's derivative** dℓ/dy: affine ones (l2, sq, mse, dot) as a·y − b·target, elementwise
  ones (l1, huber, lp and the spec's custom expressions, differentiated symbolically by symbolic.py)
  as Triton code in the residual r, with the second derivative the backward kernel needs;
- the **dimensions** dk, dv and the chunk size C, inlined as `tl.constexpr` defaults.

Templates (templates/kernels*.py.jinja) only test flags and paste these strings. The output is
deterministic. MLP memories are planned by kernels_mlp.py (depth 2, gradients at the chunk anchor;
its docstring says what falls back to the chunked path).
A memory configuration is anything with the fields of `nldsl.ir.Memory` that matter here (family, dk,
dv, chunk, read, self_target, rules with kind and at): the IR itself, or the runtime's MemoryConfig.
Like the rest of the generator, this module does not import torch.
"""

from __future__ import annotations

import ast as pyast
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional


from nldsl import ir

from .names import comment, doc_text, literal, py
from .jinja import environment

from .kernel_coefs import (GATES, GRADIENT_RULES, VARIABLES, Poly, _has_gradient, _has_momentum, fold_dual,
                           fold_wy)
from .kernel_objectives import ObjectiveCode, derivative, objective_code, runtime_objective_code

# ------------------------------------------------------------------ the plan of one level

@dataclass(frozen=True)
class Coef:
    """One per-token coefficient: its Triton name, polynomial and value at a masked token."""

    name: str
    poly: Poly
    masked: float

    @property
    def line(self) -> str:
        value = self.poly.code()
        if self.poly.constant is not None:
            value = f"zero + {value}"
        return f"{self.name} = tl.where(valid, {value}, {self.masked!r})"


class PlanNames:
    """What the kernel plans of both families paste the same way (a plan has level, read, reason, dk,
    coefs, objective and clip)."""

    @property
    def level_literal(self) -> str:
        return literal(self.level)

    @property
    def kernels_prefix(self) -> str:
        """The prefix of the kernels this level runs: its own, or those of an earlier level of the same
        configuration (render() keeps one copy of identical kernels)."""
        return self.shared or self.prefix

    @property
    def shared_comment(self) -> str:
        return comment(f"{self.level}: the kernels of an earlier level of the same configuration")

    @property
    def read_literal(self) -> str:
        return literal(self.read)

    @property
    def reason_literal(self) -> str:
        return literal(self.reason)

    @property
    def clip_text(self) -> str:
        """The `clip` bound c, as the templates print it."""
        return repr(float(self.clip))

    @property
    def clip_square(self) -> str:
        """c², the bound the templates compare a token's squared gradient norm with."""
        return repr(float(self.clip) ** 2)

    @property
    def coefs_use_zero(self) -> bool:
        """A constant coefficient is printed as `zero + c` (a vector); the kernel then defines `zero`."""
        return any(c.poly.constant is not None for c in self.coefs)

    @property
    def has_cw(self) -> bool:
        return any(c.name == "c_cw" for c in self.coefs)

    @property
    def block_k(self) -> int:
        return _block(self.dk)

    @property
    def block_v(self) -> int:
        return _block(self.dv)

    @property
    def affine(self) -> bool:
        return self.objective.affine is not None


@dataclass(frozen=True)
class KernelPlan(PlanNames):
    """Everything the templates print for one level; every field is a flag, a number or code."""

    level: str                 # the spec's level name (block.level)
    prefix: str                # kernel names: <prefix>_fwd, <prefix>_bwd, <prefix>_step
    doc: str
    form: str                  # dual | wy | recurrent
    reason: str                # why this form (one line)
    dk: int
    dv: int
    chunk: int
    block_t: int               # the tile's block: its tokens rounded up to a power of two >= 16
    read: str                  # after | before | anchor (anchor is before when C = 1)
    self_target: bool
    momentum: bool
    gradient: bool             # some rule consumes the objective's gradient
    transition: bool           # the tile has a triangular system (delta / dgd, or a gradient at the current state)
    transition2: bool          # a transition acts on the momentum term (momentum before delta / dgd)
    objective: ObjectiveCode
    uses: tuple                # the gates (and n2) the coefficients read
    coefs: tuple               # Coef lines of the chunk kernels
    backward: bool             # a Triton backward kernel exists for this level
    backward_reason: str
    dgate_lines: tuple         # backward: gate gradients from coefficient gradients
    step_lines: tuple          # the step kernel's rule statements, in order
    step_uses: tuple
    step_momentum: bool
    rules_text: str
    shared: str = ""           # the kernels' prefix of an earlier level of the same configuration, if any
    clip: Optional[float] = None  # per-token gradient-norm bound (a program then takes every row of W)

    # names and literals the templates paste
    @property
    def form_literal(self) -> str:
        return literal(self.form)

    @property
    def backward_reason_literal(self) -> str:
        return literal(self.backward_reason)

    @property
    def fwd_name(self) -> str:
        return "None" if self.form == "recurrent" else f"{self.kernels_prefix}_fwd"

    @property
    def step_reads_key(self) -> bool:
        """Some rule of the step kernel reads the token's key (every rule but retain)."""
        return any("kt[" in line for line in self.step_lines)

    @property
    def step_reads_target(self) -> bool:
        """Some rule of the step kernel takes the objective's gradient, which reads the target."""
        return self.gradient

    @property
    def prep_name(self) -> str:
        """The wy form's forward is two kernels: <prefix>_prep (the tiles' state-free terms, all tiles at
        once) and <prefix>_fwd (the walk over the tiles)."""
        return f"{self.kernels_prefix}_prep" if self.form == "wy" else "None"

    @property
    def merge_name(self) -> str:
        """The wy form's walk may take several tiles a step: _nl_merge_tiles (one kernel for every wy-form
        level of the file) turns their terms into those of one longer tile."""
        return "_nl_merge_tiles" if self.form == "wy" else "None"

    @property
    def columns_literal(self) -> str:
        """The wy form: what a tile's columns E are made of, for the launcher (which products with the
        states the backward walk stores): 'u' (the rank-one term), 'w' (the transition's Wm W_start^T)."""
        if self.form != "wy":
            return repr("")
        return repr(("u" if self.wy_value else "") + ("w" if self.transition else ""))

    @property
    def prep_bwd_name(self) -> str:
        return f"{self.kernels_prefix}_prep_bwd" if self.form == "wy" and self.backward else "None"

    @property
    def bwd_name(self) -> str:
        return f"{self.kernels_prefix}_bwd" if self.backward else "None"

    @property
    def read_text(self) -> str:
        return {"after": "y_t = W_t q_t (after the write)", "before": "y_t = W_(t-1) q_t (before the write)",
                "anchor": "y_t = W_anchor q_t (the chunk's start state)"}[self.read]

    @property
    def read_after(self) -> bool:
        return self.read == "after"

    @property
    def rg(self) -> str:
        """Which in-tile products the read uses: 'a' (after: up to t) or 'b' (before: up to t - 1)."""
        return "a" if self.read == "after" else "b"

    @property
    def has_e(self) -> bool:
        """Some rule writes rank-one columns E (a gradient step, a transition or the wy term); without
        them (e.g. Titans' retain + momentum) only the momentum writes and the E terms are skipped."""
        return self.has_cw or self.transition

    @property
    def uses_n2(self) -> bool:
        return "n2" in self.uses

    @property
    def tile_tokens(self) -> int:
        """Tokens per tile: the chunk, or SUB_TILE tokens of a longer one (dual form), or the tile of the
        wy form (free; the launcher may pass another power of two)."""
        return tile_length(self.chunk) if self.form == "dual" else self.block_t

    @property
    def n_sub(self) -> int:
        """Tiles per chunk (dual form; the wy form's tiles are free)."""
        return self.chunk // self.tile_tokens if self.form == "dual" else 1

    @staticmethod
    def gate_default(gate: str) -> str:
        """The value a masked token loads: no write, full retention, momentum kept."""
        return "0.0" if gate == "eta" else "1.0"

    @property
    def dual(self) -> bool:
        return self.form == "dual"

    @property
    def affine_expr(self) -> str:
        """dl/dy at the anchor for an affine objective, in Z (= M(k)) and TG (the target)."""
        a, b = self.objective.affine
        return _affine_text(a, b, "Z", "TG")

    @property
    def needs_z(self) -> bool:
        return not self.affine or self.objective.affine[0] != 0.0

    @property
    def needs_before(self) -> bool:
        return self.read == "before" or self.transition

    @property
    def wy_value(self) -> bool:
        """wy form: the rank-one term w = cw v is present."""
        return self.form == "wy" and self.has_cw

    @property
    def wy_key(self) -> bool:
        return any(c.name == "c_ck" for c in self.coefs)

    @property
    def wy_vkey(self) -> bool:
        return any(c.name == "c_cv" for c in self.coefs)

    @property
    def n2_from_grams(self) -> bool:
        """|k|^2 as the diagonal of the tile's Gram matrix k k^T (the wy form passes keys in blocks)."""
        return self.form == "wy"

    @property
    def needs_kk(self) -> bool:
        """The wy form's tile needs k k^T: for |k|^2 or for its transition."""
        return self.uses_n2 or self.transition

    @property
    def backward_reads_keys(self) -> bool:
        """The wy form's prep_bwd reads keys (for q k^T, k k^T, vk k^T, k . dKend or |k|^2)."""
        return self.needs_kk or self.has_e or self.loads_v_key

    @property
    def p_text(self) -> str:
        """The wy form's transition vector p_t (A[t, i] = Gb[t, i] p_t . k_i), in words."""
        return " + ".join((["ck k_t"] if self.wy_key else []) + (["cv vk_t"] if self.wy_vkey else []))

    @property
    def pk_from_grams(self) -> str:
        """p k^T of the wy form's tile from its Gram matrices KK = k k^T and VKK = vk k^T."""
        return " + ".join((["c_ck[:, None] * KK"] if self.wy_key else []) + (["c_cv[:, None] * VKK"] if self.wy_vkey else []))

    @property
    def pm_block(self) -> str:
        """The wy form's p for one block of key columns (Kb, VKb)."""
        return " + ".join((["c_ck[:, None] * Kb"] if self.wy_key else []) + (["c_cv[:, None] * VKb"] if self.wy_vkey else []))

    @property
    def loads_v_value(self) -> bool:
        """v is read in dv columns (the target, or the wy rank-one term)."""
        return (self.dual and self.gradient and not self.self_target) or (self.form == "wy" and self.wy_value)

    @property
    def loads_v_key(self) -> bool:
        """v is read in dk columns (a self-generated target M(v), or its wy form)."""
        return (self.dual and self.gradient and self.self_target) or (self.form == "wy" and self.wy_vkey)

    @property
    def log2_bt(self) -> int:
        return int(math.log2(self.block_t))


def _affine_text(a: float, b: float, y: str, target: str) -> str:
    if a == 0.0:
        return f"-{target}" if b == 1.0 else f"{-b!r} * {target}"
    if a == b:
        return f"{y} - {target}" if a == 1.0 else f"{a!r} * ({y} - {target})"
    return f"{a!r} * {y} - {b!r} * {target}"


def kernel_form(cfg, objective: ObjectiveCode) -> tuple[str, str]:
    """('dual' | 'wy' | 'recurrent' | 'none', reason) of a memory configuration."""
    if cfg.family != "linear":
        return "none", "an MLP memory has no linear-family kernels (codegen/kernels_mlp.py plans it)"
    if cfg.chunk > 1:
        return "dual", f"chunk {cfg.chunk}: gradients at the chunk anchor, one tile per chunk (dual form)"
    if _has_momentum(cfg):
        return "recurrent", "chunk 1 with momentum: no chunk-parallel form; the fused step kernel runs token by token"
    if _has_gradient(cfg) and objective.affine is None:
        return "recurrent", (f"chunk 1 with the non-affine objective {objective.name}: the fused step kernel "
                             "runs token by token")
    if cfg.clip is not None:
        return "recurrent", "chunk 1 with clip (not affine in W): the fused step kernel runs token by token"
    return "wy", "chunk 1, gradient affine in W: WY/UT form over tiles of free size"


# nldsl.runtime.triton.elementwise's functions, which a kernel module imports as _nl_<name> when it calls them
ELEMENTWISE = ("power", "softplus", "tanh")

# The default tile of the wy form, whose tiles are free. On an H200 a 64-token tile spilled heavily and
# its backward compiled for minutes; 16 compiles in seconds (benchmarks/gpu/compile_report.py).
WY_TILE = 16


# Tokens per tile when a chunk is a larger multiple of it: every gradient of a chunk is at its anchor, so
# the chunk runs as consecutive tiles from their own start states, the anchor moving at the chunk's end.
# A 64-token tile of an MLP memory (hidden 128) spilled ~100 KB per thread in ptxas for sm_90.
SUB_TILE = 16


def tile_length(chunk: int) -> int:
    """Tokens per tile of the chunk-parallel (dual) forms for a chunk of `chunk` tokens (see SUB_TILE)."""
    return SUB_TILE if chunk > SUB_TILE and chunk % SUB_TILE == 0 else chunk


def _block(n: int) -> int:
    return max(16, 1 << max(0, (n - 1).bit_length()))


def plan_level(level: str, cfg, objective: ObjectiveCode, doc: str = "") -> KernelPlan:
    """The kernel plan of a linear memory level (raises ValueError for an MLP memory)."""
    form, reason = kernel_form(cfg, objective)
    if form == "none":
        raise ValueError(f"memory level {level}: {reason}")
    momentum, gradient = _has_momentum(cfg), _has_gradient(cfg)
    coefs: list[Coef] = []
    transition = transition2 = False
    read = cfg.read if cfg.chunk > 1 or cfg.read != "anchor" else "before"
    if form == "dual":
        co = fold_dual(cfg.rules)
        a, cp, cw, r, cp2 = (co[x] for x in ("a", "cp", "cw", "r", "cp2"))
        coefs.append(Coef("c_a", a, 1.0))
        if not cw.is_zero:
            coefs.append(Coef("c_cw", cw, 0.0))
        if momentum:
            coefs.append(Coef("c_r", r, 0.0))
            coefs.append(Coef("c_cm", -Poly.var("eta"), 0.0))
        if not cp.is_zero:
            coefs.append(Coef("c_cp", cp, 0.0))
            transition = True
        if not cp2.is_zero:
            coefs.append(Coef("c_cp2", cp2, 0.0))
            transition2 = True
    elif form == "wy":
        affine = objective.affine if gradient else (0.0, 0.0)
        co = fold_wy(cfg.rules, affine, cfg.self_target)
        a, ck, cv, cw = (co[x] for x in ("a", "ck", "cv", "cw"))
        coefs.append(Coef("c_a", a, 1.0))
        if not cw.is_zero:
            coefs.append(Coef("c_cw", cw, 0.0))
        if not ck.is_zero:
            coefs.append(Coef("c_ck", ck, 0.0))
        if not cv.is_zero:
            coefs.append(Coef("c_cv", cv, 0.0))
        transition = not ck.is_zero or not cv.is_zero
    uses = tuple(v for v in VARIABLES if any(c.poly.uses(v) for c in coefs))
    if momentum and form == "dual":
        uses = tuple(v for v in VARIABLES if v in uses or v == "beta")
    backward, backward_reason = True, "Triton backward kernel (recomputes each tile from its stored start state)"
    if form == "recurrent":
        backward, backward_reason = False, "step kernel forward; backward recomputes with the chunked PyTorch path"
    dgate = _dgate_lines(coefs, uses) if backward else ()
    step_lines, step_uses = _step_lines(cfg, objective)
    prefix = py(level)
    return KernelPlan(
        level=level, prefix=prefix, doc=doc or f"memory level {level}", form=form, reason=reason,
        dk=cfg.dk, dv=cfg.dv, chunk=cfg.chunk, block_t=_block(tile_length(cfg.chunk)) if form == "dual" else WY_TILE,
        read=read,
        self_target=cfg.self_target, momentum=momentum and form == "dual",
        gradient=gradient, transition=transition, transition2=transition2, objective=objective,
        uses=uses, coefs=tuple(coefs), backward=backward, backward_reason=backward_reason,
        dgate_lines=dgate, step_lines=step_lines, step_uses=step_uses, step_momentum=momentum,
        rules_text=rules_text(cfg.rules), clip=cfg.clip)


def rules_text(rules) -> str:
    return ", ".join(r.kind + (f" at {r.at}" if r.kind in GRADIENT_RULES else "") for r in rules)


def _dgate_lines(coefs, uses) -> tuple:
    """d gate = sum over coefficients of d coef * d coef / d gate (the masked coefficient gradients are
    named d_<coef without c_>); the momentum decay's direct gradient d_beta_geo is added for beta, and
    d_n2 (through |k|^2) when a coefficient reads it."""
    lines = []
    for gate in GATES + (("n2",) if "n2" in uses else ()):
        terms = []
        for c in coefs:
            d = c.poly.derivative(gate)
            if d.is_zero:
                continue
            dname = "d" + c.name[1:]
            const = d.constant
            if const == 1.0:
                terms.append(dname)
            elif const is not None:
                terms.append(f"{const!r} * {dname}")
            else:
                terms.append(f"({d.code()}) * {dname}")
        if gate == "beta" and "beta" in uses and any(c.name == "c_r" for c in coefs):
            terms.append("d_beta_geo")
        lines.append(f"d_{gate} = " + (" + ".join(terms) if terms else "zero"))
    return tuple(lines)


def _step_lines(cfg, objective: ObjectiveCode) -> tuple[tuple, tuple]:
    """The rules of one token as statements on the state block P (rows of W), the momentum S and the
    anchor Wa; `tgt` is the target, `kt` the key. Gradients at the anchor use Wa, at the current state P
    (after the rules before this one)."""
    lines: list[str] = []
    uses: set = set()
    bound = None if cfg.clip is None else (repr(float(cfg.clip)), repr(float(cfg.clip) ** 2))

    def residual_grad(point: str) -> None:
        if objective.affine is not None:
            a, b = objective.affine
            if a != 0.0:  # the dot objective's gradient does not read the prediction
                lines.append(f"z = tl.sum({point} * kt[None, :], axis=1)")
            lines.append(f"dlt = tl.where(mv, {_affine_text(a, b, 'z', 'tgt')}, 0.0)")
        else:
            lines.append(f"z = tl.sum({point} * kt[None, :], axis=1)")
            lines.append("r = z - tgt")
            lines.append(f"dlt = tl.where(mv, {objective.grad}, 0.0)")
        if bound is not None:  # clip: the token's gradient dlt ktᵀ scaled to a norm of at most c
            c, c2 = bound
            lines.append("n2 = tl.sum(dlt * dlt, axis=0) * tl.sum(kt * kt, axis=0)")
            lines.append(f"dlt = dlt * tl.where(n2 > {c2}, {c} / tl.sqrt(tl.where(n2 > {c2}, n2, 1.0)), 1.0)")

    for i, rule in enumerate(cfg.rules):
        point = "P" if rule.at == "current" else "Wa"
        lines.append(f"# rule {i + 1}: {rule.kind}" + (f" at {rule.at}" if rule.kind in GRADIENT_RULES else ""))
        if rule.kind == "retain":
            uses.add("alpha")
            lines.append("P = g_alpha * P")
        elif rule.kind == "gd":
            uses.add("eta")
            residual_grad(point)
            lines.append("P = P - g_eta * dlt[:, None] * kt[None, :]")
        elif rule.kind == "momentum":
            uses.update(("eta", "beta"))
            residual_grad(point)
            lines.append("S = g_beta * S - g_eta * dlt[:, None] * kt[None, :]")
            lines.append("P = P + S")
        elif rule.kind == "delta":
            uses.add("eta")
            lines.append("P = P - g_eta * tl.sum(P * kt[None, :], axis=1)[:, None] * kt[None, :]")
        else:  # dgd: W (alpha I - eta k k^T) - eta g, g at the rule's point before it acts
            uses.update(("eta", "alpha"))
            residual_grad(point)
            lines.append("P = g_alpha * P - g_eta * (tl.sum(P * kt[None, :], axis=1) + dlt)[:, None] * kt[None, :]")
    return tuple(lines), tuple(g for g in GATES if g in uses)


# ------------------------------------------------------------------ rendering

@dataclass(frozen=True)
class Skipped:
    level: str
    reason: str

    @property
    def level_literal(self) -> str:
        return literal(self.level)

    @property
    def reason_literal(self) -> str:
        return literal(self.reason)


def render(plans, title: str, skipped=(), mlp_plans=()) -> str:
    """The text of kernels.py for these plans (levels without kernels listed in `skipped`). Levels whose
    plans differ only in their names (HOPE's four generator memories) share one copy of the kernels."""
    plans, entries = _shared(plans)
    mlp_plans, mlp_entries = _shared(mlp_plans)

    def text_with(elementwise: str) -> str:
        return environment().get_template("kernels.py.jinja").render(
            title=title, plans=plans, entries=entries, skipped=list(skipped), mlp_plans=mlp_plans,
            mlp_entries=mlp_entries, wy=any(plan.form == "wy" for plan in plans), elementwise=elementwise)

    text = text_with("")
    used = [f"{fn} as _nl_{fn}" for fn in ELEMENTWISE if f"_nl_{fn}(" in text]
    if used:  # the runtime's precise elementwise functions that the kernels call, imported under their names
        text = text_with(", ".join(used))
    try:
        pyast.parse(text, filename="kernels.py")
    except SyntaxError as e:  # a bug in the generator, never in the spec
        raise RuntimeError(f"generated kernels.py does not parse: {e}") from e
    return text


def _shared(plans) -> tuple[list, list]:
    """(the plans whose kernels are rendered, every plan for the KERNELS table): a plan equal to an earlier
    one but for its names is not rendered again, and its entry runs the earlier level's kernels."""
    first: dict = {}
    rendered, entries = [], []
    for plan in plans:
        key = dataclasses.replace(plan, level="", prefix="", doc="")
        if key in first:
            entries.append(dataclasses.replace(plan, shared=first[key].prefix))
        else:
            first[key] = plan
            rendered.append(plan)
            entries.append(plan)
    return rendered, entries


def model_kernels(model: ir.ModelIR, spec_file: str) -> str:
    """kernels.py of a compiled package: every linear memory level of the model, and the MLP memory
    levels with a fused form (kernels_mlp.py)."""
    from .kernels_mlp import mlp_kernel_form, plan_mlp_level

    plans, skipped, mlp_plans = [], [], []
    for m in model.memories:
        cfg = m
        o = m.objective
        code = objective_code(o.name, dict(o.params), m.dv, o.expr, dict(model.constants))
        if m.family == "mlp":
            form, reason = mlp_kernel_form(cfg, code)
            if form == "none":
                skipped.append(Skipped(m.name, reason))
            else:
                doc = doc_text(f"memory level {m.name} ({m.span.file}:{m.span.line})")
                mlp_plans.append(plan_mlp_level(m.name, cfg, code, doc))
            continue
        form, reason = kernel_form(cfg, code)
        if form == "none":
            skipped.append(Skipped(m.name, reason))
            continue
        doc = doc_text(f"memory level {m.name} ({m.span.file}:{m.span.line})")
        plans.append(plan_level(m.name, cfg, code, doc))
    return render(plans, doc_text(f"{model.name}: Triton kernels of the memory levels of {spec_file}"), skipped,
                  mlp_plans)


def level_kernels_source(level: str, cfg, objective: ObjectiveCode) -> str:
    """kernels.py text for one level outside a compiled package (the runtime's on-demand rendering)."""
    if cfg.family == "mlp":
        from .kernels_mlp import plan_mlp_level

        return render([], doc_text(f"Triton kernels of memory level {level}"), (), [plan_mlp_level(level, cfg, objective)])
    plan = plan_level(level, cfg, objective)
    return render([plan], doc_text(f"Triton kernels of memory level {level}"))


__all__ = ["KernelPlan", "ObjectiveCode", "Poly", "derivative", "fold_dual", "fold_wy", "kernel_form",
           "level_kernels_source", "model_kernels", "objective_code", "plan_level", "render",
           "runtime_objective_code"]
