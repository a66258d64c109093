"""Whole `.nl` models drawn with hypothesis from every part of the language (`models()`), and the helpers
that write a drawn spec and build its model with a nested training loop. test_fuzz_models.py states what
they are held to; test_compile_hypothesis.py and tests/runtime/test_fuzz_flows.py draw from them too."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hypothesis import Phase, strategies as st

from nldsl.compiler import _import_package, write_package
from nldsl.runtime import set_backend
from nldsl.runtime.optim import make_optimizer
from nldsl.runtime.train import NestedLoop

LIBRARY = "parts.nl"

# The phases of the tests that draw whole models: all but `explain`, which traces every line of each run
# of a failing example while it shrinks, and makes a whole model's shrinking crawl.
SEARCH = tuple(p for p in Phase if p is not Phase.explain)

ACTIVATIONS = ("silu", "gelu", "tanh", "relu", "sigmoid", "identity")
CUSTOM = ("r * r", "sqrt(1 + r * r) - 1", "log(1 + r * r)", "r * tanh(r)", "softplus(r) + softplus(-r)")
GRADIENT_RULES = ("gd", "momentum", "dgd")
GATES = {"retain": ("alpha",), "gd": ("eta",), "momentum": ("eta", "beta"), "delta": ("eta",),
         "dgd": ("eta", "alpha")}
# m3 divides an orthogonalised direction by √V + ε entry by entry, so with its default ε an entry whose
# gradients are all near zero steps by about lr / ε; ε = 1e-2 bounds that step.
OPTIMIZERS = ("sgd(lr = 0.05)", "sgd(lr = 0.05, weight_decay = 0.01)", "momentum(lr = 0.02, beta = 0.8)",
              "adamw(lr = 1e-3)", "adamw(lr = 1e-3, betas = (0.9, 0.95), weight_decay = 0.1)",
              "muon(lr = 0.01, ns_steps = 3)", "m3(lr = 1e-3, frequency = 2, ns_steps = 3, eps = 1e-2)",
              "deep_momentum(lr = 0.01, hidden = 4)")


@dataclass(frozen=True)
class Sizes:
    vocab: int
    dim: int
    heads: int
    context: int


@dataclass(frozen=True)
class Generated:
    """A generated spec: the model's text, its library's text ("" when it imports none) and its sizes."""
    model: str
    library: str
    sizes: Sizes


@dataclass
class Parts:
    """What a block contributes: level declarations, bindings (in order) and outputs of width dim."""
    levels: list = field(default_factory=list)
    bindings: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def add(self, other: "Parts") -> None:
        self.levels += other.levels
        self.bindings += other.bindings
        self.outputs += other.outputs


@dataclass
class Spec:
    """A model being drawn: model-level declarations, library declarations and the network's pieces."""
    sizes: Sizes
    kinds: list = field(default_factory=list)  # model-level memory and attention kinds
    library: list = field(default_factory=list)  # declarations of the imported library
    library_alias: str = ""  # "" (unqualified import), or the `as` name
    optimizers: list = field(default_factory=list)
    blocks: list = field(default_factory=list)
    chains: list = field(default_factory=list)
    chain_names: list = field(default_factory=list)
    counter: int = 0

    def qualified(self, name: str) -> str:
        """How the model writes a name of its library."""
        return f"{self.library_alias}.{name}" if self.library_alias else name

    def fresh(self) -> int:
        self.counter += 1
        return self.counter


# ------------------------------------------------------------------------------------------ small pieces


def indent(lines, depth: int) -> str:
    return "\n".join("  " * depth + line if line else "" for line in lines)


def optimizer(draw, spec: Spec, inline: bool = False) -> str:
    """An optimizer call, or the name of an `optimizer` declaration of the model."""
    call = draw(st.sampled_from(OPTIMIZERS))
    if inline or draw(st.booleans()):
        return call
    name = f"opt{spec.fresh()}"
    spec.optimizers.append(f"optimizer {name} : {call}")
    return name


def head_layout(draw, z: Sizes) -> tuple[int, str, str]:
    """(head count, `per` phrase, the width of a per-head gate as written)."""
    choice = draw(st.sampled_from(["one", "model", "two"]))
    if choice == "one":
        return 1, "", "1"
    if choice == "model":
        return z.heads, " per head", "heads"
    return 2, " per 2 heads", "2"


def projection(draw, source: str, width: str, normed: bool, conv: bool = True) -> str:
    """linear(source, width), perhaps through a short convolution and an activation, perhaps l2-normed."""
    expr = f"linear({source}, {width})"
    if conv and draw(st.integers(0, 3)) == 0:
        expr = f"conv({expr}, window = {draw(st.integers(1, 4))})"
    if draw(st.integers(0, 3)) == 0:
        expr = f"silu({expr})"
    return f"l2norm({expr})" if normed else expr


def gate(draw, name: str, width: str, kind: str, source: str = "x") -> tuple[str, str]:
    """(the gate's flow value, its binding or ""): a bounded expression or a constant."""
    if draw(st.integers(0, 4)) == 0:
        return {"eta": "0.05", "alpha": "0.9", "beta": "0.5", "log": "-0.1"}[kind], ""
    expr = {"eta": f"0.05 * sigmoid(linear({source}, {width}))",
            "alpha": f"0.6 + 0.4 * sigmoid(linear({source}, {width}))",
            "beta": f"0.9 * sigmoid(linear({source}, {width}))",
            "log": f"-0.3 * softplus(linear({source}, {width}))"}[kind]
    return name, f"{name} = {expr}"


# ------------------------------------------------------------------------------------------ memories


def memory_type(draw, square: bool) -> tuple[str, bool]:
    """(the memory's type, whether it is an MLP)."""
    if draw(st.booleans()):
        return "linear", False
    depth = draw(st.integers(1, 3))
    parts = [f"depth = {depth}"]
    if depth > 1 and draw(st.booleans()):
        parts.append(f"hidden = {draw(st.integers(2, 6))}")
    if draw(st.booleans()):
        parts.append(f"act = {draw(st.sampled_from(ACTIVATIONS))}")
    if square and draw(st.booleans()):
        parts.append("residual = true")
    if draw(st.integers(0, 3)) == 0:
        parts.append("bias = true")
    return f"mlp({', '.join(parts)})", True


def update_rules(draw, chunk: int, mlp: bool) -> tuple[list, list]:
    """(rule words in order, rule kinds): one to three rules, one momentum at most, no retain with dgd."""
    kinds = draw(st.lists(st.sampled_from(list(GATES)), min_size=1, max_size=3))
    if kinds.count("momentum") > 1:
        kinds = [k for k in kinds if k != "momentum"] + ["momentum"]
    if "dgd" in kinds:
        kinds = [k for k in kinds if k != "retain"]
    words = []
    for kind in kinds:
        word = kind
        if kind == "dgd" and mlp and draw(st.booleans()):
            word = "dgd(per_layer = true)"
        if kind in GRADIENT_RULES:
            word += draw(st.sampled_from(["", " at anchor", " at current"] if chunk == 1 else ["", " at anchor"]))
        words.append(word)
    return words, kinds


def objective(draw) -> str:
    """An inner objective: a named one, huber or lp with an argument, or a custom expression of r."""
    name = draw(st.sampled_from(["l2", "sq", "mse", "dot", "l1", "huber", "lp", "custom"]))
    if name == "huber":
        return f"huber({draw(st.sampled_from(['0.5', '1.0', '2']))})"
    if name == "lp":
        return f"lp({draw(st.sampled_from(['2', '2.5', '3']))})"
    if name == "custom":
        return f"custom({draw(st.sampled_from(CUSTOM))})"
    return name


def memory_part(draw, spec: Spec, i: int, source: str = "x") -> Parts:
    """One memory level read once (or twice, as two instances of one kind) in a block."""
    z = spec.sizes
    n, per, gate_width = head_layout(draw, z)
    dk = draw(st.sampled_from([2, 4]))
    square = draw(st.booleans())
    dv = dk if square else draw(st.sampled_from([2, 3, 4]))
    chunk = draw(st.sampled_from([1, 1, 2, 3, 4]))
    mtype, mlp = memory_type(draw, dk == dv)
    words, kinds = update_rules(draw, chunk, mlp)
    gates = sorted({g for k in kinds for g in GATES[k]})
    out = Parts()
    normed = draw(st.integers(0, 3)) > 0
    out.bindings.append(f"k{i} = {projection(draw, source, str(n * dk), normed)}")
    out.bindings.append(f"v{i} = {projection(draw, source, str(n * dv), draw(st.booleans()))}")
    out.bindings.append(f"q{i} = {projection(draw, source, str(n * dk), normed)}")
    self_value = dk == dv and draw(st.integers(0, 3)) == 0
    body = [f"key       k{i}", f"value     {'self(v%d)' % i if self_value else f'v{i}'}"]
    default_query = draw(st.booleans())
    if default_query:
        body.append(f"query     q{i}")
    for name, key, kind in (("eta", "lr", "eta"), ("beta", "momentum", "beta")):
        if name in gates:
            value, binding = gate(draw, f"{name}{i}", gate_width, kind, source)
            body.append(f"{key:<9} {value}")
            out.bindings += [binding] if binding else []
    if "alpha" in gates:
        if draw(st.booleans()):
            value, binding = gate(draw, f"g{i}", gate_width, "log", source)
            body.append(f"log_retain {value}")
        else:
            value, binding = gate(draw, f"alpha{i}", gate_width, "alpha", source)
            body.append(f"retain    {value}")
        out.bindings += [binding] if binding else []
    optional = [f"chunk     {chunk}" if chunk > 1 or draw(st.booleans()) else "",
                f"objective {objective(draw)}" if draw(st.booleans()) else "",
                f"update    {', '.join(words)}",
                f"clip      {draw(st.sampled_from(['0.1', '1.0', '1e3']))}"
                if set(kinds) & set(GRADIENT_RULES) and draw(st.integers(0, 3)) == 0 else "",
                f"read      {draw(st.sampled_from(['before write', 'after write', 'at anchor']))}"
                if draw(st.booleans()) else "",
                f"state     {draw(st.sampled_from(['reset per sequence', 'persist']))}" if draw(st.booleans()) else "",
                f"init      {draw(st.sampled_from(['by pretrain', 'zero']))}" if draw(st.booleans()) else "",
                f"clock     {draw(st.sampled_from(['every 1 token', 'never']))}" if draw(st.integers(0, 5)) == 0 else ""]
    body += [line for line in optional if line]
    body = draw(st.permutations(body))
    names = [f"m{i}"] + ([f"m{i}b"] if draw(st.integers(0, 3)) == 0 else [])
    where = draw(st.sampled_from(["block", "kind", "library"]))
    header = f"{mtype}{per}"
    if where == "block":
        out.levels.append([f"memory {', '.join(names)} : {header} {{", *[f"  {b}" for b in body], "}"])
    else:
        kind = f"kind{spec.fresh()}"
        declaration = [f"memory {kind} : {header} {{", *[f"  {b}" for b in body], "}"]
        if where == "library":
            spec.library.append(declaration)
            kind = spec.qualified(kind)
        else:
            spec.kinds.append(declaration)
        override = draw(st.sampled_from(["", "read at anchor", "chunk 2", "state persist", "init zero"]))
        out.levels.append([f"memory {', '.join(names)} : {kind}" + (f" {{ {override} }}" if override else "")])
    read = (lambda m: f"{m}()") if default_query else (lambda m: f"{m}(q{i})")
    out.outputs += [f"linear({read(m)}, dim)" for m in names]
    return out


def selfmod_part(draw, spec: Spec, i: int) -> Parts:
    """HOPE's self-modifying group: the key, value and gates of a memory are reads of memories of the same
    kind, each writing with keys that are its own reads at the chunk's anchor."""
    z = spec.sizes
    chunk = draw(st.sampled_from([1, 2, 4]))
    rule = draw(st.sampled_from(["dgd", "gd", "retain, gd"]))
    depth = draw(st.integers(1, 2))
    kind = f"selfmod{spec.fresh()}"
    spec.kinds.append([
        f"memory {kind} : mlp(depth = {depth}, hidden = {z.dim // z.heads}, residual = true) per head {{",
        f"  chunk     {chunk}", f"  key       k{i}", f"  value     {draw(st.sampled_from(['self(v%d)' % i, f'v{i}']))}",
        f"  lr        eta{i}", f"  retain    alpha{i}", f"  update    {rule}",
        f"  objective {draw(st.sampled_from(['l2', 'mse', 'dot']))}",
        f"  read      {draw(st.sampled_from(['at anchor', 'before write']))}", "}"])
    out = Parts()
    out.levels.append([f"memory sm{i}_k, sm{i}_v, sm{i}_eta, sm{i}_alpha : {kind}"])
    out.levels.append([f"memory sm{i} : {kind}" + (" { chunk 2 }" if draw(st.booleans()) else "")])
    out.bindings += [f"k{i} = l2norm(sm{i}_k(x))", f"v{i} = l2norm(sm{i}_v(x))",
                     f"eta{i} = 0.05 * sigmoid(linear(sm{i}_eta(x), heads))",
                     f"alpha{i} = 0.5 + 0.5 * sigmoid(linear(sm{i}_alpha(x), heads))"]
    out.outputs.append(f"linear(sm{i}(l2norm(conv(linear(x, dim), window = 2))), dim)")
    return out


# ------------------------------------------------------------------------------------------ attention


def attention_part(draw, spec: Spec, i: int) -> Parts:
    """Causal softmax attention, perhaps sliding-window, with persistent tokens, segments or a scale."""
    z = spec.sizes
    n, per, _ = head_layout(draw, z)
    dh = draw(st.sampled_from([2, 4]))
    body = [f"key        ka{i}", f"value      va{i}"]
    if draw(st.booleans()):
        body.append(f"persistent {draw(st.integers(1, 3))}")
    shape = draw(st.sampled_from(["causal", "window", "segment"]))
    prefix = shape == "segment" or len(body) > 2  # runs per segment: token-wise key and value flows only
    if shape == "window":
        body.append(f"window     {draw(st.integers(1, z.context - 1))}")
    elif shape == "segment":
        body.append(f"segment    {draw(st.sampled_from([s for s in (2, 4, 8) if s < z.context]))}")
    if draw(st.integers(0, 3)) == 0:
        body.append(f"scale      {draw(st.sampled_from(['0.5', '1', '2']))}")
    if draw(st.integers(0, 4)) == 0:
        body.append("clock      every 1 token")
    default_query = draw(st.booleans())
    if default_query:
        body.append(f"query      qa{i}")
    out = Parts()
    out.bindings += [f"qa{i} = {projection(draw, 'x', str(n * dh), draw(st.booleans()))}",
                     f"ka{i} = {projection(draw, 'x', str(n * dh), False, not prefix)}",
                     f"va{i} = {projection(draw, 'x', str(n * draw(st.sampled_from([2, 4]))), False, not prefix)}"]
    declaration = [f"attention att{i} : softmax{per} {{", *[f"  {b}" for b in draw(st.permutations(body))], "}"]
    if draw(st.integers(0, 3)) == 0:
        kind = f"attn{spec.fresh()}"
        spec.kinds.append([declaration[0].replace(f"att{i}", kind, 1), *declaration[1:]])
        out.levels.append([f"attention att{i} : {kind}"])
    else:
        out.levels.append(declaration)
    out.outputs.append(f"linear(att{i}({'' if default_query else f'qa{i}'}), dim)")
    return out


def mac_part(draw, spec: Spec, i: int) -> Parts:
    """Titans MAC: attention within segments whose prefix is a memory read at the segment start."""
    z = spec.sizes
    segment = draw(st.sampled_from([s for s in (2, 4, 8) if s < z.context]))
    rule = draw(st.sampled_from(["gd", "retain, momentum", "retain, gd"]))
    out = Parts()
    out.levels.append([f"memory mm{i} : {draw(st.sampled_from(['linear', 'mlp(depth = 2, residual = true)']))} per head {{",
                       f"  chunk     {segment}", f"  key       mk{i}", f"  value     mv{i}", "  lr        0.05",
                       *(["  retain    0.9"] if "retain" in rule else []),
                       *(["  momentum  0.5"] if "momentum" in rule else []),
                       f"  update    {rule}", f"  read      {draw(st.sampled_from(['after write', 'at anchor']))}", "}"])
    out.levels.append([f"attention mc{i} : softmax per head {{", f"  key        mka{i}", f"  value      mva{i}",
                       f"  segment    {segment}",
                       *([f"  persistent {draw(st.integers(1, 2))}"] if draw(st.booleans()) else []),
                       f"  context    mm{i}(mq{i})", "}"])
    out.bindings += [f"mka{i} = linear(x, dim)", f"mva{i} = linear(x, dim)", f"mq{i} = l2norm(linear(x, dim))",
                     f"my{i} = linear(mc{i}(linear(x, dim)), dim)",
                     f"mk{i} = l2norm(linear(my{i}, dim))", f"mv{i} = linear(my{i}, dim)"]
    out.outputs.append(f"my{i} * sigmoid(linear(mm{i}(l2norm(linear(my{i}, dim))), dim))")
    return out


def conv_part(draw, spec: Spec, i: int) -> Parts:
    """A short convolution with a norm and an activation, no level."""
    norm = draw(st.sampled_from(["rmsnorm", "layernorm", "l2norm"]))
    act = draw(st.sampled_from(["silu", "gelu", "relu", "tanh", "softplus"]))
    return Parts(bindings=[f"c{i} = {norm}({act}(conv(linear(x, dim), window = {draw(st.integers(1, 4))})))"],
                 outputs=[f"c{i}"])


def arithmetic_part(draw, spec: Spec, i: int) -> Parts:
    """Elementwise arithmetic of projections: min, max, powers, quotients, exp and sqrt."""
    a, b = "linear(x, dim)", f"linear(x, {draw(st.sampled_from(['dim', '1']))})"
    expr = draw(st.sampled_from([f"max({a}, 0.5 * {b}) - min({a}, {b})", f"exp(-abs({a})) * {b}",
                                 f"sqrt(1 + {a} ** 2) - 1", f"{a} / (1 + abs({b}))", f"tanh({a}) ** 3 + {b}",
                                 f"log(1 + softplus({a})) * {b}", f"-{a} + 2 * {b}"]))
    return Parts(bindings=[f"e{i} = {expr}"], outputs=[f"e{i}"])


def call_part(draw, spec: Spec, i: int) -> Parts:
    """A CMS chain, or a parameterless block, applied to a value inside a block."""
    targets = list(spec.chain_names) + [b for b, uses_params, _ in spec.blocks if not uses_params]
    if not targets:
        return conv_part(draw, spec, i)
    target = draw(st.sampled_from(targets))
    return Parts(bindings=[f"h{i} = {target}(rmsnorm(x))"], outputs=[f"h{i}"])


PARTS = {"memory": memory_part, "attention": attention_part, "conv": conv_part, "selfmod": selfmod_part,
         "mac": mac_part, "call": call_part, "arithmetic": arithmetic_part}


# ------------------------------------------------------------------------------------------ blocks, chains


def combine(draw, outputs: list) -> str:
    """The block's return: a sum of its outputs, perhaps gated and normed, projected to dim."""
    expr = " + ".join(outputs)
    if draw(st.integers(0, 3)) == 0:
        expr = f"({expr}) * sigmoid(linear(x, {draw(st.sampled_from(['dim', '1']))}))"
    if draw(st.integers(0, 3)) == 0:
        expr = f"rmsnorm({expr})"
    return f"linear({expr}, dim)"


def block(draw, spec: Spec, name: str) -> str:
    """A block of one to three parts; a memory may read what an earlier part returned instead of x."""
    kinds = draw(st.lists(st.sampled_from(["memory", "memory", "attention", "conv", "selfmod", "mac", "call",
                                           "arithmetic"]), min_size=1, max_size=3))
    parts = Parts()
    for kind in kinds:
        i = spec.fresh()
        if kind == "memory" and parts.outputs and draw(st.booleans()):
            parts.bindings.append(f"o{i} = {parts.outputs.pop()}")
            parts.outputs.append(f"o{i}")
            parts.add(memory_part(draw, spec, i, source=f"o{i}"))
        else:
            parts.add(PARTS[kind](draw, spec, i))
    lines = [f"block {name}(x) {{"]
    for level in parts.levels:
        lines += [f"  {line}" for line in level]
    lines += [f"  {b}" for b in parts.bindings]
    lines.append(f"  return {combine(draw, parts.outputs)}")
    lines.append("}")
    return "\n".join(lines)


def ffn_block(draw, spec: Spec, name: str) -> tuple[str, str]:
    """(a block with a size parameter, the way the network uses it); in the model, or in the library with
    the model's width as a library constant."""
    act = draw(st.sampled_from(["gelu", "silu", "relu"]))
    if draw(st.booleans()):
        text = f"block {name}(x, expand = 2) {{\n  return linear({act}(linear(x, expand * dim)), dim)\n}}"
    else:
        spec.library.append([f"ffn_width = {spec.sizes.dim}", f"block {name}(x, expand = 2) {{",
                             f"  return linear({act}(linear(x, expand * ffn_width)), ffn_width)", "}"])
        text, name = "", spec.qualified(name)
    return text, draw(st.sampled_from([name, f"{name}(expand = 3)", f"{name}(expand = 1)"]))


def member_type(draw) -> str:
    """A CMS member's MLP: its width by expansion or given, perhaps an activation and no bias."""
    parts = [draw(st.sampled_from(["expand = 2", "expand = 1", "hidden = 6"]))]
    if draw(st.booleans()):
        parts.append(f"act = {draw(st.sampled_from(['gelu', 'silu', 'relu', 'tanh']))}")
    if draw(st.integers(0, 3)) == 0:
        parts.append("bias = false")
    return f"mlp({', '.join(parts)})"


def chain(draw, spec: Spec, name: str, inline: bool = False) -> str:
    """A CMS chain of one to three members; `inline`: its optimizers are calls (a library's chain)."""
    z = spec.sizes
    wiring = draw(st.sampled_from(["sequential", "independent", "nested"]))
    if wiring == "independent" and draw(st.booleans()):
        wiring = f"independent(agg = {draw(st.sampled_from(['weighted_sum', 'sum', 'mean']))})"
    count = draw(st.integers(1, 3))
    periods = draw(st.lists(st.one_of(st.integers(2, z.context), st.just(0)), min_size=count, max_size=count))
    if wiring == "nested":
        periods = sorted(periods, key=lambda p: p or math.inf, reverse=True)  # slowest first: `never` leads
    lines = [f"cms {name} : {wiring} {{"]
    for line in ("taught by pretrain" if draw(st.integers(0, 3)) == 0 else "",
                 f"update {optimizer(draw, spec, inline)}" if draw(st.booleans()) else "",
                 f"state  {draw(st.sampled_from(['persist', 'reset per sequence']))}" if draw(st.booleans()) else "",
                 f"flush  {draw(st.sampled_from(['partial', 'drop']))}" if draw(st.booleans()) else "",
                 f"lr     {draw(st.sampled_from(['0.5', '1', '2']))}" if draw(st.integers(0, 3)) == 0 else ""):
        if line:
            lines.append(f"  {line}")
    for j, period in enumerate(periods):
        clock = f"clock every {period} tokens" if period else "clock never"
        extra = []
        if period and draw(st.integers(0, 3)) == 0:
            extra.append(f"update {optimizer(draw, spec, inline)}")
        if period and draw(st.integers(0, 3)) == 0:
            extra.append("lr 0.5")
        if extra:
            lines += [f"  level {name}_l{j} : {member_type(draw)} {{", f"    {clock}", *[f"    {e}" for e in extra], "  }"]
        else:
            lines.append(f"  level {name}_l{j} : {member_type(draw)} {{ {clock} }}")
    lines.append("}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ network, model


def stage(draw, name: str) -> str:
    """A pipeline stage around a block or a chain."""
    return draw(st.sampled_from([f"residual(rmsnorm -> {name})", f"residual(layernorm -> {name})",
                                 f"residual({name})", name, f"{name} -> rmsnorm",
                                 f"stack(residual(rmsnorm -> {name}), 2)"]))


def outer_level(draw, spec: Spec) -> str:
    """The outer level with an optimizer and, in any order, any of its optional keys."""
    lines = ["level pretrain : outer {"]
    optional = [f"clock     every {draw(st.sampled_from(['1 step', '2 steps']))}" if draw(st.booleans()) else "",
                "objective next_token" if draw(st.booleans()) else "",
                f"update    {optimizer(draw, spec)}",
                f"clip      {draw(st.sampled_from(['0.5', '1.0', '10']))}" if draw(st.booleans()) else "",
                f"bptt      {draw(st.sampled_from(['truncated', 'full']))}" if draw(st.booleans()) else "",
                f"warmup    {draw(st.integers(0, 3))}" if draw(st.booleans()) else "",
                f"schedule  {draw(st.sampled_from(['constant', 'cosine']))}" if draw(st.booleans()) else ""]
    lines += [f"  {line}" for line in draw(st.permutations([o for o in optional if o]))]
    lines.append("}")
    return "\n".join(lines)


@st.composite
def models(draw) -> Generated:
    dim = draw(st.sampled_from([8, 16]))
    z = Sizes(vocab=draw(st.sampled_from([16, 24, 32])), dim=dim, heads=draw(st.sampled_from([1, 2, 4])),
              context=draw(st.sampled_from([8, 12, 16, 24, 32])))
    spec = Spec(z, library_alias=draw(st.sampled_from(["", "lib"])))
    outer = outer_level(draw, spec)
    chains, chain_texts = [], []
    for j in range(draw(st.integers(0, 2))):
        in_library = draw(st.integers(0, 3)) == 0
        text = chain(draw, spec, f"chain{j}", inline=in_library)
        if in_library:
            spec.library.append([text])
        else:
            chain_texts.append(text)
        chains.append(spec.qualified(f"chain{j}") if in_library else f"chain{j}")
    spec.chain_names = chains
    stages = []
    if draw(st.integers(0, 2)) == 0:
        text, use = ffn_block(draw, spec, "ffn")
        spec.blocks.append(("ffn", True, text))
        stages.append(stage(draw, use))
    for j in range(draw(st.integers(1, 3))):
        name = f"mix{j}"
        spec.blocks.append((name, False, block(draw, spec, name)))
        stages.append(stage(draw, name))
    stages += [stage(draw, c) for c in chains]
    stages = draw(st.permutations(stages))
    layer = " -> ".join(stages)
    shape = draw(st.sampled_from(["plain", "stack", "named"]))
    final = draw(st.sampled_from(["rmsnorm -> ", "layernorm -> ", ""]))
    head = f"lm_head(tied = {draw(st.sampled_from(['true', 'false']))})"
    bindings = []
    if shape == "plain":
        body = layer
    else:
        bindings.append(f"layer = {layer}")
        body = f"stack(layer, {draw(st.integers(1, 2))})" if shape == "stack" else "layer"
    bindings.append(f"network = embed(vocab, dim) -> {body} -> {final}{head}")
    items = [f"vocab   = {z.vocab}", f"dim     = {z.dim}", f"heads   = {z.heads}", f"context = {z.context}", "",
             *spec.optimizers, outer, *["\n".join(k) for k in spec.kinds], *chain_texts,
             *[text for _, _, text in spec.blocks if text], *bindings]
    imports = ""
    library = ""
    if spec.library:
        imports = f'import "{LIBRARY}"' + (f" as {spec.library_alias}" if spec.library_alias else "") + "\n"
        library = "nl 1\n" + "\n".join("\n".join(d) for d in spec.library) + "\n"
    model = "nl 1\n" + imports + "model generated {\n" + indent("\n".join(items).split("\n"), 1) + "\n}\n"
    return Generated(model, library, z)


# ------------------------------------------------------------------------------------------ files, models


def write(directory: Path, model: str, library: str) -> Path:
    """Write the spec (and its library) into `directory`; the spec's path."""
    if library:
        (directory / LIBRARY).write_text(library, encoding="utf-8")
    path = directory / "generated.nl"
    path.write_text(model, encoding="utf-8")
    return path


def build(directory: Path, files: dict):
    """The compiled package's model in float64 and a nested training loop over it."""
    package = write_package(files, str(directory / "build"), "model", force=True)
    torch.manual_seed(0)
    model = set_backend(_import_package(package).Model(), "chunked").to(torch.float64)
    info = json.loads((package / "levels.json").read_text())["runtime"]
    return model, NestedLoop(model, info, make_optimizer)
