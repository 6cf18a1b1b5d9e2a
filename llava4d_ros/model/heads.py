"""Slot heads of the shipped default: the LM writes `<box>` / `<time>`, these fill them in.

    score_i = <W_q c, W_k k_i> / sqrt(d)     c: slot context, k_i: key of visual token i
    w       = softmax_i(score)                over the window's visual tokens
    <time>  = gated choice of: the time of the best-scoring token, the time the question names,
              the newest token's time, or that minus the question's time (TimeHead)
    <box>   = centre: w-weighted mean xyz + MLP correction; size: MLP. The MLP sees the
              weighted spread and soft extremes of xyz, the mean view direction (visible
              surfaces lie on the camera's side of an object, so the mean is biased toward
              it), the mean height, and the slot context (which names the shape)

The numbers are then written into the answer text, and the grounding parser reads them back, so
a checkpoint that writes digits itself and this one share one output path.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Two hidden layers, each normalised before its activation: without the norms a head
    trained with a large step size lost every unit of its second layer (all GELU inputs very
    negative) and then predicted one constant box size."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(),
                         nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(),
                         nn.Linear(hidden, out_dim))


class PointerHead(nn.Module):
    """Scores visual tokens from a slot's context; one query map per slot kind.

    A token's key sees its LM hidden state and, as a skip connection, its fused feature and
    p_4D (zeros where the ablation removes a part): the LM need not carry a token's exact place
    and time through its layers for the pointer to find it."""

    def __init__(self, query_dim: int, key_dim: int, dim: int):
        super().__init__()
        self.q_box = nn.Linear(query_dim, dim)
        # "at 2.5s" matches TE(t), "2 seconds ago" TE(age): which one depends on the words, a
        # product a linear map cannot form
        self.q_time = nn.Sequential(nn.Linear(query_dim, 2 * dim), nn.GELU(),
                                    nn.Linear(2 * dim, dim))
        self.k = nn.Linear(key_dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, h_slot: torch.Tensor, is_time: torch.Tensor,
                h_visual: torch.Tensor) -> torch.Tensor:
        """`h_slot (S, Q)`, `is_time (S,) bool`, `h_visual (N, K)` -> scores `(S, N)`."""
        q = torch.where(is_time[:, None], self.q_time(h_slot), self.q_box(h_slot))  # (S, d)
        return (q @ self.k(h_visual).T) * self.scale  # (S, N)


def _soft_extreme(w: torch.Tensor, xyz: torch.Tensor, tau: float) -> torch.Tensor:
    """`(S, 3)` soft maximum (tau > 0) or minimum (tau < 0) of xyz under weights `w (S, N)`:
    the weighted mean with extra weight exp(x / tau) toward the extreme."""
    logits = torch.log(w.clamp_min(1e-12))[:, :, None] + (xyz / tau)[None]  # (S, N, 3)
    return (logits.softmax(dim=1) * xyz[None]).sum(1)


class BoxHead(nn.Module):
    """Box6 from pointer weights over token geometry; see the module docstring."""

    def __init__(self, lm_hidden: int, hidden: int):
        super().__init__()
        self.h_proj = nn.Linear(lm_hidden, 32)
        self.mlp = mlp(32 + 13, hidden, 6)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, h_slot: torch.Tensor, w: torch.Tensor, xyz: torch.Tensor,
                view_dir: torch.Tensor) -> torch.Tensor:
        """`h_slot (S, H)`, `w (S, N)` rows sum to 1, `xyz, view_dir (N, 3)` -> box6 `(S, 6)`."""
        mu = w @ xyz  # (S, 3)
        var = (w @ (xyz * xyz) - mu * mu).clamp_min(0.0)
        sigma = torch.sqrt(var + 1e-6)  # (S, 3)
        v = F.normalize(w @ view_dir, dim=-1)  # (S, 3)
        hi = _soft_extreme(w, xyz, 0.05) - mu  # (S, 3) how far the pointed points reach
        lo = mu - _soft_extreme(w, xyz, -0.05)
        inp = torch.cat([self.h_proj(h_slot), sigma * 4.0, v, mu[:, 2:3], hi * 4.0, lo * 4.0],
                        dim=-1)  # (S, 45)
        out = self.mlp(inp)  # (S, 6)
        centre = mu + 0.2 * out[:, :3]
        size = 0.4 * torch.exp(0.5 * torch.tanh(out[:, 3:]))  # 0.24 .. 0.66 m
        return torch.cat([centre, size], dim=-1)


class TimeHead(nn.Module):
    """A `<time>` slot's value: a gated choice between four readings of the question,

        t = g . [t_pointer, t_q, t_end, t_end - t_q],  g = softmax(MLP(c))

    t_pointer: the time of the tokens the pointer picks (when did it start moving: only the
    tokens know); t_q: the time the question names, copied (at 2.5s); t_end: the newest token
    (now); t_end - t_q: counted back from it (2 seconds ago). Readings that need a time in the
    question are masked out when it names none. Copying a number from the prompt is what an LM
    that writes digits does; here it is explicit, so a 3-layer LM need not learn it."""

    def __init__(self, ctx_dim: int, hidden: int):
        super().__init__()
        self.mlp = mlp(ctx_dim, hidden, 4)

    def forward(self, ctx: torch.Tensor, t_pointer: torch.Tensor, t_end: torch.Tensor,
                t_question: torch.Tensor) -> torch.Tensor:
        """`ctx (S, C)`, `t_pointer (S,)`, `t_end ()`, `t_question (S,)` NaN = none -> `(S,)`."""
        has_q = torch.isfinite(t_question)
        t_q = torch.where(has_q, t_question, torch.zeros_like(t_question))
        cands = torch.stack([t_pointer, t_q, t_end.expand_as(t_q), t_end - t_q], dim=-1)
        logits = self.mlp(ctx)  # (S, 4)
        need_q = torch.tensor([False, True, False, True], device=ctx.device)
        logits = logits.masked_fill(need_q & ~has_q[:, None], float("-inf"))
        return (logits.softmax(dim=-1) * cands).sum(-1)


def decode_time(scores: torch.Tensor, t_s: torch.Tensor) -> torch.Tensor:
    """`scores (S, N)`, `t_s (N,)` -> `(S,)` the time of each slot's best token."""
    return t_s[scores.argmax(dim=-1)]


def soft_time(w: torch.Tensor, t_s: torch.Tensor) -> torch.Tensor:
    """Differentiable `(S,)` time: the w-weighted mean of token times."""
    return w @ t_s
