"""Finding the generated kernels of a memory level.

A level with a standard objective gets its kernels rendered by the code generator (the same text a
compiled package's kernels.py holds for it), written once to the nlc cache folder under the hash of
the text, and imported (Triton reads a kernel's source from its file). A level with a custom
objective has only its compiled package's kernels: the objective is a function of that package's
model.py, so the sibling module `kernels` is imported and the level looked up by name.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from typing import Optional

from ..memory import MemoryConfig

_CACHE: dict = {}


def kernels_for(cfg: MemoryConfig, objective, level: str) -> tuple[Optional[object], str]:
    """(LevelKernels, '') or (None, the reason there are none)."""
    from nldsl.codegen.kernels import kernel_form, level_kernels_source, runtime_objective_code
    from nldsl.codegen.kernels_mlp import mlp_kernel_form

    code = runtime_objective_code(objective, cfg.dv)
    if code is None:
        return _package_kernels(objective, level)
    form, reason = (mlp_kernel_form if cfg.family == "mlp" else kernel_form)(cfg, code)
    if form == "none":
        return None, reason
    name = level or "memory"
    key = (name, cfg, code.key)
    if key not in _CACHE:
        module = _import_source(level_kernels_source(name, cfg, code))
        _CACHE[key] = module.KERNELS[name]
    return _CACHE[key], ""


def _package_kernels(objective, level: str) -> tuple[Optional[object], str]:
    module_name = getattr(objective, "__module__", "") or ""
    package = module_name.rpartition(".")[0]
    if not package or package not in sys.modules:
        return None, "a custom objective outside a compiled package has no generated kernels"
    try:
        module = importlib.import_module(f"{package}.kernels")
    except ImportError:
        return None, "the compiled package has no kernels.py (compile it again)"
    kernels = getattr(module, "KERNELS", {}).get(level)
    if kernels is None:
        return None, getattr(module, "NO_KERNELS", {}).get(level, "its package's kernels.py has no entry for it")
    return kernels, ""


def _import_source(text: str):
    from nldsl.cachedir import cache_dir

    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    name = f"nlc_kernels_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    folder = cache_dir() / "kernels"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
