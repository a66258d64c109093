"""Where the subpackages live when ``nldsl`` is imported straight from a source checkout.

In the repository the subpackages ``nldsl.grammar``, ``nldsl.codegen`` and ``nldsl.runtime`` are the
top-level folders ``grammar/``, ``codegen/`` and ``runtime/`` (pyproject.toml maps them). An installed
copy, regular or editable, already knows this. A checkout that is imported without being installed (for
example ``python -m pytest`` run from the repository root, which puts the root first on ``sys.path``)
does not, so this module teaches the import system the same mapping. It never creates top-level
``grammar``/``codegen``/``runtime`` names.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

SUBPACKAGE_FOLDERS = {
    "nldsl.grammar": "grammar",
    "nldsl.codegen": "codegen",
    "nldsl.runtime": "runtime",
}


class SourceTreeFinder(importlib.abc.MetaPathFinder):
    """Finds the mapped subpackages in the folders of a source checkout."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        folder = SUBPACKAGE_FOLDERS.get(fullname)
        if folder is None:
            return None
        init = self.root / folder / "__init__.py"
        if not init.is_file():
            return None
        return importlib.util.spec_from_file_location(
            fullname, init, submodule_search_locations=[str(init.parent)]
        )


def install_source_tree_finder() -> None:
    """Append a SourceTreeFinder to ``sys.meta_path`` when ``nldsl`` comes from a source checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        return  # an installed copy: the subpackages sit inside the nldsl folder
    if any(isinstance(finder, SourceTreeFinder) for finder in sys.meta_path):
        return
    sys.meta_path.append(SourceTreeFinder(root))
