"""`nlc doctor`: the environment report and the check that every backend computes the same model."""

from __future__ import annotations

import importlib.metadata
import json
import pytest
from click.testing import CliRunner

import nldsl
from nldsl import doctor
from nldsl.cli import main
from nldsl.runtime import memory_level
from cuda_graph_standin import Failing, StandIn
from tiny_specs import memory, tiny_spec


@pytest.fixture()
def runner():
    return CliRunner()


def by_name(findings: list[dict], section: str) -> dict[str, dict]:
    return {f["name"]: f for f in findings if f["section"] == section}


def test_the_report_lists_packages_devices_and_backends(runner):
    result = runner.invoke(main, ["doctor", "--no-check", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    packages = by_name(report["findings"], "packages")
    assert {dist for _, dist, _ in doctor.REQUIRED} <= set(packages)
    assert all(packages[dist]["status"] == "ok" for _, dist, _ in doctor.REQUIRED)
    # the distribution's version, the public part of torch.__version__ (a CUDA wheel's metadata has no
    # local tag: 2.11.0 for 2.11.0+cu130)
    assert packages["torch"]["detail"].split(":")[0] == importlib.metadata.version("torch")
    assert __import__("torch").__version__.split("+")[0] == importlib.metadata.version("torch").split("+")[0]
    backends = by_name(report["findings"], "backends")
    assert backends["reference"]["status"] == backends["chunked"]["status"] == "ok"
    assert "check" not in {f["section"] for f in report["findings"]}


def test_the_built_in_check_runs_every_backend_against_the_reference(runner, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    result = runner.invoke(main, ["doctor", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "all good" in result.output
    checked = [line for line in result.output.splitlines() if line.startswith("  ok      chunked") and "difference" in line]
    assert len(checked) == 1
    # the triton backend cannot run on a CPU without the interpreter, and says why
    assert "TRITON_INTERPRET=1 is not set" in result.output
    assert "note    cuda graphs    need a CUDA device, not cpu" in result.output


@pytest.mark.parametrize("factor", [1.01, float("nan")])
def test_a_backend_that_disagrees_with_the_reference_fails_the_check(monkeypatch, factor):
    real = memory_level.chunked

    def off_by_a_little(*args, **kwargs):
        y, state = real(*args, **kwargs)
        return y * factor, state

    monkeypatch.setattr(memory_level, "chunked", off_by_a_little)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    findings = doctor.diagnose(None, "cpu", run_check=True)
    (chunked,) = [f for f in findings if f.section == "check" and f.name == "chunked"]
    assert chunked.status == "fail" and chunked.bad
    assert "largest difference" in chunked.detail


@pytest.mark.parametrize("module, blocks", [("rich", False), ("lark", True)])
def test_a_missing_required_package_is_a_problem(runner, monkeypatch, module, blocks):
    real = doctor.importlib.util.find_spec
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    result = runner.invoke(main, ["doctor", "--json", "--device", "cpu"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    dist = {m: d for m, d, _ in doctor.REQUIRED}[module]
    assert by_name(report["findings"], "packages")[dist]["status"] == "missing"
    # what compiling a model needs stops the report; the rest is reported and the check still runs
    sections = {f["section"] for f in report["findings"]}
    assert sections == ({"packages"} if blocks else {"packages", "devices", "backends", "check"})


def test_a_user_spec_is_checked_and_a_broken_one_gets_its_diagnostics(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    spec = tmp_path / "tiny.nl"
    spec.write_text(tiny_spec(vocab=32, memories=(memory(chunk=4),)))
    result = runner.invoke(main, ["doctor", "--spec", str(spec), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "all good" in result.output
    spec.write_text(spec.read_text().replace("m(k)", "m(kk)"))
    result = runner.invoke(main, ["doctor", "--spec", str(spec)])
    assert result.exit_code == 1
    assert f"{spec}:" in result.output and "kk" in result.output


def test_the_compiled_check_says_when_torch_compile_fails_here(monkeypatch, torch_compile_fails):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    findings = doctor.diagnose(None, "cpu", run_check=True, compiled=True)
    rows = [f for f in findings if f.section == "check" and f.name == "compiled"]
    assert rows[0].status == "ok" and "compiled tile steps" in rows[0].detail   # eager, so still right
    assert [f.status for f in rows[1:]] == ["note"] and "no C++ compiler here" in rows[1].detail


class Partial(StandIn):
    """A graph that missed part of its segment: its replay leaves the states out as they were."""

    def record(self, fn):
        replay, (loss, out) = super().record(fn)
        states = [t.clone() for t in doctor_flatten(out)]

        def partial():
            replay()
            for t, s in zip(doctor_flatten(out), states):
                t.copy_(s)
        return partial, (loss, out)


def doctor_flatten(state):
    from nldsl.runtime.train.graphs import flatten
    return flatten(state)[0]


@pytest.mark.parametrize("capture, status, says", [(StandIn, "ok", "largest difference 0.0e+00"),
                                                   (Failing, "fail", "not replayed: RuntimeError: operation not"),
                                                   (Partial, "fail", "largest difference inf")])
def test_the_cuda_graph_check_holds_a_replay_to_the_eager_segment(capture, status, says):
    """On a CPU with a stand-in for the capture: what `nlc doctor --device cuda` reports of the graphs."""
    import torch

    torch.manual_seed(0)
    base = nldsl.load(str(doctor.BUILTIN_SPEC))
    tokens = torch.randint(0, base.vocab_size, (2, doctor.SMOKE_TOKENS), generator=torch.Generator().manual_seed(0))
    (found,) = doctor.cuda_graphs(base, tokens, "cpu", ["chunked"], capture=capture)
    assert (found.name, found.status) == ("cuda graphs", status) and says in found.detail, found
