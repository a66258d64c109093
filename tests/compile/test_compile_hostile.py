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
import subprocess
import tokenize

import pytest
import torch
from torch import nn

from compile_testkit import (assert_close, build, compile_ok, flatten_state, nlc_command, tokens, write_spec)

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
    exp_flat, act_flat = flatten_state(exp_state), flatten_state(act_state)
    assert len(exp_flat) == len(act_flat), f"{what}: carried entries {sorted(act_flat)} vs {sorted(exp_flat)}"
    for (_, a), (_, b) in zip(sorted(exp_flat.items()), sorted(act_flat.items())):
        pass  # the keys differ by name; compare as multisets of values below
    exp_values = sorted((tuple(t.shape), t.double().sum().item()) for t in exp_flat.values())
    act_values = sorted((tuple(t.shape), t.double().sum().item()) for t in act_flat.values())
    for (s1, v1), (s2, v2) in zip(exp_values, act_values):
        assert s1 == s2 and abs(v1 - v2) <= 1e-10 * max(1.0, abs(v1)), f"{what}: carried states differ"


FORBIDDEN_LOCALS = (set(keyword.kwlist) | set(dir(builtins)) | {"self", "state", "torch", "nn", "F", "rt"})
MODULE_ATTRS = set(dir(nn.Module)) | set(vars(nn.Module()))


def check_identifiers(model_py: str, names: dict) -> None:
    """Generated code binds no Python keyword, builtin or module attribute that came from the spec."""
    tree = ast.parse(model_py)
    spec_names = set(names.values())
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            assert node.id not in FORBIDDEN_LOCALS, f"a local named {node.id!r}"
        if isinstance(node, ast.arg) and node.arg not in ("self", "state", "prefix", "tokens", "x", "y", "v"):
            assert node.arg not in FORBIDDEN_LOCALS, f"an argument named {node.arg!r}"
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name) \
                and node.value.id == "self":
            assert node.attr not in MODULE_ATTRS, f"an attribute self.{node.attr} that shadows nn.Module"
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            assert not keyword.iskeyword(node.name)
    # a spec name that is a keyword or a builtin appears in code only mangled (never as a bare token)
    dangerous = {n for n in spec_names if keyword.iskeyword(n) or n in dir(builtins) or n in MODULE_ATTRS}
    for tok in tokenize.generate_tokens(io.StringIO(model_py).readline):
        if tok.type == tokenize.NAME and tok.string in dangerous:
            assert tok.string in ("None", "True", "False", "type", "forward", "self", "super", "float", "int",
                                  "state", "print", "training", "parameters", "def", "class", "import", "if",
                                  "else", "return", "for", "in", "lambda", "__init__"), tok
            assert _generator_use(tok, model_py), f"spec name {tok.string!r} used bare at line {tok.start[0]}"


def _generator_use(tok, text: str) -> bool:
    """Whether a bare keyword/builtin token is one the template itself writes (def forward, class X, ...)."""
    line = text.splitlines()[tok.start[0] - 1].strip()
    allowed_starts = ("def forward(", "def __init__(", "class ", "super().__init__()", "for ", "return ",
                      "import ", "from ", "if ", "else")
    if tok.string in ("None", "True", "False"):
        return True  # literals: bias=False, state=None, residual=True
    if tok.string == "self":
        return True
    if tok.string in ("state", "forward", "__init__", "super", "def", "class", "import", "for", "in", "return",
                      "if", "else", "lambda"):
        return line.startswith(allowed_starts) or "state" == tok.string
    return False


def check_text(files: dict) -> None:
    """Nothing of the spec's comments reaches the code; docstrings stay closed."""
    model_py = files["model.py"]
    assert "CANARY_COMMENT" not in model_py and "CANARY_TRAILING" not in model_py
    assert "__import__" not in model_py
    for name in ("model.py", "__init__.py"):
        tree = ast.parse(files[name])
        doc = ast.get_docstring(tree)
        assert doc and "compiled" in doc
        # every string constant is a docstring or a short literal the generator chose
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "\n" not in node.value or node.value.startswith(doc.split("\n", 1)[0][:10]) or "Generated" in node.value \
                    or node.value.startswith("block") or node.value.startswith("one") or node.value.startswith(("model", "cms")), \
                    node.value


@pytest.mark.parametrize("which", sorted(NAME_SETS))
def test_hostile_names_compile_to_the_same_model(which, plain_model, tmp_path):
    names = NAME_SETS[which]
    spec = write_spec(tmp_path, spec_text(names), f"{which}.nl")
    files = compile_ok(spec)
    check_text(files)
    check_identifiers(files["model.py"], names)
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


@pytest.mark.parametrize("file_name", ['we"ird \'name\' (1).nl', "back\\slash {x} $HOME.nl", "ünï cödé.nl",
                                       'triple """ quotes.nl'])
def test_odd_file_names_stay_in_comments_and_docstrings(file_name, tmp_path):
    spec = write_spec(tmp_path, spec_text(PLAIN), file_name)
    files = compile_ok(spec)
    for name in ("model.py", "__init__.py"):
        ast.parse(files[name])
    check_text(files)
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


REJECTED = {
    # a name the grammar keeps for itself: the front end must refuse it with a diagnostic, exit 1
    "model": "block model(x) {\n    return linear(x, dim)\n  }",
}


@pytest.mark.parametrize("word", ["model", "block", "memory", "return", "import"])
def test_names_the_language_keeps_are_refused_cleanly(word, tmp_path):
    text = spec_text(PLAIN).replace("block alpha(x)", f"block {word}(x)").replace("residual(alpha)", f"residual({word})")
    spec = write_spec(tmp_path, text, "kept.nl")
    result = subprocess.run(nlc_command() + ["compile", str(spec), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        # accepted: then it must be a working, mangled model
        files = compile_ok(spec)
        ast.parse(files["model.py"])
        build(spec, tmp_path / "out2")
        return
    assert result.returncode == 1, result.stderr
    assert "error[NL0" in result.stderr
    assert "Traceback" not in result.stderr and "internal compiler error" not in result.stderr
