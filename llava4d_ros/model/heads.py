"""Slot heads of the shipped default: the LM writes `<box>` / `<time>`, these fill them in.

    score_i = <W_q c, W_k k_i> / sqrt(d)     c: slot context, k_i: key of visual token i
    w       = softmax_i(score)                over the window's visual tokens
    <time>  = gated choice of: the time of the best-scoring token, the time the question names,
              the newest token's time, that minus the question's time, or the first motion
              among the pointed tokens (TimeHead)
    <box>   = centre: the pointed top face's xy and mean height + MLP correction; size: MLP.
              The MLP sees the weighted spread and soft extremes of xyz, the mean view
              direction (visible surfaces lie on the camera's side of an object, so the mean
              is biased toward it), the mean height, the slot context (which names the
              shape) and, in a `tokens` box head (the default), an encoding of the pointed
              tokens themselves (`PointedTokens`)

What the heads read: a slot's context `slot_context` (its LM hidden state, the question's
attention-pooled embeddings `AttentionPool`, its sentence's, the TE of the time the question
names) and each visual token's key `pointer_keys` (its LM hidden state, fused feature, PE, p_t,
TE of its age). `new_time_head` builds the time head a config names; `SlotReader` runs the
heads for one slot (`fill`) and builds one answer's `decoding.SlotFiller` (`filler`).

The numbers are written into the answer text and go, with the box's calibrated confidence, to
its `GroundedBox` directly; the grounding parser takes only the label and time from the sentence
(and everything from the text of a checkpoint that writes digits itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from llava4d_ros.model.config import BOX_HEADS, DEFAULT_BOX_HEAD, LLaVA4DConfig
from llava4d_ros.model.decoding import Guide, SlotFiller, SlotTokens, SlotValue, box_raw_score
from llava4d_ros.model.grounding import calibrated
from llava4d_ros.model.tokens import TokenTensors


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Two hidden layers, each normalised before its activation: without the norms a head
    trained with a large step size lost every unit of its second layer (all GELU inputs very
    negative) and then predicted one constant box size."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(),
                         nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(),
                         nn.Linear(hidden, out_dim))



def rms(x: torch.Tensor) -> torch.Tensor:
    """Scale the last dim to unit root-mean-square (0 stays 0): the parts of a slot context or a
    pointer key come in very different scales (tiny embeddings, RMS-normed hidden states)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def pointer_keys(h_visual: torch.Tensor, extra: torch.Tensor, feature_dim: int,
                 spatial_dim: int, temporal_dim: int, space: bool = True) -> torch.Tensor:
    """`(N, H + D + P + dt)`: the visual tokens' LM hidden states, fused features, PE, p_t and
    TE of their age (seconds before the window's newest token, for "now" / "n seconds ago").
    `space=False` zeroes the PE block (same width, so a checkpoint loads either way): a
    question names what and when, never where, so a token's place cannot tell the pointer
    which token is asked about; the box head reads the pointed tokens' xyz itself."""
    d, ds, dt = feature_dim, spatial_dim, temporal_dim
    pe = extra[:, d:d + ds]
    parts = [h_visual, extra[:, :d], pe if space else torch.zeros_like(pe),
             extra[:, d + ds:d + ds + dt], extra[:, d + ds + dt:]]
    return torch.cat([rms(x) for x in parts], dim=-1)


def question_mean(q_emb: torch.Tensor) -> torch.Tensor:
    """`(L, H)` question embeddings -> `(H,)` their plain mean (normalised): every word counts,
    "ago" as much as the object's name (what a "question" time head's gate reads)."""
    return rms(q_emb.mean(dim=0))


def slot_context(h_slot: torch.Tensor, bag_question: torch.Tensor, bag_sentence: torch.Tensor,
                 te_question: torch.Tensor) -> torch.Tensor:
    """`(3H + dt,)`: a slot's hidden state, pooled question and sentence embeddings, and the TE
    of the time the question names (the text-side p_t, straight to the pointer)."""
    return torch.cat([rms(h_slot), rms(bag_question), rms(bag_sentence), rms(te_question)],
                     dim=-1)


class AttentionPool(nn.Module):
    """Weighted mean of token embeddings, weights softmax(v . e_j): learns to look at the words
    that name an object or a time rather than averaging them into the template words."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)  # starts as the plain mean
        nn.init.zeros_(self.score.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """`e (L, D)` -> `(D,)`."""
        e = rms(e)
        return (self.score(e).softmax(dim=0) * e).sum(0)

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
        # a `<box>` slot's sentence names its time T (the `<time>` slot before it): a score term
        # from how far each token's stamp is from T, for tokens of voxels that changed (a static
        # voxel's one token carries its latest stamp, whatever T). Zero-init: no-op at first.
        self.dt = nn.Sequential(nn.Linear(DT_FEATURES, 32), nn.GELU(), nn.Linear(32, 1))
        nn.init.zeros_(self.dt[-1].weight)
        nn.init.zeros_(self.dt[-1].bias)

    def forward(self, h_slot: torch.Tensor, is_time: torch.Tensor,
                h_visual: torch.Tensor, dt_feat: torch.Tensor | None = None) -> torch.Tensor:
        """`h_slot (S, Q)`, `is_time (S,) bool`, `h_visual (N, K)`, optional `dt_feat (S, N, F)`
        from `time_match_features` -> scores `(S, N)`."""
        q = torch.where(is_time[:, None], self.q_time(h_slot), self.q_box(h_slot))  # (S, d)
        scores = (q @ self.k(h_visual).T) * self.scale  # (S, N)
        if dt_feat is not None:
            scores = scores + self.dt(dt_feat)[..., 0]
        return scores


DT_FEATURES = 7
KEEP_REL = 1e-3  # tokens under this share of the top weight take no part in soft extremes


def dynamic_tokens(xyz: torch.Tensor, voxel_m: float, motion: torch.Tensor | None = None,
                   motion_m: float = 0.1) -> torch.Tensor:
    """`(N,)` 1.0 for a token of a voxel that changed, else 0.0: it shares its voxel with
    another token (such a voxel gets one token per keyframe, a static one a single token), or
    it reports motion above the buffer's threshold (which is what makes a voxel dynamic; the
    buffer may have grown its voxels past `voxel_m`, so sharing alone misses many)."""
    cells = torch.floor(xyz / voxel_m).to(torch.int64)
    _, inv, counts = torch.unique(cells, dim=0, return_inverse=True, return_counts=True)
    dyn = counts[inv] > 1
    if motion is not None:
        dyn = dyn | (motion > motion_m)
    return dyn.to(xyz.dtype)


def time_match_features(t_slot: torch.Tensor, t: torch.Tensor, dyn: torch.Tensor,
                        motion: torch.Tensor) -> torch.Tensor:
    """`(S, N, 7)` per slot and token: |t_i - T| on a coarse (s, to 2) and a fine (0.1 s, to 3)
    scale and the signed difference (s, to +-2); the two |t_i - T| again for tokens of changed
    voxels only (a static voxel's one token carries its latest stamp, whatever T); the dynamic
    flag and the token's motion (m, clipped to 1). `t_slot (S,)` NaN (no time in the sentence)
    gives all-zero rows, which shift no score."""
    has = torch.isfinite(t_slot)
    diff = (t[None, :] - torch.where(has, t_slot, torch.zeros_like(t_slot))[:, None])  # (S, N)
    coarse, fine = diff.abs().clamp_max(2.0), (diff.abs() * 10.0).clamp_max(3.0)
    d = dyn[None, :].expand_as(diff)
    mot = motion.clamp(0.0, 1.0)[None, :].expand_as(diff)
    feat = torch.stack([coarse, fine, diff.clamp(-2.0, 2.0), coarse * d, fine * d, d, mot],
                       dim=-1)
    return feat * has[:, None, None].to(feat.dtype)


def _tilt_logits(w: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """`(S, N, C)` log-weights tilted toward large (tau > 0) or small (tau < 0) `v (N, C)`.
    Tokens under 1e-3 of a row's top weight are left out: without that, the tilt of a far
    token (v / tau reaches 60 for a wall 3 m away) outweighs its tiny weight, and the
    "extreme" of an object became the room's."""
    keep = w >= KEEP_REL * w.max(dim=-1, keepdim=True).values  # (S, N)
    logw = torch.log(w.clamp_min(1e-12)).masked_fill(~keep, float("-inf"))
    return logw[:, :, None] + (v / tau)[None]


def _soft_extreme(w: torch.Tensor, xyz: torch.Tensor, tau: float) -> torch.Tensor:
    """`(S, 3)` soft maximum (tau > 0) or minimum (tau < 0) of xyz under weights `w (S, N)`:
    the weighted mean with extra weight exp(x / tau) toward the extreme."""
    return (_tilt_logits(w, xyz, tau).softmax(dim=1) * xyz[None]).sum(1)


def pooled_geometry(w: torch.Tensor, xyz: torch.Tensor, view_dir: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """What pooling the pointed tokens says about a box. `w (S, N)` rows sum to 1,
    `xyz, view_dir (N, 3)` -> (base centre `(S, 3)`, statistics `(S, 15)`).

    The base centre is the top face's xy (measured with the true tokens: 4 cm mean error
    against 7 cm for the mean of all pointed tokens, which leans toward the camera) and the
    mean height. The statistics, scaled to about unit size: the weighted spread, the mean view
    direction, the mean height, how far the soft extremes reach above and below the mean, and
    the top face's offset from it."""
    mu = w @ xyz  # (S, 3)
    var = (w @ (xyz * xyz) - mu * mu).clamp_min(0.0)
    sigma = torch.sqrt(var + 1e-6)  # (S, 3)
    v = F.normalize(w @ view_dir, dim=-1)  # (S, 3)
    hi = _soft_extreme(w, xyz, 0.05) - mu  # (S, 3) how far the pointed points reach
    lo = mu - _soft_extreme(w, xyz, -0.05)
    # the top face's xy centre is the box's (seen from above, whatever the view side)
    w_top = _tilt_logits(w, xyz[:, 2:], 0.05)[:, :, 0]  # (S, N)
    top_xy = w_top.softmax(dim=-1) @ xyz[:, :2]  # (S, 2)
    base = torch.cat([top_xy, mu[:, 2:]], dim=-1)
    stats = torch.cat([sigma * 4.0, v, mu[:, 2:3], hi * 4.0, lo * 4.0,
                       (top_xy - mu[:, :2]) * 4.0], dim=-1)
    return base, stats


class PointedTokens(nn.Module):
    """An encoding `(S, 2 * dim)` of the `k` tokens a slot's pointer weighs most: a shared MLP
    of each token's place relative to the base centre (x4, so about unit size), its view
    direction, its height, its log-weight relative to the top one and its share of the
    weight, pooled by weight (mean) and by max over the tokens above `KEEP_REL` of the top.

    Why: the pooled statistics cannot say which side of an object its tokens lie on, or how
    they are spread over its faces, and the box's centre was what a box missed by (on 60 val
    scenes, with the true centre 0.98 of the boxes were right, with the true size 0.80)."""

    def __init__(self, dim: int = 64, k: int = 48):
        super().__init__()
        self.k = k
        self.out_dim = 2 * dim
        self.phi = nn.Sequential(nn.Linear(9, dim), nn.LayerNorm(dim), nn.GELU(),
                                 nn.Linear(dim, dim), nn.GELU())

    def forward(self, w: torch.Tensor, xyz: torch.Tensor, view_dir: torch.Tensor,
                base: torch.Tensor) -> torch.Tensor:
        """`w (S, N)` rows sum to 1, `xyz, view_dir (N, 3)`, `base (S, 3)` -> `(S, 2 * dim)`."""
        k = min(self.k, w.shape[1])
        wk, idx = w.topk(k, dim=-1)  # (S, k), sorted: wk[:, 0] is the top weight
        share = wk / wk.sum(-1, keepdim=True).clamp_min(1e-12)
        rel = torch.log(wk.clamp_min(1e-30) / wk[:, :1].clamp_min(1e-30)).clamp_min(-7.0) / 7.0
        p = xyz[idx]  # (S, k, 3)
        f = torch.cat([(p - base[:, None, :]) * 4.0, view_dir[idx], rel[..., None],
                       p[..., 2:] * 2.0, (share * k).clamp_max(4.0)[..., None]], dim=-1)
        h = self.phi(f)  # (S, k, dim)
        keep = wk >= KEEP_REL * wk[:, :1]
        mean = (share[..., None] * h).sum(1)
        top = h.masked_fill(~keep[..., None], -1e4).max(1).values
        return torch.cat([mean, top], dim=-1)


class BoxHead(nn.Module):
    """Box6 from pointer weights over token geometry; see the module docstring. `kind`
    "pooled" reads `pooled_geometry` only, "tokens" also `PointedTokens`."""

    def __init__(self, lm_hidden: int, hidden: int, kind: str = DEFAULT_BOX_HEAD):
        super().__init__()
        if kind not in BOX_HEADS:
            raise ValueError(f"box head kind must be one of {BOX_HEADS}, got {kind!r}")
        self.h_proj = nn.Linear(lm_hidden, 32)
        self.tokens = PointedTokens() if kind == "tokens" else None
        extra = 0 if self.tokens is None else self.tokens.out_dim
        self.mlp = mlp(32 + 15 + extra, hidden, 6)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, h_slot: torch.Tensor, w: torch.Tensor, xyz: torch.Tensor,
                view_dir: torch.Tensor) -> torch.Tensor:
        """`h_slot (S, H)`, `w (S, N)` rows sum to 1, `xyz, view_dir (N, 3)` -> box6 `(S, 6)`."""
        base, stats = pooled_geometry(w, xyz, view_dir)
        parts = [self.h_proj(h_slot), stats]
        if self.tokens is not None:
            parts.append(self.tokens(w, xyz, view_dir, base))
        out = self.mlp(torch.cat(parts, dim=-1))  # (S, 6)
        centre = base + 0.2 * out[:, :3]
        size = 0.4 * torch.exp(0.5 * torch.tanh(out[:, 3:]))  # 0.24 .. 0.66 m
        return torch.cat([centre, size], dim=-1)


class TimeHead(nn.Module):
    """A `<time>` slot's value: a gated choice between five readings of the question,

        t = g . [t_pointer, t_q, t_end, t_end - t_q, t_first - lag],  g = softmax(MLP(c))

    t_pointer: the time of the tokens the pointer picks; t_q: the time the question names,
    copied (at 2.5s); t_end: the newest token (now); t_end - t_q: counted back from it (2 seconds
    ago); t_first: when the pointed object started moving. Readings that need a time in the
    question, or a first motion, are masked out where there is none. Copying a number from the
    prompt is what an LM that writes digits does; here it is explicit, so a 3-layer LM need not
    learn it.

    `question_dim > 0` (kind "question"): the gate also reads `q_mean`, the plain mean of the
    question's embeddings. The slot context's question part is an attention pool trained with
    the pointer, which looks at the object's words; in a full-4D model it did not keep "ago",
    and the gate read "3 seconds ago" as "at 3s" (measured on val, see docs/RESULTS.md)."""

    def __init__(self, ctx_dim: int, hidden: int, question_dim: int = 0):
        super().__init__()
        self.question_dim = question_dim
        self.mlp = mlp(ctx_dim + question_dim, hidden, 5)
        # the motion estimator reports a start a few keyframes late (measured: 0.3 s median)
        self.lag = nn.Parameter(torch.tensor(0.3))

    def forward(self, ctx: torch.Tensor, t_pointer: torch.Tensor, t_end: torch.Tensor,
                t_question: torch.Tensor, t_first: torch.Tensor | None = None,
                q_mean: torch.Tensor | None = None) -> torch.Tensor:
        """`ctx (S, C)`, `t_pointer (S,)`, `t_end ()`, `t_question (S,)` NaN = none,
        `t_first (S,)` the first motion among the pointed tokens (`first_motion_time`), NaN or
        None = not available, `q_mean (S, question_dim)` (a "question" head only) -> `(S,)`."""
        if self.question_dim:
            if q_mean is None:
                raise ValueError("this time head reads the question's mean embedding: pass "
                                 "q_mean")
            ctx = torch.cat([ctx, q_mean], dim=-1)
        has_q = torch.isfinite(t_question)
        t_q = torch.where(has_q, t_question, torch.zeros_like(t_question))
        if t_first is None:
            t_first = torch.full_like(t_q, float("nan"))
        has_f = torch.isfinite(t_first)
        t_f = torch.where(has_f, t_first - self.lag, torch.zeros_like(t_first))
        cands = torch.stack([t_pointer, t_q, t_end.expand_as(t_q), t_end - t_q, t_f], dim=-1)
        logits = self.mlp(ctx)  # (S, 5)
        need_q = torch.tensor([False, True, False, True, False], device=ctx.device)
        need_f = torch.tensor([False, False, False, False, True], device=ctx.device)
        logits = logits.masked_fill(need_q & ~has_q[:, None], float("-inf"))
        logits = logits.masked_fill(need_f & ~has_f[:, None], float("-inf"))
        return (logits.softmax(dim=-1) * cands).sum(-1)


def new_time_head(cfg: LLaVA4DConfig) -> TimeHead:
    """A freshly initialised time head of the kind `cfg.time_head` says, reading the slot
    context `(3 H + dt,)` and, for kind "question", the question's mean embedding `(H,)`."""
    d_lm = cfg.lm_hidden
    ctx_dim = 3 * d_lm + cfg.prompt.temporal_dim
    question_dim = d_lm if cfg.time_head == "question" else 0
    return TimeHead(ctx_dim, cfg.box_hidden, question_dim)


def first_motion_time(w: torch.Tensor, t_s: torch.Tensor, motion: torch.Tensor,
                      rel: float = 0.02, motion_m: float = 0.05) -> torch.Tensor:
    """`(S,)` when the pointed object started moving: the earliest stamp among the tokens the
    pointer weighs at least `rel` of its top weight and whose motion exceeds `motion_m`; NaN
    where there is none. `w (S, N)`, `t_s, motion (N,)`. Not differentiable (a reading)."""
    w = w.detach()
    sel = (w >= rel * w.max(dim=-1, keepdim=True).values) & (motion[None, :] > motion_m)
    t = torch.where(sel, t_s[None, :].expand_as(w), torch.full_like(w, float("inf")))
    first = t.min(dim=-1).values
    return torch.where(torch.isfinite(first), first, torch.full_like(first, float("nan")))


def first_motion_reading(pointer_w: torch.Tensor, t_s: torch.Tensor, motion: torch.Tensor,
                         motion_m: float, object_w: torch.Tensor | None = None) -> torch.Tensor:
    """`(S,)` the first motion the time head reads (`first_motion_time` above `motion_m`):
    among the tokens of the named object, `object_w (S, N)`, where one of them moves, else
    among the pointer's `pointer_w (S, N)` (the object's moving tokens may have gone to no
    colour); the pointer's alone without `object_w`. Training and answering both read it here."""
    t_first = first_motion_time(pointer_w, t_s, motion, motion_m=motion_m)
    if object_w is None:
        return t_first
    t_obj = first_motion_time(object_w, t_s, motion, motion_m=motion_m)
    return torch.where(torch.isfinite(t_obj), t_obj, t_first)


def decode_time(scores: torch.Tensor, t_s: torch.Tensor) -> torch.Tensor:
    """`scores (S, N)`, `t_s (N,)` -> `(S,)` the time of each slot's best token."""
    return t_s[scores.argmax(dim=-1)]


def soft_time(w: torch.Tensor, t_s: torch.Tensor) -> torch.Tensor:
    """Differentiable `(S,)` time: the w-weighted mean of token times."""
    return w @ t_s


@dataclass(frozen=True)
class SlotReader:
    """What a `<box>` / `<time>` slot becomes, by a model's slot heads and the settings they
    read (`LLaVA4D.slot_reader`). A view: the heads stay the model's modules, under their
    checkpoint names."""

    pointer: PointerHead
    box_head: BoxHead
    time_head: TimeHead
    pool: AttentionPool  # the question's and the sentence's embeddings -> (H,)
    cfg: LLaVA4DConfig
    time_token_id: int

    def fill(self, token_id: int, ctx: torch.Tensor, keys: torch.Tensor, tt: TokenTensors,
             t_question: float, t_sentence: float = float("nan"),
             colour_w: torch.Tensor | None = None, q_mean: torch.Tensor | None = None
             ) -> SlotValue:
        """One slot's value (its text, and a box's numbers and confidence: `box_raw_score`
        through `cfg.confidence_table`) from its context `ctx (3H + dt,)` (`slot_context`), the
        window's pointer keys `keys (N, K)` and tokens `tt`; `t_question`: the first time the
        question names (NaN if none); `t_sentence`: the value of the `<time>` slot earlier in
        the same sentence (the time a box is asked at), NaN if none; `colour_w (N,)`: the
        inventory's weights of the tokens of the object the sentence names: a box's pointer
        chooses among those tokens (scores + log(w + 1e-4)), a time's first-motion reading
        reads them with `cfg.first_motion_tokens` "object"; `q_mean (H,)`: `question_mean`
        of the question (read by a "question" time head)."""
        is_time = token_id == self.time_token_id
        use_time = self.cfg.prompt.use_time
        t, xyz, motion = tt.t, tt.xyz, tt.motion  # (N,), (N, 3), (N,)
        dt_feat = None
        if use_time and not is_time:
            dt_feat = time_match_features(t.new_tensor([t_sentence]), t,
                                          dynamic_tokens(xyz, self.cfg.voxel_m, motion), motion)
        scores = self.pointer(ctx[None], torch.tensor([is_time], device=ctx.device), keys,
                              dt_feat)  # (1, N)
        if colour_w is not None and not is_time:
            scores = scores + torch.log(colour_w.to(ctx.dtype) + 1e-4)
        if is_time:
            t_first = None
            if use_time:
                by_object = self.cfg.first_motion_tokens == "object" and colour_w is not None
                t_first = first_motion_reading(
                    scores.softmax(dim=-1), t, motion, self.cfg.first_motion_m,
                    colour_w.to(ctx.dtype)[None] if by_object else None)  # (1,)
            t_hat = self.time_head(ctx[None], decode_time(scores, t), t.max(),
                                   t.new_tensor([t_question]), t_first,
                                   None if q_mean is None else q_mean[None])[0]
            return SlotValue.of_time(float(t_hat))
        w = scores.softmax(dim=-1)  # (1, N)
        box = self.box_head(ctx[None], w, xyz, tt.view)[0]  # (6,)
        raw = box_raw_score(w[0], xyz, box)
        return SlotValue.of_box(box.tolist(), calibrated(raw, self.cfg.confidence_table))

    def filler(self, ids: SlotTokens, embed: Callable[[Sequence[int]], torch.Tensor],
               q_emb: torch.Tensor, q_te: torch.Tensor, t_question: float, keys: torch.Tensor,
               tt: TokenTensors, guide: Guide | None, t_asked_s: float = float("nan")
               ) -> SlotFiller:
        """The slot values of one answer to a question embedded `q_emb (Lq, H)`, with the TE
        `q_te (dt,)` of the times it names and the first of them `t_question` (NaN if none),
        about the window `tt` whose pointer keys are `keys (N, K)`; `embed(ids) -> (L, H)`
        embeds answer tokens; `t_asked_s`: the model time a where-question asks about (NaN:
        the time head reads it)."""
        q_pool, q_mean = self.pool(q_emb), question_mean(q_emb)  # (H,), (H,)

        def read(tid: int, h_slot: torch.Tensor, sentence_emb: torch.Tensor, t_sentence: float,
                 colour_w: torch.Tensor | None) -> SlotValue:
            ctx = slot_context(h_slot, q_pool, self.pool(sentence_emb), q_te)  # (3H + dt,)
            return self.fill(tid, ctx, keys, tt, t_question, t_sentence, colour_w, q_mean)

        return SlotFiller(ids, embed, read, guide, t_asked_s)
