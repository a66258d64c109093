"""`nlc train` and its run directory: a new run refuses a directory that holds files unless --force,
and --resume continues a run's own model, refusing options that would change it and saying which
changes it applies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from nldsl.cli import main
from nldsl.runtime.train.run import RunDirInUse, check_out_dir, clear_run, in_use
from tiny_specs import tiny_spec

FAST = ["--batch", "1", "--seq", "8", "--checkpoint-every", "1", "--eval-every", "1"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def nlc(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output and "NL0901" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of one step, trained once; tests copy it before changing it."""
    root = tmp_path_factory.mktemp("trained")
    spec = root / "tiny.nl"
    spec.write_text(tiny_spec())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NLC_CACHE", str(root / "cache"))
        mp.setenv("MPLBACKEND", "Agg")
        result = nlc("train", spec, "--steps", "1", *FAST, "--out", root / "run")
    assert result.exit_code == 0, result.output
    return spec, root / "run"


@pytest.fixture
def run(trained, tmp_path):
    spec, original = trained
    copy = tmp_path / "run"
    shutil.copytree(original, copy)
    return copy


def snapshot(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- a new run: --out must be free


def test_a_new_run_refuses_a_directory_with_other_files(trained, tmp_path):
    spec, _ = trained
    (tmp_path / "proj" / "model").mkdir(parents=True)
    (tmp_path / "proj" / "model" / "important.txt").write_text("x")
    result = nlc("train", spec, "--steps", "1", *FAST, "--out", tmp_path / "proj")
    assert result.exit_code == 1
    assert f"error[NL0602]: {tmp_path / 'proj'} is not empty (it holds model/)" in result.stderr
    assert "--force" in result.stderr
    assert (tmp_path / "proj" / "model" / "important.txt").read_text() == "x"


def test_a_new_run_refuses_an_earlier_run_and_force_replaces_it(trained, run):
    spec, _ = trained
    before = snapshot(run)
    result = nlc("train", spec, "--steps", "1", *FAST, "--out", run)
    assert result.exit_code == 1
    assert f"continue that run with --resume {run}" in result.stderr
    assert snapshot(run) == before  # nothing deleted, nothing written
    (run / "notes.txt").write_text("mine")
    (run / "weights-00000099.safetensors").write_text("an old weight file")
    result = nlc("train", spec, "--steps", "1", *FAST, "--seed", "1", "--out", run, "--force")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert "force" not in json.loads((run / "config.json").read_text())
    assert (run / "notes.txt").read_text() == "mine"  # not the run's: kept
    assert sorted(p.name for p in run.glob("weights-*")) == ["weights-00000001.safetensors"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_what_counts_as_a_directory_in_use(tmp_path):
    assert in_use(tmp_path / "absent") == [] and in_use(tmp_path) == []
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "manifest.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")
    assert in_use(tmp_path) == []  # a run that stopped before its first step: reused
    (tmp_path / "metrics.jsonl").write_text("")
    assert in_use(tmp_path) == ["config.json", "metrics.jsonl", "model/"]
    with pytest.raises(RunDirInUse, match="--resume"):
        check_out_dir(tmp_path)
    (tmp_path / "mine.txt").write_text("")
    (tmp_path / "weights-00000002.safetensors").write_text("")
    clear_run(tmp_path)
    assert in_use(tmp_path) == ["mine.txt"]


# ---------------------------------------------------------------- --resume


def test_resuming_a_finished_run_says_there_is_nothing_to_train(run):
    result = nlc("train", "--resume", run)
    assert result.exit_code == 1
    assert f"error: nothing to train in {run}: it has trained all its 1 steps" in result.stderr
    assert "--steps N with N > 1" in result.stderr
    result = nlc("train", "--resume", run, "--steps", "1")
    assert result.exit_code == 1 and "--steps 1 is a total" in result.stderr


def test_resuming_with_options_that_change_the_run_is_refused(trained, run, tmp_path):
    spec, _ = trained
    other = tmp_path / "other.nl"
    other.write_text(tiny_spec().replace("dim     = 16", "dim     = 32"))
    data = tmp_path / "notes.txt"
    data.write_text("some text " * 100)
    before = snapshot(run)
    result = nlc("train", other, "--resume", run, "--steps", "3", "--batch", "2", "--seq", "16", "--dtype", "float64",
                 "--seed", "5", "--data", data, "--out", tmp_path / "elsewhere")
    assert result.exit_code == 1
    err = result.stderr
    assert err.startswith(f"error: cannot resume {run} with these options")
    for named in (f"{other} is not the spec", "--batch 2: ", "--seq 16: ", "--dtype float64: ", "--seed 5: ",
                  f"--data {data}: {run} was trained with the bundled corpus", "a resumed run stays in its own"):
        assert named in err, named
    assert "--batch 1" in err and "--seq 8" in err  # the run's own values
    assert snapshot(run) == before
    result = nlc("train", "--resume", run, "--force")
    assert result.exit_code == 1 and "--force starts a new run" in result.stderr


def test_resuming_continues_to_steps_and_applies_what_may_change(trained, run):
    spec, _ = trained
    result = nlc("train", spec, "--resume", run, "--steps", "2", "--eval-every", "2", "--backend", "reference",
                 "--batch", "1", "--seq", "8", "--out", run)  # the run's own values are fine
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert f"note: training {run} on to step 2 (it was started for 1)" in err
    assert f"note: --backend reference from here on ({run} trained with chunked so far)" in err
    assert "note: --eval-every 2" in err
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 2
    config = json.loads((run / "config.json").read_text())
    assert (config["steps"], config["backend"], config["eval_every"], config["batch"]) == (2, "reference", 2, 1)


def test_resuming_a_run_without_a_checkpoint_says_so(run):
    (run / "checkpoint.json").unlink()
    result = nlc("train", "--resume", run, "--steps", "2")
    assert result.exit_code == 1
    assert "has no checkpoint yet" in result.stderr and f"--out {run} --force" in result.stderr


def test_nproc_passes_on_only_what_was_given(trained, run, tmp_path, monkeypatch):
    import nldsl.train

    spec, _ = trained
    launched = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(nldsl.train, "launch", lambda nproc, args: launched.append((nproc, args)) or 0)
    out = tmp_path / "new"
    assert nlc("train", spec, "--nproc", "2", "--batch", "4", "--out", out, "--compile").exit_code == 0
    result = nlc("train", "--resume", run, "--nproc", "2", "--steps", "3")
    assert result.exit_code == 1 and "1 rows do not split over 2 processes" in result.stderr  # the run's batch
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "batch": 2}))
    assert nlc("train", "--resume", run, "--nproc", "2", "--steps", "3", "--parallel", "fsdp").exit_code == 0
    assert launched == [(2, [str(spec), "--batch", "4", "--out", str(out), "--compile"]),
                        (2, ["--steps", "3", "--resume", str(run), "--parallel", "fsdp"])]


def test_a_relative_data_path_is_kept_absolute_so_the_run_resumes_from_anywhere(trained, tmp_path, monkeypatch):
    spec, _ = trained
    (tmp_path / "notes.txt").write_text("some text to learn " * 200)
    monkeypatch.chdir(tmp_path)
    assert nlc("train", spec, "--steps", "1", *FAST, "--data", "notes.txt", "--out", "run").exit_code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str((tmp_path / "notes.txt").resolve())
    monkeypatch.chdir(tmp_path.parent)
    result = nlc("train", "--resume", tmp_path / "run", "--steps", "2")
    assert result.exit_code == 0, result.output
