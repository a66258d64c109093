"""`nlc compile`: the front end, then code generation, then the package on disk.

A spec that checks clean always compiles; a construct the generator cannot lower becomes an NL0601
diagnostic naming it. Writing refuses a directory that holds anything but a previous compile of the
same model unless `force` is set. `load` imports a compiled package (or compiles a `.nl` file into a
cache keyed by the spec's hash first) and returns the model; `load_block` returns one of its blocks alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

from .diagnostics import SpecError, error
from .pipeline import FrontEnd, check_file

MANIFEST = "manifest.json"


def generate_files(fe: FrontEnd) -> dict[str, str]:
    """The compiled package's files for a checked front end; raises SpecError (NL0601) if not lowerable."""
    from nldsl.codegen.blocks import LoweringError
    from nldsl.codegen.emit import generate

    try:
        return generate(fe.model, fe.graph, fe.sources, fe.file)
    except LoweringError as e:
        raise SpecError([error("NL0601", f"this cannot be compiled yet: {e}", e.span,
                               help="see docs/language.md for what each backend supports")]) from None


def compile_spec(spec: str) -> tuple[FrontEnd, dict[str, str] | None]:
    fe = check_file(spec)
    if fe.ok and fe.model is None:
        from .ast import Span

        fe.diagnostics.append(error("NL0105", "this file is a library (it defines no model); nothing to compile",
                                    Span(spec, 1, 1, 1, 2), help="import it from a spec that defines a model"))
    if not fe.ok:
        return fe, None
    try:
        return fe, generate_files(fe)
    except SpecError as e:
        fe.diagnostics.extend(e.diagnostics)
        return fe, None


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def write_package(files: dict[str, str], out_dir: str, model: str, force: bool = False) -> Path:
    """Write DIR/<model>/; refuse a non-empty directory that is not an earlier build of `model`."""
    target = Path(out_dir) / model
    if target.exists() and any(target.iterdir()) and not force:
        manifest = target / MANIFEST
        ours = False
        if manifest.is_file():
            try:
                ours = json.loads(manifest.read_text()).get("model") == model
            except (OSError, ValueError):
                ours = False
        extra = {p.name for p in target.iterdir()} - set(files) - {"__pycache__"}
        if not ours or extra:
            raise FileExistsError(f"{target} holds other files ({', '.join(sorted(extra)) or 'not an nlc build'})")
    target.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(files.items()):
        _atomic_write(target / name, text)
    return target


from .cachedir import cache_dir  # noqa: E402  (re-exported: the cache of compiled specs)


def load(path, backend: str = "chunked", compile: bool = False):
    """A `torch.nn.Module` for a compiled package directory or a `.nl` spec (compiled into a cache), with
    freshly initialised weights; for a run directory of `nlc train`, its model with the weights of its
    last checkpoint, in the run's dtype, in eval mode with gradients off (as `nlc generate` uses it)."""
    from nldsl.runtime import set_backend
    from nldsl.runtime.fits import check_fits

    p = Path(path)
    if _is_run(p):
        from nldsl.runtime.generate import load_run

        return set_backend(load_run(p, backend=backend).model, backend, compile)
    package = _package(path)
    module = _import_package(package)
    check_fits(package)
    return set_backend(module.Model(), backend, compile)


def load_block(path, name: str, backend: str = "chunked", compile: bool = False):
    """Block `name` of a spec or compiled package alone, freshly initialised: a `BlockLayer` whose
    `forward(x, state=None)` maps features (batch, length, width_in) to (batch, length, width_out) and
    returns the state its memories carry (runtime/block_layer.py)."""
    from nldsl.runtime import BlockLayer, set_backend

    if _is_run(Path(path)):
        raise ValueError(f"{path} is a training run: load its whole model with nldsl.load({str(path)!r}); "
                         f"its blocks are among its modules, named after them (model.named_modules())")
    package = _package(path)
    blocks = getattr(_import_package(package).model, "BLOCKS", None)
    if blocks is None:
        raise ValueError(f"{package} was compiled by an nlc that did not list blocks: compile it again")
    if name not in blocks:
        listed = ", ".join(f"`{b}`" for b in blocks) or "none"
        raise ValueError(f"model `{package.name}` has no block `{name}` (its blocks: {listed}; a block "
                         f"that the network does not use is not compiled)")
    return set_backend(BlockLayer(name, blocks[name]), backend, compile)


def _is_run(p: Path) -> bool:
    return (p / "model" / MANIFEST).is_file() and (p / "config.json").is_file()


def _package(path) -> Path:
    """The compiled package of `path`: a package directory, a directory holding one, or a `.nl` spec
    compiled into the cache (raises SpecError for a spec with errors)."""
    p = Path(path)
    if p.is_file():
        fe, files = compile_spec(str(p))
        if files is None:
            raise SpecError(fe.diagnostics)
        digest = json.loads(files[MANIFEST])["spec_sha256"]
        target = cache_dir() / digest[:16]
        package = target / fe.model.name
        if not _holds(package, files):  # absent, or written by another version of the code generator
            write_package(files, str(target), fe.model.name, force=True)
        return package
    if (p / MANIFEST).is_file():
        return p
    candidates = [c for c in p.iterdir() if (c / MANIFEST).is_file()] if p.is_dir() else []
    if len(candidates) != 1:
        raise FileNotFoundError(f"{path} is neither a .nl spec nor a compiled package")
    return candidates[0]


def _holds(package: Path, files: dict[str, str]) -> bool:
    """Whether `package` holds exactly the text of `files`."""
    try:
        return all((package / name).read_text(encoding="utf-8") == text for name, text in files.items())
    except OSError:
        return False


def _import_package(package: Path):
    digest = hashlib.sha256(str(package.resolve()).encode() + (package / MANIFEST).read_bytes()).hexdigest()[:12]
    name = f"nlc_compiled_{package.name}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
