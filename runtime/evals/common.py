"""What every evaluation shares: the loss of a model over a text, from a fresh state or a memory's."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..continual import expand_state


@torch.no_grad()
def window_losses(model: nn.Module, tokens: list[int], seq: int, batch: int = 8,
                  state: Optional[dict] = None) -> tuple[float, int]:
    """(summed next-token loss in nats, tokens scored) over `tokens` cut into windows of `seq` predictions.

    Window i holds tokens[i*seq : i*seq + seq + 1]: every token after the first is predicted exactly
    once. Each window starts from `state` (a batch-1 state, e.g. a memory file's; None: fresh), and
    windows are run `batch` at a time (a short last window alone). No level learns.
    """
    if seq < 1 or batch < 1:
        raise ValueError("seq and batch must be positive")
    device = next(model.parameters()).device
    data = torch.as_tensor(tokens, dtype=torch.long, device=device)
    starts = list(range(0, data.numel() - 1, seq))
    full = [s for s in starts if s + seq + 1 <= data.numel()]
    groups = [full[i:i + batch] for i in range(0, len(full), batch)]
    groups += [[s] for s in starts if s not in set(full)]
    total, count = 0.0, 0
    for group in groups:
        rows = torch.stack([data[s:s + seq + 1] for s in group]) if len(group) > 1 or group[0] in full \
            else data[group[0]:].unsqueeze(0)
        x, y = rows[:, :-1], rows[:, 1:]
        logits, _ = model(x, expand_state(state, x.shape[0]))
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), y.reshape(-1), reduction="sum"))
        count += y.numel()
    return total, count


def mean_loss(model: nn.Module, tokens: list[int], seq: int, batch: int = 8, state: Optional[dict] = None) -> float:
    """Mean next-token loss (nats per token) over `tokens`; see `window_losses`."""
    total, count = window_losses(model, tokens, seq, batch, state)
    return total / max(count, 1)
