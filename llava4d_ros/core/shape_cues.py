"""What a cluster of depth samples is, from its geometry alone: structure left over by the
plane fits (a line, a slab, a sliver clinging to a wall) or, for an object, which primitive its
surface normals and proportions say it is. Points and normals in the gravity frame `g` (z up),
metres."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def is_line(ext: np.ndarray, thin_m: float = 0.08, long_m: float = 0.3) -> bool:
    """Extents `(3,)` of a line: thin in two directions, long in the third. What depth shows
    of a cabinet's or a table's edge once the plane fits took its faces; not an object."""
    e = np.sort(np.asarray(ext, np.float64))
    return bool(e[1] < thin_m and e[2] > long_m)


def clings(p_g: np.ndarray, tree: cKDTree, within_m: float = 0.03, share: float = 0.6
            ) -> bool:
    """Whether most of a cluster's points `(N, 3)` lie within `within_m` of structure (`tree`
    of this view's wall points): a sliver the plane fit left at a wall's edge, not a thing
    standing in front of it."""
    d, _ = tree.query(p_g[::2], distance_upper_bound=within_m)
    return float(np.isfinite(d).mean()) >= share


def is_slab(p_g: np.ndarray, thin_m: float = 0.05, large_m: float = 0.6) -> bool:
    """A flat piece (thinner than `thin_m` across its smallest principal axis) that is large
    (over `large_m` along its largest): a wall or a door seen in part, not an object."""
    if p_g.shape[0] < 10:
        return False
    q = p_g - p_g.mean(axis=0)
    _, sv, vt = np.linalg.svd(q, full_matrices=False)
    proj = q @ vt.T
    ext = np.percentile(proj, 95, axis=0) - np.percentile(proj, 5, axis=0)
    return bool(ext[2] < thin_m and ext[0] > large_m)


def normal_stats(n_g: np.ndarray) -> np.ndarray:
    """`(6,)`: counts of upward, sideways and slanted normals, and for the sideways ones the
    sums of cos 4phi and sin 4phi of their azimuth phi and their count (a box's faces give
    four azimuths 90 deg apart, which 4phi folds into one)."""
    nz = n_g[:, 2]
    top = nz > 0.9
    side = np.abs(nz) < 0.35
    slant = ~top & ~side & (nz > -0.35)
    phi = np.arctan2(n_g[side, 1], n_g[side, 0])
    return np.array([top.sum(), side.sum(), slant.sum(), np.cos(4 * phi).sum(),
                     np.sin(4 * phi).sum(), side.sum()], np.float64)


def primitive_shape(stats: np.ndarray, size: np.ndarray) -> str:
    """cube, sphere or cylinder when the normals and proportions say so clearly, else ""."""
    top, side, slant, c4, s4, n_side = stats
    if top + side + slant < 30:
        return ""
    sx, sy, sz = (float(v) for v in size)
    if max(sx, sy) > 1.35 * min(sx, sy):
        return ""  # no primitive of ours has an oblong footprint
    if slant / max(side + slant, 1.0) > 0.45:
        return "sphere" if 0.7 < sz / max(sx, sy) < 1.4 else ""
    if n_side < 10:
        return ""
    square = float(np.hypot(c4, s4)) / n_side
    if square > 0.5:
        return "cube" if 0.7 < sz / max(sx, sy) < 1.4 else ""
    if square < 0.35:
        return "cylinder"
    return ""
