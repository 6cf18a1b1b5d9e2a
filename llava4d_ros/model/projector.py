"""LLaVA-1.5's `mlp2x_gelu` projector: visual features -> LM embedding width.

Parameter names match `transformers`' `LlavaMultiModalProjector` (linear_1, linear_2), so a
LLaVA-1.5 checkpoint's projector loads as is.
"""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    def __init__(self, feature_dim: int, lm_hidden: int):
        super().__init__()
        self.linear_1 = nn.Linear(feature_dim, lm_hidden)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(lm_hidden, lm_hidden)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """`(N, D)` -> `(N, D_lm)`."""
        return self.linear_2(self.act(self.linear_1(f)))
