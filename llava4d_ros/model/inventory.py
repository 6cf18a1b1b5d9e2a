"""Scene inventory: which objects the window holds, which move, their shapes; and how the
decoder consults it.

    features (N, D) --token_colour--> p (N, C+1)     per token: one of C colours, or background
    p, xyz, t, motion --object_features--> (C, F)    per colour: its tokens' spread, appearance,
                                                     and (full / time encodings) motion over time
    (C, F) --SceneInventory--> Inventory             present (C,), moving (C,), shape (C, S)
                                                     logits; token weights per colour (C, N)

    LM hidden state h (H,) + decode state (named so far, current object, question words,
    the sentence's time) --InventoryBias--> bias (V,) added to the LM's next-token logits

Why (docs/RESULTS.md): the tiny LM trained for minutes on a CPU makes the scene-level choices of
an answer badly. It names memorised objects in captions, always says "did not move", guesses
counts and headings. The slot heads fix numbers the same way: a head reads the visual tokens and
the decoder uses what it reads. The bias is learned (stage 5, the rest of the model frozen):
per word, a small MLP of the LM's hidden state and that word's inventory features. It starts
at zero (an untrained bias leaves every answer unchanged), and it may learn to ignore the
inventory when the LM already knows (an object named in the question).

The words: the config's colours, shapes, plurals and direction words (+, -, x, y) and the
digits 0-9, each one token as written in an answer (`WordSets`), in a word-level vocabulary or
a pretrained LM's BPE one. The direction words are told the current object's
velocity at the sentence's time (`Inventory.velocity`, from the object's tokens near that time;
full / time encodings only). `C` colours, `S` shapes; probabilities are per window.

The object envelope (`InventoryConfig.object_envelope`): a colour whose tokens' mass, 3D spread
or appearance lies outside the range of the training scenes' objects is not one object of a
kind the model knows (a red kitchen front 5 m wide, a few bluish-white patches), so its tokens
are dropped before pooling and it reads as absent. Appearance is the smallest Mahalanobis
distance (squared) of the colour's tokens to the features of that colour's tokens on training
objects (`appearance_mean`, `appearance_precision`): every rendered primitive has patches that
look like its colour's, a real room's red wood has none. Without this, a real room's red
cabinets were "the red cylinder" in every answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from llava4d_ros.model.config import InventoryConfig

_DIGITS = tuple("0123456789")
_LOGIT_CLIP = 8.0
_LOG_FLOOR = -10.0
_WEIGHT_FLOOR = 0.5  # a token counts for a colour when p(colour) > 0.5 (stray edges do not)
_MOTION_CLIP_M = 2.0
_VELOCITY_SIGMA_S = 0.5  # chosen on 30 val scenes' heading questions (0.3 / 0.5 / 1.0 s)
_VELOCITY_VAR_FLOOR = 0.1
N_TIME_FEATURES = 7
# `path_extent`: stamps binned by the second; a bin counts with 3 (6) tokens' weight. On val
# 60-159, extents of still objects reach 0.34 m (99th percentile) at 3, of movers the
# inventory had read as still 0.37-0.54 m (runs/diag/r5_path_extent.py)
PATH_BIN_S = 1.0
PATH_MIN_MASS = (3.0, 6.0)
PATH_MAX_BINS = 600  # a window of minutes; the (C, B, B) distances stay small
N_FLAT_FEATURES = 2
#: What the object envelope bounds, per colour (`envelope_features`).
ENVELOPE_FEATURES: tuple[str, ...] = ("log_mass", "spread_m", "appearance_d2")


def object_feature_dim(feature_dim: int, path: bool = False, flat: bool = False) -> int:
    """Width of `object_features`: the spatial part (9), feature mean and spread (2 D), the
    time part (7) and, with `path`, the path extents (`path_extent`), with `flat` the two
    flatness shares."""
    return (9 + 2 * feature_dim + N_TIME_FEATURES + (len(PATH_MIN_MASS) if path else 0)
            + (N_FLAT_FEATURES if flat else 0))


def path_extent(w: torch.Tensor, xy: torch.Tensor, t: torch.Tensor,
                bin_s: float = PATH_BIN_S, min_mass: Sequence[float] = PATH_MIN_MASS
                ) -> torch.Tensor:
    """`(C, K)` per colour of token weights `w (C, N)`: how far apart its tokens lie when
    grouped by when they were seen. The stamps `t (N,)` (model seconds since the window start)
    fall into bins of `bin_s`; per `min_mass[k]`, the largest distance [m] between the weighted
    xy centroids (`xy (N, 2)` world) of two bins that each hold at least that much token
    weight (0 with fewer than two). Stamps past `PATH_MAX_BINS` bins share the last.

    Why: the buffer's per-patch motion misses a mover it did not see move (it moved while out
    of view, or slowly), but its tokens still lie along its path, each at the place it was
    seen then. A still object's bins differ only as much as the views of it do. Only an
    encoding with both time and place can read this."""
    t = torch.nan_to_num(t, nan=0.0).clamp(0.0, PATH_MAX_BINS * bin_s)
    bins = torch.floor(t / bin_s).to(torch.int64)
    onehot = F.one_hot(bins, int(bins.max()) + 1 if bins.numel() else 1).to(w.dtype)  # (N, B)
    mass = w @ onehot  # (C, B)
    centre = torch.stack([(w * xy[:, k]) @ onehot for k in range(2)], dim=-1) / (
        mass.clamp_min(1e-6)[..., None])  # (C, B, 2)
    dist = torch.cdist(centre, centre)  # (C, B, B)
    out = []
    for m in min_mass:
        ok = mass >= m
        both = ok[:, :, None] & ok[:, None, :]
        out.append(dist.masked_fill(~both, 0.0).flatten(1).amax(1))
    return torch.stack(out, dim=1)


def object_features(w: torch.Tensor, xyz: torch.Tensor, t: torch.Tensor, motion: torch.Tensor,
                    features: torch.Tensor, use_time: bool, use_space: bool = True,
                    path: bool = False, flat: torch.Tensor | None = None) -> torch.Tensor:
    """`(C, F)` pooled per colour from token weights `w (C, N)` (>= 0).

    Spatial: log(1 + mass), mean z, weighted std of x, y, z, the top (soft max of z), the xy
    spread of a snapshot, top / (snapshot spread + 5 cm), the share of tokens within 6 cm of
    the top (cube and cylinder differ in height against width and in their flat tops: without
    these four, cylinders were called cubes, 17 of 63 on val); appearance: weighted mean and
    std of the patch features. The snapshot is the tokens weighted by exp(-age / 0.5 s) from
    the colour's newest token (a moving object's tokens spread along its path) with
    `use_time`, all of them without. Temporal (zeros unless `use_time`, as the ablations
    without a time encoding get no token time or motion): std of t, the least-squares
    velocity of xyz over t (3), weighted mean and max of motion (clipped at 2 m), share of
    tokens moving > 5 cm. Without `use_space` (an ablation without a 3D encoding whose
    `InventoryConfig.space_follows_encoding`) every part read from positions is zero: mean z,
    the spreads, the four shape cues and the velocity; mass, appearance, time and motion stay.
    `path` appends `path_extent` (zeros unless both `use_time` and `use_space`). Given the
    tokens' `flat (N,)` (`VisualTokens.flat`: the share of a token's patches on a plane), two
    more: the weighted mean of it over the colour's tokens, and over those below the top band
    (the sides: a cube's are planes, a cylinder's are not, where both tops are flat). Read from
    the depth's 3D points, so zeros without `use_space`.
    """
    mass = w.sum(1, keepdim=True)  # (C, 1)
    wn = w / mass.clamp_min(1e-6)  # (C, N)

    def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = wn @ x  # (C, K)
        var = wn @ (x * x) - m * m
        return m, var.clamp_min(0.0).add(1e-8).sqrt()

    m_xyz, s_xyz = mean_std(xyz)
    m_f, s_f = mean_std(features)
    z = xyz[:, 2]
    mine = w > 0
    top = (torch.where(mine, z[None] / 0.03, w.new_tensor(-1e4)).softmax(1) @ z) * (
        mass[:, 0] > 0)  # (C,)
    snap = w
    if use_time:
        newest = torch.where(mine, t[None], w.new_tensor(-1e4)).amax(1, keepdim=True)
        snap = w * torch.exp(-(newest - t[None]).clamp_min(0.0) / 0.5)
    sn = snap / snap.sum(1, keepdim=True).clamp_min(1e-6)
    m_xy = sn @ xyz[:, :2]
    s_xy = (sn @ (xyz[:, :2] ** 2) - m_xy ** 2).clamp_min(0.0).sum(1).add(1e-8).sqrt()
    near_top = (wn * (z[None] > top[:, None] - 0.06).to(w.dtype)).sum(1)
    shape = torch.stack([top, s_xy, top / (s_xy + 0.05), near_top], dim=1)  # (C, 4)
    spatial = torch.cat([m_xyz[:, 2:3], s_xyz, shape], dim=1)  # (C, 8)
    parts = [torch.log1p(mass), spatial if use_space else torch.zeros_like(spatial), m_f, s_f]
    if use_time:
        m_t, s_t = mean_std(t[:, None])  # (C, 1)
        cov = wn @ (xyz * t[:, None]) - m_xyz * m_t  # (C, 3)
        vel = cov / (s_t * s_t + 1e-3) if use_space else torch.zeros_like(cov)
        mo = motion.clamp(0.0, _MOTION_CLIP_M)
        parts += [s_t, vel, (wn @ mo)[:, None], (w * mo).amax(1, keepdim=True),
                  (wn @ (mo > 0.05).to(w.dtype))[:, None]]
    else:
        parts.append(w.new_zeros(w.shape[0], N_TIME_FEATURES))
    if path:
        parts.append(path_extent(w, xyz[:, :2], t) if use_time and use_space
                     else w.new_zeros(w.shape[0], len(PATH_MIN_MASS)))
    if flat is not None:
        if use_space:
            side = w * (z[None] < top[:, None] - 0.06).to(w.dtype)
            side_flat = (side @ flat) / side.sum(1).clamp_min(1e-6)
            parts.append(torch.stack([wn @ flat, side_flat], dim=1))
        else:
            parts.append(w.new_zeros(w.shape[0], N_FLAT_FEATURES))
    return torch.cat(parts, dim=1)


def envelope_features(w: torch.Tensor, xyz: torch.Tensor, features: torch.Tensor,
                      mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """`(C, 3)` per colour from token weights `w (C, N)`, world `xyz (N, 3)` and patch
    `features (N, D)`: log(1 + mass), the 3D spread (metres: the square root of the trace of
    the weighted covariance, the same in any world frame), and the smallest squared
    Mahalanobis distance of its tokens to the colour's appearance (`mean (C, D)`, `precision
    (C, D, D)`): one patch that looks like the rendered colour is enough, as an occluded or
    distant object may have few clean ones; zeros for a colour without tokens."""
    mass = w.sum(1)
    wn = w / mass[:, None].clamp_min(1e-6)
    centre = wn @ xyz
    var = (wn @ (xyz * xyz) - centre * centre).clamp_min(0.0).sum(1)
    diff = features[None] - mean[:, None]  # (C, N, D)
    d2 = torch.einsum("cnd,cde,cne->cn", diff, precision, diff)
    has = mass > 0
    d2 = torch.where(w > 0, d2, torch.full_like(d2, float("inf"))).amin(1)
    return torch.stack([torch.log1p(mass), var.sqrt() * has,
                        torch.where(has, d2, torch.zeros_like(d2))], dim=1)


def fits_envelope(features: torch.Tensor, w: torch.Tensor,
                  envelope: Sequence[tuple[float, float]]) -> torch.Tensor:
    """`(C,)` bool: the colour has no tokens (nothing to reject) or each of its
    `envelope_features` (`features (C, 3)`) lies in the envelope's (low, high)."""
    lo = features.new_tensor([e[0] for e in envelope])
    hi = features.new_tensor([e[1] for e in envelope])
    return (w.sum(1) == 0) | ((features >= lo) & (features <= hi)).all(1)


@dataclass(frozen=True)
class Inventory:
    """Logits per colour: `present (C,)`, `moving (C,)` (moves at some time in the window),
    `shape (C, S)`; the colours' token weights `weights (C, N)`; for `velocity`, the tokens'
    `xyz (N, 3)` and model time `t (N,)` (None where time is not encoded)."""

    present: torch.Tensor
    moving: torch.Tensor
    shape: torch.Tensor
    weights: torch.Tensor | None = None
    xyz: torch.Tensor | None = None
    t: torch.Tensor | None = None

    def probs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.present.sigmoid(), self.moving.sigmoid(), self.shape.softmax(-1)

    def velocity(self, cur: torch.Tensor, t_at: torch.Tensor,
                 sigma_s: float = _VELOCITY_SIGMA_S) -> torch.Tensor:
        """`(B, 2)` world xy velocity (m/s) of colour `cur (B,)` at model time `t_at (B,)`:
        the least-squares slope of its tokens' xy over their time, tokens weighted by a
        Gaussian of `sigma_s` (0.5 s) around `t_at` (the variance of t gets 0.1 s^2 added: a
        few tokens at one time give no slope rather than a wild one). Zero where `cur < 0`,
        `t_at` is NaN or the inventory has no token times."""
        out = self.present.new_zeros(cur.shape[0], 2)
        ok = (cur >= 0) & ~torch.isnan(t_at)
        if self.weights is None or self.t is None or self.xyz is None or not bool(ok.any()):
            return out
        w = self.weights[cur[ok]] * torch.exp(
            -0.5 * ((self.t[None] - t_at[ok, None]) / sigma_s) ** 2)  # (b, N)
        wn = w / w.sum(1, keepdim=True).clamp_min(1e-6)
        m_t = wn @ self.t  # (b,)
        m_xy = wn @ self.xyz[:, :2]  # (b, 2)
        cov = wn @ (self.xyz[:, :2] * self.t[:, None]) - m_xy * m_t[:, None]
        var = wn @ (self.t * self.t) - m_t * m_t
        out[ok] = cov / (var.clamp_min(0.0) + _VELOCITY_VAR_FLOOR)[:, None]
        return out


class SceneInventory(nn.Module):
    """Visual tokens -> `Inventory`. The token colour classifier reads the patch features only;
    the object MLP reads `object_features` standardised by `mu` / `sd` (set when fitted)."""

    def __init__(self, feature_dim: int, n_colours: int, n_shapes: int, hidden: int,
                 appearance: bool = False, path: bool = False, flat: bool = False):
        super().__init__()
        self.n_colours, self.n_shapes, self.path, self.flat = n_colours, n_shapes, path, flat
        if appearance:  # a model with an object envelope: each colour's token appearance
            self.set_appearance(torch.zeros(n_colours, feature_dim),
                                torch.zeros(n_colours, feature_dim, feature_dim))
        self.token_colour = nn.Sequential(nn.Linear(feature_dim, 2 * hidden), nn.GELU(),
                                          nn.Linear(2 * hidden, n_colours + 1))
        f = object_feature_dim(feature_dim, path, flat)
        self.register_buffer("mu", torch.zeros(f))
        self.register_buffer("sd", torch.ones(f))
        self.object = nn.Sequential(nn.Linear(f, hidden), nn.GELU(), nn.Dropout(0.2),
                                    nn.Linear(hidden, n_shapes + 1))
        self.present = nn.Linear(2, 1)

    def set_appearance(self, mean: torch.Tensor, precision: torch.Tensor) -> None:
        """Each colour's token appearance on training objects: `mean (C, D)` and the inverse
        covariance `precision (C, D, D)` of their patch features (for the object envelope)."""
        for name, value in (("appearance_mean", mean), ("appearance_precision", precision)):
            if hasattr(self, name):
                getattr(self, name).copy_(value)
            else:
                self.register_buffer(name, value.clone())

    def envelope_features(self, features: torch.Tensor, xyz: torch.Tensor,
                          w: torch.Tensor) -> torch.Tensor:
        """`envelope_features` of the colours' token weights `w (C, N)`."""
        if not hasattr(self, "appearance_mean"):
            raise ValueError("the object envelope needs the colours' appearance "
                             "(SceneInventory.set_appearance)")
        return envelope_features(w, xyz, features, self.appearance_mean,
                                 self.appearance_precision)

    def token_probs(self, features: torch.Tensor) -> torch.Tensor:
        """`(N, C + 1)`: per token, each colour and (last) background."""
        return self.token_colour(features).softmax(-1)

    def colour_weights(self, features: torch.Tensor, xyz: torch.Tensor | None = None,
                       envelope: Sequence[tuple[float, float]] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(`p (C, N)` per colour and token, `w (C, N)`: p where above 0.5, else 0); with an
        `envelope` (and the tokens' `xyz`), both are zero for a colour outside it."""
        p = self.token_probs(features)[:, :self.n_colours].T  # (C, N)
        w = p * (p > _WEIGHT_FLOOR)
        if envelope is not None:
            if xyz is None:
                raise ValueError("the object envelope needs the tokens' xyz")
            keep = fits_envelope(self.envelope_features(features, xyz, w), w,
                                 envelope).to(p.dtype)[:, None]
            p, w = p * keep, w * keep
        return p, w

    def pooled(self, features: torch.Tensor, xyz: torch.Tensor, t: torch.Tensor,
               motion: torch.Tensor, use_time: bool,
               envelope: Sequence[tuple[float, float]] | None = None, use_space: bool = True,
               flat: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(`object_features` `(C, F)` unstandardised, presence inputs `(C, 2)`); `flat (N,)`
        the tokens' flatness, read by an inventory built with `flat` (None: zeros)."""
        p, w = self.colour_weights(features, xyz, envelope)
        pres_in = torch.stack([p.amax(1), torch.log1p(w.sum(1))], dim=1)
        if self.flat and flat is None:
            flat = torch.zeros_like(t)
        return (object_features(w, xyz, t, motion, features, use_time, use_space, self.path,
                                flat if self.flat else None), pres_in)

    def from_pooled(self, feats: torch.Tensor, pres_in: torch.Tensor, **tokens: torch.Tensor
                    ) -> Inventory:
        """`feats (..., C, F)`, `pres_in (..., C, 2)` -> logits with the same leading dims."""
        out = self.object((feats - self.mu) / self.sd)  # (..., C, S + 1)
        return Inventory(present=self.present(pres_in)[..., 0], moving=out[..., -1],
                         shape=out[..., :-1], **tokens)

    def forward(self, features: torch.Tensor, xyz: torch.Tensor, t: torch.Tensor,
                motion: torch.Tensor, use_time: bool,
                envelope: Sequence[tuple[float, float]] | None = None, use_space: bool = True,
                flat: torch.Tensor | None = None) -> Inventory:
        """`features (N, D)`, `xyz (N, 3)` world m, `t (N,)` model s, `motion (N,)` m, `flat
        (N,)` share of flat patches (see `pooled`); `envelope`: (low, high) per
        `ENVELOPE_FEATURES`, None for no check; `use_time`, `use_space`: which of the tokens'
        times and positions the readings may use (`LLaVA4DConfig.inventory_reads`)."""
        feats, pres_in = self.pooled(features, xyz, t, motion, use_time, envelope, use_space,
                                     flat)
        tokens = {"weights": self.colour_weights(features, xyz, envelope)[1]}
        if use_time and use_space:  # a velocity needs both
            tokens.update(xyz=xyz, t=t)
        return self.from_pooled(feats, pres_in, **tokens)


def count_distribution(p: torch.Tensor, n_max: int) -> torch.Tensor:
    """`(..., n_max + 1)`: P(exactly k of independent events with probabilities `p (..., K)`
    happen), k = 0..n_max (the last bin holds k >= n_max)."""
    dist = torch.zeros(*p.shape[:-1], n_max + 1, dtype=p.dtype, device=p.device)
    dist[..., 0] = 1.0
    for k in range(p.shape[-1]):
        pk = p[..., k:k + 1]
        shifted = torch.cat([torch.zeros_like(dist[..., :1]), dist[..., :-1]], dim=-1)
        shifted[..., -1] += dist[..., -1]  # k >= n_max stays in the last bin
        dist = dist * (1 - pk) + shifted * pk
    return dist


class WordSets:
    """The inventory's words as token ids, and the decode state read from token ids.

    `token_id(text)` is the one token `text` is written as inside an answer. A word-level
    tokenizer has one token per word however it is spaced; a BPE tokenizer (SmolLM2's) writes
    " red" after a space as one token, and a digit ("2.5s", "3 objects") or the axis after its
    sign ("+x") as a bare character, so those are looked up bare."""

    def __init__(self, cfg: InventoryConfig, token_id) -> None:
        axes = cfg.directions[2:]
        self.colour_ids = [token_id(" " + w) for w in cfg.colours]
        self.shape_ids = [token_id(" " + w) for w in cfg.shapes]
        self.plural_ids = [token_id(" " + w) for w in cfg.plurals]
        self.digit_ids = [token_id(d) for d in _DIGITS]
        self.direction_ids = [token_id(w if w in axes else " " + w) for w in cfg.directions]
        self.colour_of = {t: i for i, t in enumerate(self.colour_ids)}
        self.shape_of = {t: i for i, t in enumerate(self.shape_ids)}
        self.plural_of = {t: i for i, t in enumerate(self.plural_ids)}

    def ids(self) -> list[int]:
        """Every word's token id."""
        return [*self.colour_ids, *self.shape_ids, *self.plural_ids, *self.digit_ids,
                *self.direction_ids]

    def question(self, ids: Sequence[int]) -> tuple[list[int], list[int], int]:
        """(colours named, the shape named right after each colour or -1 (per colour), the
        plural shape named or -1) of a question's token ids."""
        n = len(self.colour_ids)
        named, shape_after = [0] * n, [-1] * n
        plural = -1
        for k, tid in enumerate(ids):
            c = self.colour_of.get(tid)
            if c is not None:
                named[c] = 1
                if k + 1 < len(ids) and ids[k + 1] in self.shape_of:
                    shape_after[c] = self.shape_of[ids[k + 1]]
            if tid in self.plural_of:
                plural = self.plural_of[tid]
        return named, shape_after, plural

    def answer_states(self, ids: Sequence[int], q_first: int) -> list[tuple[list[int], int]]:
        """Per prefix `ids[:k+1]` of an answer: (colours named so far, current colour: the last
        named, else `q_first`, the question's first colour, or -1)."""
        named = [0] * len(self.colour_ids)
        cur = q_first
        out = []
        for tid in ids:
            c = self.colour_of.get(tid)
            if c is not None:
                named = named.copy()
                named[c] = 1
                cur = c
            out.append((named, cur))
        return out


def decode_features(inv: Inventory, named: torch.Tensor, in_q: torch.Tensor,
                    q_shape_after: torch.Tensor, cur: torch.Tensor, plural: torch.Tensor,
                    t_at: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The bias inputs of B decode positions over one window's inventory.

    `named (B, C)` colours in the answer so far, `in_q (B, C)` colours in the question,
    `q_shape_after (B, C)` long, the question's shape for that colour or -1, `cur (B,)` long,
    the current colour or -1, `plural (B,)` long, the question's plural shape or -1, `t_at (B,)`
    the time of the sentence so far (its `<time>` value) or NaN.
    Returns `colour (B, C, 4)`, `shape (B, S, 3)`, `digit (B, 10, 4)`, `direction (B, 4, 2)`
    (per word +, -, x, y: how much the current object's velocity at `t_at` says it, and its
    speed) and `glob (B, 11)`.
    """
    pres, mov, shp = inv.probs()  # (C,), (C,), (C, S)
    b, c_n = named.shape
    s_n = shp.shape[1]
    dtype = pres.dtype
    named, in_q = named.to(dtype), in_q.to(dtype)
    clip = _LOGIT_CLIP
    colour = torch.stack([inv.present.clamp(-clip, clip).expand(b, c_n),
                          inv.moving.clamp(-clip, clip).expand(b, c_n), named, in_q], dim=-1)
    has_cur = (cur >= 0).to(dtype)  # (B,)
    ci = cur.clamp_min(0)
    log_shape = shp.clamp_min(1e-6).log()[ci] * has_cur[:, None]  # (B, S)
    q_sh = q_shape_after.gather(1, ci[:, None])[:, 0]  # (B,)
    q_sh = torch.where(cur >= 0, q_sh, torch.full_like(q_sh, -1))
    copy = (q_sh[:, None] == torch.arange(s_n, device=cur.device)[None]).to(dtype)  # (B, S)
    shape = torch.stack([log_shape, has_cur[:, None].expand(b, s_n), copy], dim=-1)

    def logd(p: torch.Tensor) -> torch.Tensor:  # (B, K) -> (B, 10) log P(count = d)
        return count_distribution(p, 9).clamp_min(1e-12).log().clamp_min(_LOG_FLOOR)

    has_pl = (plural >= 0).to(dtype)
    p_shape_pl = shp[:, plural.clamp_min(0)].T * pres * has_pl[:, None]  # (B, C)
    digit = torch.stack([logd(pres.expand(b, c_n)), logd((pres * mov).expand(b, c_n)),
                         logd(p_shape_pl), has_pl[:, None].expand(b, 10)], dim=-1)
    unnamed_p = count_distribution(pres * (1 - named), 2)  # (B, 3): 0, 1, >= 2
    unnamed_m = count_distribution(pres * mov * (1 - named), 2)
    if t_at is None:
        t_at = torch.full((b,), float("nan"), dtype=dtype, device=cur.device)
    v = inv.velocity(cur, t_at)  # (B, 2)
    speed = v.norm(dim=1)
    dom = torch.where(v[:, 0].abs() >= v[:, 1].abs(), v[:, 0], v[:, 1]) / (speed + 1e-3)
    axis = (v[:, 0].abs() - v[:, 1].abs()) / (speed + 1e-3)
    direction = torch.stack([torch.stack([dom, -dom, axis, -axis], dim=1),
                             speed[:, None].expand(b, 4)], dim=-1)
    has_t = (~torch.isnan(t_at)).to(dtype)
    glob = torch.cat([unnamed_p, unnamed_m, (pres[ci] * has_cur)[:, None],
                      (mov[ci] * has_cur)[:, None], has_cur[:, None], speed[:, None],
                      has_t[:, None]], dim=1)
    return {"colour": colour, "shape": shape, "digit": digit, "direction": direction,
            "glob": glob}


def _zero_last(seq: nn.Sequential) -> nn.Sequential:
    nn.init.zeros_(seq[-1].weight)
    nn.init.zeros_(seq[-1].bias)
    return seq


class InventoryBias(nn.Module):
    """`bias (B, K)` for the LM's next-token logits of the K words in `ids` from its hidden
    state `h (B, H)` and `decode_features` (`on_vocab` spreads it over the whole vocabulary,
    zero elsewhere). Each word group gets an MLP of [h, that word's features]: the colour
    words, the shape words, the digits, the direction words; every word of `ids` gets an MLP
    of [h, glob]. Last layers are zero: an unfitted bias is 0.

    `ids`: the words the bias may move, every id for a closed vocabulary (None); for a
    pretrained LM's ~50 k tokens, the tokens of the training answers
    (`InventoryConfig.bias_ids`): a per-token head over the whole vocabulary would be mostly
    words no answer uses, and stage 5 would have to keep every position's full logits."""

    def __init__(self, lm_hidden: int, vocab_size: int, words: WordSets, hidden: int,
                 ids: Sequence[int] | None = None):
        super().__init__()
        self.vocab_size = vocab_size
        ids = list(range(vocab_size)) if ids is None else list(ids)
        pos = {tid: k for k, tid in enumerate(ids)}
        missing = [tid for tid in words.ids() if tid not in pos]
        if missing or len(pos) != len(ids) or not all(0 <= t < vocab_size for t in ids):
            raise ValueError(f"bias ids must be distinct token ids < {vocab_size} holding every "
                             f"inventory word; missing {missing}")

        def head(extra: int, out: int = 1) -> nn.Sequential:
            return _zero_last(nn.Sequential(nn.Linear(lm_hidden + extra, hidden), nn.GELU(),
                                            nn.Linear(hidden, out)))

        self.colour, self.shape, self.digit = head(4), head(3), head(4)
        self.direction = head(2)
        self.glob = head(11, len(ids))
        self.register_buffer("ids", torch.tensor(ids), persistent=False)
        for name, group in (("colour", words.colour_ids), ("shape", words.shape_ids),
                            ("digit", words.digit_ids), ("direction", words.direction_ids)):
            self.register_buffer(f"{name}_pos", torch.tensor([pos[t] for t in group]),
                                 persistent=False)

    def forward(self, h: torch.Tensor, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        bias = self.glob(torch.cat([h, feats["glob"]], dim=-1))  # (B, K)
        for name in ("colour", "shape", "digit", "direction"):
            f = feats[name]  # (B, k words, features)
            hk = h[:, None].expand(-1, f.shape[1], -1)
            add = getattr(self, name)(torch.cat([hk, f], dim=-1))[..., 0]  # (B, k)
            bias = bias.index_add(1, getattr(self, f"{name}_pos"), add)
        return bias

    def on_vocab(self, bias: torch.Tensor) -> torch.Tensor:
        """`(B, K)` -> `(B, V)`, zero for the tokens not in `ids`."""
        return bias.new_zeros(bias.shape[0], self.vocab_size).index_copy(1, self.ids, bias)


def build_inventory(cfg: InventoryConfig, feature_dim: int, lm_hidden: int, vocab_size: int,
                    token_id: Callable[[str], int]
                    ) -> tuple[WordSets, SceneInventory, InventoryBias]:
    """A fresh scene inventory of `cfg` over features of width `feature_dim`, and its output
    bias for an LM of width `lm_hidden` and `vocab_size` tokens; `token_id(text)` is the one
    token `text` is written as."""
    words = WordSets(cfg, token_id)
    inventory = SceneInventory(feature_dim, len(cfg.colours), len(cfg.shapes), cfg.hidden,
                               appearance=cfg.object_envelope is not None,
                               path=cfg.path_extent, flat=cfg.flatness)
    return words, inventory, InventoryBias(lm_hidden, vocab_size, words, cfg.bias_hidden,
                                           cfg.bias_ids)


def inventory_loss(inv: Inventory, present: torch.Tensor, moving: torch.Tensor,
                   shape: torch.Tensor) -> torch.Tensor:
    """BCE on presence (every colour), BCE on moving and CE on shape (present colours only).
    Targets: `present (..., C)` 0/1, `moving (..., C)` 0/1, `shape (..., C)` long (-1 where
    absent); `inv` with the same leading dims."""
    s_n = inv.shape.shape[-1]
    inv = Inventory(inv.present.reshape(-1), inv.moving.reshape(-1),
                    inv.shape.reshape(-1, s_n))
    present, moving, shape = present.reshape(-1), moving.reshape(-1), shape.reshape(-1)
    loss = F.binary_cross_entropy_with_logits(inv.present, present)
    here = present > 0.5
    if bool(here.any()):
        loss = loss + F.binary_cross_entropy_with_logits(inv.moving[here], moving[here])
        loss = loss + F.cross_entropy(inv.shape[here], shape[here])
    return loss
