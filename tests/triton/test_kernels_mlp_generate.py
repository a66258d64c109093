"""Generation of the MLP-memory kernels (no Triton needed): which configurations are fused and why the
others fall back, names and inlined constants, the activations' derivative code, determinism and the
compiled package."""
from __future__ import annotations

import ast
import os
import types
from pathlib import Path

import pytest
import torch

from nldsl.codegen.kernel_objectives import objective_code
from nldsl.codegen.kernels import level_kernels_source
from nldsl.codegen.kernels_mlp import ACTIVATIONS, mlp_kernel_form, plan_mlp_level
from nldsl.compiler import compile_spec
from nldsl.runtime.memory import MemoryConfig, Rule
from nldsl.runtime.memory.functional import ACTIVATION_FNS

ROOT = Path(__file__).resolve().parents[2]
L2 = objective_code("l2", {}, 8)


def mlp(rules=("retain", "momentum"), chunk=4, depth=2, bias=False, act="silu", read="anchor"):
    return MemoryConfig("mlp", 8, 8, depth=depth, hidden=16, act=act, residual=True, bias=bias,
                        rules=tuple(Rule(r) for r in rules), read=read, chunk=chunk)


@pytest.mark.parametrize("rules", [("gd",), ("retain", "momentum"), ("momentum", "retain"),
                                   ("retain", "gd", "momentum"), ("dgd",), ("retain", "delta", "gd")])
@pytest.mark.parametrize("read", ["after", "before", "anchor"])
def test_retain_gd_and_momentum_at_the_anchor_are_fused(rules, read):
    form, reason = mlp_kernel_form(mlp(rules, read=read), L2)
    assert form == "dual" and "chunk 4" in reason


@pytest.mark.parametrize("cfg, reason", [
    (mlp(("dgd", "momentum")), "rule dgd together with momentum"),
    (mlp(("delta", "gd", "momentum")), "rule delta together with momentum"),
    (MemoryConfig("mlp", 8, 8, depth=2, hidden=16, rules=(Rule("dgd", per_layer=True),), chunk=4), "per-layer"),
    (mlp(depth=3), "depth 3"),
    (mlp(depth=1), "depth 1"),
    (mlp(("gd",), chunk=1), "chunk 1"),
    (mlp(("retain",)), "no gradient rule"),
])
def test_the_other_mlp_memories_fall_back_with_a_reason(cfg, reason):
    form, why = mlp_kernel_form(cfg, L2)
    assert form == "none" and reason in why
    with pytest.raises(ValueError, match=reason):
        plan_mlp_level("blk.mem", cfg, L2)


def test_biases_are_fused_and_streamed_forward_only():
    """A level with biases gets the on-chip kernels with the biases' state, and of the streamed ones the
    forward without a split over programs (its backward is the PyTorch walk over the chunks)."""
    text = level_kernels_source("b.m", mlp(bias=True), L2)
    names = {n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)}
    assert {"b__m_fwd", "b__m_bwd", "b__m_fwd_streamed"} <= names
    assert not {"b__m_bwd_streamed", "b__m_fwd_streamed_out"} & names
    assert "b1, b2, ab1, ab2, sb1, sb2," in text and "bias=True," in text
    plain = level_kernels_source("b.m", mlp(), L2)
    assert "b1, b2" not in plain and "b__m_fwd_streamed" in plain


def test_kernels_are_named_after_the_level_and_inline_the_dimensions():
    cfg = MemoryConfig("mlp", 12, 12, depth=2, hidden=24, act="gelu", residual=True,
                       rules=(Rule("retain"), Rule("momentum")), read="anchor", chunk=8)
    text = level_kernels_source("lmm_block.mem", cfg, L2)
    tree = ast.parse(text)
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"lmm_block__mem_fwd", "lmm_block__mem_bwd", "lmm_block__mem_act", "lmm_block__mem_dact",
            "lmm_block__mem_ddact"} <= names
    assert "DK: tl.constexpr = 12, HD: tl.constexpr = 24, DV: tl.constexpr = 12" in text
    assert "BK: tl.constexpr = 16, BH: tl.constexpr = 32, BV: tl.constexpr = 16" in text
    assert "tl.erf" in text and "'lmm_block.mem': MlpLevelKernels(" in text
    assert level_kernels_source("lmm_block.mem", cfg, L2) == text


def test_only_the_rules_present_are_generated():
    gd = level_kernels_source("b.m", mlp(("gd",), read="after"), L2)
    assert "S1 = tl.load" not in gd and "c_cm" not in gd and "c_cw" in gd and "c_cp" not in gd
    dgd = level_kernels_source("b.m", mlp(("dgd",), read="after"), L2)
    assert "c_cp = " in dgd and "c_cw2 = " in dgd and "n2 = " not in dgd
    gd_delta = level_kernels_source("b.m", mlp(("gd", "delta"), read="after"), L2)
    assert "n2 = tl.sum(K * K, axis=1)" in gd_delta and "d_n2[:, None] * K" in gd_delta
    mom = level_kernels_source("b.m", mlp(("retain", "momentum"), read="after"), L2)
    assert "S1 = tl.load" in mom and "c_cm" in mom and "c_cw" not in mom


def _triton_expression(code: str):
    """A kernel's activation code evaluated with torch standing in for triton.language."""
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    tl = types.SimpleNamespace(sigmoid=torch.sigmoid, erf=torch.erf, exp=torch.exp,
                               maximum=lambda a, b: torch.maximum(t(a), t(b)),
                               where=lambda c, a, b: torch.where(c, t(a), t(b)))
    return lambda z: eval(code, {"tl": tl, "_nl_tanh": torch.tanh, "z": z})  # noqa: S307 - generator text


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_the_activation_code_and_its_two_derivatives(act):
    z = torch.linspace(-3.0, 3.0, 41, dtype=torch.float64).requires_grad_(True)
    f, df, ddf = (_triton_expression(c) for c in ACTIVATIONS[act])
    ref = ACTIVATION_FNS[act][0](z)
    (d1,) = torch.autograd.grad(ref.sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z, allow_unused=True) if d1.requires_grad else (None,)
    d2 = torch.zeros_like(z) if d2 is None else d2
    keep = z.detach().abs() > 1e-6  # relu's kink
    assert torch.allclose(f(z.detach()), ref.detach(), atol=1e-12)
    assert torch.allclose(df(z.detach())[keep], d1.detach()[keep], atol=1e-12)
    assert torch.allclose(ddf(z.detach())[keep], d2[keep], atol=1e-12)


def _compiled(name: str) -> str:
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        _, files = compile_spec(f"examples/{name}.nl")
    finally:
        os.chdir(old)
    return files["kernels.py"]


@pytest.mark.parametrize("name, level", [("titans", "lmm_block.mem"), ("ttt_mlp", "ttt_block.inner"),
                                         ("hope", "selfmod_titans.mem"), ("miras", "smooth_block.mem")])
def test_compiled_packages_carry_kernels_for_their_fused_mlp_memories(name, level):
    text = _compiled(name)
    assert f"{level!r}: MlpLevelKernels(" in text
    assert f"def {level.replace('.', '__')}_bwd(" in text
    tree = ast.parse(text)
    no_kernels = [ast.literal_eval(n.value) for n in tree.body
                  if isinstance(n, ast.Assign) and n.targets[0].id == "NO_KERNELS"]
    assert no_kernels == [{}]
    assert _compiled(name) == text


def _kernel_table(text: str) -> dict:
    """KERNELS of a kernels.py text: level -> {argument: the name or literal it is given}."""
    tree = ast.parse(text)
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "KERNELS")
    return {ast.literal_eval(key): {kw.arg: ast.unparse(kw.value) for kw in call.keywords}
            for key, call in zip(table.keys, table.values)}


def test_levels_of_one_configuration_share_one_copy_of_the_kernels():
    """hope.nl's four generator memories differ only in their names: one copy of their kernels, an entry
    per level (named after it) that runs it; HOPE's memory (another chunk) has its own."""
    text = _compiled("hope")
    table = _kernel_table(text)
    generators = [f"selfmod_titans.mem_{m}" for m in ("k", "v", "eta", "alpha")]
    for level in generators:
        assert table[level]["level"] == repr(level)
        assert table[level]["fwd"] == "selfmod_titans__mem_k_fwd"
        assert table[level]["bwd_streamed"] == "selfmod_titans__mem_k_bwd_streamed"
    for level in generators[1:]:
        assert f"def {level.replace('.', '__')}_" not in text
        assert f"# {level}: the kernels of an earlier level of the same configuration" in text
    assert table["selfmod_titans.mem"]["fwd"] == "selfmod_titans__mem_fwd"
    assert text.count("def selfmod_titans__mem_k_fwd(") == 1


def test_linear_levels_of_one_configuration_share_their_kernels_too():
    from nldsl.codegen.kernels import plan_level, render

    same = [plan_level(name, MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("gd")), chunk=4), L2)
            for name in ("b.m", "b.n")]
    other = plan_level("b.o", MemoryConfig("linear", 8, 8, rules=(Rule("retain"), Rule("gd")), chunk=8), L2)
    text = render([*same, other], "three levels")
    table = _kernel_table(text)
    assert table["b.n"]["fwd"] == "b__m_fwd" and table["b.n"]["step"] == "b__m_step"
    assert table["b.o"]["fwd"] == "b__o_fwd" and "def b__n_" not in text
