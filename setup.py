"""Package discovery for nlc; everything else is declared in pyproject.toml.

The one import package ``nldsl`` is assembled from four folders, mapped in pyproject.toml under
[tool.setuptools.package-dir]. setuptools' own discovery cannot follow that mapping, so every package
below each folder is listed here, and new subpackages need no change to the packaging.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

FOLDERS = {
    "nldsl": "nldsl",
    "nldsl.grammar": "grammar",
    "nldsl.codegen": "codegen",
    "nldsl.runtime": "runtime",
}


def packages() -> list[str]:
    found = []
    for name, folder in FOLDERS.items():
        found.append(name)
        found.extend(f"{name}.{sub}" for sub in find_packages(str(HERE / folder)))
    return sorted(found)


setup(packages=packages())
