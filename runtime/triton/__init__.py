"""The Triton backend of in-context memory levels (``nldsl.runtime.triton``).

`LevelKernels` (launch.py) holds one level's generated kernels (from a compiled package's kernels.py,
or rendered on first use for a standard objective, registry.py) and launches them through the
autograd functions of autograd.py. `run_memory` is what `MemoryLevel` calls for `backend = 'triton'`:
it runs the kernels when Triton can (CUDA tensors, or TRITON_INTERPRET=1 on a CPU) and otherwise, or
for a level without kernels (an MLP memory), warns once with the level and the reason and runs the
chunked PyTorch path. Importing this package does not import Triton.
"""

from .backend import TritonFallbackWarning, run_memory, triton_unavailable
from .launch import LevelKernels

__all__ = ["LevelKernels", "TritonFallbackWarning", "run_memory", "triton_unavailable"]
