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


def load_block(path, name: str, backend: str = "chunked", compile: bool = False):
    """Block `name` of a `.nl` spec or compiled package alone, as a layer over features: `layer(x, state=None)`
    maps (batch, length, layer.width_in) to (batch, length, layer.width_out) and returns the state its
    memories carry, which continues the same sequences in the next call."""
    from .compiler import load_block as _load_block

    return _load_block(path, name, backend, compile)


__all__ = ["__version__", "load", "load_block"]
