"""`nlc compile` end to end: every example compiles to a package that imports, runs and trains; the
output is deterministic; the CLI writes, refuses and dumps as documented; `nldsl.load` compiles a spec
into its cache or imports a compiled directory; constructs the generator cannot lower are NL0601."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import nldsl
from compile_testkit import EXAMPLES, ROOT, compile_ok, example_id, in_root, memory_levels, write_spec
from nldsl.cli import main
from nldsl.compiler import compile_spec, load
from nldsl.diagnostics import SpecError

# the files every package has; manifest.json lists the package's files (kernels.py among them now)
FILES = {"__init__.py", "model.py", "levels.json", "plan.txt", "spec.nl", "manifest.json"}


def package_files(files: dict) -> set:
    """The file names a package must hold: the six above, and exactly what its manifest lists."""
    listed = set(json.loads(files["manifest.json"])["files"]) | {"manifest.json"}
    assert FILES <= listed, f"the manifest lists {sorted(listed)}"
    return listed


def cli(*args, cwd=ROOT):
    """Run `nlc` in-process from `cwd` (relative spec paths, as a user would type them)."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


def stderr_of(result) -> str:
    return getattr(result, "stderr", "") or result.output


# ------------------------------------------------------------------ every example


@pytest.mark.parametrize("spec", EXAMPLES, ids=example_id)
def test_example_compiles_to_a_clean_package(spec):
    with in_root():
        files = compile_ok(spec)
        again = compile_ok(spec)
    assert set(files) == package_files(files)
    assert files == again, "compiling twice gave different bytes"
    for name in (n for n in files if n.endswith(".py")):
        ast.parse(files[name], filename=name)
    levels, manifest = json.loads(files["levels.json"]), json.loads(files["manifest.json"])
    assert manifest["spec"] == spec and manifest["spec_sha256"] in files["model.py"]
    assert levels["runtime"]["memories"] is not None
    assert files["spec.nl"] == (ROOT / spec).read_text(encoding="utf-8")
    for name, text in files.items():
        assert str(ROOT) not in text, f"{name} names the machine's checkout"
        assert text.endswith("\n")


@pytest.mark.parametrize("spec", EXAMPLES, ids=example_id)
def test_example_model_runs_forward_and_backward(spec, tmp_path):
    with in_root():
        fe, files = compile_spec(spec)
    torch.manual_seed(0)
    model = load(spec if Path(spec).is_absolute() else ROOT / spec)
    assert model.vocab_size == fe.model.vocab
    assert model.context == fe.model.context
    # 18 tokens: past the examples' 8- and 16-token chunks, so every memory's writes reach a later read
    x = torch.randint(0, model.vocab_size, (2, 18))
    logits, state = model(x)
    assert logits.shape == (2, 18, model.vocab_size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, model.vocab_size), x[:, 1:].reshape(-1))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"
    assert isinstance(state, dict)
    # one memory module per declared memory and replica
    levels = json.loads(files["levels.json"])
    assert len(memory_levels(model)) == sum(r["replicas"] for r in levels["runtime"]["memories"])
    # the level graph's parameters, summed over its levels, are the model's (docs/graph-schema.md)
    assert sum(lv["params"] for lv in levels["levels"]) == sum(p.numel() for p in model.parameters())


def test_compiling_is_deterministic_across_processes(tmp_path):
    """Two fresh interpreters with different hash seeds write the same bytes for every example."""
    script = ("import sys; from nldsl.compiler import compile_spec, write_package\n"
              "for spec in sys.argv[2:]:\n"
              "    fe, files = compile_spec(spec)\n"
              "    write_package(files, sys.argv[1], fe.model.name)\n")
    trees = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-c", script, str(out), *EXAMPLES], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=300)
        trees.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert trees[0].keys() == trees[1].keys() and len(trees[0]) >= len(EXAMPLES) * len(FILES)
    for name in trees[0]:
        assert trees[0][name] == trees[1][name], f"{name} depends on the hash seed"


# ------------------------------------------------------------------ the command line


def test_cli_compile_writes_the_package(tmp_path):
    result = cli("compile", "examples/hope.nl", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    target = tmp_path / "hope"
    with in_root():
        files = compile_ok("examples/hope.nl")
    assert {p.name for p in target.iterdir()} == package_files(files)
    assert {p.name: p.read_text(encoding="utf-8") for p in target.iterdir()} == files
    # a second compile into the same place is an update of the same build: allowed
    assert cli("compile", "examples/hope.nl", "-o", str(tmp_path)).exit_code == 0


def test_cli_compile_runs_as_a_program(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nldsl.cli", "compile", "examples/ttt_linear.nl", "-o", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "compiled examples/ttt_linear.nl" in result.stderr
    written = {p.name for p in (tmp_path / "ttt_linear").iterdir()}
    assert written == package_files({"manifest.json": (tmp_path / "ttt_linear" / "manifest.json").read_text()})


def test_cli_refuses_a_directory_holding_other_files(tmp_path):
    target = tmp_path / "titans"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    result = cli("compile", "examples/titans.nl", "-o", str(tmp_path))
    assert result.exit_code == 1
    assert "NL0602" in stderr_of(result) and "notes.txt" in stderr_of(result)
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"], "refused, yet wrote"
    result = cli("compile", "examples/titans.nl", "-o", str(tmp_path), "--force")
    assert result.exit_code == 0, result.output
    written = {p.name for p in target.iterdir()}
    assert written == package_files({"manifest.json": (target / "manifest.json").read_text()}) | {"notes.txt"}


def test_cli_refuses_another_models_build(tmp_path):
    assert cli("compile", "examples/titans.nl", "-o", str(tmp_path)).exit_code == 0
    manifest = tmp_path / "titans" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["model"] = "someone_else"
    manifest.write_text(json.dumps(data))
    assert cli("compile", "examples/titans.nl", "-o", str(tmp_path)).exit_code == 1


def test_cli_dumps_beside_the_package(tmp_path):
    result = cli("compile", "examples/gated_deltanet.nl", "-o", str(tmp_path), "--dump", "ast,ir,graph,plan")
    assert result.exit_code == 0, result.output
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"gated_deltanet", "gated_deltanet.ast.txt", "gated_deltanet.ir.txt",
                     "gated_deltanet.graph.json", "gated_deltanet.plan.txt"}
    package = tmp_path / "gated_deltanet"
    assert (tmp_path / "gated_deltanet.plan.txt").read_text() == (package / "plan.txt").read_text()
    assert json.loads((tmp_path / "gated_deltanet.graph.json").read_text()) == json.loads((package / "levels.json").read_text())
    assert "gdn_block" in (tmp_path / "gated_deltanet.ast.txt").read_text()
    assert "gdn_block.fast" in (tmp_path / "gated_deltanet.ir.txt").read_text()


def test_cli_unknown_dump_stage_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["compile", str(ROOT / "examples/transformer.nl"), "-o", str(tmp_path),
                                       "--dump", "bytecode"])
    assert result.exit_code == 1  # a usage error is a user error (README: 2 is for internal errors)
    assert "bytecode" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir()), "a usage error still wrote the package"


def test_cli_missing_spec_is_a_clean_error(tmp_path):
    result = cli("compile", str(tmp_path / "nowhere.nl"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "NL0001" in stderr_of(result)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ what the generator cannot lower

READ_TWICE = """
nl 1
model twice {
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
    memory fast : linear per head {
      key       k
      value     v
      lr        eta
      update    gd at current
    }
    k   = l2norm(linear(x, dim))
    v   = linear(x, dim)
    eta = sigmoid(linear(x, heads))
    a   = fast(k)
    b   = fast(v)
    return a + b
  }

  network = embed(vocab, dim) -> residual(rmsnorm -> mix) -> rmsnorm -> lm_head(tied = true)
}
"""


def test_a_memory_read_twice_is_nl0601(tmp_path):
    spec = write_spec(tmp_path, READ_TWICE, "twice.nl")
    fe, files = compile_spec(str(spec))
    assert files is None
    codes = [d.code for d in fe.diagnostics if d.is_error]
    assert codes == ["NL0601"]
    assert fe.diagnostics[-1].span.line == 25  # the second read
    result = subprocess.run([sys.executable, "-m", "nldsl.cli", "compile", "twice.nl", "-o", "out"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "error[NL0601]" in result.stderr and "read more than once" in result.stderr
    assert "twice.nl:25:" in result.stderr
    assert "Traceback" not in result.stderr and "NL0901" not in result.stderr
    result = cli("compile", "twice.nl", "-o", "out", "--format", "json", cwd=tmp_path)
    assert result.exit_code == 1
    (item,) = json.loads(result.stdout)
    assert item["code"] == "NL0601" and item["span"]["line"] == 25
    assert not (tmp_path / "out").exists()
    with pytest.raises(SpecError) as info:
        nldsl.load(spec)
    assert [d.code for d in info.value.diagnostics] == ["NL0601"]


def test_blocks_of_a_qualified_import_compile_under_their_qualified_names(tmp_path):
    """A library block imported `as L` is `L.mix` as a network stage and when another block applies it;
    its memory kinds and optimizers are `L.lmm` and `L.slow`, reading the library's constants bare; the
    generated code names its lines after the library file."""
    write_spec(tmp_path, """
        nl 1
        rate = 0.05
        hidden = 16
        optimizer slow : sgd(lr = rate)
        memory lmm : mlp(depth = 2, hidden = hidden) per head {
          chunk  4
          key    k
          value  v
          lr     rate
          objective custom(half * r * r)
          update gd
        }
        half = 0.5
        block mix(x, scale = 2) {
          return linear(x, 32) * scale
        }
        """, "lib.nl")
    spec = write_spec(tmp_path, """
        nl 1
        import "lib.nl" as L
        model tiny {
          vocab   = 64
          dim     = 32
          heads   = 2
          context = 16
          level pretrain : outer {
            update adamw(lr = 1e-3)
          }
          block outer_mix(x) {
            memory m : L.lmm
            k = l2norm(linear(x, dim))
            v = linear(x, dim)
            return linear(L.mix(x) + m(k), dim)
          }
          cms ffn : sequential {
            update L.slow
            level fast : mlp(expand = 2) { clock every 8 tokens }
          }
          network = embed(vocab, dim) -> residual(L.mix) -> residual(outer_mix) -> residual(ffn) -> lm_head(tied = true)
        }
        """, "tiny.nl")
    files = compile_ok(spec)
    assert f"block L.mix ({tmp_path / 'lib.nl'}:14)".replace("\\", "/") in files["model.py"]
    logits, _ = load(spec)(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, 64)


# ------------------------------------------------------------------ nldsl.load


def test_load_compiles_a_spec_into_the_cache_once(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NLC_CACHE", str(cache))
    spec = tmp_path / "ttt.nl"
    spec.write_text((ROOT / "examples/ttt_linear.nl").read_text(encoding="utf-8"), encoding="utf-8")
    model = nldsl.load(spec)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and (entries[0] / "ttt_linear" / "manifest.json").is_file()
    model_py = entries[0] / "ttt_linear" / "model.py"
    stamp = model_py.stat().st_mtime_ns
    again = nldsl.load(spec, backend="reference")
    assert model_py.stat().st_mtime_ns == stamp, "a cached build was written again"
    assert type(again) is type(model), "the cached package was imported twice"
    assert {m.backend for m in memory_levels(again).values()} == {"reference"}
    assert {m.backend for m in memory_levels(model).values()} == {"chunked"}
    # a changed spec is a different entry
    spec.write_text(spec.read_text(encoding="utf-8") + "# changed\n", encoding="utf-8")
    nldsl.load(spec)
    assert len(list(cache.iterdir())) == 2


def test_load_imports_a_compiled_directory(tmp_path):
    assert cli("compile", "examples/transformer.nl", "-o", str(tmp_path)).exit_code == 0
    torch.manual_seed(1)
    direct = nldsl.load(tmp_path / "transformer")
    torch.manual_seed(1)
    parent = nldsl.load(tmp_path)  # the directory holding one package
    assert type(direct).__name__ == "TransformerModel"
    for (n1, p1), (n2, p2) in zip(direct.state_dict().items(), parent.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    # the package's own build() gives the same model
    sys.path.insert(0, str(tmp_path))
    try:
        import transformer as package  # noqa: E402
        torch.manual_seed(1)
        built = package.build(backend="reference")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("transformer", None)
        sys.modules.pop("transformer.model", None)
    assert list(built.state_dict()) == list(direct.state_dict())


def test_load_refuses_what_is_not_a_package(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        nldsl.load(tmp_path / "empty")
    with pytest.raises(ValueError):
        nldsl.load(ROOT / "examples/transformer.nl", backend="triton-someday")


def test_a_loaded_model_says_what_tokens_it_takes(tmp_path):
    """Token ids of the wrong shape or type, or outside the vocabulary, are refused with what the model
    takes, not with an error from deep inside torch; int32 ids and an empty sequence run."""
    model = nldsl.load(ROOT / "examples/transformer.nl")
    vocab = model.vocab_size
    for bad, says in [(torch.zeros(4, dtype=torch.long), "shape (4,)"),
                      (torch.zeros(1, 4), "dtype float32"),
                      (torch.ones(1, 4, dtype=torch.bool), "dtype bool"),
                      (torch.full((1, 4), vocab), f"from 0 to {vocab - 1} (the spec's vocab); got {vocab}"),
                      (torch.tensor([[3, -2]]), "got -2")]:
        with pytest.raises(ValueError, match=re.escape(says)):
            model(bad)
    assert model(torch.tensor([[1, vocab - 1]], dtype=torch.int32))[0].shape == (1, 2, vocab)
    assert model(torch.zeros(2, 0, dtype=torch.long))[0].shape == (2, 0, vocab)


def test_a_loaded_model_refuses_a_state_of_another_batch_or_model():
    """A carried state continues the batch and the model it came from: one of another batch size (larger
    or smaller), or with a key the model does not make, is refused naming it, before a level reads it; so
    is a state that is not a mapping."""
    model = nldsl.load(ROOT / "examples/gated_deltanet.nl")
    three, one = torch.randint(0, model.vocab_size, (3, 6)), torch.randint(0, model.vocab_size, (1, 6))
    for state, tokens, rows in ((model(three)[1], one, 3), (model(one)[1], three, 1)):
        with pytest.raises(ValueError, match=rf"the carried state of `layer\.0\.[\w.]+` holds {rows} sequences, "
                                             rf"the tokens {tokens.shape[0]}"):
            model(tokens, state)
    with pytest.raises(TypeError, match="got a list"):
        model(one, [])
    logits, state = model(three)
    assert set(state) == model.state_keys  # every key the model lists, it fills in
    assert model(three, state)[0].shape == logits.shape
    some = {key: state[key] for key in sorted(state)[:1]}  # a part of a state (a memory file's) continues it
    assert model(three, some)[0].shape == logits.shape
    with pytest.raises(ValueError, match=r"the carried state has `layer\.0\.mixer\.mem`, which this model "
                                         r"does not make \(its keys: `layer\.0\."):
        model(three, {**state, "layer.0.mixer.mem": next(iter(state.values()))})  # a key mistyped


def test_compiling_does_not_import_torch():
    """`nlc compile` stays quick: the generator never imports torch (only the compiled model does)."""
    code = ("import sys; from nldsl.compiler import compile_spec\n"
            "fe, files = compile_spec('examples/hope.nl'); assert files is not None\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_generator_knows_every_module_attribute():
    """codegen's written-out list of nn.Module attributes covers the installed torch (no name may shadow one)."""
    from nldsl.codegen.names import MODULE_ATTRIBUTES, py

    public = {n for n in set(dir(torch.nn.Module)) | set(vars(torch.nn.Module())) if not n.startswith("_")}
    assert public <= MODULE_ATTRIBUTES, f"add to codegen/names.py: {sorted(public - MODULE_ATTRIBUTES)}"
    assert all(py(n) != n for n in public)
