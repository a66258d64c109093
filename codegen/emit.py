"""Rendering the compiled package: model.py from Jinja templates, levels.json, plan.txt, the spec, a manifest.

Every generated Python file is parsed with `ast.parse` before anything is written; the same spec gives
the same bytes.
"""

from __future__ import annotations

import ast as pyast
import hashlib
import json
from dataclasses import dataclass


from nldsl import __version__, ir
from nldsl.graph import to_doc, widths

from .blocks import BlockLowering, ClassCode, LoweringError
from .forward import forward_lines
from .kernels import model_kernels
from .names import camel, doc_text, literal, py
from .network import NetLowering, cms_class
from .plan import plan_text, runtime_info
from .symbolic import NotDifferentiable, gradient_code
from .jinja import environment


@dataclass(frozen=True)
class BlockEntry:
    """One line of the generated `BLOCKS` table: Python text quoted with `literal`, and the spec line that
    declares the block, for a comment."""
    key: str
    cls: str
    attribute: str
    width_in: int
    width_out: int
    source: str


@dataclass(frozen=True)
class ObjectiveFn:
    name: str
    doc: str
    code: str


def spec_hash(sources: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return h.hexdigest()


def _block_entries(model: ir.ModelIR) -> list[BlockEntry]:
    """The spec's blocks by name, for `nldsl.load_block`: every block takes the model's width."""
    w = widths(model)
    entries = []
    for b in model.blocks:
        w.block = b.name
        entries.append(BlockEntry(literal(b.name), camel(b.name, "Block"), literal(py(b.name)), model.dim,
                                  w.of(b.output) or model.dim, doc_text(f"{b.span.file}:{b.span.line}")))
    return entries


def _classes(model: ir.ModelIR, spec_file: str) -> tuple[list, list, list]:
    objectives = []
    for m in model.memories:
        if m.objective.name == "custom":
            try:
                code = gradient_code(m.objective.expr, dict(model.constants))
            except NotDifferentiable as e:
                raise LoweringError(f"cannot differentiate the custom objective of `{m.name}`: {e}", e.span) from None
            objectives.append(ObjectiveFn(f"objective_{py(m.name)}",
                                          doc_text(f"d loss / d y of the custom objective of {m.name} ({m.objective.span.file}:{m.objective.span.line})"),
                                          code))
    classes = [cms_class(c, model.outer.name, doc_text(spec_file)) for c in model.cms]
    stacks = []
    for b in model.blocks:
        bl = BlockLowering(model, b)
        cls = ClassCode(camel(b.name, "Block"), doc_text(f"block {b.name} ({b.span.file}:{b.span.line})"))
        cls.init = bl.init_lines()
        cls.forward_args = f"{bl.expr(ir.Input(b.params[0], b.span))}, state"
        cls.forward = forward_lines(bl)
        cls.init.insert(1, bl.carried_line())  # after `self.prefix`: the keys its forward fills in
        classes.append(cls)
        stacks += bl.stacks
    net = NetLowering(model, doc_text(spec_file))
    model_cls = net.model_class()
    return objectives, classes + net.classes + [model_cls], stacks


def generate(model: ir.ModelIR, graph, sources: dict, spec_file: str) -> dict[str, str]:
    """filename → content of the compiled package (raises LoweringError for constructs with no lowering)."""
    digest = spec_hash(sources)
    objectives, classes, stacks = _classes(model, spec_file)
    for cls in classes:
        cls.init_args = ", prefix" if any("prefix" in line for line in cls.init) else ""
    title = doc_text(f"{model.name}: compiled from {spec_file}")
    model_py = environment().get_template("model.py.jinja").render(
        title=title, version=__version__, source=doc_text(spec_file), spec_hash=digest, objectives=objectives,
        classes=classes, model_class=classes[-1].name, blocks=_block_entries(model),
        segment_attention=any(att.has_prefix for att in model.attentions))
    init_py = environment().get_template("package_init.py.jinja").render(title=title, version=__version__, source=doc_text(spec_file))
    for name, text in (("model.py", model_py), ("__init__.py", init_py)):
        try:
            pyast.parse(text, filename=name)
        except SyntaxError as e:  # a bug in the generator, never in the spec
            raise RuntimeError(f"generated {name} does not parse: {e}") from e
    levels = to_doc(graph, model, spec_file)
    levels["runtime"] = runtime_info(model)
    manifest = {"nlc": __version__, "model": model.name, "spec": spec_file, "spec_sha256": digest,
                "sources": {n: hashlib.sha256(t.encode()).hexdigest() for n, t in sorted(sources.items())},
                "files": ["__init__.py", "model.py", "kernels.py", "levels.json", "plan.txt", "spec.nl"]}
    return {
        "__init__.py": init_py,
        "model.py": model_py,
        "kernels.py": model_kernels(model, spec_file),
        "levels.json": json.dumps(levels, indent=2) + "\n",
        "plan.txt": plan_text(model, stacks),
        "spec.nl": sources[spec_file] if spec_file in sources else "",
        "manifest.json": json.dumps(manifest, indent=2) + "\n",
    }
