"""Visual-token compressors: what the LM reads of the N projected visual tokens.

A 100M+ LM prefilling 2,560 visual embeddings takes seconds on a CPU; a compressor hands it
M << N embeddings instead. The pointer/box/time heads are unaffected: they keep addressing the
N full-resolution window tokens (their keys are built from the uncompressed embeddings).

    none        (N, D) -> (N, D)                       the shipped default, nothing changes
    pool        (N, D) -> (ceil(N / k), D)             mean of k consecutive tokens
    resampler   (N, D) -> (M, D)                       M learned queries cross-attend to them
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from llava4d_ros.model.config import CompressorConfig


class PoolCompressor(nn.Module):
    """Mean of each run of `k` consecutive tokens. `Buffer4D.tokens` sorts them by time, then
    x, y, z, so a run mostly shares one stamp and a slab of x: coarse, but spatially and
    temporally local. No parameters."""

    def __init__(self, k: int):
        super().__init__()
        self.k = int(k)

    def output_len(self, n: int) -> int:
        return math.ceil(n / self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x (N, D)` -> `(ceil(N / k), D)`; the last group averages only what it holds."""
        n, d = x.shape
        m = self.output_len(n)
        pad = m * self.k - n
        xp = F.pad(x, (0, 0, 0, pad))  # (m * k, D)
        counts = torch.full((m, 1), float(self.k), dtype=x.dtype, device=x.device)
        counts[-1] -= pad
        return xp.reshape(m, self.k, d).sum(1) / counts  # (m, D)


class Resampler(nn.Module):
    """`M` learned queries, one pre-norm cross-attention block and an MLP (a one-layer
    Perceiver resampler as in Flamingo): `(N, D)` -> `(M, D)` for any N >= 1."""

    def __init__(self, dim: int, queries: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"resampler width {dim} must be divisible by its heads {heads}")
        self.queries = nn.Parameter(torch.randn(queries, dim) * dim ** -0.5)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def output_len(self, n: int) -> int:
        return int(self.queries.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x (N, D)` -> `(M, D)`."""
        if x.shape[0] == 0:
            raise ValueError("the resampler needs at least one visual token")
        kv = self.norm_kv(x)[None]  # (1, N, D)
        q = self.queries[None].to(x.dtype)  # (1, M, D)
        h = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]  # (1, M, D)
        h = h + self.mlp(self.norm_mlp(h))
        return h[0]  # (M, D)


def build_compressor(cfg: CompressorConfig, dim: int) -> nn.Module | None:
    """The compressor of `cfg` for embeddings of width `dim`; None for kind "none"."""
    if cfg.kind == "none":
        return None
    if cfg.kind == "pool":
        return PoolCompressor(cfg.pool)
    return Resampler(dim, cfg.queries, cfg.heads)
