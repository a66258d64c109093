"""The Triton backend of in-context memory levels (``nldsl.runtime.triton``).

`LevelKernels` (launch.py) holds one linear level's generated kernels and `MlpLevelKernels`
(launch_mlp.py) one MLP level's (from a compiled package's kernels.py, or rendered on first use for a
standard objective, registry.py); they launch them through the autograd functions of autograd.py and
autograd_mlp.py. `run_memory` is what `MemoryLevel` calls for `backend = 'triton'`: it runs the
kernels when Triton can (CUDA tensors, or TRITON_INTERPRET=1 on a CPU) and otherwise, or for a level
without kernels (see docs/triton.md), warns once with the level and the reason and runs the chunked
PyTorch path. Importing this package does not import Triton.
"""

from .backend import TritonFallbackWarning, run_memory, triton_unavailable
from .launch import LevelKernels

__all__ = ["LevelKernels", "TritonFallbackWarning", "run_memory", "triton_unavailable"]
