"""Generation of kernels.py (no Triton needed): forms, names, inlined constants, the folding of the
rule order into coefficients, the objectives' derivatives, determinism and the compiled package."""
from __future__ import annotations

import ast
import math
import os
from pathlib import Path

import pytest
import torch

from nldsl.codegen import symbolic as S
from nldsl.codegen.kernel_coefs import Poly, fold_dual, fold_wy
from nldsl.codegen.kernel_objectives import derivative, objective_code, triton_code
from nldsl.codegen.kernels import kernel_form, level_kernels_source, plan_level
from nldsl.compiler import compile_spec
from nldsl.runtime.memory import MemoryConfig, Rule, standard_objective
from nldsl.runtime.memory.coeffs import dual_coefficients, wy_coefficients

ROOT = Path(__file__).resolve().parents[2]


def cfg(rules, chunk=4, read="after", self_target=False, dk=8, dv=8):
    return MemoryConfig("linear", dk, dv, rules=tuple(Rule(*r) if isinstance(r, tuple) else Rule(r) for r in rules),
                        read=read, chunk=chunk, self_target=self_target)


def compiled(name: str) -> dict:
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        fe, files = compile_spec(f"examples/{name}.nl")
    finally:
        os.chdir(old)
    assert files is not None
    return files


# ------------------------------------------------------------------ forms and names

@pytest.mark.parametrize("rules, chunk, objective, form", [
    (["gd"], 4, "l2", "dual"),
    (["retain", "momentum"], 16, "huber", "dual"),
    (["retain", ("gd", "current")], 1, "l2", "wy"),
    (["gd"], 1, "dot", "wy"),
    (["retain", "momentum"], 1, "l2", "recurrent"),
    ([("gd", "current")], 1, "l1", "recurrent"),
])
def test_each_linear_configuration_gets_its_form(rules, chunk, objective, form):
    code = objective_code(objective, {}, 8)
    assert kernel_form(cfg(rules, chunk), code)[0] == form


def test_an_mlp_memory_has_no_linear_family_kernels_and_says_why():
    mlp = MemoryConfig("mlp", 8, 8, depth=2, hidden=8, rules=(Rule("gd"),), chunk=4)
    form, reason = kernel_form(mlp, objective_code("l2", {}, 8))
    assert form == "none" and "MLP" in reason and "kernels_mlp" in reason
    with pytest.raises(ValueError, match="MLP"):
        plan_level("b.m", mlp, objective_code("l2", {}, 8))


def test_kernels_are_named_after_the_level_and_inline_dims_and_chunk():
    text = level_kernels_source("selfmod_titans.mem", cfg(["retain", "momentum"], chunk=8, dk=16, dv=24),
                                objective_code("l2", {}, 24))
    tree = ast.parse(text)
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"selfmod_titans__mem_fwd", "selfmod_titans__mem_bwd", "selfmod_titans__mem_step"} <= names
    assert "DK: tl.constexpr = 16, DV: tl.constexpr = 24, C: tl.constexpr = 8" in text
    assert "BT: tl.constexpr = 16" in text and "BK: tl.constexpr = 16" in text
    assert "'selfmod_titans.mem': LevelKernels(" in text


def test_rendering_is_deterministic_and_free_of_undefined_names():
    a = level_kernels_source("b.m", cfg(["retain", "delta", "gd"], read="before"), objective_code("l2", {}, 8))
    b = level_kernels_source("b.m", cfg(["retain", "delta", "gd"], read="before"), objective_code("l2", {}, 8))
    assert a == b and a.endswith("\n")
    assert "Undefined" not in a and "{{" not in a and "{%" not in a


def test_the_step_kernel_applies_the_rules_in_the_declared_order():
    text = level_kernels_source("b.m", cfg(["momentum", "retain"], chunk=1), objective_code("l2", {}, 8))
    step = text[text.index("def b__m_step"):]
    assert step.index("# rule 1: momentum") < step.index("S = g_beta * S") < step.index("# rule 2: retain") \
        < step.index("P = g_alpha * P")
    swapped = level_kernels_source("b.m", cfg(["retain", "momentum"], chunk=1), objective_code("l2", {}, 8))
    assert swapped != text


def test_a_gradient_at_the_current_state_reads_the_current_state():
    text = level_kernels_source("b.m", cfg(["retain", ("gd", "current")], chunk=1), objective_code("l2", {}, 8))
    step = text[text.index("def b__m_step"):]
    assert "z = tl.sum(P * kt[None, :], axis=1)" in step
    anchor = level_kernels_source("b.m", cfg(["retain", "gd"], chunk=1), objective_code("l2", {}, 8))
    assert "z = tl.sum(Wa * kt[None, :], axis=1)" in anchor[anchor.index("def b__m_step"):]


def test_the_backward_kernel_is_generated_for_chunk_forms_only():
    for rules, chunk, has_bwd in ((["retain", "gd"], 4, True), (["dgd"], 4, True), (["retain", ("gd", "current")], 1, True),
                                  (["retain", "momentum"], 1, False)):
        plan = plan_level("b.m", cfg(rules, chunk), objective_code("l2", {}, 8))
        assert plan.backward == has_bwd, (rules, chunk)
        assert ("def b__m_bwd" in level_kernels_source("b.m", cfg(rules, chunk), objective_code("l2", {}, 8))) == has_bwd


# ------------------------------------------------------------------ the folding of the rules

def _evaluate(poly: Poly, values: dict) -> float:
    return sum(c * math.prod(values[v] ** e for v, e in m) for m, c in poly.terms.items())


RULE_LISTS = [["retain", "gd"], ["gd", "retain"], ["retain", "momentum", "delta"], ["delta", "gd", "retain"],
              ["dgd"], ["momentum", "dgd"], ["retain", "delta", "delta"]]


@pytest.mark.parametrize("rules", RULE_LISTS, ids=lambda r: "-".join(r))
@pytest.mark.parametrize("self_target", [False, True])
def test_the_generators_folding_equals_the_chunked_paths(rules, self_target):
    """fold_dual / fold_wy (polynomials) evaluate to the runtime's coefficients (memory/coeffs.py)."""
    values = {"eta": 0.3, "alpha": 0.8, "beta": 0.6, "n2": 1.7}
    gates = {g: torch.tensor([values[g]], dtype=torch.float64) for g in ("eta", "alpha", "beta")}
    norm2 = torch.tensor([values["n2"]], dtype=torch.float64)

    def value(x) -> float:
        return x.item() if isinstance(x, torch.Tensor) else float(x)

    dual_rules = tuple(Rule(r) for r in rules)
    numeric = dual_coefficients(dual_rules, gates, norm2, lambda rule: True)
    for field, poly in fold_dual(dual_rules).items():
        assert _evaluate(poly, values) == pytest.approx(value(getattr(numeric, field)), rel=1e-12), field
    for at in ("anchor", "current"):
        wy_rules = tuple(Rule(r, at if r in ("gd", "dgd") else "anchor") for r in rules if r != "momentum")
        for affine in ((1.0, 1.0), (0.25, 0.25), (0.0, 1.0)):
            numeric = wy_coefficients(wy_rules, gates, norm2, affine, self_target)
            for field, poly in fold_wy(wy_rules, affine, self_target).items():
                assert _evaluate(poly, values) == pytest.approx(value(getattr(numeric, field)), rel=1e-12, abs=1e-15), \
                    (field, at, affine)


def test_polynomial_derivatives_and_printing():
    a, e = Poly.var("alpha"), Poly.var("eta")
    p = a * a * e - 2.0 * e + 1.0
    assert p.derivative("alpha") == 2.0 * a * e
    assert p.derivative("eta") == a * a - 2.0
    assert p.derivative("beta").is_zero
    assert p.code() == "1.0 - 2.0 * g_eta + g_alpha * g_alpha * g_eta"
    assert Poly.const(0.0) == 0 and not (p == 0)


# ------------------------------------------------------------------ objectives

def _triton_as_torch(code: str, r: torch.Tensor) -> torch.Tensor:
    """Evaluate generated Triton expression code with torch stand-ins for tl and the helpers."""
    def t(x):
        return torch.as_tensor(x, dtype=r.dtype)

    class TL:
        abs, exp, log, sqrt, sigmoid = torch.abs, torch.exp, torch.log, torch.sqrt, torch.sigmoid

        @staticmethod
        def minimum(a, b):
            return torch.minimum(t(a), t(b))

        @staticmethod
        def maximum(a, b):
            return torch.maximum(t(a), t(b))

        @staticmethod
        def where(c, x, y):
            return torch.where(c, t(x), t(y))
    return eval(code, {"tl": TL, "_nl_sign": torch.sign, "_nl_tanh": torch.tanh,
                       "_nl_softplus": torch.nn.functional.softplus, "_nl_power": torch.pow, "r": r})


CUSTOM = ["sqrt(1 + r * r) - 1", "log(1 + r ** 2)", "max(r, 0.5 * r) ** 2", "abs(r) ** 1.5 + tanh(r) * r",
          "min(r * r, 1) + sigmoid(r) - exp(-r * r) / 2", "softplus(r) ** 2 - r * softplus(-r)"]


@pytest.mark.parametrize("expr", CUSTOM)
def test_custom_objective_derivatives_match_autograd(expr, tmp_path):
    """dl/dr and d2l/dr2 of the Triton code equal torch autograd of the loss."""
    from specs import memory_spec
    path = tmp_path / "custom.nl"
    path.write_text(memory_spec(objective=f"custom({expr})"), encoding="utf-8")
    fe, files = compile_spec(str(path))
    assert files is not None, [d.message for d in fe.diagnostics]
    tree = fe.model.memories[0].objective.expr
    code = objective_code("custom", {}, 8, tree, {})
    r = (torch.linspace(-2.3, 2.1, 41, dtype=torch.float64) + 0.0123).requires_grad_(True)  # no ties of min / max
    class T:  # torch, with min / max of a tensor and a number
        abs, sign, exp, log, sqrt, tanh, sigmoid = (torch.abs, torch.sign, torch.exp, torch.log, torch.sqrt,
                                                    torch.tanh, torch.sigmoid)
        nn = torch.nn

        @staticmethod
        def minimum(a, b):
            return torch.minimum(torch.as_tensor(a, dtype=r.dtype), torch.as_tensor(b, dtype=r.dtype))

        @staticmethod
        def maximum(a, b):
            return torch.maximum(torch.as_tensor(a, dtype=r.dtype), torch.as_tensor(b, dtype=r.dtype))
    loss = eval(S.loss_code(tree, {}), {"torch": T, "r": r})
    g1, = torch.autograd.grad(loss.sum(), r, create_graph=True)
    g2, = torch.autograd.grad(g1.sum(), r)
    assert torch.allclose(_triton_as_torch(code.grad, r.detach()), g1.detach(), atol=1e-10)
    assert torch.allclose(_triton_as_torch(code.grad2, r.detach()), g2, atol=1e-10)


@pytest.mark.parametrize("name, params", [("l1", {}), ("huber", {"delta": 0.7}), ("lp", {"p": 3.0}), ("lp", {"p": 2.5})])
def test_standard_elementwise_objectives_match_the_runtime(name, params):
    code = objective_code(name, params, 8)
    r = torch.linspace(-2.0, 2.0, 37, dtype=torch.float64) + 0.013
    runtime = standard_objective(name, **params)
    want = runtime(r.requires_grad_(True), torch.zeros_like(r))
    assert torch.allclose(_triton_as_torch(code.grad, r.detach()), want.detach(), atol=1e-10)
    g2, = torch.autograd.grad(want.sum(), r)
    assert torch.allclose(_triton_as_torch(code.grad2, r.detach()), g2, atol=1e-10)


def test_affine_objectives_are_coefficients():
    assert objective_code("l2", {}, 8).affine == (1.0, 1.0)
    assert objective_code("mse", {}, 8).affine == (0.25, 0.25)
    assert objective_code("dot", {}, 8).affine == (0.0, 1.0)
    plan = plan_level("b.m", cfg(["gd"]), objective_code("dot", {}, 8))
    assert plan.affine_expr == "-TG" and not plan.needs_z


def test_constant_derivatives_keep_the_shape_of_r():
    assert triton_code(S.Num(0.0)) == "0.0 + 0.0 * r"
    assert derivative(S.BinE("*", S.Num(3.0), S.R)) == S.Num(3.0)


# ------------------------------------------------------------------ the compiled package

@pytest.mark.parametrize("name, level", [("linear_attention", "linear_attn.fast"), ("gated_deltanet", "gdn_block.fast"),
                                         ("ttt_linear", "ttt_block.inner"), ("deltanet", "delta_block.fast")])
def test_compiled_packages_carry_kernels_for_their_linear_memories(name, level):
    files = compiled(name)
    text = files["kernels.py"]
    assert "kernels.py" in __import__("json").loads(files["manifest.json"])["files"]
    tree = ast.parse(text)
    assert ast.get_docstring(tree)
    prefix = level.replace(".", "__")
    assert f"def {prefix}_step(" in text and f"{level!r}: LevelKernels(" in text
    assert str(ROOT) not in text
    assert compiled(name)["kernels.py"] == text


def test_mlp_memories_without_a_fused_form_are_listed_with_the_reason(tmp_path):
    hope = (ROOT / "examples" / "hope.nl").read_text(encoding="utf-8")
    assert "mlp(depth = 2, hidden = head_dim" in hope
    spec = tmp_path / "deep_hope.nl"
    spec.write_text(hope.replace("mlp(depth = 2, hidden = head_dim", "mlp(depth = 3, hidden = head_dim"), encoding="utf-8")
    _, files = compile_spec(str(spec))
    text = files["kernels.py"]
    namespace: dict = {}
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "NO_KERNELS":
            namespace = ast.literal_eval(node.value)
    levels = {f"selfmod_titans.{m}" for m in ("mem_k", "mem_v", "mem_eta", "mem_alpha", "mem")}
    assert set(namespace) == levels
    assert all("MLP memory of depth 3" in reason for reason in namespace.values())
