"""Generated kernels carry no dead code: in every example's kernels.py, and in the kernels of a spread of
memory configurations (both families, every form, momentum, transitions, read modes, self-generated
targets, elementwise objectives), no function assigns a local that it never reads. Rendering needs no
Triton; the check uses the standard library's symbol tables."""
from __future__ import annotations

import symtable

import pytest

from compile_testkit import ROOT, compile_ok
from nldsl.codegen.kernels import level_kernels_source, runtime_objective_code
from nldsl.runtime import MemoryConfig, Rule, standard_objective

EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.nl"))


def unused_locals(text: str) -> list[str]:
    """'function: name' for every local assigned and never read."""
    found = []

    def walk(table) -> None:
        if table.get_type() == "function":
            found.extend(f"{table.get_name()}: {s.get_name()}" for s in table.get_symbols()
                         if s.is_assigned() and not s.is_referenced() and not s.is_parameter()
                         and s.get_name() != "_")
        for child in table.get_children():
            walk(child)

    walk(symtable.symtable(text, "kernels.py", "exec"))
    return found


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_kernels_have_no_unused_locals(name):
    files = compile_ok(ROOT / "examples" / f"{name}.nl")
    assert unused_locals(files["kernels.py"]) == []


def linear(rules, chunk, read="after", self_target=False):
    return MemoryConfig("linear", 16, 16, rules=tuple(Rule(*r) if isinstance(r, tuple) else Rule(r) for r in rules),
                        chunk=chunk, read=read, self_target=self_target)


def mlp(rules, chunk, read="anchor", self_target=False):
    return MemoryConfig("mlp", 16, 16, depth=2, hidden=32, act="silu", residual=True,
                        rules=tuple(Rule(r) for r in rules), chunk=chunk, read=read, self_target=self_target)


CONFIGS = {
    "dual momentum, read before": (linear(["retain", "momentum"], 4, read="before"), "l2"),
    "dual momentum then delta": (linear(["retain", "momentum", "delta"], 4), "l2"),
    "dual dgd self target": (linear(["dgd"], 4, read="anchor", self_target=True), "l2"),
    "dual huber": (linear(["gd"], 4), "huber"),
    "wy gated deltanet, read before": (linear(["retain", ("gd", "current")], 1, read="before"), "l2"),
    "wy dgd self target": (linear([("dgd", "current")], 1, self_target=True), "l2"),
    "wy retain only": (linear(["retain"], 1), "l2"),
    "wy dot": (linear(["delta", "gd"], 1), "dot"),
    "recurrent momentum": (linear(["retain", "momentum"], 1), "l2"),
    "mlp momentum, read before": (mlp(["retain", "momentum"], 4, read="before"), "mse"),
    "mlp dgd self target": (mlp(["dgd"], 4, self_target=True), "l2"),
    "mlp gd lp": (mlp(["gd"], 4, read="after"), "lp"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configuration_kernels_have_no_unused_locals(name):
    cfg, objective = CONFIGS[name]
    code = runtime_objective_code(standard_objective(objective), cfg.dv)
    assert unused_locals(level_kernels_source("blk.mem", cfg, code)) == []
