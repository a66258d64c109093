"""Compare the optimizer levels on three toy problems, each at its best learning rate from a small sweep.

    python benchmarks/optimizers_toy.py [--steps 300] [--seed 0]

Problems (float32, CPU): an ill-conditioned quadratic over a 32×16 matrix (condition number 100), a
least-squares fit of a 32→16 linear map with bias, and a 2-layer tanh MLP regressing a random
teacher MLP. For each optimizer the script sweeps lr over a log grid, and prints the lowest final
loss as a fraction of the initial one, the lr that gave it, and the time per step.
"""
from __future__ import annotations

import argparse
import time

import torch

from nldsl.runtime.optim import OPTIMIZERS, make_optimizer

LRS = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]


def problems(seed: int):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    d = torch.logspace(-1, 1, 32 * 16)[torch.randperm(32 * 16, generator=g)].reshape(32, 16)
    target = randn(32, 16)
    X, A, c = randn(256, 32), randn(32, 16) / 32 ** 0.5, randn(16)
    Y = X @ A + c + 0.01 * randn(256, 16)
    T1, T2 = randn(32, 64) / 32 ** 0.5, randn(64, 16) / 8
    Z = torch.tanh(X @ T1) @ T2

    def quadratic():
        W = torch.zeros(32, 16, requires_grad=True)
        return [W], lambda: 0.5 * (d * (W - target) ** 2).sum() / W.numel()

    def least_squares():
        W, b = torch.zeros(32, 16, requires_grad=True), torch.zeros(16, requires_grad=True)
        return [W, b], lambda: 0.5 * ((X @ W + b - Y) ** 2).mean()

    def mlp():
        h = torch.Generator().manual_seed(seed + 1)
        W1 = (torch.randn(32, 64, generator=h) / 32 ** 0.5).requires_grad_()
        W2 = (torch.randn(64, 16, generator=h) / 8).requires_grad_()
        b1 = torch.zeros(64, requires_grad=True)
        return [W1, b1, W2], lambda: 0.5 * ((torch.tanh(X @ W1 + b1) @ W2 - Z) ** 2).mean()

    return {'quadratic': quadratic, 'least squares': least_squares, 'mlp': mlp}


def run(kind, make, lr, steps):
    params, loss_fn = make()
    opt = make_optimizer(kind, params, lr=lr)
    start = loss_fn().item()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    per_step = (time.perf_counter() - t0) / steps
    final = loss_fn().item()
    return (final / start if final == final else float('inf')), per_step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, make in problems(args.seed).items():
        print(f'\n{name}: final / initial loss after {args.steps} steps (best lr of {LRS})')
        print(f'  {"optimizer":<14} {"loss ratio":>11} {"lr":>7} {"ms/step":>8}')
        for kind in OPTIMIZERS:
            best = min((run(kind, make, lr, args.steps) + (lr,) for lr in LRS), key=lambda r: r[0])
            print(f'  {kind:<14} {best[0]:>11.2e} {best[2]:>7g} {1e3 * best[1]:>8.3f}')


if __name__ == '__main__':
    main()
