"""Packaging: one import package ``nldsl`` assembled from nldsl/, grammar/, codegen/ and runtime/.

pyproject.toml maps the folders and setup.py finds every package below them; these tests check the
mapping and the discovery, and (slow) build a wheel and import it from outside the checkout.
"""

from __future__ import annotations

import os
import runpy
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {
    "nldsl": "nldsl",
    "nldsl.grammar": "grammar",
    "nldsl.codegen": "codegen",
    "nldsl.runtime": "runtime",
}


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def packages_on_disk() -> set[str]:
    """Every folder with an __init__.py under the mapped folders, by its import name."""
    found = set()
    for name, folder in FOLDERS.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base)
            if "__pycache__" in relative.parts:
                continue
            found.add(".".join([name, *relative.parts]) if relative.parts else name)
    # nldsl/ itself holds nldsl.*; the mapped folders are separate trees
    return found


def test_setup_py_finds_every_package(monkeypatch):
    import setuptools

    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    assert set(captured["packages"]) == packages_on_disk()
    assert {"nldsl", "nldsl.render", "nldsl.grammar", "nldsl.codegen", "nldsl.runtime"} <= packages_on_disk()


def test_the_folders_are_mapped_into_nldsl(pyproject):
    assert pyproject["tool"]["setuptools"]["package-dir"] == FOLDERS
    assert "packages" not in pyproject["tool"]["setuptools"]  # setup.py finds them


def test_metadata(pyproject):
    project = pyproject["project"]
    assert (project["name"], project["version"], project["requires-python"]) == ("nlc", "0.1.0", ">=3.10")
    assert project["scripts"] == {"nlc": "nldsl.cli:main"}
    assert "triton>=3; sys_platform == 'linux'" in project["dependencies"]
    # the parser runs Lark in strict mode, which refuses to start without interegular
    assert any(dep.startswith("lark[interegular]") for dep in project["dependencies"])
    assert set(project["optional-dependencies"]) == {"test", "bench", "hf", "titans"}
    assert {"slow", "triton", "browser"} <= {
        marker.split(":")[0] for marker in pyproject["tool"]["pytest"]["ini_options"]["markers"]
    }


def test_package_data_patterns_find_their_files(pyproject):
    data = pyproject["tool"]["setuptools"]["package-data"]
    assert list((ROOT / "nldsl" / "render").glob(data["nldsl.render"][0])) != []
    assert (ROOT / "nldsl" / "render" / "templates" / "graph.html.jinja").is_file()
    assert [(ROOT / "nldsl" / name).is_file() for name in data["nldsl"]] == [True]


def test_scripts_are_executable_and_sound():
    for script in ("scripts/setup.sh", ".ci/run"):
        path = ROOT / script
        assert path.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    usage = subprocess.run(["bash", str(ROOT / "scripts/setup.sh"), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--test" in usage.stdout
    wrong = subprocess.run(
        ["bash", str(ROOT / "scripts/setup.sh"), "--bogus"], capture_output=True, text=True
    )
    assert wrong.returncode == 2 and "unknown argument" in wrong.stderr


def test_makefile_targets():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo:", "test:", "scripts/setup.sh --test", "nlc graph examples/hope.nl"):
        assert target in text


@pytest.mark.slow
def test_a_built_wheel_imports_from_outside_the_checkout(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the checkout
    for item in ("nldsl", "grammar", "codegen", "runtime"):
        shutil.copytree(ROOT / item, source / item, ignore=shutil.ignore_patterns("__pycache__"))
    for item in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / item, source / item)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("nlc-0.1.0-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"nldsl", "nlc-0.1.0.dist-info"}
    assert "nldsl/render/templates/graph.html.jinja" in names
    assert "nldsl/doctor.nl" in names
    for package in packages_on_disk():
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    if (ROOT / "grammar" / "nl.lark").exists():
        assert "nldsl/grammar/nl.lark" in names

    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import nldsl, nldsl.grammar, nldsl.codegen, nldsl.runtime, nldsl.render; "
        "import importlib.util as u; "
        "assert nldsl.runtime.__file__.startswith(sys.argv[1]), nldsl.runtime.__file__; "
        "assert [u.find_spec(n) for n in ('runtime', 'codegen', 'grammar')] == [None] * 3; "
        "print(nldsl.__version__)"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1.0"
