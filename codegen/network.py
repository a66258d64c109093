"""Lowering the network: cms chain classes, one class per stacked layer, and the model class.

Module attribute names come from spec names only (blocks and chains by name, a norm by the stage it
precedes, a stack by the binding it repeats), so state_dict keys are stable across recompiles.
"""

from __future__ import annotations

from nldsl import ir

from .blocks import ClassCode
from .names import camel, cms_member, literal, py
from .stacking import plain


def cms_class(chain: ir.Cms, outer: str, spec_file: str) -> ClassCode:
    cls = ClassCode(camel(chain.name, "Cms"), f"cms {chain.name} : {chain.variant} ({spec_file}:{chain.span.line})")
    attrs = [cms_member(m.name.split('.', 1)[1]) for m in chain.members]
    members = ", ".join(f"({a!r}, rt.CmsMLP({m.width}, {m.hidden}, act={m.act!r}, bias={m.bias!r}))"
                        for a, m in zip(attrs, chain.members))
    # members that are reset to a learned initial state (semantics §5) get a copy of their weights
    initial = tuple(a for a, m in zip(attrs, chain.members) if chain.initial_learner(m, outer) is not None)
    extra = f", initial={initial!r}" if initial else ""
    cls.init = [f"self.chain = rt.CmsChain([{members}], variant={chain.variant!r}, agg={chain.agg!r}{extra})"]
    cls.forward_args = "x"
    cls.forward = ["return self.chain(x)"]
    return cls


# attributes the network lowering sets itself: a block or chain of the same name gets another one
FIXED = frozenset({"embed", "lm_head", "vocab_size", "context", "prefix", "state_keys"})


class NetLowering:
    def __init__(self, model: ir.ModelIR, spec_file: str):
        self.model, self.file = model, spec_file
        self.classes: list[ClassCode] = []
        self.layers: dict[str, tuple] = {}  # layer class name -> the network it runs, without spans

    def stage_attr(self, net) -> str:
        if isinstance(net, ir.BlockCall):
            return py(net.block)
        if isinstance(net, ir.CmsCall):
            return py(net.cms)
        return ""

    def lower(self, net, cls: ClassCode, var: str, prefix_expr: str, used: dict) -> None:
        """Append init/forward lines to `cls` computing `var = net(var)`."""
        if isinstance(net, ir.Seq):
            stages = list(net.stages)
            for i, stage in enumerate(stages):
                if isinstance(stage, ir.Norm):
                    following = next((self.stage_attr(s) for s in stages[i + 1:] if self.stage_attr(s)), "")
                    self._norm(stage, cls, var, f"{following}_norm" if following else "norm", used)
                else:
                    self.lower(stage, cls, var, prefix_expr, used)
            return
        if isinstance(net, ir.Residual):
            t = f"t{len(used)}"
            used[t] = True
            cls.forward.append(f"{t} = {var}")
            self.lower(net.inner, cls, t, prefix_expr, used)
            cls.forward.append(f"{var} = {var} + {t}")
            return
        if isinstance(net, ir.Norm):
            self._norm(net, cls, var, "norm", used)
            return
        if isinstance(net, ir.BlockCall):
            attr = self._unique(py(net.block), used)
            cls.init.append(f"self.{attr} = {camel(net.block, 'Block')}({prefix_expr} + {literal(attr)})"
                            f"  # {self.file}:{net.span.line}")
            cls.forward.append(f"{var} = self.{attr}({var}, state)")
            return
        if isinstance(net, ir.CmsCall):
            attr = self._unique(py(net.cms), used)
            cls.init.append(f"self.{attr} = {camel(net.cms, 'Cms')}()  # {self.file}:{net.span.line}")
            cls.forward.append(f"{var} = self.{attr}({var})")
            return
        if isinstance(net, ir.Stack):
            name = net.name
            attr = self._unique(py(name), used)
            inner = self.layer_class(net.inner, name)
            cls.init.append(f"self.{attr} = nn.ModuleList([{inner}({prefix_expr} + {literal(attr + '.')} + str(i))"
                            f" for i in range({net.count})])  # {self.file}:{net.span.line}")
            cls.forward.append(f"for layer in self.{attr}:")
            cls.forward.append(f"    {var} = layer({var}, state)")
            return
        if isinstance(net, ir.Embed):
            cls.init.append(f"self.embed = rt.Embedding({net.vocab}, {net.dim})  # {self.file}:{net.span.line}")
            cls.forward.append(f"{var} = self.embed({var})")
            return
        if isinstance(net, ir.LMHead):
            if net.tied:
                cls.forward.append(f"{var} = {var} @ self.embed.weight.t()  # lm_head, tied to the embedding")
            else:
                cls.init.append(f"self.lm_head = nn.Linear({self.model.dim}, {self.model.vocab}, bias=False)")
                cls.forward.append(f"{var} = self.lm_head({var})")
            return
        raise TypeError(net)

    def _norm(self, net: ir.Norm, cls: ClassCode, var: str, base: str, used: dict):
        attr = self._unique(py(base), used)
        kind = "RMSNorm" if net.kind == "rmsnorm" else "LayerNorm"
        cls.init.append(f"self.{attr} = rt.{kind}({self.model.dim})  # {self.file}:{net.span.line}")
        cls.forward.append(f"{var} = self.{attr}({var})")

    def _unique(self, attr: str, used: dict) -> str:
        name, n = attr, 1
        while name in used or name in FIXED:
            n += 1
            name = f"{attr}_{n}"
        used[name] = True
        return name

    def layer_class(self, net, name: str) -> str:
        """The class of one layer of a stack of `net`, named after the binding it repeats: `layer` -> Layer,
        `my_layer` -> MyLayer, any other name `my` -> MyStack. Stacks of the same network share a class;
        a different network under a name already taken (two stacks written inline are both `layer`, and
        a stack may hold another) gets the name with `_2`, `_3`, ... appended, which no spec name gives."""
        base = camel(name, "" if name.lower().endswith("layer") else "Stack")
        cls_name, n, shape = base, 1, plain(net)
        while cls_name in self.layers:
            if self.layers[cls_name] == shape:
                return cls_name
            n += 1
            cls_name = f"{base}_{n}"
        self.layers[cls_name] = shape  # claimed before its body is lowered: a stack inside takes another name
        cls = ClassCode(cls_name, f"one `{name}` of a stack ({self.file}:{net.span.line})")
        cls.init.append("self.prefix = prefix")
        cls.forward_args = "x, state"
        used: dict = {"prefix": True}
        self.lower(net, cls, "x", "self.prefix + '.'", used)
        cls.forward.append("return x")
        self.classes.append(cls)
        return cls_name

    def model_class(self) -> ClassCode:
        m = self.model
        cls = ClassCode(camel(m.name, "Model"), f"model {m.name} ({self.file}:{m.span.line if m.span else 1})")
        cls.init.append(f"self.vocab_size = {m.vocab}")
        cls.init.append(f"self.context = {m.context}")
        used: dict = {"vocab_size": True, "context": True}
        self.lower(m.network, cls, "h", "''", used)
        cls.init.append("self.state_keys = rt.state_keys(self)  # every block's, for carried_in")
        cls.forward_args = "tokens, state=None"
        cls.forward.insert(0, "state = rt.carried_in(state, tokens, self.state_keys)")
        cls.forward.insert(1, "h = tokens")
        cls.forward.append("return h, state")
        return cls
