"""Pass 4: elaboration — from the resolved program to the model IR.

Folds the constants, reads the outer level, optimizers and cms chains, elaborates every block used by
the network (its bindings, its memory and attention levels, its output), infers the widths, and builds
the network tree with each level's replica count. All problems are collected; the pass raises
SpecError at its end if any is an error.
"""

from __future__ import annotations

import dataclasses

from . import ast, ir, levels as lv, phrases, schema
from .consts import Fail, Poison, fold_constants, import_prefix, scoped, suggest
from .diagnostics import Label, SpecError, Sink, error, warning
from .dims import Widths, check_elementwise, infer
from .resolve import Program
from .shadowing import block_shadowing, model_shadowing
from .values import UNARY as VALUE_FUNCTIONS, Scope, ValueBuilder, reads_in

REQUIRED = ("vocab", "dim", "context")


class Elaborator:
    def __init__(self, program: Program):
        self.p = program
        self.sink = Sink()
        self.blocks: dict[str, ir.BlockDef] = {}
        self.block_args: dict[str, tuple] = {}  # block → (its arguments, where first used)
        self.protos: dict[str, dict] = {}  # level name → fields gathered before widths are known
        self.bindings: dict = {}  # (block, name) → Value
        self.reads: dict[str, list] = {}  # level → [(block, Read)]
        self.elaborating: list[str] = []
        self.shadow_checked: set[str] = set()
        self.nets_used: set[str] = {"network"}  # network bindings some used stage names

    # ------------------------------------------------------------ entry

    def run(self) -> ir.ModelIR:
        p, sink = self.p, self.sink
        assigns = [(s.name, s.node) for s in p.of_kind("const")]
        network_names = [s.name for s in p.of_kind("block", "cms")]
        env, nets, diags = fold_constants(assigns, network_names)
        sink.extend(diags)
        self.env, self.nets = env, nets
        self.const_spans = {s.name: s.span for s in p.of_kind("const") if s.name in env}
        model_shadowing(p, sink)
        for key in REQUIRED:
            if key not in env and key not in nets:
                sink.add(error("NL0104", f"the model has no `{key}`", p.model.name_span, "in this model",
                               help=_EXAMPLES[key]))
        for key in REQUIRED + ("heads",):
            _check_size(key, env, nets, p.lookup(key), sink)
        if sink.has_errors:
            raise SpecError(sink.items)
        self.dim, self.vocab, self.context = env["dim"], env["vocab"], env["context"]

        self.optimizers = {}
        for sym in p.of_kind("optimizer"):
            prefix = import_prefix(sym.name)  # a library's optimizer imported `as L` is `L.name`
            for opt in lv.declared_optimizer(sym.node, scoped(env, prefix), sink):
                self.optimizers[prefix + opt.name] = dataclasses.replace(opt, name=prefix + opt.name)
        outer = self._outer()
        self.outer_name = outer.name if outer else "outer"
        self.templates = {s.name: s.node for s in p.symbols if s.kind in ("memory", "attention")}
        self.chains: dict[str, ir.Cms] = {}
        for sym in p.of_kind("cms"):
            chain = lv.cms_chain(sym.node, sym.name, self.dim, scoped(env, import_prefix(sym.name)), self.outer_name,
                                 self.optimizers, sink)
            if chain is not None:
                self.chains[sym.name] = chain
        if "network" not in nets:
            span = p.lookup("network").span if p.lookup("network") else p.model.name_span
            sink.add(error("NL0104", "the model has no `network`", span, "",
                           help="e.g. `network = embed(vocab, dim) -> stack(layer, layers) -> rmsnorm -> lm_head(tied = true)`"))
            raise SpecError(sink.items)
        network = self._net(nets["network"].value, ())
        memories, attentions = self._finish_levels()
        if not sink.has_errors:  # with errors, an unused definition is usually a consequence
            self._unused()
        if sink.has_errors or outer is None or network is None:
            raise SpecError(sink.items)
        replicas = _replicas(network, self.blocks, self.chains)
        consts = tuple((k, v) for k, v in env.items() if isinstance(v, (int, float, str, tuple)))
        return ir.ModelIR(p.model.name, p.main.file, consts, self.vocab, self.dim, self.context, outer,
                          tuple(memories), tuple(attentions), tuple(self.chains.values()),
                          tuple(self.optimizers.values()), tuple(self.blocks.values()), network,
                          tuple(sorted(replicas.items())), p.model.span)

    # ------------------------------------------------------------ outer level

    def _outer(self):
        decls = [s for s in self.p.of_kind("level")]
        outers = [s for s in decls if s.node.type is not None and phrases.word(s.node.type.words[0]) == "outer"]
        for s in decls:
            if s not in outers:
                self.sink.add(error("NL0108", "a top-level `level` must be the outer level: `level NAME : outer`",
                                    s.span, help="cms members are declared inside a `cms` chain"))
        if not outers:
            self.sink.add(error("NL0104", "the model has no outer level", self.p.model.name_span,
                                help="add `level pretrain : outer { update adamw(lr = 3e-4) }`"))
            return None
        for extra in outers[1:]:
            self.sink.add(error("NL0102", "a model has one outer level", extra.span, "second outer level",
                                labels=[Label(outers[0].span, "first")],
                                help="remove one; faster levels are memories, attention or cms chains"))
        return lv.outer_level(outers[0].node, self.env, self.optimizers, self.sink)

    # ------------------------------------------------------------ network

    def _net(self, expr, stack: tuple) -> ir.Net | None:
        try:
            return self._net_or_fail(expr, stack)
        except Fail as f:
            if f.diag is not None:
                self.sink.add(f.diag)
            return None

    def _net_or_fail(self, expr, stack):
        if isinstance(expr, ast.Pipe):
            stages = [self._net(s, stack) for s in expr.stages]
            return ir.Seq(tuple(stages), expr.span) if all(stages) else None
        if isinstance(expr, ast.Name):
            return self._net_name(expr.id, expr, {}, stack)
        if isinstance(expr, ast.Call):
            fn = expr.func.id
            if fn == "residual":
                _args(expr, 1, ())
                inner = self._net(expr.args[0], stack)
                return ir.Residual(inner, expr.span) if inner else None
            if fn == "stack":
                _args(expr, 2, ())
                inner = self._net(expr.args[0], stack)
                n = phrases.positive_int(expr.args[1], self.env, "a stack count")
                name = expr.args[0].id if isinstance(expr.args[0], ast.Name) else "layer"
                return ir.Stack(inner, n, expr.span, name) if inner else None
            if fn == "embed":
                _args(expr, 2, ())
                vocab = phrases.positive_int(expr.args[0], self.env, "the vocabulary size")
                dim = phrases.positive_int(expr.args[1], self.env, "the embedding width")
                if dim != self.dim:
                    raise Fail(error("NL0204", f"the embedding width {dim} is not the model width {self.dim}",
                                     expr.args[1].span, help="the residual stream has width `dim`"))
                if vocab != self.vocab:
                    raise Fail(error("NL0204", f"the embedding's vocabulary {vocab} is not the model's `vocab` ({self.vocab})",
                                     expr.args[0].span, help="token ids and logits both run over `vocab`: write `embed(vocab, dim)`"))
                return ir.Embed(vocab, dim, expr.span)
            if fn == "lm_head":
                _args(expr, 0, ("tied",))
                tied = expr.kwarg("tied")
                return ir.LMHead(bool(phrases.fold(tied, self.env)) if tied is not None else False, expr.span)
            if fn in ("rmsnorm", "layernorm") and not expr.args:
                return ir.Norm(fn, expr.span)
            kwargs = {k.name: k for k in expr.kwargs}
            if expr.args:
                raise Fail(error("NL0107", "in a pipeline, a block takes only keyword arguments", expr.span,
                                 help="the value flowing through the pipeline is its input"))
            return self._net_name(fn, expr.func, kwargs, stack)
        raise Fail(error("NL0405", "this is not a network stage", expr.span,
                         help="stages are blocks, cms chains, norms, residual(...), stack(...), embed(...), lm_head(...)"))

    def _net_name(self, name, node, kwargs, stack):
        sym = self.p.lookup(name)
        if name in ("rmsnorm", "layernorm"):
            return ir.Norm(name, node.span)
        if name in self.nets:
            self.nets_used.add(name)
            if name in stack:
                raise Fail(error("NL0111", f"`{name}` is defined in terms of itself", node.span, "used inside its own definition",
                                 help=f"to repeat a stage, use `stack({name}, n)` in the network"))
            return self._net(self.nets[name].value, stack + (name,))
        if sym is not None and sym.kind == "block":
            self._block(sym, kwargs, node.span, stack)
            return ir.BlockCall(name, node.span)
        if sym is not None and sym.kind == "cms":
            if kwargs:
                raise Fail(error("NL0107", "a cms chain takes no arguments", node.span,
                                 help=f"write `{name}`; its settings are in its declaration"))
            return ir.CmsCall(name, node.span) if name in self.chains else None
        if name in VALUE_FUNCTIONS | {"linear", "conv"}:
            raise Fail(error("NL0405", f"`{name}` is a function of values, not a network stage", node.span,
                             help=f"apply it inside a block, e.g. `block act(x) {{ return {name}(x) }}`"))
        known = list(self.nets) + [s.name for s in self.p.of_kind("block", "cms")] + ["rmsnorm", "layernorm"]
        raise Fail(error("NL0101", f"unknown network stage `{name}`", node.span,
                         help=suggest(name, known) or "define a block or a cms chain with this name"))

    # ------------------------------------------------------------ blocks

    def _block(self, sym, kwargs, span, stack):
        name = sym.name
        args = tuple(sorted((k, self._arg_key(kw.value)) for k, kw in kwargs.items()))
        if name in self.blocks or name in self.elaborating:
            if name in self.elaborating:
                raise Fail(error("NL0111", f"the block `{name}` uses itself", span, "applied inside its own body",
                                 help="blocks cannot recurse; use `stack(block, n)` in the network to repeat one"))
            first_args, first_span = self.block_args[name]
            if args != first_args:
                raise Fail(error("NL0601", f"`{name}` is used with different arguments in different places",
                                 span, "other arguments here", labels=[Label(first_span, "first used here")],
                                 help="a block has one configuration; declare a second block for the other one"))
            return
        self.block_args[name] = (args, span)
        self.elaborating.append(name)
        try:
            # a block imported `as L` is `L.mix` everywhere, its own definition included
            node = sym.node if sym.node.name == name else dataclasses.replace(sym.node, name=name)
            self.blocks[name] = self._block_body(node, kwargs, scoped(self.env, import_prefix(name)))
            self._applied_blocks(self.blocks[name], stack)
        finally:
            self.elaborating.pop()

    def _arg_key(self, expr):
        """A block argument as compared between uses: its value when it folds, else its expression."""
        try:
            return repr(phrases.fold(expr, self.env))
        except Fail:
            return repr(ast.strip_spans(expr))

    def _applied_blocks(self, block: ir.BlockDef, stack):
        """Elaborate the blocks that `block` applies to values (`y = other(x)`)."""
        for _, v in block.bindings + (("return", block.output),):
            for node in ir.walk(v):
                if isinstance(node, ir.Apply) and isinstance(node.target, ir.BlockCall):
                    try:
                        self._block(self.p.lookup(node.target.block), {}, node.span, stack)
                    except Fail as f:
                        if f.diag is not None:
                            self.sink.add(f.diag)

    def _block_body(self, node: ast.Block, kwargs, env) -> ir.BlockDef:
        """`env`: the constants as the block sees them (a library's own constants also bare)."""
        sink = self.sink
        if not node.params:
            raise Fail(error("NL0107", f"the block `{node.name}` needs an input parameter", node.name_span,
                             help=f"block {node.name}(x) {{ ... }}"))
        consts = dict(env)
        inputs = (node.params[0].name,)
        if node.params[0].default is not None:
            sink.add(error("NL0107", "the first parameter is the block's input and has no default", node.params[0].span,
                           help=f"the value flowing into the block is its input: `block {node.name}({node.params[0].name}, ...)`"))
        for prm in node.params[1:]:
            src = kwargs[prm.name].value if prm.name in kwargs else prm.default
            if src is None:
                sink.add(error("NL0107", f"`{prm.name}` has no default and no argument", prm.span,
                               help=f"give it a default, `{prm.name} = ...`, or an argument where the block is used: "
                                    f"`{node.name}({prm.name} = ...)`"))
                continue
            try:
                consts[prm.name] = phrases.fold(src, env)
            except Fail as f:
                sink.add(f.diag) if f.diag else None
        params = [q.name for q in node.params[1:]]
        for k, kw in kwargs.items():
            if k not in params:
                sink.add(error("NL0107", f"the block `{node.name}` has no parameter `{k}`", kw.span,
                               help=suggest(k, params) or (f"its parameters: {', '.join(params)}" if params else
                                                           f"`{node.name}` takes no arguments besides its input")))
        if node.name not in self.shadow_checked:
            self.shadow_checked.add(node.name)
            block_shadowing(node, self.const_spans, sink)
        local_levels = {}
        first_span = {prm.name: prm.span for prm in node.params}  # local name → where it was first defined
        decls = [s for s in node.body if isinstance(s, ast.Decl)]
        for d in decls:
            if d.kind not in ("memory", "attention"):
                sink.add(error("NL0108", f"a `{d.kind}` cannot be declared inside a block", d.span,
                               help="declare it in the model and use it by name"))
                continue
            for ident in d.names:
                if ident.name in local_levels:
                    sink.add(error("NL0102", f"`{ident.name}` is declared twice in this block", ident.span,
                                   "declared again here", labels=[Label(first_span[ident.name], "first declared here")],
                                   help="give each level of a block its own name"))
                    continue
                local_levels[ident.name] = f"{node.name}.{ident.name}"
                first_span[ident.name] = ident.span
        scope = Scope(node.name, inputs, consts, local_levels,
                      later={s.name for s in node.body if isinstance(s, ast.Assign)},
                      blocks={s.name for s in self.p.of_kind("block")}, chains=set(self.chains),
                      failed={s.key for s in node.body if isinstance(s, ast.Prop)})
        builder = ValueBuilder(scope)
        output, returned = None, None
        for stmt in node.body:
            if isinstance(stmt, ast.Assign):
                if stmt.name in first_span:
                    sink.add(error("NL0102", f"`{stmt.name}` is already defined in this block", stmt.name_span,
                                   "defined again here", labels=[Label(first_span[stmt.name], "first defined here")],
                                   help="bindings are single assignments; give the new value its own name"))
                    continue
                first_span[stmt.name] = stmt.name_span
                scope.later.discard(stmt.name)
                value = self._value(builder, stmt.value, stmt.name)
                if value is not None:
                    scope.bindings[stmt.name] = value
                    self.bindings[(node.name, stmt.name)] = value
                else:
                    scope.failed.add(stmt.name)
            elif isinstance(stmt, ast.Return):
                if returned is not None:
                    sink.add(error("NL0102", "a block returns once", stmt.span, "second return",
                                   labels=[Label(returned, "first return")],
                                   help="keep one `return`; name intermediate values with `y = ...`"))
                    continue
                returned = stmt.span
                output = self._value(builder, stmt.value, "out")
            elif isinstance(stmt, ast.Prop):
                sink.add(error("NL0108", f"`{stmt.key} ...` is a property; a block body holds bindings "
                                         "`name = ...`, level declarations and `return`", stmt.span,
                               help=f"did you mean `{stmt.key} = ...`?"))
            elif isinstance(stmt, ast.Block):
                sink.add(error("NL0108", "blocks are declared in the model, not inside another block", stmt.span))
        if returned is None:
            sink.add(error("NL0104", f"the block `{node.name}` has no `return`", node.name_span,
                           help="end it with `return <value>`"))
        for d in decls:
            if d.kind in ("memory", "attention"):
                for ident in d.names:
                    self._level_proto(d, ident, node.name, builder)
        for value in list(scope.bindings.values()) + ([output] if output is not None else []):
            for r in reads_in(value):
                self.reads.setdefault(r.level, []).append((node.name, r))
        return ir.BlockDef(node.name, inputs, tuple(scope.bindings.items()), output or ir.Const(0.0, node.span),
                           tuple(local_levels.values()), node.span)

    def _value(self, builder, expr, label, allow_self=False):
        try:
            return builder.build(expr, label, allow_self)
        except Fail as f:
            if f.diag is not None:
                self.sink.add(f.diag)
        except RecursionError:
            self.sink.add(error("NL0005", "this expression is nested too deeply", expr.span))
        return None

    def _level_proto(self, decl: ast.Decl, ident: ast.Ident, block: str, builder: ValueBuilder):
        from .memories import level_proto

        proto = level_proto(self, decl, ident, block, builder)
        if proto is not None:
            self.protos[proto["name"]] = proto

    # ------------------------------------------------------------ finishing

    def _finish_levels(self):
        from .memories import finish

        unknowns = {n: (p["block"], p["unknowns"], p["flows"], self.reads.get(n, [])) for n, p in self.protos.items()}
        widths = Widths(self.dim, self.bindings, {n: u[1] for n, u in unknowns.items()})
        infer(unknowns, widths, self.sink)
        check_elementwise(self.blocks.values(), widths, self.sink)
        return finish(self, self.protos)

    def _unused(self):
        used_blocks = set(self.blocks)
        for s in self.p.symbols:
            if s.span.file != self.p.main.file:
                continue
            if s.kind == "block" and s.name not in used_blocks:
                self.sink.add(warning("NL0110", f"the block `{s.name}` is never used", s.span, "unused",
                                      help="use it in `network = ...` or remove it"))
            if s.kind == "cms" and s.name not in _used_chains(self):
                self.sink.add(warning("NL0110", f"the cms chain `{s.name}` is never used", s.span, "unused"))
            if s.kind == "const" and s.name in self.nets and s.name not in self.nets_used:
                self.sink.add(warning("NL0110", f"the network binding `{s.name}` is never used", s.span, "unused",
                                      help="use it in `network = ...` or remove it"))
            if s.kind == "optimizer" and not _optimizer_used(self, s.name):
                self.sink.add(warning("NL0110", f"the optimizer `{s.name}` is never used", s.span, "unused",
                                      help="name it in a level's `update`"))


_EXAMPLES = {"vocab": "e.g. `vocab = 256` for bytes", "dim": "e.g. `dim = 128`",
             "context": "tokens per training sequence, e.g. `context = 256`", "heads": "e.g. `heads = 4`"}


def _check_size(key: str, env, nets, sym, sink: Sink) -> None:
    """`vocab`, `dim`, `context` and `heads` are positive integers (a failed definition is already reported)."""
    if key in nets:
        sink.add(error("NL0201", f"`{key}` must be a positive integer, not a network", sym.span,
                       "bound to a network here", help=_EXAMPLES[key]))
        return
    if key not in env or isinstance(env[key], Poison):
        return
    problem = phrases.size_error(env[key], f"`{key}`", sym.span, label="it is", fix=f"`{key} = {{n}}`",
                                 otherwise=_EXAMPLES[key])
    if problem is not None:
        sink.add(problem)


def _args(call: ast.Call, npos: int, kws: tuple):
    if len(call.args) != npos:
        raise Fail(error("NL0107", f"`{call.func.id}` takes {npos} positional argument(s)", call.span,
                         f"given {len(call.args)}", help=schema.BUILTINS.get(call.func.id, "")))
    for kw in call.kwargs:
        if kw.name not in kws:
            raise Fail(error("NL0107", f"`{call.func.id}` has no argument `{kw.name}`", kw.span,
                             help=schema.BUILTINS.get(call.func.id, "")))


def _used_chains(el: Elaborator) -> set:
    """Chains applied inside a block or named in a network binding."""
    out = set()
    for b in el.blocks.values():
        for _, v in b.bindings + (("out", b.output),):
            for node in ir.walk(v):
                if isinstance(node, ir.Apply) and isinstance(node.target, ir.CmsCall):
                    out.add(node.target.cms)
    for a in el.nets.values():
        for node in ast.walk(a.value):
            if isinstance(node, ast.Name) and node.id in el.chains:
                out.add(node.id)
    return out


def _optimizer_used(el: Elaborator, name: str) -> bool:
    """An optimizer declaration is used when a level or chain names it (in its `update`)."""
    return any(isinstance(node, ast.Name) and node.id == name
               for sym in el.p.of_kind("level", "cms") for node in ast.walk(sym.node))


def _children(net):
    if isinstance(net, ir.Seq):
        return net.stages
    if isinstance(net, (ir.Residual, ir.Stack)):
        return (net.inner,)
    return ()


def _replicas(network, blocks, chains) -> dict:
    counts: dict[str, int] = {}

    def add_block(name, mult, seen=()):
        if name in seen or name not in blocks:
            return
        b = blocks[name]
        for lvl in b.levels:
            counts[lvl] = counts.get(lvl, 0) + mult
        for _, v in b.bindings + (("out", b.output),):
            for node in ir.walk(v):
                if isinstance(node, ir.Apply):
                    visit(node.target, mult, seen + (name,))

    def visit(net, mult, seen=()):
        if isinstance(net, ir.Stack):
            visit(net.inner, mult * net.count, seen)
        elif isinstance(net, ir.BlockCall):
            add_block(net.block, mult, seen)
        elif isinstance(net, ir.CmsCall) and net.cms in chains:
            for m in chains[net.cms].members:
                counts[m.name] = counts.get(m.name, 0) + mult
        else:
            for child in _children(net):
                visit(child, mult, seen)

    visit(network, 1)
    return counts


def elaborate(program: Program) -> tuple[ir.ModelIR, list]:
    """Returns the model IR and the warnings collected; raises SpecError on errors."""
    el = Elaborator(program)
    model = el.run()
    return model, list(el.sink.items)
