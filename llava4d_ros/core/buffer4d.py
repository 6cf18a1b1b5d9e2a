"""The sliding-window 4D buffer: keyframes of patch points in the world frame, and the visual
tokens a question is answered from.

A keyframe is one RGB-D frame pooled to a `(Ph, Pw)` patch grid (row-major, `P = Ph * Pw`):
each patch is a world point, a colour, a feature vector and a motion value. The buffer keeps the
last `window_s` seconds under a memory cap and turns them into at most `token_budget` 4D tokens
by voxel pooling, where static space collapses to one token per voxel and moving things keep one
token per keyframe, so "where was it at t" stays answerable.

Motion (the beta of the temporal encoding) is per patch: the new keyframe's patch point is
projected into the previous keyframe's camera and compared with the depth that keyframe saw
there (`MotionEstimator`, which can hold a few older keyframes as well: the tracker looks
further back, so a slow object's whole body, not only its leading edge, counts as appeared).
Something that appeared in front of the old surface is nearer than before; a patch an object
has just left shows the background, farther than before. Both get a
large |difference|: the revealed background behind a moving object is flagged too, for one
keyframe. That is acceptable for tokens (it is where the change happened) and the tracker only
follows the "appeared" sign, so it does not follow that trailing shadow.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from llava4d_ros.core.geometry import PatchPooling, PinholeCamera, invert_se3, transform_points

#: Sub-samples searched on each side of a projected point for the old depth (1: a 3x3 window,
#: +-4 px at 640x480 with 5 samples per 20 px patch). Wider windows blind the comparison on
#: oblique floors, where a few rows already span the height of a small object.
NEIGHBOURHOOD = 1
#: Share of the old window's depth relief that a change must exceed (see _depth_change).
OLD_RELIEF_FACTOR = 0.25
#: A patch whose depth samples lie within this RMS of a plane is flat (`VisualTokens.flat`).
#: On rendered scenes 0.65 of cube patches are, 0.18 of cylinder patches (their tops). Set for
#: rendered depth: the 7-Scenes kitchen's Kinect depth has 0.08 of its patches this flat
#: (median 5 mm from a plane).
FLAT_RMS_M = 0.001


class EmptyBufferError(LookupError):
    """No keyframe lies in the requested time range (or the buffer is empty)."""


@dataclass(frozen=True)
class Keyframe:
    """One pooled RGB-D frame. `P` patches of a row-major `(Ph, Pw)` grid.

    `world_from_cam (4, 4)`; `xyz_world (P, 3)` NaN = no valid depth; `rgb (P, 3)` 0..255;
    `features (P, D)`; `depth_m (P,)` the patch depth; `motion (P,)` metres (|depth change|
    against the previous keyframe, 0 where not comparable); `labels (P,) int32` or None;
    `plane_rms_m (P,)` the patch's RMS distance to its best plane (`geometry.plane_rms`; NaN
    unknown) or None.
    """

    stamp_s: float
    world_from_cam: np.ndarray
    xyz_world: np.ndarray
    rgb: np.ndarray
    features: np.ndarray
    depth_m: np.ndarray
    motion: np.ndarray
    labels: np.ndarray | None = None
    plane_rms_m: np.ndarray | None = None

    def __post_init__(self) -> None:
        p = self.xyz_world.shape[0]
        checks = {
            "world_from_cam": (self.world_from_cam.shape, (4, 4)),
            "xyz_world": (self.xyz_world.shape, (p, 3)),
            "rgb": (self.rgb.shape, (p, 3)),
            "features": (self.features.shape[:1], (p,)),
            "depth_m": (self.depth_m.shape, (p,)),
            "motion": (self.motion.shape, (p,)),
        }
        if self.labels is not None:
            checks["labels"] = (self.labels.shape, (p,))
        if self.plane_rms_m is not None:
            checks["plane_rms_m"] = (self.plane_rms_m.shape, (p,))
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise ValueError(f"Keyframe.{name} has shape {tuple(got)}, expected {want}")
        if self.features.ndim != 2:
            raise ValueError(f"Keyframe.features must be (P, D), got {self.features.shape}")
        if not np.isfinite(self.stamp_s) or not np.all(np.isfinite(self.world_from_cam)):
            raise ValueError("Keyframe stamp and pose must be finite")

    @property
    def nbytes(self) -> int:
        arrays = (self.world_from_cam, self.xyz_world, self.rgb, self.features, self.depth_m,
                  self.motion, self.labels, self.plane_rms_m)
        return sum(a.nbytes for a in arrays if a is not None)

    @property
    def cam_center_world(self) -> np.ndarray:
        """Optical centre (3,) in the world frame."""
        return self.world_from_cam[:3, 3]


@dataclass(frozen=True)
class VisualTokens:
    """4D tokens for the model. N tokens; `t_s` absolute stamp seconds.

    `xyz_world (N, 3)`, `t_s (N,)` the token's last observation, `features (N, D)`, `rgb (N,
    3)` 0..255, `motion (N,)` the largest patch motion pooled into the token (metres),
    `view_dir_world (N, 3)` unit vectors camera -> point, `labels (N,) int32` (-1 unknown),
    `counts (N,)` patches pooled, `t_first_s (N,)` its first observation (the span it was seen
    over; `t_s` when not given), `flat (N,)` the share of its patches that lie within
    `FLAT_RMS_M` of a plane (zeros when not given: tokens of keyframes without it).
    """

    xyz_world: np.ndarray
    t_s: np.ndarray
    features: np.ndarray
    rgb: np.ndarray
    motion: np.ndarray
    view_dir_world: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    t_first_s: np.ndarray | None = None
    flat: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.t_s.shape[0]
        if self.t_first_s is None:
            object.__setattr__(self, "t_first_s", np.array(self.t_s, copy=True))
        if self.flat is None:
            object.__setattr__(self, "flat", np.zeros(n, np.float32))
        for name in ("xyz_world", "features", "rgb", "motion", "view_dir_world", "labels",
                     "counts", "t_first_s", "flat"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"VisualTokens.{name} has {getattr(self, name).shape[0]} rows, "
                                 f"t_s has {n}")

    def __len__(self) -> int:
        return int(self.t_s.shape[0])


class MotionEstimator:
    """Per-patch depth change of a new keyframe against the previous ones.

    Keeps the last `n_refs` keyframes' sub-sampled depth grids (finer than the patch grid, so a
    patch point is compared with the depth seen within a few pixels of where it projects, not
    with a whole patch's median), cameras and poses. A comparison takes the smallest
    |difference| over the 5x5 neighbourhood of sub-samples: projection and sampling move a point
    by a pixel or two, and at a depth edge that alone would look like metres of motion.
    """

    def __init__(self, n_refs: int = 1) -> None:
        if n_refs < 1:
            raise ValueError(f"n_refs must be >= 1, got {n_refs}")
        self._refs: deque[tuple[np.ndarray, PinholeCamera, np.ndarray]] = deque(maxlen=n_refs)

    def reset(self) -> None:
        self._refs.clear()

    def update(self, pooled: PatchPooling, cam: PinholeCamera,
               world_from_cam: np.ndarray) -> None:
        """Remember this keyframe as a reference for the next ones."""
        self._refs.appendleft((pooled.sample_depth_m, cam, invert_se3(world_from_cam)))

    def signed_change(self, xyz_world: np.ndarray) -> np.ndarray:
        """`(P, R)` metres, R = references held (newest first, 0 columns before the first):
        the depth reference r saw minus this point's depth in its camera.

        Positive: the point is in front of what was there (something appeared); negative: it is
        behind it (something left and revealed it). 0 where no comparison is possible (NaN
        point, outside the old image, no old depth nearby).
        """
        out = np.zeros((xyz_world.shape[0], len(self._refs)), np.float32)
        for r, (grid, cam, cam_from_world) in enumerate(self._refs):
            out[:, r] = _depth_change(xyz_world, grid, cam, cam_from_world)
        return out


def _depth_change(xyz_world: np.ndarray, grid: np.ndarray, cam: PinholeCamera,
                  cam_from_world: np.ndarray) -> np.ndarray:
    """`grid` depth at the projection of each point minus the point's depth `(P,)`, or 0."""
    out = np.zeros(xyz_world.shape[0], np.float32)
    p_cam = transform_points(cam_from_world, xyz_world.astype(np.float64))
    u, v, z = cam.project(p_cam)
    nv, nu = grid.shape
    with np.errstate(invalid="ignore"):
        inside = (np.isfinite(u) & (u >= -0.5) & (u < cam.width - 0.5) & (v >= -0.5)
                  & (v < cam.height - 0.5))
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return out
    # nearest sub-sample: sample k sits at floor((k + 0.5) * W / n) ~ (k + 0.5) * W / n
    ku = np.clip(np.rint((u[idx] + 0.5) * nu / cam.width - 0.5), 0, nu - 1).astype(np.intp)
    kv = np.clip(np.rint((v[idx] + 0.5) * nv / cam.height - 0.5), 0, nv - 1).astype(np.intp)
    r = NEIGHBOURHOOD
    padded = np.pad(grid, r, constant_values=np.nan)  # (nv + 2r, nu + 2r)
    offs = np.arange(-r, r + 1)
    rows = kv[:, None, None] + r + offs[None, :, None]  # (n, 2r+1, 1)
    cols = ku[:, None, None] + r + offs[None, None, :]  # (n, 1, 2r+1)
    seen = padded[rows, cols].reshape(idx.size, (2 * r + 1) ** 2)  # (n, (2r+1)^2)
    diff = seen - z[idx, None].astype(np.float32)
    absd = np.where(np.isfinite(diff), np.abs(diff), np.inf)
    chosen = diff[np.arange(idx.size), np.argmin(absd, axis=1)]
    # Kinect-class depth edges wander by several pixels between frames: near an old depth edge
    # (relief inside the window) only a change beyond a share of that relief counts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: relief 0
        relief = np.nan_to_num(np.nanmax(seen, axis=1) - np.nanmin(seen, axis=1))
    chosen = np.sign(chosen) * np.maximum(np.abs(chosen) - OLD_RELIEF_FACTOR * relief, 0.0)
    out[idx] = np.where(np.isfinite(chosen), chosen, 0.0)
    return out


#: what `Buffer4D.tokens` does with more tokens than the budget: grow the voxel, or drop the
#: least-seen tokens
OVER_BUDGET = ("coarsen", "drop")


class Buffer4D:
    """Keyframes of the last `window_s` seconds, at most `max_bytes` of arrays, oldest first.

    Time going backwards (a bag looping, a simulator reset) clears the buffer: mixing two
    timelines in one window would give tokens from different worlds the same time axis.
    """

    def __init__(self, window_s: float = 30.0, max_bytes: int = 512 * 2**20,
                 motion_threshold_m: float = 0.1, pool_device: str | None = None):
        if not window_s > 0 or not max_bytes > 0 or not motion_threshold_m > 0:
            raise ValueError(f"window_s, max_bytes, motion_threshold_m must be > 0, got "
                             f"{window_s}, {max_bytes}, {motion_threshold_m}")
        self.window_s = float(window_s)
        self.max_bytes = int(max_bytes)
        self.motion_threshold_m = float(motion_threshold_m)
        self.pool_device = pool_device  # see pool_on
        self._kfs: deque[Keyframe] = deque()
        self._nbytes = 0
        self._on_device = None  # pool_torch.DeviceKeyframes of the last torch pooling

    @property
    def keyframes(self) -> list[Keyframe]:
        return list(self._kfs)

    def __len__(self) -> int:
        return len(self._kfs)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def clear(self) -> None:
        self._kfs.clear()
        self._nbytes = 0
        self._on_device = None

    def pool_on(self, device: str | None) -> None:
        """Where `tokens` pools when not told: None numpy on the CPU, else a torch device (the
        engine gives the model's, so tokens are pooled where the model runs). Keyframe copies
        held on another device are released (deactivate frees the GPU)."""
        self.pool_device = device
        if self._on_device is not None and str(self._on_device.device) != str(device):
            self._on_device = None

    def time_range(self) -> tuple[float, float] | None:
        if not self._kfs:
            return None
        return (self._kfs[0].stamp_s, self._kfs[-1].stamp_s)

    def add(self, kf: Keyframe) -> bool:
        """Append `kf`; returns True when its stamp was older than the newest and reset first.

        Then drops keyframes older than `window_s` before `kf`, and the oldest ones while the
        arrays exceed `max_bytes` (the newest keyframe is always kept).
        """
        reset = bool(self._kfs) and kf.stamp_s < self._kfs[-1].stamp_s
        if reset:
            self.clear()
        self._kfs.append(kf)
        self._nbytes += kf.nbytes
        while self._kfs[0].stamp_s < kf.stamp_s - self.window_s:
            self._nbytes -= self._kfs.popleft().nbytes
        while self._nbytes > self.max_bytes and len(self._kfs) > 1:
            self._nbytes -= self._kfs.popleft().nbytes
        return reset

    def tokens(self, token_budget: int = 2560, voxel_m: float = 0.2,
               t_start_s: float | None = None, t_end_s: float | None = None,
               device: str | None = None, look_change: float = 0.0,
               over_budget: str = "coarsen") -> VisualTokens:
        """Voxel-pool the keyframes stamped in `[t_start_s, t_end_s]` into at most
        `token_budget` tokens, with numpy on the CPU or, given a torch `device` (else
        `pool_device`), with torch scatter reductions there (core/pool_torch.py: the same
        tokens; each keyframe's arrays are copied to the device once).

        A voxel (edge `voxel_m`, world-aligned) is dynamic when any patch in it has motion above
        `motion_threshold_m`; its patches are pooled per keyframe (one token per keyframe),
        a static voxel's to one token stamped with its latest observation (`t_first_s` its
        first). With `look_change` > 0 a static voxel gets one token per run of keyframes its
        look (mean RGB, 0..255) changes by at most that much over, so no token mixes what sat
        there before with what is there now (an object that left; `training/ghosts.py`). Means
        for position, colour and features, max for motion, majority for labels, normalised
        mean for the view direction, the share of flat patches for `flat`. Over budget
        (`over_budget`): "coarsen" grows the voxel edge by sqrt(2) until the tokens fit (at
        most 24 times, deterministic); if even that is too many (a budget below the number of
        keyframes with motion) tokens are taken at evenly spaced positions of the time-sorted
        list. "drop" keeps the voxel and the look split and keeps the `token_budget` tokens seen in
        the most patches, those of voxels where something moved first, the newest on ties: coarser
        voxels mix what sat apart and bring back the ghosts the look split removed
        (`training/ghosts.py`), while the tokens dropped are mostly one-patch glimpses. Tokens come
        sorted by time, then x, y, z.
        """
        if token_budget < 1 or not voxel_m > 0 or not look_change >= 0:
            raise ValueError(f"token_budget must be >= 1, voxel_m > 0 and look_change >= 0, "
                             f"got {token_budget}, {voxel_m}, {look_change}")
        if over_budget not in OVER_BUDGET:
            raise ValueError(f"over_budget must be one of {OVER_BUDGET}, got {over_budget!r}")
        kfs = [k for k in self._kfs
               if (t_start_s is None or k.stamp_s >= t_start_s)
               and (t_end_s is None or k.stamp_s <= t_end_s)]
        if not kfs:
            raise EmptyBufferError(f"no keyframes in [{t_start_s}, {t_end_s}] (buffer holds "
                                   f"{self.time_range()})")
        device = device or self.pool_device
        if device is not None:
            from llava4d_ros.core import pool_torch  # imports torch: only when asked for

            if self._on_device is None or str(self._on_device.device) != str(device):
                self._on_device = pool_torch.DeviceKeyframes(device)
            return pool_torch.pool_tokens(kfs, self._on_device.get(kfs), token_budget,
                                          voxel_m, self.motion_threshold_m, look_change,
                                          over_budget)
        ok = [np.isfinite(k.xyz_world).all(axis=1) for k in kfs]
        xyz = np.concatenate([k.xyz_world[m] for k, m in zip(kfs, ok)]).astype(np.float64)
        if xyz.shape[0] == 0:
            raise EmptyBufferError(f"no valid points in the {len(kfs)} keyframes in range")
        kf_idx = np.concatenate([np.full(int(m.sum()), i) for i, m in enumerate(ok)])
        t = np.concatenate([np.full(int(m.sum()), k.stamp_s) for k, m in zip(kfs, ok)])
        # Features are the wide array (1,024 floats a patch for CLIP): they are concatenated
        # whole and the pooling matrix skips the rows without depth, rather than masked per
        # keyframe and copied again (that cost 3x the pooling itself)
        feats_all = np.concatenate([k.features for k in kfs]).astype(np.float32, copy=False)
        valid_rows = np.flatnonzero(np.concatenate(ok))
        rgb = np.concatenate([k.rgb[m] for k, m in zip(kfs, ok)]).astype(np.float32)
        motion = np.concatenate([k.motion[m] for k, m in zip(kfs, ok)]).astype(np.float32)
        flat = np.concatenate([flat_patches(k)[m] for k, m in zip(kfs, ok)])
        labels = np.concatenate([k.labels[m] if k.labels is not None
                                 else np.full(int(m.sum()), -1) for k, m in zip(kfs, ok)])
        centres = np.stack([k.cam_center_world for k in kfs])[kf_idx]
        ray = xyz - centres
        view = ray / np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-9)

        moving = motion > self.motion_threshold_m
        for step in range(25 if over_budget == "coarsen" else 1):
            group, in_dyn = _groups(xyz, moving, kf_idx, voxel_m * 2.0 ** (step / 2),
                                    len(kfs), rgb if look_change > 0 else None, look_change)
            n_groups = int(group.max()) + 1
            if n_groups <= token_budget:
                break
        g = group
        n = n_groups
        counts = np.bincount(g, minlength=n)
        ones = np.ones_like(g, np.float32)
        agg = scipy.sparse.csr_matrix((ones, (g, np.arange(g.size))), shape=(n, g.size))
        agg_all = scipy.sparse.csr_matrix((ones, (g, valid_rows)), shape=(n, len(feats_all)))
        inv_c = (1.0 / counts)[:, None]
        out_xyz = (agg @ xyz) * inv_c
        out_rgb = ((agg @ rgb) * inv_c).astype(np.float32)
        out_flat = ((agg @ flat) * inv_c[:, 0]).astype(np.float32)
        vsum = agg @ view
        out_view = vsum / np.maximum(np.linalg.norm(vsum, axis=1, keepdims=True), 1e-9)
        out_t = np.full(n, -np.inf)
        np.maximum.at(out_t, g, t)
        out_t0 = np.full(n, np.inf)
        np.minimum.at(out_t0, g, t)
        out_motion = np.zeros(n, np.float32)
        np.maximum.at(out_motion, g, motion)
        out_labels = _majority_per_group(g, labels, n)

        order = np.lexsort((out_xyz[:, 2], out_xyz[:, 1], out_xyz[:, 0], out_t))
        if n > token_budget and over_budget == "drop":
            dyn = np.zeros(n, bool)
            dyn[g[in_dyn]] = True
            best = np.lexsort((-out_t, -counts, ~dyn))
            kept = np.zeros(n, bool)
            kept[best[:token_budget]] = True
            order = order[kept[order]]
        elif n > token_budget:
            order = order[np.linspace(0, n - 1, token_budget).round().astype(np.intp)]
        # the wide features of the kept tokens only, already in their order
        out_feats = ((agg_all[order] @ feats_all) * inv_c[order]).astype(np.float32, copy=False)
        return VisualTokens(
            xyz_world=out_xyz[order].astype(np.float32), t_s=out_t[order],
            features=out_feats, rgb=out_rgb[order], motion=out_motion[order],
            view_dir_world=out_view[order].astype(np.float32), labels=out_labels[order],
            counts=counts[order].astype(np.int32), t_first_s=out_t0[order],
            flat=out_flat[order])


def flat_patches(kf: Keyframe) -> np.ndarray:
    """`(P,) float32` 1 where the keyframe's patch is flat (`FLAT_RMS_M`), else 0."""
    if kf.plane_rms_m is None:
        return np.zeros(kf.xyz_world.shape[0], np.float32)
    return (np.nan_to_num(kf.plane_rms_m, nan=np.inf) <= FLAT_RMS_M).astype(np.float32)


def _groups(xyz: np.ndarray, moving: np.ndarray, kf_idx: np.ndarray, voxel_m: float,
            n_kf: int, rgb: np.ndarray | None = None, look_change: float = 0.0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Token index (N,) of each point: its voxel; in a dynamic voxel also its keyframe; given
    `rgb (N, 3)`, in a still voxel the run of keyframes whose mean colour stays within
    `look_change` of the run's first keyframe (`_split_by_look`). Also whether each point's
    voxel is dynamic (N,) bool."""
    # pack the 3 cell indices into one int64 (21 bits each: +-1e6 cells) for a 1-D unique
    cells = np.clip(np.floor(xyz / voxel_m), -(2**20), 2**20 - 1).astype(np.int64) + 2**20
    key = (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]
    _, vox = np.unique(key, return_inverse=True)
    vox = vox.reshape(-1)
    dyn_vox = np.zeros(int(vox.max()) + 1, bool)
    dyn_vox[vox[moving]] = True
    pair_key = vox.astype(np.int64) * (n_kf + 1) + kf_idx
    pairs, pair_of = np.unique(pair_key, return_inverse=True)  # sorted: voxel, then keyframe
    pair_of = pair_of.reshape(-1)
    pair_vox = pairs // (n_kf + 1)
    new = np.ones(pairs.size, bool)  # a (voxel, keyframe) pair that starts a token
    new[1:] = (pair_vox[1:] != pair_vox[:-1]) | dyn_vox[pair_vox[1:]]
    if rgb is not None:
        n_in = np.bincount(pair_of, minlength=pairs.size).astype(np.float64)
        look = np.stack([np.bincount(pair_of, weights=rgb[:, c], minlength=pairs.size)
                         for c in range(3)], axis=1) / n_in[:, None]  # (pairs, 3)
        _split_by_look(new, look, look_change)
    run = np.cumsum(new) - 1
    return run[pair_of], dyn_vox[vox]


def _split_by_look(new: np.ndarray, look: np.ndarray, look_change: float) -> None:
    """Mark in `new (P,)` (True: the pair starts a token; pairs sorted by voxel, then time)
    the first pair of each run whose `look (P, 3)` is more than `look_change` from the run's
    first, until no run has one. Against the run's start, not the previous keyframe: an
    object slides out of a voxel over several keyframes, each a small change."""
    idx = np.arange(new.size)
    while True:  # each pass splits every run that drifts; a voxel has few splits
        run = np.cumsum(new) - 1
        start = np.flatnonzero(new)
        far = np.linalg.norm(look - look[start[run]], axis=1) > look_change
        if not far.any():
            return
        first = np.full(start.size, new.size)
        np.minimum.at(first, run[far], idx[far])
        new[first[first < new.size]] = True


def _majority_per_group(group: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Most frequent known label (>= 0) per group, smallest on ties, -1 if none known."""
    out = np.full(n, -1, np.int32)
    known = labels >= 0
    if not known.any():
        return out
    pairs, cnt = np.unique(np.stack([group[known], labels[known]], axis=1), axis=0,
                           return_counts=True)
    order = np.lexsort((pairs[:, 1], -cnt, pairs[:, 0]))  # by group, count desc, label asc
    pairs = pairs[order]
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    out[pairs[first, 0]] = pairs[first, 1]
    return out
