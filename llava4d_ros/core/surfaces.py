"""The large structure of a room seen in depth: the gravity-aligned frame, a keyframe's points
with normals, the horizontal levels (floor, table tops, counters) kept over time, and the big
vertical planes (walls, cabinet fronts) of one view. The object map (`core/objectmap.py`) takes
away what lies on these and clusters the rest into objects.

Frames: `world` is the fixed frame the node works in; `g` (gravity-aligned) shares its origin
and has +z against gravity (in a REP 103 map `g` is `world`). Heights are `g` z [m].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from llava4d_ros.core.geometry import PinholeCamera

#: The REP 103 world: z up, so gravity points along -z.
DOWN_REP103 = (0.0, 0.0, -1.0)


def g_from_world(gravity_world: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """`(3, 3)` rotation taking world vectors to the gravity-aligned frame: `gravity_world`
    (the direction things fall, any length) maps to -z; g's x is world x made level (world y
    where world x is vertical), so a z-up world gives the identity."""
    down = np.asarray(gravity_world, np.float64).reshape(3)
    norm = float(np.linalg.norm(down))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"gravity must be a finite non-zero vector, got {gravity_world}")
    up = -down / norm
    x = np.array([1.0, 0.0, 0.0])
    if abs(float(x @ up)) > 0.9:
        x = np.array([0.0, 1.0, 0.0])
    x = x - (x @ up) * up
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(up, x), up])  # rows: g axes in world coordinates


@dataclass(frozen=True)
class ViewPoints:
    """A keyframe's depth sampled every `stride` pixels, as arrays over that grid `(h, w)`.

    `p_g (h, w, 3)`: points in the gravity-aligned frame [m] (NaN where depth is invalid);
    `n_g (h, w, 3)`: unit normals facing the camera (NaN where unknown); `edge (h, w)`: a depth
    discontinuity next to the sample (its point may hang between two surfaces); `rgb (h, w, 3)`
    float32 0..255; `u, v (h, w)`: full-resolution pixel coordinates; `depth_m (h, w)`."""

    p_g: np.ndarray
    n_g: np.ndarray
    edge: np.ndarray
    rgb: np.ndarray
    u: np.ndarray
    v: np.ndarray
    depth_m: np.ndarray
    stride: int

    @property
    def valid(self) -> np.ndarray:
        """`(h, w)` samples with a point and a normal, off depth edges."""
        return np.isfinite(self.n_g[..., 0]) & ~self.edge


def view_points(depth_m: np.ndarray, rgb: np.ndarray, cam: PinholeCamera,
                world_from_cam: np.ndarray, g_from_w: np.ndarray, stride: int,
                edge_jump_m: float = 0.04, edge_jump_frac: float = 0.03) -> ViewPoints:
    """Sample `depth_m (H, W)` and `rgb (H, W, 3)` every `stride` pixels and lift them into the
    gravity frame. A sample is on an edge when a 4-neighbour's depth differs by more than
    `edge_jump_m + edge_jump_frac * depth` or is invalid (flying pixels live there)."""
    s = int(stride)
    d = np.asarray(depth_m, np.float32)[s // 2::s, s // 2::s]  # (h, w)
    h, w = d.shape
    u = (np.arange(w, dtype=np.float32) * s + s // 2)[None, :].repeat(h, 0)
    v = (np.arange(h, dtype=np.float32) * s + s // 2)[:, None].repeat(w, 1)
    p_cam = np.stack([(u - cam.cx) * d / cam.fx, (v - cam.cy) * d / cam.fy, d], axis=-1)
    g_from_cam = g_from_w @ np.asarray(world_from_cam, np.float64)[:3, :3]
    t_g = g_from_w @ np.asarray(world_from_cam, np.float64)[:3, 3]
    p_g = (p_cam.reshape(-1, 3) @ g_from_cam.T.astype(np.float32) + t_g.astype(np.float32)
           ).reshape(h, w, 3)

    pad = np.pad(d, 1, constant_values=np.nan)
    nbrs = np.stack([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]])  # (4,h,w)
    with np.errstate(invalid="ignore"):
        jump = np.abs(nbrs - d[None])
        edge = ~np.all(jump <= edge_jump_m + edge_jump_frac * d[None], axis=0)
    # normals from central differences two samples apart, in the camera frame (one apart,
    # Kinect-class depth noise at 3 m tilts them by tens of degrees)
    r = 2
    pp = np.pad(p_cam, ((r, r), (r, r), (0, 0)), constant_values=np.nan)
    du = pp[r:-r, 2 * r:] - pp[r:-r, :-2 * r]
    dv = pp[2 * r:, r:-r] - pp[:-2 * r, r:-r]
    n = np.cross(dv, du)  # right x down would face away; down x right faces the camera
    with np.errstate(invalid="ignore", divide="ignore"):
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        flip = np.sum(n * p_cam, axis=-1) > 0  # must face the camera (against the ray)
    n[flip] *= -1
    n_g = (n.reshape(-1, 3) @ g_from_cam.T.astype(np.float32)).reshape(h, w, 3)
    col = np.asarray(rgb)[s // 2::s, s // 2::s].astype(np.float32)[:h, :w]
    return ViewPoints(p_g=p_g, n_g=n_g, edge=edge, rgb=col, u=u, v=v, depth_m=d, stride=s)


def cell_keys(xy: np.ndarray, cell_m: float) -> np.ndarray:
    """`(N,)` int64 keys of the `cell_m` grid cells holding points `xy (N, 2)` [m]."""
    ij = np.floor(np.asarray(xy, np.float64) / cell_m).astype(np.int64) + _OFFSET
    return ij[:, 0] * _SPAN + ij[:, 1]


def _dilate(keys: np.ndarray) -> np.ndarray:
    """Sorted unique keys of the cells of `keys` and their 8 neighbours."""
    steps = np.array([di * _SPAN + dj for di in (-1, 0, 1) for dj in (-1, 0, 1)], np.int64)
    return np.unique((keys[:, None] + steps[None]).reshape(-1))


def _regions(keys: np.ndarray) -> list[np.ndarray]:
    """Split sorted cell keys into 8-connected regions (each sorted)."""
    if keys.size == 0:
        return []
    i, j = keys // _SPAN, keys % _SPAN
    i0, j0 = i.min(), j.min()
    grid = np.zeros((int(i.max() - i0) + 1, int(j.max() - j0) + 1), bool)
    grid[i - i0, j - j0] = True
    lab, n = ndimage.label(grid, structure=np.ones((3, 3), bool))
    which = lab[i - i0, j - j0]
    return [keys[which == r] for r in range(1, n + 1)]


_OFFSET = 1 << 20  # cell indices are shifted positive: a room spans far less than 2^20 cells
_SPAN = 1 << 21


@dataclass
class Level:
    """A horizontal surface height in the room: `height_m` (g z), the `cells` (sorted keys of
    `cell_keys`) where it was seen and `near` (those and their neighbours), `samples` seen."""

    level_id: int
    height_m: float
    cells: np.ndarray
    near: np.ndarray
    samples: int


class Levels:
    """Horizontal surfaces kept over keyframes. Each keyframe's upward-facing samples are
    binned by height; a bin holding at least `min_share` of the view's valid samples (and
    `min_samples`) is a surface, merged with the level within `merge_m` of its height."""

    def __init__(self, cell_m: float = 0.1, bin_m: float = 0.02, min_share: float = 0.01,
                 min_samples: int = 40, merge_m: float = 0.04, up_cos: float = 0.94,
                 min_area_m2: float = 0.45, min_support_m2: float = 0.04):
        self.min_support_m2 = float(min_support_m2)
        self.min_area_m2 = float(min_area_m2)
        self.cell_m = float(cell_m)
        self.bin_m = float(bin_m)
        self.min_share = float(min_share)
        self.min_samples = int(min_samples)
        self.merge_m = float(merge_m)
        self.up_cos = float(up_cos)
        self.levels: list[Level] = []
        self._next_id = 1

    def reset(self) -> None:
        self.levels.clear()

    def update(self, pts: ViewPoints, moving: np.ndarray | None = None) -> None:
        """Find this view's horizontal surfaces and add them to the levels; samples flagged in
        `moving (h, w)` are left out (the top of a box sliding by is no table)."""
        ok = pts.valid & (pts.n_g[..., 2] > self.up_cos)
        if moving is not None:
            ok &= ~moving
        z = pts.p_g[..., 2][ok]
        if z.size < self.min_samples:
            return
        lo = np.floor(z.min() / self.bin_m)
        idx = (np.floor(z / self.bin_m) - lo).astype(np.intp)
        counts = np.bincount(idx)
        smooth = counts + np.r_[counts[1:], 0] + np.r_[0, counts[:-1]]  # 3-bin window
        need = max(self.min_samples, self.min_share * int(pts.valid.sum()))
        xy = pts.p_g[..., :2][ok]
        for b in np.flatnonzero(smooth >= need):
            if smooth[b] < smooth[max(b - 1, 0):b + 2].max():
                continue  # not a local peak
            centre = (lo + b + 0.5) * self.bin_m
            near = np.abs(z - centre) <= 1.5 * self.bin_m
            if near.sum() < self.min_samples:
                continue
            height = float(np.median(z[near]))
            keys, n = np.unique(cell_keys(xy[near], self.cell_m), return_counts=True)
            keys = keys[n >= 2]  # a lone sample at that height is not surface
            for region in _regions(keys):
                self._add(height, region, int(near.sum()))

    def _add(self, height: float, cells: np.ndarray, n: int) -> None:
        """Merge a connected patch of surface with the levels at its height that it overlaps
        (all of them: it may join two patches of one table seen apart). Overlap, not a gap of
        a cell: the tops of two boxes side by side stay two."""
        touching = [lv for lv in self.levels if abs(lv.height_m - height) <= self.merge_m
                    and np.isin(cells, lv.cells).any()]
        if not touching:
            self.levels.append(Level(self._next_id, height, cells, _dilate(cells), n))
            self._next_id += 1
        else:
            keep = min(touching, key=lambda lv: lv.level_id)
            total = n + sum(lv.samples for lv in touching)
            keep.height_m = (height * n + sum(lv.height_m * lv.samples for lv in touching)
                             ) / total
            keep.cells = np.unique(np.concatenate([cells] + [lv.cells for lv in touching]))
            keep.near = _dilate(keep.cells)
            keep.samples = total
            self.levels = [lv for lv in self.levels if lv is keep or lv not in touching]
        self.levels.sort(key=lambda lv: lv.height_m)

    def structural(self) -> list[Level]:
        """Levels large enough to be structure (floor, table, counter): at least
        `min_area_m2`; a chair's seat is a level too, but part of its object."""
        return [lv for lv in self.levels if lv.cells.size * self.cell_m ** 2 >= self.min_area_m2]

    def on_level(self, p_g: np.ndarray, n_g: np.ndarray, tol_m: float = 0.03) -> np.ndarray:
        """`(N,)` bool: points `(N, 3)` with normals `(N, 3)` lying on a level where it was seen
        (within `tol_m` of its height, in one of its cells or a neighbour, not facing down)."""
        out = np.zeros(p_g.shape[0], bool)
        for lv in self.structural():
            idx = np.flatnonzero(np.abs(p_g[:, 2] - lv.height_m) <= tol_m)
            if idx.size:
                out[idx] = np.isin(cell_keys(p_g[idx, :2], self.cell_m), lv.near,
                                   assume_unique=False)
        return out & (n_g[:, 2] > -0.5)

    def floor(self) -> Level | None:
        """The lowest level seen over a large area (>= 1 m^2), if any."""
        big = [lv for lv in self.structural() if lv.cells.size * self.cell_m ** 2 >= 1.0]
        return big[0] if big else None

    def below(self, xy_lo: np.ndarray, xy_hi: np.ndarray, bottom_z: float,
              gap_m: float = 0.08) -> Level | None:
        """The level an upright box with footprint `[xy_lo, xy_hi]` (2,) and bottom at
        `bottom_z` stands on: the highest level at most `gap_m` below (or 3 cm above) its
        bottom that was seen under its footprint, of at least `min_support_m2` (a counter of
        black stone shows little depth, so a support need not be large enough for
        structure)."""
        best = None
        lo = np.floor(np.asarray(xy_lo, np.float64) / self.cell_m)
        hi = np.floor(np.asarray(xy_hi, np.float64) / self.cell_m)
        ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        under_keys = cell_keys((np.stack([ii.ravel(), jj.ravel()], 1) + 0.5) * self.cell_m,
                               self.cell_m)
        for lv in self.levels:
            if lv.cells.size * self.cell_m ** 2 < self.min_support_m2:
                continue
            if not (bottom_z - gap_m <= lv.height_m <= bottom_z + 0.03):
                continue
            if np.isin(under_keys, lv.near).any() and (best is None
                                                        or lv.height_m > best.height_m):
                best = lv
        return best

    def name(self, lv: Level) -> str:
        """What people call a level by its height above the floor: floor, table, counter,
        shelf (a level 0.45-0.9 m up is most often a table; a kitchen counter is 0.85-0.95)."""
        floor = self.floor()
        base = floor.height_m if floor is not None else None
        if floor is not None and lv.level_id == floor.level_id:
            return "floor"
        if base is None:
            return "surface"
        up = lv.height_m - base
        if up < 0.15:
            return "floor"
        if 0.45 <= up < 0.85:
            return "table"
        if 0.85 <= up < 1.0:
            return "counter"
        return "shelf"


def vertical_planes(p_g: np.ndarray, n_g: np.ndarray, rng: np.random.Generator,
                    min_inliers: int, tol_m: float = 0.025, side_cos: float = 0.3,
                    tries: int = 20, max_planes: int = 6, min_wide_m: float = 0.8,
                    min_tall_m: float = 1.0) -> np.ndarray:
    """`(N,)` bool: points `(N, 3)` on the large vertical planes (walls, cabinet fronts) of one
    view, found by one-point RANSAC on the sideways-facing points (a sample's own normal and
    position give a plane; the one with most inliers whose normals agree wins, up to
    `max_planes` times). A plane counts when it has `min_inliers` and its inliers span
    `min_wide_m` along the floor or `min_tall_m` up: a box's face is a plane too, but small."""
    side = np.flatnonzero(np.abs(n_g[:, 2]) < side_cos)
    out = np.zeros(p_g.shape[0], bool)
    if side.size < min_inliers:
        return out
    free = np.ones(side.size, bool)
    ps, ns = p_g[side], n_g[side]
    for _ in range(max_planes):
        cand = np.flatnonzero(free)
        if cand.size < min_inliers:
            break
        picks = rng.choice(cand, size=min(tries, cand.size), replace=False)
        nh = ns[picks].copy()
        nh[:, 2] = 0.0  # vertical planes only: level the normal
        nh /= np.linalg.norm(nh, axis=1, keepdims=True) + 1e-9
        dh = np.sum(nh * ps[picks], axis=1)
        # hypotheses are scored on a subset (the count only ranks them), inliers on all
        sub = cand if cand.size <= 1500 else rng.choice(cand, size=1500, replace=False)
        inl_sub = (np.abs(ps[sub] @ nh.T - dh[None]) <= tol_m) & (np.abs(ns[sub] @ nh.T) > 0.8)
        score = inl_sub.sum(axis=0) * (cand.size / sub.size)
        for best in np.argsort(-score)[:3]:
            if score[best] < min_inliers:
                break
            normal, offset = nh[best], dh[best]
            for _ in range(1):  # refit to the inliers: one sample's normal is noisy
                inl = (np.abs(ps[cand] @ normal - offset) <= tol_m) & (
                    np.abs(ns[cand] @ normal) > 0.7)
                if inl.sum() < 3:
                    break
                normal, offset = _level_plane(ps[cand[inl]])
            members = cand[inl]
            if members.size < min_inliers:
                continue
            q = ps[members]
            along = q[:, :2] @ np.array([-normal[1], normal[0]])
            wide = np.percentile(along, 98) - np.percentile(along, 2)
            tall = np.percentile(q[:, 2], 98) - np.percentile(q[:, 2], 2)
            free[members] = False  # a small plane is tried once, then left to the clusters
            if wide >= min_wide_m or tall >= min_tall_m:
                out[side[members]] = True
                break
    return out


def _level_plane(q: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares vertical plane through points `q (N, 3)`: (unit normal (3,) with z = 0,
    offset) so that `q @ normal ~ offset`."""
    xy = q[:, :2] - q[:, :2].mean(axis=0)
    _, _, vt = np.linalg.svd(xy, full_matrices=False)
    normal = np.array([vt[1, 0], vt[1, 1], 0.0])
    return normal, float(q[:, :2].mean(axis=0) @ normal[:2])
