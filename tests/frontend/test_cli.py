"""The `nlc` command line: exit codes, output formats, every subcommand, and hostile inputs.

Exit codes: 0 clean (warnings allowed), 1 problems in a spec (or a file that is not one) or on the command
line (a missing path, a bad option value), 2 an internal compiler error, reported with a repro line and
no Python traceback; 141, silently, when the reader of the output went away.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

import nldsl
from nldsl import checks
from nldsl.cli import main
from nldsl.codes import CODES

ROOT = Path(__file__).resolve().parents[2]

CLEAN = textwrap.dedent("""\
    nl 1
    model tiny {
      vocab   = 256
      dim     = 32
      heads   = 2
      context = 64

      level pretrain : outer {
        update adamw(lr = 1e-3)
      }

      block mix(x) {
        memory m : linear per head {
          key    k
          value  v
          lr     0.5
          update gd
        }
        k = l2norm(linear(x, dim))
        v = linear(x, dim)
        return linear(m(k), dim)
      }

      network = embed(vocab, dim) -> residual(mix) -> lm_head(tied = true)
    }
    """)
# a warning only (un-normalised keys with the delta rule): still exit 0, unless --werror
WARNS = CLEAN.replace("update gd", "update delta").replace("k = l2norm(linear(x, dim))", "k = linear(x, dim)")
# two errors: an unknown key and a misspelt name
BROKEN = CLEAN.replace("lr     0.5", "lr     0.5\n      raed   after write").replace("m(k)", "m(kk)")

CONCISE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (error|warning)\[NL\d{4}\]: .+$")


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def spec(tmp_path):
    """Write a spec into the temporary directory and return its path as a string."""

    def write(text: str | bytes, name: str = "spec.nl") -> str:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return str(path)

    return write


def no_traceback(result):
    assert "Traceback" not in result.output and "Traceback" not in (result.stderr or "")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


# ---------------------------------------------------------------- version, help, explain


def test_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"nlc, version {nldsl.__version__}"


def test_main_help_lists_every_command(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in main.commands:
        assert name in result.output


@pytest.mark.parametrize("name", sorted(main.commands))
def test_help_of_every_command_mentions_its_options(runner, name):
    command = main.commands[name]
    result = runner.invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: main {name}" in result.output or f"{name} [OPTIONS]" in result.output
    for param in command.params:
        if isinstance(param, click.Option):
            assert any(opt in result.output for opt in param.opts), f"`nlc {name} --help` omits {param.opts}"
            assert param.help, f"the option {param.opts} of `nlc {name}` has no help text"
        else:
            assert param.name.upper() in result.output


def test_explain_a_code(runner):
    result = runner.invoke(main, ["explain", "nl0302"])
    assert result.exit_code == 0
    assert result.output.strip() == f"NL0302: {CODES['NL0302']}"


def test_explain_lists_every_code(runner):
    result = runner.invoke(main, ["explain"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines()]
    assert listed == list(CODES)


def test_explain_an_unknown_code(runner):
    result = runner.invoke(main, ["explain", "NL9999"])
    assert result.exit_code == 1
    assert "unknown code NL9999" in result.stderr


# ---------------------------------------------------------------- nlc check


def test_check_clean_spec_exits_0(runner, spec):
    result = runner.invoke(main, ["check", spec(CLEAN)])
    assert result.exit_code == 0, result.output
    assert result.output == ""


def test_check_errors_exit_1_with_rendered_diagnostics(runner, spec):
    path = spec(BROKEN)
    result = runner.invoke(main, ["check", path])
    assert result.exit_code == 1
    err = result.stderr
    assert "error[NL0103]: unknown key `raed` for a memory" in err
    assert "did you mean `read`?" in err
    assert "error[NL0101]: unknown name `kk`" in err
    assert f"--> {path}:" in err and "^" in err
    assert err.rstrip().endswith(f"{path}: 2 errors")
    no_traceback(result)


def test_check_warnings_exit_0_unless_werror(runner, spec):
    path = spec(WARNS)
    result = runner.invoke(main, ["check", path])
    assert result.exit_code == 0
    assert "warning[NL0506]" in result.stderr
    result = runner.invoke(main, ["check", "--werror", path])
    assert result.exit_code == 1


def test_check_concise_format(runner, spec):
    path = spec(BROKEN)
    result = runner.invoke(main, ["check", "--format", "concise", path])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        m = CONCISE.match(line)
        assert m, line
        assert m["file"] == path
    assert [CONCISE.match(line)["line"] for line in lines] == sorted(
        (CONCISE.match(line)["line"] for line in lines), key=int)


def test_check_json_format(runner, spec):
    path = spec(BROKEN)
    result = runner.invoke(main, ["check", "--format", "json", path])
    assert result.exit_code == 1
    items = json.loads(result.stdout)
    assert {i["code"] for i in items} == {"NL0103", "NL0101"}
    for item in items:
        assert set(item) >= {"severity", "code", "message", "span", "label", "labels", "notes", "help"}
        assert set(item["span"]) >= {"file", "line", "col", "end_line", "end_col"}
        assert item["span"]["file"] == path and item["severity"] == "error"
    unknown_key = next(i for i in items if i["code"] == "NL0103")
    assert unknown_key["help"] == "did you mean `read`?"


def test_check_json_of_a_clean_spec_is_an_empty_list(runner, spec):
    result = runner.invoke(main, ["check", "--format", "json", spec(CLEAN)])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def test_check_several_files(runner, spec):
    clean, warns, broken = spec(CLEAN, "clean.nl"), spec(WARNS, "warns.nl"), spec(BROKEN, "broken.nl")
    assert runner.invoke(main, ["check", clean, warns]).exit_code == 0
    result = runner.invoke(main, ["check", "--format", "concise", clean, broken, warns])
    assert result.exit_code == 1
    files = {CONCISE.match(line)["file"] for line in result.stderr.strip().splitlines()}
    assert files == {broken, warns}
    result = runner.invoke(main, ["check", "--format", "json", broken, warns])
    assert {i["span"]["file"] for i in json.loads(result.stdout)} == {broken, warns}


def test_check_dump_stages(runner, spec):
    result = runner.invoke(main, ["check", "--dump", "ast,ir,graph", spec(CLEAN)])
    assert result.exit_code == 0
    assert "# --- ast:" in result.output and "# --- ir:" in result.output and "# --- graph:" in result.output
    result = runner.invoke(main, ["check", "--dump", "bogus", spec(CLEAN)])
    assert result.exit_code == 1 and "unknown stage" in result.output
    no_traceback(result)


# ---------------------------------------------------------------- internal errors


def _boom(*args, **kwargs):
    raise RuntimeError("a deliberate failure in a pass")


def test_internal_error_exits_2_with_a_repro_line(runner, spec, monkeypatch):
    path = spec(CLEAN)
    monkeypatch.setattr(checks, "check_model", _boom)
    monkeypatch.setattr(sys, "argv", ["nlc", "check", path])
    monkeypatch.delenv("NLC_BACKTRACE", raising=False)
    result = runner.invoke(main, ["check", path])
    assert result.exit_code == 2
    err = result.stderr
    assert "error[NL0901]: internal compiler error: RuntimeError: a deliberate failure in a pass" in err
    assert f"repro: nlc check {path}" in err
    assert "NLC_BACKTRACE" in err
    assert "Traceback" not in err and "Traceback" not in result.output


def test_internal_error_in_a_real_process(tmp_path):
    path = tmp_path / "spec.nl"
    path.write_text(CLEAN, encoding="utf-8")
    code = ("import sys, nldsl.checks as c\n"
            "def boom(*a, **k): raise KeyError('boom')\n"
            "c.check_model = boom\n"
            "from nldsl.cli import main\n"
            "main()\n")
    env = {k: v for k, v in os.environ.items() if k != "NLC_BACKTRACE"}
    proc = subprocess.run([sys.executable, "-c", code, "check", str(path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2
    assert "internal compiler error" in proc.stderr
    assert f"repro: nlc check {path}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# ---------------------------------------------------------------- nlc graph


@pytest.mark.parametrize("fmt", ["text", "json", "dot", "mermaid", "html"])
def test_graph_formats_to_a_file(runner, spec, tmp_path, fmt):
    out = tmp_path / f"graph.{fmt}"
    result = runner.invoke(main, ["graph", spec(CLEAN), "--format", fmt, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr
    text = out.read_text(encoding="utf-8")
    assert text.strip()
    if fmt == "json":
        doc = json.loads(text)
        assert doc["schema"] == "nlc.graph/1" and doc["model"] == "tiny"
        assert {lv["name"] for lv in doc["levels"]} >= {"mix.m", "pretrain"}
    elif fmt == "dot":
        assert text.startswith("digraph")
    elif fmt == "mermaid":
        assert text.startswith("flowchart")
    elif fmt == "html":
        assert text.lstrip().lower().startswith("<!doctype html>") and "<svg" in text
    else:
        assert "mix.m" in text and "pretrain" in text


def test_graph_to_standard_output(runner, spec):
    result = runner.invoke(main, ["graph", spec(CLEAN), "--format", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["schema"] == "nlc.graph/1"


def test_graph_of_a_broken_spec_exits_1_and_writes_nothing(runner, spec, tmp_path):
    out = tmp_path / "graph.json"
    result = runner.invoke(main, ["graph", spec(BROKEN), "--format", "json", "-o", str(out)])
    assert result.exit_code == 1
    assert "error[NL0103]" in result.stderr
    assert not out.exists()
    result = runner.invoke(main, ["graph", spec(BROKEN), "--diagnostics", "concise"])
    assert result.exit_code == 1
    assert all(CONCISE.match(line) for line in result.stderr.strip().splitlines()[:-1])


# ---------------------------------------------------------------- nlc fmt


def test_fmt_check(runner, spec):
    from nldsl.fmt import format_source

    canonical = format_source(CLEAN)
    assert canonical != CLEAN  # the aligned columns above are not the canonical layout
    good = spec(canonical, "good.nl")
    assert runner.invoke(main, ["fmt", "--check", good]).exit_code == 0
    bad = spec(CLEAN, "bad.nl")
    result = runner.invoke(main, ["fmt", "--check", bad, good])
    assert result.exit_code == 1
    assert f"would reformat {bad}" in result.stderr and good not in result.stderr
    assert Path(bad).read_text(encoding="utf-8") == CLEAN  # --check never writes
    result = runner.invoke(main, ["fmt", bad])
    assert result.exit_code == 0
    assert Path(bad).read_text(encoding="utf-8") == canonical


def test_fmt_of_a_spec_with_a_syntax_error(runner, spec):
    path = spec("model m {\n  x = $\n}\n")
    result = runner.invoke(main, ["fmt", "--check", path])
    assert result.exit_code == 1
    assert "error[NL0002]" in result.stderr
    no_traceback(result)


# ---------------------------------------------------------------- hostile inputs


def _hostile(tmp_path: Path) -> dict[str, str]:
    files = {
        "empty": b"",
        "binary": bytes(range(256)) * 8,
        "not_utf8": "model m {\n  # caf".encode() + b"\xe9\n}\n",
        "huge": b"model m {\n" + b"  x = 1\n" * 700_000 + b"}\n",  # 5.6 MB
        "deep_parens": b"model m {\n  x = " + b"(" * 1000 + b"1" + b")" * 1000 + b"\n}\n",
        "deep_braces": b"model m {\n" + b"memory a : linear {\n" * 1000 + b"}\n" * 1001,
        "deep_unary": b"model m {\n  x = " + b"-" * 1000 + b"1\n}\n",
        "long_sum": b"model m {\n  x = " + b"1 + " * 5000 + b"1\n}\n",
        "unicode": "model m {\n  x\u200b = 1\n  \u202ey = \u0661\n  z = \U0001F600 + e\u0301\n}\n".encode(),
        "nul_bytes": b"model m {\x00\x00}\n",
        "lone_surrogate_escape": b"model m {\n  x = \xed\xa0\x80\n}\n",
    }
    out = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.nl"
        path.write_bytes(data)
        out[name] = str(path)
    (tmp_path / "a_directory.nl").mkdir()
    out["a_directory"] = str(tmp_path / "a_directory.nl")
    out["missing"] = str(tmp_path / "no" / "such.nl")
    return out


HOSTILE = ["empty", "binary", "not_utf8", "huge", "deep_parens", "deep_braces", "deep_unary", "long_sum",
           "unicode", "nul_bytes", "lone_surrogate_escape", "a_directory", "missing"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_input_exits_1_without_traceback(runner, tmp_path, kind):
    path = _hostile(tmp_path)[kind]
    for args in (["check", path], ["check", "--format", "json", path], ["graph", path]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        no_traceback(result)
        if "json" in args:
            items = json.loads(result.stdout)
            assert items and all(i["severity"] in ("error", "warning") for i in items)
        else:
            assert re.search(r"error\[NL0\d{3}\]", result.stderr), result.stderr
            assert "NL0901" not in result.stderr
    result = runner.invoke(main, ["fmt", "--check", path])
    assert result.exit_code == (0 if kind == "empty" else 1), result.output
    no_traceback(result)


@pytest.mark.parametrize("kind", ["binary", "a_directory", "deep_braces"])
def test_hostile_input_in_a_real_process(tmp_path, kind):
    path = _hostile(tmp_path)[kind]
    proc = subprocess.run([sys.executable, "-m", "nldsl.cli", "check", path], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "error[NL0" in proc.stderr


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize("command", ["train", "generate", "learn", "eval", "doctor"])
def test_a_device_this_machine_lacks_is_an_error_naming_why(runner, tmp_path, command):
    (tmp_path / "notes.txt").write_text("some text")
    (tmp_path / "tiny.nl").write_text(CLEAN)
    args = {"train": [str(tmp_path / "tiny.nl")], "generate": [str(tmp_path)],
            "learn": [str(tmp_path), "--data", str(tmp_path / "notes.txt"), "--memory", str(tmp_path / "m.mem")],
            "eval": [str(tmp_path)], "doctor": ["--no-check"]}[command]
    result = runner.invoke(main, [command, *args, "--device", "bogus"])
    assert result.exit_code == 1, result.output
    assert "'bogus' is not a torch device" in result.output and "internal compiler error" not in result.output
    if not torch.cuda.is_available():
        result = runner.invoke(main, [command, *args, "--device", "cuda:1"])
        assert result.exit_code == 1, result.output
        assert "cuda:1: CUDA is not available here" in result.output


# ---------------------------------------------------------------- paths the file system refuses


def test_an_output_path_that_cannot_be_written_is_an_error_not_a_crash(runner, tmp_path):
    (tmp_path / "tiny.nl").write_text(CLEAN)
    (tmp_path / "a-file").write_text("")
    for args in (["graph", str(tmp_path / "tiny.nl"), "-o", str(tmp_path / "missing" / "g.html")],
                 ["compile", str(tmp_path / "tiny.nl"), "-o", str(tmp_path / "a-file" / "build")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: ") and "internal compiler error" not in result.output


def test_resuming_a_folder_that_is_not_a_run_is_an_error(runner, tmp_path):
    (tmp_path / "tiny.nl").write_text(CLEAN)
    result = runner.invoke(main, ["train", str(tmp_path / "tiny.nl"), "--resume", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not a run directory (it has no config.json)" in result.output


def test_plotting_a_run_in_which_no_level_has_updated_warns_nothing(tmp_path):
    import warnings

    from nldsl.runtime.train.metrics import plot

    (tmp_path / "metrics.jsonl").write_text(json.dumps(
        {"step": 1, "loss": 5.0, "levels": {"m": {"norm": 0.0, "updates": 0}}}) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = plot(tmp_path)
    assert [p.name for p in written] == ["loss.png", "update_norms.png"]


# ---------------------------------------------------------------- user errors: exit 1, an `error` line


@pytest.mark.parametrize("args", [
    ["plan", "{missing}.nl"], ["compile", "{dir}"], ["fmt", "{dir}"], ["doctor", "--spec", "{missing}.nl"],
    ["generate", "{missing}"], ["eval", "{missing}", "--task", "ppl"], ["plot", "{missing}"],
    ["export", "{missing}", "--hf", "{dir}/hf"], ["learn", "{missing}", "--data", "{missing}", "--memory", "m.mem"],
    ["train", "--resume", "{missing}"], ["train", "{missing}.nl"], ["train", "{dir}"],
])
def test_a_missing_path_is_nl0001_and_exit_1(runner, tmp_path, args):
    (tmp_path / "empty").mkdir()
    args = [a.format(missing=tmp_path / "nope", dir=tmp_path / "empty") for a in args]
    result = runner.invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "error[NL0001]" in result.stderr and "Usage:" not in result.output
    no_traceback(result)


def test_a_missing_spec_reads_as_in_nlc_check(runner, tmp_path):
    missing = str(tmp_path / "nope.nl")
    expected = runner.invoke(main, ["check", missing]).stderr
    assert f"error[NL0001]: no such file `{missing}`" in expected
    for args in (["plan", missing], ["doctor", "--spec", missing], ["compile", missing], ["train", missing]):
        assert runner.invoke(main, args).stderr == expected, args
    result = runner.invoke(main, ["generate", str(tmp_path / "nope")])
    assert result.stderr.startswith(f"error[NL0001]: no such run directory `{tmp_path / 'nope'}`\n  = help: check the path")


@pytest.mark.parametrize("args", [
    ["check", "--bogus", "x.nl"], ["check"], ["bogus-command"], ["train", "x.nl", "--batch", "0"],
    ["graph", "x.nl", "--format", "png"], ["generate", ".", "--top-k", "-1"],
])
def test_a_usage_error_exits_1_with_an_error_line_and_the_usage(runner, args):
    result = runner.invoke(main, args)
    assert result.exit_code == 1, result.output
    first, *rest = result.stderr.splitlines()
    assert first.startswith("error: ") and not first.startswith("error: Error")
    assert rest[0].startswith("  = usage: ") and rest[1].startswith("  = help: ") and "--help" in rest[1]
    no_traceback(result)


def test_nlc_alone_prints_the_help_and_exits_0(runner):
    result = runner.invoke(main, [])
    assert result.exit_code == 0
    assert "Commands:" in result.output


@pytest.mark.parametrize("option", ["--temperature", "--top-p"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_sampling_options_are_refused(runner, tmp_path, option, value):
    result = runner.invoke(main, ["generate", str(tmp_path), option, value])
    assert result.exit_code == 1, result.output
    assert f"invalid value for '{option}'" in result.stderr and "NL0901" not in result.output


def test_non_finite_needle_depths_are_refused(runner, tmp_path):
    result = runner.invoke(main, ["eval", str(tmp_path), "--task", "niah", "--niah-depths", "0,nan"])
    assert result.exit_code == 1, result.output
    assert "expected finite numbers" in result.stderr


def test_main_help_shows_whole_summaries(runner):
    result = runner.invoke(main, ["--help"], terminal_width=80)
    commands = result.output.split("Commands:")[1]
    assert "..." not in commands and "(e.g." not in commands
    assert "Explain a diagnostic code, or list every code." in commands
    assert "Exit codes:" in result.output


# ---------------------------------------------------------------- standard input, fmt's source lines


def test_check_reads_standard_input(runner):
    result = runner.invoke(main, ["check", "-"], input=CLEAN)
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["check", "--format", "concise", "-"], input=BROKEN)
    assert result.exit_code == 1
    assert all(line.startswith("<stdin>:") for line in result.stderr.strip().splitlines())
    result = runner.invoke(main, ["check", "-"], input=b"model m {\n  # caf\xe9\n}\n")
    assert result.exit_code == 1 and "error[NL0001]" in result.stderr and "caf" in result.stderr


def test_fmt_shows_each_files_own_source_line(runner, spec, tmp_path):
    good = spec("nl 1  # a line only the good file has\n" + CLEAN.split("\n", 1)[1], "good.nl")
    binary = spec(b"\xff\xfe and then some text\n", "binary.nl")
    missing = str(tmp_path / "nope.nl")
    result = runner.invoke(main, ["fmt", "--check", good, missing, binary])
    assert result.exit_code == 1
    assert "a line only the good file has" not in result.stderr
    assert f"no such file `{missing}`" in result.stderr
    assert "and then some text" in result.stderr  # the binary file's own bytes, as far as they decode


# ---------------------------------------------------------------- broken pipes, warnings


@pytest.mark.parametrize("args", [["explain"], ["--help"], ["check", "--dump", "ast", "examples/hope.nl"]])
def test_a_closed_pipe_ends_quietly_with_141(args):
    proc = subprocess.Popen([sys.executable, "-m", "nldsl.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before nlc writes, as `nlc explain | true` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


def test_nlcs_own_warnings_are_one_line(runner):
    import warnings

    from nldsl.cli_common import guarded
    from nldsl.runtime.triton import TritonFallbackWarning

    @click.command()
    @guarded
    def warn():
        warnings.warn("memory level m: triton backend falls back to the chunked path: no GPU", TritonFallbackWarning)
        warnings.warn("an ordinary warning", UserWarning)

    with warnings.catch_warnings(), pytest.warns(UserWarning, match="an ordinary warning"):
        warnings.simplefilter("always")
        result = runner.invoke(warn, [])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "warning: memory level m: triton backend falls back to the chunked path: no GPU"
    assert "TritonFallbackWarning" not in result.stderr and "warnings.warn(" not in lines[0]
    assert "warning: an ordinary warning" not in result.stderr  # others go where Python sends them


@pytest.mark.parametrize("command", ["generate", "train"])
def test_a_seed_too_large_for_torch_is_refused(runner, tmp_path, command):
    result = runner.invoke(main, [command, str(tmp_path), "--seed", str(2**70)])
    assert result.exit_code == 1, result.output
    assert "does not fit a 64-bit seed" in result.stderr


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError(
    "[enforce fail at alloc_cpu.cpp:118] . DefaultCPUAllocator: can't allocate memory: you tried to allocate 4398046511104 bytes.")])
def test_running_out_of_memory_is_a_user_error_not_an_internal_one(error):
    import click

    from nldsl.cli_common import guarded

    @click.command()
    @guarded
    def allocate():
        raise error

    result = CliRunner().invoke(allocate, [])
    assert result.exit_code == 1 and "out of memory" in result.output and "NL0901" not in result.output
