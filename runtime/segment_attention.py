"""Softmax attention with a prefix: persistent tokens and per-segment context tokens ([T] §3.3, §4.1).

`SegmentAttention` is the attention level of a spec that gives it `persistent N`, `segment L` or
`context ...` (docs/semantics.md §4.1). The generated code owns the projections: it passes the keys and
values of the sequence, of the persistent tokens (the same for every query) and of the context tokens
(one per token of the segment, e.g. a memory's read-out at the segment start). What a query at
position t sees:

- every persistent key;
- with `segment L`: the tokens and the context tokens of its own segment at positions ≤ t (the
  segment of t is ⌊t/L⌋, counted from the sequence start);
- without a segment: the tokens at positions ≤ t (the last `window` of them with a window).

The carried state is a `KVCache` of the current segment's keys and values (each context token before
its token; the last window − 1 tokens with a window) and the position, so a sequence split anywhere and run in
pieces gives the whole run's outputs. A call that crosses a segment boundary is cut there.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import KVCache
from .memory_level import position_of, segments

Pair = tuple[Tensor, Tensor]


class SegmentAttention(nn.Module):
    """q, k: (B, T, heads·dk), v: (B, T, heads·dv) -> o: (B, T, heads·dv).

    `width` is the width of the tokens the projections read (the block input); the `persistent`
    learned tokens live in that space and `tokens(like)` returns them batched for the projections.
    """

    def __init__(self, heads: int, dk: int, dv: int, *, width: int, segment: Optional[int] = None,
                 window: Optional[int] = None, persistent: int = 0, scale: Optional[float] = None):
        super().__init__()
        if segment is not None and segment < 1:
            raise ValueError("a segment must be at least 1 token")
        if window is not None and window < 1:
            raise ValueError("an attention window must be at least 1 token")
        if segment is not None and window is not None:
            raise ValueError("an attention has either a segment or a window")
        self.heads, self.dk, self.dv = heads, dk, dv
        self.segment, self.window = segment, window
        self.scale = dk ** -0.5 if scale is None else scale
        self.persistent = nn.Parameter(torch.randn(persistent, width)) if persistent else None

    def tokens(self, like: Tensor) -> Tensor:
        """The persistent tokens as a (B, N_p, width) batch shaped like `like` (B, T, width)."""
        assert self.persistent is not None
        return self.persistent.to(like.dtype).unsqueeze(0).expand(like.shape[0], -1, -1)

    def _split(self, x: Tensor, d: int) -> Tensor:
        return x.unflatten(-1, (self.heads, d)).transpose(1, 2)  # (B, H, T, d)

    def _empty(self, q: Tensor) -> KVCache:
        b = q.shape[0]
        return KVCache(q.new_zeros(b, self.heads, 0, self.dk), q.new_zeros(b, self.heads, 0, self.dv), 0)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, cache: Optional[KVCache] = None, *,
                persistent: Optional[Pair] = None, context: Optional[Pair] = None) -> tuple[Tensor, KVCache]:
        if context is not None and self.segment is None:
            raise ValueError("context tokens need a segment")
        position = position_of(cache)
        cache = cache if cache is not None else self._empty(q)
        pk = pv = None
        if persistent is not None:
            pk, pv = self._split(persistent[0], self.dk), self._split(persistent[1], self.dv)
        size = self.segment or max(1, q.shape[1])
        outs = []
        for start, end in segments(position, q.shape[1], size) if self.segment else [(0, q.shape[1])]:
            if self.segment is not None and (position + start) % self.segment == 0:
                cache = KVCache(cache.k[:, :, :0], cache.v[:, :, :0], position + start)
            piece = slice(start, end)
            ctx = None if context is None else (context[0][:, piece], context[1][:, piece])
            o, cache = self._attend(q[:, piece], k[:, piece], v[:, piece], cache, pk, pv, ctx)
            outs.append(o)
        return torch.cat(outs, dim=1), cache

    def _attend(self, q, k, v, cache: KVCache, pk, pv, ctx) -> tuple[Tensor, KVCache]:
        n = q.shape[1]
        q, k, v = self._split(q, self.dk), self._split(k, self.dk), self._split(v, self.dv)
        stream_k, stream_v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
        past = cache.k.shape[2]
        query_at = torch.arange(n, device=q.device).unsqueeze(1) + past
        key_at = torch.arange(past + n, device=q.device).unsqueeze(0)
        visible = key_at <= query_at
        if self.window is not None:
            visible = visible & (key_at > query_at - self.window)
        keys, values, masks = [stream_k], [stream_v], [visible]
        if ctx is not None:
            ck, cv = self._split(ctx[0], self.dk), self._split(ctx[1], self.dv)
            keys.append(ck)
            values.append(cv)
            masks.append(torch.ones(n, n, dtype=torch.bool, device=q.device).tril())
        if pk is not None:
            keys.insert(0, pk)
            values.insert(0, pv)
            masks.insert(0, torch.ones(n, pk.shape[2], dtype=torch.bool, device=q.device))
        o = F.scaled_dot_product_attention(q, torch.cat(keys, dim=2), torch.cat(values, dim=2),
                                           attn_mask=torch.cat(masks, dim=1), scale=self.scale)
        if self.segment is not None:  # the segment's tokens and context tokens stay visible to its later queries
            new_k = torch.cat([cache.k, _by_position(ck, k) if ctx is not None else k], dim=2)
            new_v = torch.cat([cache.v, _by_position(cv, v) if ctx is not None else v], dim=2)
        else:
            keep = stream_k.shape[2] if self.window is None else min(self.window - 1, stream_k.shape[2])
            new_k, new_v = stream_k[:, :, stream_k.shape[2] - keep:], stream_v[:, :, stream_v.shape[2] - keep:]
        return o.transpose(1, 2).flatten(-2), KVCache(new_k, new_v, cache.position + n)


def _by_position(context: Tensor, tokens: Tensor) -> Tensor:
    """(B, H, n, d) context and token entries as c_1, x_1, c_2, x_2, ...: the cache's order does not
    depend on where a sequence was split."""
    return torch.stack([context, tokens], dim=3).flatten(2, 3)
