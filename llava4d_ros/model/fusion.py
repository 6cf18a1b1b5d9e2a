"""Disentangled visual features and their fusion with the spatiotemporal prompt.

    f_s  = the token's feature (a voxel seen at one time)
    f_t  = f_s minus the feature of the same voxel at its previous time in the window (0 for a
           voxel's first token and for static voxels, which the buffer pools to one token)
    z    = W_q p_4D + MHA(W_q p_4D, [f_s, f_t], [f_s, f_t])   per token, two keys
    o    = f_s + W_o z                                        W_o zero-initialised
    f_st = alpha * o + (1 - alpha) * f_s,  alpha = sigmoid(MLP(p_4D))

The attention is per token over its own two features (the paper's cross-attention; what it
attends over is not specified, and the LM already mixes tokens). Like a transformer decoder's
cross-attention block the query stream keeps its input, so the prompt itself (where and when)
reaches the features, not only a re-weighting of f_s and f_t. With W_o = 0, o = f_s and
f_st = f_s exactly: a stock LLaVA-1.5 checkpoint behaves as LLaVA-1.5 until 4D training.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def temporal_features(features: torch.Tensor, xyz: torch.Tensor, t_s: torch.Tensor,
                      voxel_m: float) -> torch.Tensor:
    """f_t `(N, D)`: each token's feature minus its voxel's previous token's (0 if none)."""
    n = features.shape[0]
    if n == 0:
        return torch.zeros_like(features)
    cells = torch.floor(xyz.detach().double() / voxel_m).long()  # (N, 3)
    _, vox = torch.unique(cells, dim=0, return_inverse=True)  # (N,)
    # sort by voxel, then time: a voxel's tokens become consecutive and time-ordered
    order = torch.argsort(t_s.detach().double(), stable=True)
    order = order[torch.argsort(vox[order], stable=True)]
    f_sorted = features[order]
    same = torch.zeros(n, dtype=torch.bool, device=features.device)
    same[1:] = vox[order][1:] == vox[order][:-1]
    diff = torch.zeros_like(f_sorted)
    diff[1:] = f_sorted[1:] - f_sorted[:-1]
    diff = diff * same[:, None]
    out = torch.empty_like(features)
    out[order] = diff
    return out


class SpatioTemporalFusion(nn.Module):
    def __init__(self, feature_dim: int, prompt_dim: int, n_heads: int, gate_hidden: int):
        super().__init__()
        if feature_dim % n_heads:
            raise ValueError(f"feature_dim {feature_dim} not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.q_proj = nn.Linear(prompt_dim, feature_dim)
        self.k_proj = nn.Linear(feature_dim, feature_dim)
        self.v_proj = nn.Linear(feature_dim, feature_dim)
        self.out_proj = nn.Linear(feature_dim, feature_dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        self.gate = nn.Sequential(nn.Linear(prompt_dim, gate_hidden), nn.GELU(),
                                  nn.Linear(gate_hidden, 1))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, p4d: torch.Tensor) -> torch.Tensor:
        """`f_s, f_t (N, D)`, `p4d (N, P)` -> f_st `(N, D)`."""
        n, d = f_s.shape
        h, dh = self.n_heads, d // self.n_heads
        q = self.q_proj(p4d)  # (N, D)
        kv = torch.stack([f_s, f_t], dim=1)  # (N, 2, D)
        k = self.k_proj(kv).view(n, 2, h, dh).transpose(1, 2)  # (N, H, 2, dh)
        v = self.v_proj(kv).view(n, 2, h, dh).transpose(1, 2)  # (N, H, 2, dh)
        att = (q.view(n, h, 1, dh) @ k.transpose(-1, -2)) / math.sqrt(dh)  # (N, H, 1, 2)
        z = (att.softmax(dim=-1) @ v).reshape(n, d) + q  # (N, D)
        alpha = torch.sigmoid(self.gate(p4d))  # (N, 1)
        # alpha * o + (1 - alpha) * f_s with o = f_s + W_o z, written so W_o = 0 is exact
        return f_s + alpha * self.out_proj(z)
