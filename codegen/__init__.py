"""Code generation from the level graph to PyTorch modules and Triton kernels (``nldsl.codegen``)."""
