"""Newton–Schulz orthogonalisation: NS_T(G) ≈ U Vᵀ for G = U Σ Vᵀ, with matrix products only.

The iteration is X ← a X + (b XXᵀ + c (XXᵀ)²) X, i.e. each singular value s goes to
p(s) = a s + b s³ + c s⁵ while the singular vectors stay. X starts as G / ‖G‖_F, so every singular
value starts in [0, 1].

Coefficients:
- `NS_QUINTIC` = (3.4445, −4.7750, 2.0315), the quintic that Muon popularised and the one the
  optimizers here use. Its slope at 0 is 3.4445, so five steps lift singular values as small as
  ~1e-3 of the largest into the band the map oscillates in, ≈ [0.68, 1.20]. That band is the price
  of the steep slope: the iteration does not converge to exactly 1, and more steps keep it in the
  band. For an update direction this is enough, because what matters is that every direction gets
  a step of about the same size.
- `NS_CUBIC` = (1.5, −0.5, 0): the classic Newton–Schulz step, one gradient step on ‖XᵀX − I‖²_F
  ([A] Eq. 43–44). It converges to exactly 1 (quadratically near 1), but its slope at 0 is only 1.5,
  so small singular values need many steps. Use it when orthogonality itself is wanted.

float16/bfloat16 inputs are iterated in float32; float32/float64 in their own precision. The result
has the input's dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

NS_QUINTIC = (3.4445, -4.7750, 2.0315)
NS_CUBIC = (1.5, -0.5, 0.0)


def newton_schulz(matrix: Tensor, steps: int = 5, coefficients=NS_QUINTIC, eps: float = 1e-7) -> Tensor:
    """`steps` Newton–Schulz iterations on a 2-D `matrix`; returns a tensor of the same shape.

    A zero matrix gives zero. The iteration runs on the shorter side (X Xᵀ is the smaller Gram
    matrix), so tall and wide matrices cost the same.
    """
    if matrix.ndim != 2:
        raise ValueError(f'newton_schulz needs a 2-D matrix, got shape {tuple(matrix.shape)}')
    x = matrix if matrix.dtype in (torch.float32, torch.float64) else matrix.float()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x) + eps)
    a, b, c = coefficients
    for _ in range(steps):
        gram = x @ x.mT
        poly = b * gram + c * (gram @ gram) if c else b * gram
        x = a * x + poly @ x
    if tall:
        x = x.mT
    return x.to(matrix.dtype)


def as_matrix(t: Tensor) -> Tensor:
    """The 2-D view NS acts on: (shape[0], prod(shape[1:])) for a tensor of 2 or more dimensions."""
    return t.reshape(t.shape[0], -1)
