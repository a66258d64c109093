"""`niah`: passkey retrieval, a needle in a haystack of filler text, at several lengths and depths.

A prompt of exactly `length` byte tokens is filler text (a few plain sentences repeated) with a
needle — "The pass key is 48213. Remember it. 48213 is the pass key." — inserted at a fraction
`depth` of the filler, and ends with "What is the pass key? The pass key is 48213". The model must
predict the key's digits: a trial counts when the argmax at every digit (each given the digits before
it, which is greedy decoding) is right. Each cell (length, depth) runs `trials` random keys; the
accuracy per cell is written as JSON and drawn as a heat map (length × depth).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..continual import expand_state
from ..data import ByteTokenizer

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is {key}"
DIGITS = 5


@dataclass
class NiahOptions:
    lengths: list = field(default_factory=lambda: [256, 512, 1024])
    depths: list = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    trials: int = 4
    seed: int = 0


def make_prompt(length: int, depth: float, key: str) -> list[int]:
    """A prompt of exactly `length` tokens whose last DIGITS tokens are the key."""
    tok = ByteTokenizer()
    needle, question = tok.encode(NEEDLE.format(key=key)), tok.encode(QUESTION.format(key=key))
    room = length - len(needle) - len(question)
    if room < 0:
        raise ValueError(f"a niah prompt needs at least {len(needle) + len(question)} tokens, got {length}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"a depth is a fraction in [0, 1], got {depth}")
    filler = tok.encode(FILLER * (room // len(FILLER) + 1))[:room]
    cut = round(depth * room)
    return filler[:cut] + needle + filler[cut:] + question


@torch.no_grad()
def run_niah(run, state, opts: NiahOptions) -> dict:
    g = torch.Generator().manual_seed(opts.seed)
    device = next(run.model.parameters()).device
    cells = []
    for length in opts.lengths:
        for depth in opts.depths:
            keys = [str(int(k)) for k in torch.randint(10 ** (DIGITS - 1), 10 ** DIGITS, (opts.trials,), generator=g)]
            prompts = torch.tensor([make_prompt(length, depth, k) for k in keys], device=device)
            logits, _ = run.model(prompts[:, :-1], expand_state(state, len(keys)))
            guess = logits[:, -DIGITS:].argmax(-1)
            right = guess == prompts[:, -DIGITS:]
            cells.append({"length": length, "depth": depth, "trials": len(keys),
                          "accuracy": float(right.all(-1).float().mean()),
                          "digit_accuracy": float(right.float().mean())})
    return {"lengths": list(opts.lengths), "depths": list(opts.depths), "trials": opts.trials, "cells": cells,
            "accuracy": sum(c["accuracy"] for c in cells) / len(cells)}


def heatmap(result: dict, path: Path, title: Optional[str] = None) -> Path:
    """Draw the accuracy of every (length, depth) cell as a PNG heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths, depths = result["lengths"], result["depths"]
    grid = [[0.0] * len(depths) for _ in lengths]
    for c in result["cells"]:
        grid[lengths.index(c["length"])][depths.index(c["depth"])] = c["accuracy"]
    fig, ax = plt.subplots(figsize=(1.1 * len(depths) + 2.5, 0.6 * len(lengths) + 1.8))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto", origin="lower")
    ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_yticks(range(len(lengths)), [str(n) for n in lengths])
    for i in range(len(lengths)):
        for j in range(len(depths)):
            ax.text(j, i, f"{grid[i][j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("needle depth (fraction of the filler before it)")
    ax.set_ylabel("prompt length (tokens)")
    ax.set_title(title or "passkey retrieval accuracy")
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
