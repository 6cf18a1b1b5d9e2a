"""The spatiotemporal prompt: where and when a visual token is, as a vector.

    PE(xyz)  = MLP([cos(xyz W^T) || sin(xyz W^T)] / sqrt(2F)),  W (F, 3) ~ N(0, 1/gamma^2)
    TE(t)    = the same with a 1-D input, t in seconds since the window start
               (with `time_span`: (TE(t_first) + TE(t)) / 2 over the span a token was seen)
    p_t      = TE(t) * (1 + m),  m = softmax over the window of beta / tau, divided by its max
    p_4D     = concat(PE(xyz), p_t)

Softmax over what (the paper does not say): over the window's tokens, so a token's weight says
how much it moves compared with the rest of the window. Divided by the largest weight, the most
moving token gets m = 1 (its TE doubled) and a still window gets m = 1 everywhere, whatever the
number of tokens; beta (metres of depth change) is clipped first because an occlusion edge reports
metres of "motion".

Ablation (`PromptConfig.encoding`): "none" zeroes p_4D, "xyz" zeroes p_t, "time" zeroes PE, both
here and on the text side.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llava4d_ros.model.config import PromptConfig


class FourierEncoding(nn.Module):
    """Learnable Fourier features (Li et al. 2021) followed by a 2-layer MLP."""

    def __init__(self, in_dim: int, n_freqs: int, out_dim: int, gamma: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_freqs, in_dim) / gamma)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, out_dim), nn.GELU(),
                                 nn.Linear(out_dim, out_dim))
        self.norm = 1.0 / math.sqrt(2 * n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x (..., in_dim)` -> `(..., out_dim)`."""
        proj = x @ self.W.T  # (..., F)
        return self.mlp(torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1) * self.norm)


class SpatioTemporalPrompt(nn.Module):
    def __init__(self, cfg: PromptConfig):
        super().__init__()
        self.cfg = cfg
        self.pe = FourierEncoding(3, cfg.spatial_freqs, cfg.spatial_dim, cfg.spatial_gamma_m)
        self.te = FourierEncoding(1, cfg.temporal_freqs, cfg.temporal_dim, cfg.temporal_gamma_s)
        self.zeroed = False  # stage 1 of training sets p_4D to zero

    def motion_weight(self, beta: torch.Tensor) -> torch.Tensor:
        """`beta (N,)` metres -> m `(N,)` in (0, 1], 1 for the most moving token."""
        b = beta.clamp(0.0, self.cfg.motion_clip_m) / self.cfg.motion_tau_m
        w = torch.softmax(b, dim=0)
        return w / w.max()

    def spatial(self, xyz: torch.Tensor) -> torch.Tensor:
        """PE `(..., spatial_dim)`; zeros when the spatial part is ablated."""
        out = self.pe(xyz)
        return out if self.cfg.use_space and not self.zeroed else torch.zeros_like(out)

    def temporal(self, t_s: torch.Tensor) -> torch.Tensor:
        """TE `(..., temporal_dim)` of `t_s (...)`; zeros when the time part is ablated."""
        out = self.te(t_s[..., None])
        return out if self.cfg.use_time and not self.zeroed else torch.zeros_like(out)

    def forward(self, xyz: torch.Tensor, t_s: torch.Tensor, beta: torch.Tensor,
                t_first_s: torch.Tensor | None = None) -> torch.Tensor:
        """`xyz (N, 3)` world metres, `t_s (N,)` model seconds (each token's last observation),
        `beta (N,)`, `t_first_s (N,)` its first (read when `cfg.time_span`) -> p_4D `(N, dim)`."""
        te = self.temporal(t_s)
        if self.cfg.time_span:
            if t_first_s is None:
                raise ValueError("this prompt reads each token's span: pass t_first_s")
            te = 0.5 * (te + self.temporal(t_first_s))
        p_t = te * (1.0 + self.motion_weight(beta))[:, None]
        return torch.cat([self.spatial(xyz), p_t], dim=-1)  # (N, ds + dt)


class TextCoordinateEmbedding(nn.Module):
    """Adds w_t * proj(TE(t)) to the tokens of a time and w_s * proj(PE(xyz)) to the tokens of
    a coordinate in the question. w_t = w_s = 0 at init: a stock LM's text is unchanged."""

    def __init__(self, prompt: SpatioTemporalPrompt, lm_hidden: int):
        super().__init__()
        cfg = prompt.cfg
        self.proj_time = nn.Linear(cfg.temporal_dim, lm_hidden)
        self.proj_space = nn.Linear(cfg.spatial_dim, lm_hidden)
        self.w_t = nn.Parameter(torch.zeros(()))
        self.w_s = nn.Parameter(torch.zeros(()))

    def forward(self, embeds: torch.Tensor, prompt: SpatioTemporalPrompt,
                time_tokens: list[tuple[list[int], float]],
                coord_tokens: list[tuple[list[int], tuple[float, float, float]]]
                ) -> torch.Tensor:
        """`embeds (L, D)`; `*_tokens`: (token positions, value) -> `(L, D)`."""
        add = torch.zeros_like(embeds)
        if time_tokens:
            t = torch.tensor([v for _, v in time_tokens], dtype=embeds.dtype,
                             device=embeds.device)
            e = self.w_t * self.proj_time(prompt.temporal(t))  # (n, D)
            for k, (pos, _) in enumerate(time_tokens):
                add[pos] = add[pos] + e[k]
        if coord_tokens:
            xyz = torch.tensor([v for _, v in coord_tokens], dtype=embeds.dtype,
                               device=embeds.device)
            e = self.w_s * self.proj_space(prompt.spatial(xyz))  # (n, D)
            for k, (pos, _) in enumerate(coord_tokens):
                add[pos] = add[pos] + e[k]
        return embeds + add
