"""nlc: a compiler for nested-learning architectures (import name ``nldsl``)."""

from __future__ import annotations

from importlib import metadata as _metadata

from nldsl._source_tree import install_source_tree_finder as _install_source_tree_finder

try:
    __version__ = _metadata.version("nlc")
except _metadata.PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.1.0"

_install_source_tree_finder()



def load(path, backend: str = "chunked", compile: bool = False):
    """The model of a compiled package directory or of a `.nl` spec (compiled on the fly into a cache);
    `backend` runs its memory levels ('chunked', 'reference' or 'triton'), `compile` compiles the chunked
    path's tile steps with torch.compile."""
    from .compiler import load as _load

    return _load(path, backend, compile)


__all__ = ["__version__", "load"]
