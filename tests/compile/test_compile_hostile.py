"""Hostile identifiers and hostile file names: spec text never becomes code, and no two names meet.

One spec template is written with three sets of names: plain ones, Python keywords / builtins /
torch.nn.Module attributes, and names chosen to meet the names the generator makes up itself (conv
temporaries `c1`, read outputs `y_<memory>`, group states `s_<memory>` and slices `<name>_s`, conv
labels `<binding>_conv`, `print` next to `print_`, `foo_bar` next to `fooBar`, stacks `my` next to
`my_layer`, blocks called `embed` and `lm_head`, CMS members called like CmsChain's own attributes).
Built with the same seed, all three must be the same model: the same parameters in the same order
and the same logits and carried states. A generator that lets two names meet shares or drops a
module or overwrites a local, and the logits differ.
"""
from __future__ import annotations

import ast
import builtins
import io
import keyword
import tokenize

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from compile_testkit import assert_close, build, compile_ok, flatten_state, tokens, write_spec
from nldsl.cli import main

TEMPLATE = """
nl 1
# a comment the generator must drop: \"\"\" ''' \\\\ {{ }} __import__('os').system('CANARY_COMMENT')
model {M} {{
  vocab    = 32
  dim      = 8
  heads    = 2
  context  = 64

  level pretrain : outer {{
    clock     every 1 step
    objective next_token
    update    adamw(lr = 1e-3)
  }}

  memory {KIND} : mlp(depth = 2, hidden = 4, act = silu, residual = true) per head {{
    chunk     2
    key       {GK}
    value     {GV}
    lr        {GE}
    update    gd
    read      at anchor
  }}

  block {BA}(x) {{
    return sigmoid(linear(x, dim))
  }}

  block {BB}(x) {{
    return tanh(linear(x, dim))
  }}

  block {BLK}({INP}) {{
    memory {MEM1} : linear per head {{
      key       {K}
      value     {V}
      lr        {ETA}
      update    gd at current  # \"\"\" CANARY_TRAILING \\\\
    }}
    memory {MEM2} : linear per head {{
      chunk     2
      key       {K}
      value     {V}
      lr        {ETA}
      update    gd
      read      before write
    }}
    {K}      = l2norm(conv(linear({INP}, dim), window = 2))
    {V}      = linear({INP}, dim)
    {ETA}    = 0.5 * sigmoid(linear({INP}, heads))
    {Q}      = l2norm(linear({INP}, dim))
    {OUT1}   = {MEM1}({Q})
    {OUT2}   = {MEM2}({Q})
    {EXTRA}  = linear({INP}, dim)
    {EXTRA2} = linear({INP}, dim)
    return {OUT1} + {OUT2} + {EXTRA} + 0.5 * {EXTRA2}
  }}

  block {BLK2}({INP2}) {{
    memory {GA}, {GB} : {KIND}
    {GK} = l2norm({GA}({INP2}))
    {GV} = {GB}({INP2})
    {GE} = 0.25 * sigmoid(linear({INP2}, heads))
    {GX} = linear({INP2}, dim)
    {GY} = linear({INP2}, dim)
    return linear({GV} + {GK}, dim) + {GX} - {GY}
  }}

  cms {CH} : independent(agg = weighted_sum) {{
    level {C1} : mlp(expand = 2) {{ clock every 16 tokens }}
    level {C2} : mlp(expand = 2) {{ clock never }}
  }}

  {SA}    = residual({BA})
  {SB}    = residual({BB})
  network = embed(vocab, dim) -> stack({SA}, 2) -> stack({SB}, 2) -> residual(rmsnorm -> {BLK}) -> residual(rmsnorm -> {BLK2}) -> residual({CH}) -> rmsnorm -> lm_head(tied = false)
}}
"""

ROLES = "M KIND BA BB BLK INP MEM1 MEM2 K V ETA Q OUT1 OUT2 EXTRA EXTRA2 BLK2 INP2 GA GB GK GV GE GX GY CH C1 C2 SA SB".split()

PLAIN = dict(zip(ROLES, (
    "plain kind alpha beta mix inp fast slow key val rate qry read1 read2 extra extra2 group gin ga gb gk gv ge gx gy"
    " chainx lev1 lev2 sa sb").split()))

# Python keywords, soft keywords, builtins, torch.nn.Module attributes and the generator's own names
KEYWORDS = dict(zip(ROLES, (
    "None type class import lambda print exec forward parameters state self_ __init__ True os training self"
    " global nonlocal del pass if else while float int def yield super async await").split()))

# names that meet what the generator writes itself
COLLIDING = dict(zip(ROLES, (
    "collide kind foo_bar fooBar embed x k_conv fast k v c1 q y_k_conv print print_ y_fast lm_head x2 m n x2_s"
    " e_s e y_m s_m chain agg names my my_layer").split()))

# CMS members named like CmsChain's other attributes, and nn.Module's `training`
MEMBERS = dict(PLAIN, C1="variant", C2="training", CH="aggregation")

NAME_SETS = {"keywords": KEYWORDS, "colliding": COLLIDING, "cms_members": MEMBERS}


def spec_text(names: dict) -> str:
    return TEMPLATE.format(**names)


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("plain")
    return build(write_spec(directory, spec_text(PLAIN), "plain.nl"), directory / "out")


def same_model(expected, actual, what):
    """The same parameters (in order, by shape and value), logits and carried states."""
    exp_params, act_params = list(expected.parameters()), list(actual.parameters())
    assert [tuple(p.shape) for p in exp_params] == [tuple(p.shape) for p in act_params], f"{what}: parameters differ"
    for p, q in zip(exp_params, act_params):
        assert torch.equal(p, q), f"{what}: parameter values differ"
    assert len(expected.state_dict()) == len(actual.state_dict())
    x = tokens(expected, 2, 7, 3)
    with torch.no_grad():
        exp_logits, exp_state = expected(x)
        act_logits, act_state = actual(x)
    assert_close(exp_logits, act_logits, f"{what}: logits", rtol=1e-12)
    # carried states are keyed by (mangled) names: compare them in the order the model wrote them
    exp_flat, act_flat = flatten_state(exp_state), flatten_state(act_state)
    assert len(exp_flat) == len(act_flat), f"{what}: carried entries {sorted(act_flat)} vs {sorted(exp_flat)}"
    exp_values = [exp_flat[k] for k in _write_order(exp_state)]
    act_values = [act_flat[k] for k in _write_order(act_state)]
    for a, b in zip(exp_values, act_values):
        assert_close(a, b, f"{what}: carried state", rtol=1e-12)


def _write_order(state: dict) -> list:
    flat = []
    for key in state:  # insertion order: the order the generated code wrote the entries
        flat += [k for k in flatten_state({key: state[key]})]
    return flat


# what generated code itself calls things: modules it imports, its own arguments and loop variables
GENERATOR_NAMES = {"self", "state", "torch", "nn", "F", "rt", "prefix", "parts", "start", "end", "tokens", "h",
                   "layer", "Model"}
FORBIDDEN = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | set(dir(nn.Module)) \
    | set(vars(nn.Module())) | GENERATOR_NAMES


def code_tokens(text: str) -> list:
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
            tokenize.ENDMARKER)
    return [t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in skip]


def check_renaming(plain_py: str, hostile_py: str) -> dict:
    """The hostile code is the plain code with identifiers renamed one-to-one: the same operators,
    numbers and structure; every renamed identifier is neither a keyword, a builtin, an nn.Module
    attribute nor a name the generator uses itself; no two identifiers of the plain code became one,
    within each class (its attributes and locals) and among the module's classes and functions.
    Keyword-argument names (`q=`, `gates=`) are the callee's and are left out."""
    plain, hostile = _statements(plain_py), _statements(hostile_py)
    assert len(plain) == len(hostile), "the generated code differs in structure"
    renamed = _bijection([n for n, _ in plain], [n for n, _ in hostile], "module level")
    for (name, a), (_, b) in zip(plain, hostile):
        renamed.update(_bijection(a, b, name or "a statement"))
    return renamed


def _statements(text: str) -> list:
    """(name, token strings) of every top-level statement, without comments and keyword-argument names."""
    tree = ast.parse(text)
    kwargs = {(k.lineno, k.col_offset) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg}
    toks = [t for t in code_tokens(text) if t.start not in kwargs]
    out = []
    for node in tree.body:
        inside = [t.string for t in toks if node.lineno <= t.start[0] <= node.end_lineno]
        out.append((getattr(node, "name", None), inside))
    return out


def _bijection(plain: list, hostile: list, where: str) -> dict:
    assert len(plain) == len(hostile), f"{where}: the generated code differs in structure"
    forward, backward = {}, {}
    for a, b in zip(plain, hostile):
        if a is None or b is None:
            assert a == b
            continue
        if a.isidentifier() and b.isidentifier():
            assert forward.setdefault(a, b) == b, f"{where}: {a!r} became both {forward[a]!r} and {b!r}"
            assert backward.setdefault(b, a) == a, f"{where}: {a!r} and {backward[b]!r} both became {b!r}"
            if a != b:
                assert b not in FORBIDDEN, f"{where}: a spec name written as {b!r}"
        elif a[:1] in "'\"" or a[:2] in ("r'", 'r"'):
            assert b[:1] in "'\"" or b[:2] in ("r'", 'r"'), f"{where}: {b!r} where the plain code has {a!r}"
        else:
            assert a == b, f"{where}: {b!r} where the plain code has {a!r}"
    return forward


def docstring_nodes(tree) -> set:
    nodes = set()
    for node in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))]:
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            nodes.add(id(node.body[0].value))
    return nodes


def check_text(files: dict, marker: str = "") -> None:
    """Nothing of the spec's comments reaches the code; the file name only in comments and docstrings;
    every other string constant is a one-line literal."""
    for name in sorted(n for n in files if n.endswith(".py")):
        code = files[name]
        assert "CANARY" not in code and "__import__" not in code
        tree = ast.parse(code)
        assert ast.get_docstring(tree), f"{name} lost its docstring"
        docs = docstring_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                assert "\n" not in node.value and (not marker or marker not in node.value), node.value
        if marker:
            for tok in tokenize.generate_tokens(io.StringIO(code).readline):
                if marker in tok.string:
                    assert tok.type in (tokenize.COMMENT, tokenize.STRING), tok


@pytest.mark.parametrize("which", sorted(NAME_SETS))
def test_hostile_names_compile_to_the_same_model(which, plain_model, tmp_path):
    names = NAME_SETS[which]
    spec = write_spec(tmp_path, spec_text(names), f"{which}.nl")
    files = compile_ok(spec)
    check_text(files)
    plain_files = compile_ok(write_spec(tmp_path, spec_text(PLAIN), "plain.nl"))
    renamed = check_renaming(plain_files["model.py"], files["model.py"])
    assert any(a != b for a, b in renamed.items())
    model = build(spec, tmp_path / "out")
    same_model(plain_model, model, which)
    # the module still behaves as a module: train/eval, parameters(), a loadable state_dict
    model.train()
    model.eval()
    assert model.training is False
    model.load_state_dict(model.state_dict())
    x = tokens(model, 2, 5, 1)
    logits, _ = model(x)
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_colliding_names_keep_their_own_modules(tmp_path):
    """Spot checks on the generated code of the colliding set: every module its own attribute."""
    files = compile_ok(write_spec(tmp_path, spec_text(COLLIDING), "c.nl"))
    code = files["model.py"]
    tree = ast.parse(code)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert len(classes) == len(set(classes)), f"two classes with one name: {classes}"
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        init = next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
        attrs = [t.attr for s in ast.walk(init) if isinstance(s, ast.Assign) for t in s.targets
                 if isinstance(t, ast.Attribute)]
        assert len(attrs) == len(set(attrs)), f"{cls.name} sets an attribute twice: {attrs}"
        forward = next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "forward")
        keys = [ast.unparse(s) for s in ast.walk(forward) if isinstance(s, ast.Subscript)
                and isinstance(s.value, ast.Name) and s.value.id == "state" and isinstance(s.ctx, ast.Store)]
        assert len(keys) == len(set(keys)), f"{cls.name} writes one state key twice: {keys}"


@pytest.mark.parametrize("file_name", ['we"ird \'ODDNAME\' (1).nl', "back\\slash ODDNAME {x} $HOME.nl",
                                       "ünï cödé ODDNAME.nl", 'triple """ ODDNAME.nl', "ODDNAME\\.nl"])
def test_odd_file_names_stay_in_comments_and_docstrings(file_name, tmp_path):
    spec = write_spec(tmp_path, spec_text(PLAIN), file_name)
    files = compile_ok(spec)
    check_text(files, marker="ODDNAME")
    model = build(spec, tmp_path / "out")
    assert model.vocab_size == 32


def test_a_spec_comment_with_docstring_quotes_cannot_open_code(tmp_path):
    text = spec_text(PLAIN).replace("model plain {", 'model plain {\n  # """; import os; os.system("x") #\n'
                                    "  # \\\n  # '''")
    files = compile_ok(write_spec(tmp_path, text, "quotes.nl"))
    tree = ast.parse(files["model.py"])
    imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert "os" not in imported
    assert "os.system" not in files["model.py"]


@pytest.mark.parametrize("word", ["model", "block", "memory", "return", "import"])
def test_names_the_language_keeps_are_refused_cleanly(word, tmp_path):
    text = spec_text(PLAIN).replace("block alpha(x)", f"block {word}(x)").replace("residual(alpha)", f"residual({word})")
    spec = write_spec(tmp_path, text, "kept.nl")
    result = CliRunner().invoke(main, ["compile", str(spec), "-o", str(tmp_path / "out")])
    if result.exit_code == 0:
        # accepted: then it must be a working, mangled model
        files = compile_ok(spec)
        ast.parse(files["model.py"])
        build(spec, tmp_path / "out2")
        return
    assert result.exit_code == 1, result.output
    assert "error[NL0" in result.output
    assert "Traceback" not in result.output and "internal compiler error" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


OVERFLOW = """
nl 1
model overflow {
  vocab    = 32
  dim      = 8
  heads    = 2
  context  = 64

  level pretrain : outer {
    clock     every 1 step
    objective next_token
    update    adamw(lr = 1e-3)
  }

  block mix(x) {
    memory mem : linear per head {
      chunk     2
      key       k
      value     v
      lr        0.1
      objective custom(r * r + 0 * 1e999 * r)
      update    gd
    }
    k = l2norm(linear(x, dim))
    v = linear(x, dim)
    y = linear(mem(k), dim) * 1e-999 + linear(x, dim) * 1e999
    return y
  }

  network = embed(vocab, dim) -> residual(rmsnorm -> mix) -> rmsnorm -> lm_head(tied = true)
}
"""


def test_a_literal_beyond_a_float_never_becomes_a_name(tmp_path):
    """`1e999` is refused (NL0202) or written as float('inf'): `repr` would write `inf`, a NameError."""
    spec = write_spec(tmp_path, OVERFLOW, "overflow.nl")
    result = CliRunner().invoke(main, ["compile", str(spec), "-o", str(tmp_path / "out")])
    if result.exit_code == 1:
        assert "NL0202" in result.output and "Traceback" not in result.output
        return
    assert result.exit_code == 0, result.output
    code = (tmp_path / "out" / "overflow" / "model.py").read_text()
    names = {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name)}
    assert not names & {"inf", "nan"}
    model = build(spec, tmp_path / "out2")
    with torch.no_grad():
        model(tokens(model, 1, 3, 0))  # runs (the logits are not finite, as the spec asks)
