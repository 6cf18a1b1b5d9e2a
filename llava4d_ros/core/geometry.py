"""Camera model, depth back-projection, SE(3) helpers and patch pooling.

Conventions (ARCHITECTURE.md): the camera frame is optical (x right, y down, z forward); a
transform named `b_from_a` (4, 4) maps points in frame `a` to frame `b`, composed as
`c_from_b @ b_from_a`. Pixel `(u, v)` = (column, row) with integer coordinates at pixel centres,
as in ROS CameraInfo. Rotations go through `scipy.spatial.transform.Rotation`, never hand-written
quaternion algebra. Units: metres, seconds, radians.

Example:
    >>> cam = PinholeCamera(fx=500.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)
    >>> depth_m = np.full((480, 640), 2.0, np.float32)
    >>> p_cam = backproject(depth_m, cam)
    >>> p_cam.shape, float(p_cam[240, 320, 2])
    ((480, 640, 3), 2.0)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

# widest field of view a rectified pinhole image can have (a 170 deg lens is rectified to
# far less; only a corrupt K comes near 180)
MAX_FOV_DEG = 170.0


class UnsupportedCameraError(ValueError):
    """A camera model this module cannot represent (distortion, bad intrinsics)."""


class UnsupportedEncodingError(ValueError):
    """A depth image encoding other than 16UC1 (mm) or 32FC1 (m)."""


@dataclass(frozen=True)
class PinholeCamera:
    """Ideal pinhole intrinsics of an image `(height, width)`, pixels.

    Projection of a camera-frame point `(x, y, z)`: `u = fx x / z + cx`, `v = fy y / z + cy`.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            v = float(getattr(self, name))
            if not np.isfinite(v):
                raise UnsupportedCameraError(f"{name} must be finite, got {v}")
            object.__setattr__(self, name, v)
        if not (self.fx > 0 and self.fy > 0):
            raise UnsupportedCameraError(f"fx, fy must be > 0, got {self.fx}, {self.fy}")
        if int(self.width) < 1 or int(self.height) < 1:
            raise UnsupportedCameraError(f"image size must be >= 1, got "
                                         f"{self.width}x{self.height}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        w, h = self.width, self.height
        # A pinhole image spans less than MAX_FOV_DEG: a smaller focal length is a corrupt
        # camera_info (fx = 1e-300 put every point at infinity), not a real lens.
        min_f = max(w, h) / 2 / np.tan(np.radians(MAX_FOV_DEG / 2))
        if self.fx < min_f or self.fy < min_f:
            raise UnsupportedCameraError(
                f"fx, fy = {self.fx:.4g}, {self.fy:.4g} px give a field of view over "
                f"{MAX_FOV_DEG:g} deg for {w}x{h}; at least {min_f:.3g} px expected")
        if not (-w <= self.cx <= 2 * w and -h <= self.cy <= 2 * h):
            raise UnsupportedCameraError(
                f"principal point ({self.cx:.4g}, {self.cy:.4g}) is more than an image size "
                f"outside the {w}x{h} image")

    @classmethod
    def from_camera_info(cls, k: Sequence[float], width: int, height: int,
                         distortion_model: str = "plumb_bob",
                         d: Sequence[float] = ()) -> PinholeCamera:
        """Read the fields of a sensor_msgs/CameraInfo (k row-major (9,), d any length).

        Distortion is not undone here, so a non-zero `d` is refused: back-projecting distorted
        pixels with K alone misplaces points by centimetres at the image border, silently.
        Rectify upstream (image_proc) and pass the rectified info, whose D is all zero.
        """
        k_arr = np.asarray(k, dtype=np.float64).reshape(-1)
        if k_arr.shape != (9,):
            raise UnsupportedCameraError(f"K must have 9 entries, got {k_arr.size}")
        d_arr = np.asarray(d, dtype=np.float64).reshape(-1)
        if d_arr.size and np.any(d_arr != 0.0):
            raise UnsupportedCameraError(
                f"distortion model {distortion_model!r} with non-zero D {d_arr.tolist()} is not "
                "supported; publish rectified images (image_proc) with D = 0")
        if abs(k_arr[1]) > 1e-9 or np.any(np.abs(k_arr[6:9] - (0.0, 0.0, 1.0)) > 1e-9):
            raise UnsupportedCameraError(f"K must be [fx 0 cx; 0 fy cy; 0 0 1], got "
                                         f"{k_arr.tolist()}")
        return cls(fx=k_arr[0], fy=k_arr[4], cx=k_arr[2], cy=k_arr[5], width=width,
                   height=height)

    @property
    def k(self) -> np.ndarray:
        """Intrinsic matrix (3, 3)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def project(self, p_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel coordinates of camera-frame points `p_cam` (..., 3).

        Returns `(u, v, z)` each (...,): `u = fx x / z + cx`, `v = fy y / z + cy`; points with
        `z <= 0` or NaN get NaN `u, v`.
        """
        p_cam = np.asarray(p_cam)
        z = p_cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_z = np.where(z > 0, 1.0 / z, np.nan)
        return p_cam[..., 0] * inv_z * self.fx + self.cx, p_cam[..., 1] * inv_z * self.fy + \
            self.cy, z


def depth_to_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """Depth image `(H, W)` in its ROS encoding -> `depth_m (H, W) float32`, NaN where invalid.

    `16UC1`/`mono16` are millimetres (0 and 65535 invalid: "no return" and "saturated" in the
    OpenNI/Kinect convention); `32FC1` is metres (0, NaN, +-inf and negative invalid).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    if encoding in ("16UC1", "mono16"):
        if depth.dtype != np.uint16:
            raise UnsupportedEncodingError(f"{encoding} needs uint16 data, got {depth.dtype}")
        depth_m = depth.astype(np.float32) * np.float32(1e-3)
        depth_m[(depth == 0) | (depth == 65535)] = np.nan
        return depth_m
    if encoding == "32FC1":
        if depth.dtype != np.float32:
            raise UnsupportedEncodingError(f"32FC1 needs float32 data, got {depth.dtype}")
        depth_m = depth.astype(np.float32, copy=True)
        with np.errstate(invalid="ignore"):
            depth_m[~(np.isfinite(depth_m) & (depth_m > 0))] = np.nan
        return depth_m
    raise UnsupportedEncodingError(f"depth encoding {encoding!r} is not supported "
                                   "(16UC1 millimetres or 32FC1 metres)")


def _pixel_grid(cam: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ray coordinates `((u - cx) / fx (1, W), (v - cy) / fy (H, 1))`."""
    u = (np.arange(cam.width, dtype=np.float32) - np.float32(cam.cx)) / np.float32(cam.fx)
    v = (np.arange(cam.height, dtype=np.float32) - np.float32(cam.cy)) / np.float32(cam.fy)
    return u[None, :], v[:, None]


def backproject(depth_m: np.ndarray, cam: PinholeCamera) -> np.ndarray:
    """Camera-frame points `p_cam (H, W, 3)` of a z-depth image `depth_m (H, W)` in metres.

    `x = (u - cx) z / fx`, `y = (v - cy) z / fy`, `z = depth_m[v, u]`; NaN depth stays NaN.
    """
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if depth_m.shape != (cam.height, cam.width):
        raise ValueError(f"depth_m shape {depth_m.shape} does not match the camera "
                         f"({cam.height}, {cam.width})")
    xn, yn = _pixel_grid(cam)
    return np.stack([xn * depth_m, yn * depth_m, depth_m], axis=-1)


def transform_points(b_from_a: np.ndarray, p_a: np.ndarray) -> np.ndarray:
    """`p_b (..., 3) = R p_a + t` for `b_from_a (4, 4)`; keeps the dtype of `p_a`."""
    p_a = np.asarray(p_a)
    b_from_a = np.asarray(b_from_a)
    if b_from_a.shape != (4, 4) or p_a.shape[-1] != 3:
        raise ValueError(f"need b_from_a (4, 4) and p_a (..., 3), got {b_from_a.shape}, "
                         f"{p_a.shape}")
    rot = b_from_a[:3, :3].astype(p_a.dtype if p_a.dtype.kind == "f" else np.float64)
    return p_a @ rot.T + b_from_a[:3, 3].astype(rot.dtype)


def se3(translation: Sequence[float], quat_xyzw: Sequence[float]) -> np.ndarray:
    """`(4, 4)` homogeneous transform from a translation (3,) and a quaternion (4,) x, y, z, w.

    The quaternion is normalised (ROS messages carry float rounding); a zero one is refused.
    """
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    q = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1)
    if t.shape != (3,) or q.shape != (4,):
        raise ValueError(f"need translation (3,) and quat_xyzw (4,), got {t.shape}, {q.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))) or np.linalg.norm(q) < 1e-9:
        raise ValueError(f"non-finite or zero transform: t={t.tolist()} q={q.tolist()}")
    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat(q).as_matrix()
    out[:3, 3] = t
    return out


def quat_from_matrix(b_from_a: np.ndarray) -> np.ndarray:
    """Quaternion `(4,)` x, y, z, w of the rotation part of `b_from_a (4, 4)` or `(3, 3)`.

    Uses the nearest rotation, so a slightly non-orthonormal input (file poses) is accepted.
    """
    m = np.asarray(b_from_a, dtype=np.float64)
    return Rotation.from_matrix(m[:3, :3]).as_quat()


def invert_se3(b_from_a: np.ndarray) -> np.ndarray:
    """`a_from_b (4, 4)` of a rigid transform, using R^T rather than a general inverse."""
    b_from_a = np.asarray(b_from_a, dtype=np.float64)
    out = np.eye(4)
    rot_t = b_from_a[:3, :3].T
    out[:3, :3] = rot_t
    out[:3, 3] = -rot_t @ b_from_a[:3, 3]
    return out


def interpolate_pose(a_from_b_0: np.ndarray, a_from_b_1: np.ndarray, alpha: float) -> np.ndarray:
    """Pose `(4, 4)` a fraction `alpha` in [0, 1] of the way from pose 0 to pose 1.

    Rotation by spherical linear interpolation (the shortest arc), translation linearly; this is
    what tf2 does between two stamps.
    """
    p0 = np.asarray(a_from_b_0, dtype=np.float64)
    p1 = np.asarray(a_from_b_1, dtype=np.float64)
    alpha = float(alpha)
    rots = Rotation.from_matrix(np.stack([p0[:3, :3], p1[:3, :3]]))
    out = np.eye(4)
    out[:3, :3] = Slerp([0.0, 1.0], rots)([alpha]).as_matrix()[0]
    out[:3, 3] = (1.0 - alpha) * p0[:3, 3] + alpha * p1[:3, 3]
    return out


def rotation_angle_rad(b_from_a: np.ndarray) -> float:
    """Angle (radians, 0..pi) of the rotation part of `b_from_a (4, 4)`."""
    return float(np.linalg.norm(Rotation.from_matrix(np.asarray(b_from_a)[:3, :3]).as_rotvec()))


# ----------------------------------------------------------------------------- patch pooling


@dataclass(frozen=True)
class PatchPooling:
    """Per patch of a `(Ph, Pw)` grid (row-major, `P = Ph * Pw`), from one RGB-D frame.

    `xyz_world (P, 3)`, NaN where too few pixels had depth; `xyz_cam (P, 3)` the same points in
    the camera frame; `rgb (P, 3) float32` mean colour 0..255; `depth_m (P,)` the patch depth
    (z of the chosen point; NaN when invalid); `depth_spread_m (P,)` the 10..90 % range of the
    valid sample depths (the patch's own relief: large at depth edges and grazing surfaces,
    where a pixel of misalignment changes depth a lot); `valid_frac (P,)` share of sampled
    pixels with depth; `labels (P,) int32` majority label of the valid samples (-1 if none) or
    None; `plane_rms_m (P,) float32` the RMS distance of the valid samples' points to their
    best-fitting plane (0 on a flat face, the sagitta on a curved one; NaN with fewer than 3
    valid samples or where the patch is invalid);
    `sample_depth_m (Ph * s, Pw * s)` the sub-sampled depth grid the patches were computed from,
    kept for motion estimation against the next keyframe; `sample_u (Pw * s,)`, `sample_v
    (Ph * s,)` its pixel columns and rows.
    """

    grid: tuple[int, int]
    xyz_world: np.ndarray
    xyz_cam: np.ndarray
    rgb: np.ndarray
    depth_m: np.ndarray
    depth_spread_m: np.ndarray
    valid_frac: np.ndarray
    labels: np.ndarray | None
    sample_depth_m: np.ndarray
    sample_u: np.ndarray
    sample_v: np.ndarray
    plane_rms_m: np.ndarray | None = None


def sample_coords(size: int, patches: int, per_patch: int) -> np.ndarray:
    """Pixel indices `(patches * per_patch,)` spread evenly over `size` pixels.

    Sample k lies at the centre of the k-th of `patches * per_patch` equal bins, so every patch
    gets exactly `per_patch` samples even when `size` is not a multiple of `patches`.
    """
    n = patches * per_patch
    idx = np.floor((np.arange(n) + 0.5) * (size / n)).astype(np.intp)
    return np.clip(idx, 0, size - 1)


def pool_patches(depth_m: np.ndarray, rgb: np.ndarray, cam: PinholeCamera,
                 world_from_cam: np.ndarray, grid: tuple[int, int], samples_per_side: int = 5,
                 min_valid_frac: float = 0.3, labels: np.ndarray | None = None,
                 timings: dict[str, float] | None = None) -> PatchPooling:
    """Pool an RGB-D frame `depth_m (H, W)`, `rgb (H, W, 3) uint8` into a `(Ph, Pw)` patch grid.

    Why sub-sampling: the median of a 20x20 px patch costs as much as back-projecting the whole
    image; `samples_per_side` s evenly spaced pixels per patch side (s*s per patch) give the
    same robust estimate at 1/16 of the cost for s=5 on 640x480 (bench/ingest.py measures it).

    Each patch's point is the sampled point of median depth (a real surface point, so a patch
    straddling a depth edge lands on one surface instead of in the air between two, which a
    per-coordinate median would do), back-projected with `x = (u - cx) z / fx`,
    `y = (v - cy) z / fy` and mapped to the world with `world_from_cam (4, 4)`. A patch with
    fewer than `min_valid_frac` of its samples valid is NaN. Colour is the mean over all samples.
    `timings`, when given, receives the milliseconds of the "backproject" and "pool" stages.
    """
    ph, pw = (int(grid[0]), int(grid[1]))
    s = int(samples_per_side)
    depth_m = np.asarray(depth_m)
    rgb = np.asarray(rgb)
    h, w = cam.height, cam.width
    if depth_m.shape != (h, w) or rgb.shape != (h, w, 3):
        raise ValueError(f"depth_m {depth_m.shape} and rgb {rgb.shape} must be ({h}, {w}) and "
                         f"({h}, {w}, 3)")
    if ph < 1 or pw < 1 or s < 1 or ph * s > h or pw * s > w:
        raise ValueError(f"grid {grid} with {s} samples per side does not fit a {w}x{h} image")
    t0 = time.perf_counter()
    rows = sample_coords(h, ph, s)  # (Ph*s,)
    cols = sample_coords(w, pw, s)  # (Pw*s,)
    sub_d = depth_m[rows[:, None], cols[None, :]].astype(np.float32)  # (Ph*s, Pw*s)
    xn = (cols.astype(np.float32) - np.float32(cam.cx)) / np.float32(cam.fx)  # (Pw*s,)
    yn = (rows.astype(np.float32) - np.float32(cam.cy)) / np.float32(cam.fy)  # (Ph*s,)
    sub_p = np.stack([xn[None, :] * sub_d, yn[:, None] * sub_d, sub_d], axis=-1)  # (.., .., 3)
    t1 = time.perf_counter()

    blocks = sub_d.reshape(ph, s, pw, s).transpose(0, 2, 1, 3).reshape(ph * pw, s * s)  # (P,S)
    p_blocks = sub_p.reshape(ph, s, pw, s, 3).transpose(0, 2, 1, 3, 4).reshape(ph * pw, s * s,
                                                                               3)
    valid = np.isfinite(blocks)
    n_valid = valid.sum(axis=1)  # (P,)
    order = np.argsort(np.where(valid, blocks, np.inf), axis=1, kind="stable")  # NaN last
    med_k = np.maximum(n_valid - 1, 0) // 2  # lower median among the valid samples
    pick = order[np.arange(ph * pw), med_k]  # (P,) index of the median sample in its block
    valid_frac = n_valid.astype(np.float32) / float(s * s)
    sorted_d = np.take_along_axis(blocks, order, axis=1)  # (P, S), valid first, ascending
    last = np.maximum(n_valid - 1, 0)
    lo = sorted_d[np.arange(ph * pw), np.floor(0.1 * last).astype(np.intp)]
    hi = sorted_d[np.arange(ph * pw), np.ceil(0.9 * last).astype(np.intp)]
    ok = (valid_frac >= min_valid_frac) & (n_valid > 0)
    xyz_cam = np.where(ok[:, None], p_blocks[np.arange(ph * pw), pick], np.nan)  # (P, 3)
    z = xyz_cam[:, 2].copy()
    spread = np.where(ok, hi - lo, np.nan).astype(np.float32)
    xyz_world = transform_points(world_from_cam, xyz_cam.astype(np.float64)).astype(np.float32)

    sub_rgb = rgb[rows[:, None], cols[None, :]].astype(np.float32)  # (Ph*s, Pw*s, 3)
    rgb_p = sub_rgb.reshape(ph, s, pw, s, 3).mean(axis=(1, 3)).reshape(ph * pw, 3)

    labels_p = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (h, w):
            raise ValueError(f"labels shape {labels.shape} must be ({h}, {w})")
        sub_l = labels[rows[:, None], cols[None, :]].astype(np.int64)
        lb = sub_l.reshape(ph, s, pw, s).transpose(0, 2, 1, 3).reshape(ph * pw, s * s)
        labels_p = majority_label(lb, valid)
    if timings is not None:
        timings["backproject"] = (t1 - t0) * 1e3
        timings["pool"] = (time.perf_counter() - t1) * 1e3
    plane = np.where(ok & (n_valid >= 3), plane_rms(p_blocks, valid), np.nan)
    return PatchPooling(grid=(ph, pw), xyz_world=xyz_world, xyz_cam=xyz_cam.astype(np.float32),
                        rgb=rgb_p.astype(np.float32), depth_m=z, depth_spread_m=spread,
                        valid_frac=valid_frac,
                        labels=labels_p, sample_depth_m=sub_d, sample_u=cols, sample_v=rows,
                        plane_rms_m=plane.astype(np.float32))


def plane_rms(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`(P,)` per row of `points (P, S, 3)`: the RMS distance [m] of its `valid (P, S)` points
    to their least-squares plane, the square root of the smallest eigenvalue of their
    covariance (NaN-free; 0 for rows with fewer than 3 valid points).

    Why: a cube's faces are planes and a cylinder's side is not, which 0.2 m voxels cannot
    show of a 0.3 m object but a patch's 25 depth samples can (docs/RESULTS.md, "Shape")."""
    w = valid.astype(np.float64)
    n = w.sum(axis=1)  # (P,)
    p = np.where(valid[..., None], points, 0.0).astype(np.float64)
    mean = p.sum(axis=1) / np.maximum(n, 1)[:, None]  # (P, 3)
    d = (p - mean[:, None]) * w[..., None]
    cov = np.einsum("psi,psj->pij", d, d) / np.maximum(n, 1)[:, None, None]  # (P, 3, 3)
    smallest = np.linalg.eigvalsh(cov)[:, 0]
    return np.where(n >= 3, np.sqrt(np.clip(smallest, 0.0, None)), 0.0)


def majority_label(labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Most frequent label per row of `labels (N, S)` int among `mask (N, S)`; -1 if none.

    Ties go to the smallest label, so the result does not depend on sample order.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if mask is None:
        mask = np.ones(labels.shape, dtype=bool)
    n = labels.shape[0]
    if labels.size == 0:
        return np.full(n, -1, np.int32)
    uniq, inv = np.unique(labels, return_inverse=True)
    counts = np.zeros((n, uniq.size), dtype=np.int32)
    rows = np.broadcast_to(np.arange(n)[:, None], labels.shape)
    np.add.at(counts, (rows[mask], inv.reshape(labels.shape)[mask]), 1)
    out = uniq[np.argmax(counts, axis=1)].astype(np.int32)
    out[counts.max(axis=1) == 0] = -1
    return out
