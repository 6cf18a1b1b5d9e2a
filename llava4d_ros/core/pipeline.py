"""One RGB-D frame with its pose in, keyframes out: the path every caller shares.

The ROS node, the offline replay and the training-data builder all call `Ingestor.ingest`, so
keyframe selection, pooling, motion, features and the 4D buffer behave the same everywhere.
The object map (core/objectmap.py) reads the same keyframes; the Engine owns it, since it
outlives a model swap that restarts the buffer. Bad input (mismatched sizes, no valid depth, a
non-rigid or non-finite pose) is dropped with a reason and a counter, never raised: one corrupt
frame must not stop a robot.

Per keyframe:
    depth_m, rgb --pool_patches--> patch points (P, 3) in the world frame, colour, depth
      --MotionEstimator (vs. previous keyframe)--> motion (P,)
      --PatchEncoder--> features (P, D)       --> Buffer4D.add
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from llava4d_ros.core.buffer4d import (
    OVER_BUDGET,
    Buffer4D,
    Keyframe,
    MotionEstimator,
    VisualTokens,
)
from llava4d_ros.core.geometry import (
    PinholeCamera,
    invert_se3,
    pool_patches,
    rotation_angle_rad,
)


@runtime_checkable
class PatchEncoder(Protocol):
    """A vision encoder seen from the core: image in, one feature vector per patch out."""

    feature_dim: int

    def __call__(self, rgb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """`rgb (H, W, 3) uint8`, `grid (Ph, Pw)` -> `features (Ph * Pw, D) float32`."""
        ...


@dataclass(frozen=True)
class IngestConfig:
    """Keyframe policy, pooling and motion settings of the ingest path."""

    patch_grid: tuple[int, int] = (24, 32)  # 20x20 px patches at 640x480, ViT-like density
    window_s: float = 30.0
    max_buffer_mb: float = 512.0
    keyframe_min_interval_s: float = 0.1
    # a still camera still takes keyframes this often: objects may move in front of it
    keyframe_max_interval_s: float = 0.5
    keyframe_min_translation_m: float = 0.05
    keyframe_min_rotation_deg: float = 5.0
    # depth change that counts as motion: well above Kinect-class noise (~1-3 cm at 3 m)
    motion_threshold_m: float = 0.1
    # share of a patch's depth relief (10..90 % range) not counted as motion; see ingest()
    motion_relief_factor: float = 0.5
    voxel_m: float = 0.2
    token_budget: int = 2560
    # a still voxel's look (mean RGB, 0..255) changing by more than this starts a new token
    # (Buffer4D.tokens); 0: one token per still voxel. The model's setting (ModelSpec)
    look_change: float = 0.0
    # more tokens than the budget: "coarsen" the voxel or "drop" the least-seen tokens
    # (Buffer4D.tokens). The model's setting (ModelSpec)
    over_budget: str = "coarsen"
    samples_per_patch_side: int = 5  # 25 depth samples per patch; see geometry.pool_patches
    min_valid_frac: float = 0.3
    # keyframes a new one is compared with for motion (the temporal encoding's beta reads
    # the change against the newest of them)
    motion_reference_keyframes: int = 1

    def __post_init__(self) -> None:
        grid = tuple(int(g) for g in self.patch_grid)
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"patch_grid must be two positive ints, got {self.patch_grid}")
        object.__setattr__(self, "patch_grid", grid)
        for name in ("window_s", "max_buffer_mb", "keyframe_max_interval_s", "motion_threshold_m",
                     "voxel_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("keyframe_min_interval_s", "keyframe_min_translation_m",
                     "keyframe_min_rotation_deg", "motion_relief_factor", "look_change"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.over_budget not in OVER_BUDGET:
            raise ValueError(f"over_budget must be one of {OVER_BUDGET}, got "
                             f"{self.over_budget!r}")
        if self.keyframe_min_interval_s > self.keyframe_max_interval_s:
            raise ValueError("keyframe_min_interval_s must not exceed keyframe_max_interval_s")
        for name in ("token_budget", "samples_per_patch_side", "motion_reference_keyframes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.min_valid_frac <= 1:
            raise ValueError(f"min_valid_frac must be in (0, 1], got {self.min_valid_frac}")


@dataclass(frozen=True)
class IngestResult:
    """`status`: keyframe | skipped | dropped | reset (a keyframe that first cleared the
    buffer because time went backwards). `reason` is "code: detail" for drops."""

    status: str
    reason: str = ""


class Ingestor:
    """Stateful ingest path. Not thread-safe by itself: the caller (Engine) holds a lock."""

    def __init__(self, cfg: IngestConfig, encoder: PatchEncoder | None = None):
        self.cfg = cfg
        self.encoder = encoder
        self.buffer = Buffer4D(window_s=cfg.window_s,
                               max_bytes=int(cfg.max_buffer_mb * 2**20),
                               motion_threshold_m=cfg.motion_threshold_m)
        self.motion = MotionEstimator(n_refs=cfg.motion_reference_keyframes)
        self.timings_ms: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        self._last_stamp_s: float | None = None
        self._last_kf_stamp_s: float | None = None
        self._last_kf_pose: np.ndarray | None = None

    @property
    def feature_dim(self) -> int:
        return 3 if self.encoder is None else int(self.encoder.feature_dim)

    def tokens(self, t_start_s: float | None = None, t_end_s: float | None = None,
               device: str | None = None) -> VisualTokens:
        """The buffer's keyframes in `[t_start_s, t_end_s]` pooled with this config's token
        budget, voxel and look change (`Buffer4D.tokens`): the tokens the model was trained
        on. Raises EmptyBufferError when there is nothing in range."""
        c = self.cfg
        return self.buffer.tokens(c.token_budget, c.voxel_m, t_start_s=t_start_s,
                                  t_end_s=t_end_s, device=device, look_change=c.look_change,
                                  over_budget=c.over_budget)

    def reset(self) -> None:
        """Forget the buffer and the motion reference (counters are kept)."""
        self.buffer.clear()
        self.motion.reset()
        self._last_stamp_s = None
        self._last_kf_stamp_s = None
        self._last_kf_pose = None

    def _drop(self, code: str, detail: str) -> IngestResult:
        self.counters[code] += 1
        return IngestResult("dropped", f"{code}: {detail}")

    def _is_keyframe(self, stamp_s: float, world_from_cam: np.ndarray) -> bool:
        if self._last_kf_stamp_s is None or self._last_kf_pose is None:
            return True
        dt = stamp_s - self._last_kf_stamp_s + 1e-6  # stamps from ns: 0.3 - 0.2 < 0.1
        if dt >= self.cfg.keyframe_max_interval_s:
            return True
        if dt < self.cfg.keyframe_min_interval_s:
            return False
        rel = invert_se3(self._last_kf_pose) @ world_from_cam
        moved = float(np.linalg.norm(rel[:3, 3])) > self.cfg.keyframe_min_translation_m
        turned = np.degrees(rotation_angle_rad(rel)) > self.cfg.keyframe_min_rotation_deg
        return moved or turned

    def ingest(self, stamp_s: float, rgb: np.ndarray, depth_m: np.ndarray, cam: PinholeCamera,
               world_from_cam: np.ndarray, labels: np.ndarray | None = None) -> IngestResult:
        """Ingest one frame: `rgb (H, W, 3) uint8`, `depth_m (H, W)` metres (NaN invalid),
        `world_from_cam (4, 4)` at the depth's stamp, optional `labels (H, W)` int (instance
        ids for training supervision, pooled by majority per patch)."""
        stamp_s = float(stamp_s)
        rgb = np.asarray(rgb)
        depth_m = np.asarray(depth_m)
        world_from_cam = np.asarray(world_from_cam, dtype=np.float64)
        hw = (cam.height, cam.width)
        if depth_m.shape != hw or rgb.shape != (*hw, 3):
            return self._drop("shape mismatch", f"rgb {rgb.shape}, depth {depth_m.shape}, "
                                                f"camera_info {hw[::-1]} (w, h)")
        if rgb.dtype != np.uint8:
            return self._drop("bad rgb", f"rgb must be uint8, got {rgb.dtype}")
        if labels is not None and np.shape(labels) != hw:
            return self._drop("shape mismatch", f"labels {np.shape(labels)} vs image {hw}")
        if not np.isfinite(stamp_s):
            return self._drop("bad stamp", f"{stamp_s}")
        if world_from_cam.shape != (4, 4) or not np.all(np.isfinite(world_from_cam)):
            return self._drop("bad pose", "world_from_cam must be a finite (4, 4) matrix")
        rot = world_from_cam[:3, :3]
        if (np.abs(rot @ rot.T - np.eye(3)).max() > 1e-3 or np.linalg.det(rot) < 0
                or np.abs(world_from_cam[3] - (0, 0, 0, 1)).max() > 1e-9):
            return self._drop("bad pose", "world_from_cam is not a rigid transform")

        status = "keyframe"
        if self._last_stamp_s is not None and stamp_s < self._last_stamp_s:
            self.reset()
            status = "reset"
        self._last_stamp_s = stamp_s
        if not self._is_keyframe(stamp_s, world_from_cam):
            self.counters["skipped"] += 1
            return IngestResult("skipped", "keyframe policy")

        timings: dict[str, float] = {}
        pooled = pool_patches(depth_m, rgb, cam, world_from_cam, self.cfg.patch_grid,
                              samples_per_side=self.cfg.samples_per_patch_side,
                              min_valid_frac=self.cfg.min_valid_frac, labels=labels,
                              timings=timings)
        valid = np.isfinite(pooled.depth_m)
        if not valid.any():
            self.timings_ms = timings
            return self._drop("no valid depth", "no patch has enough valid depth pixels")

        p = pooled.xyz_world.shape[0]
        t0 = time.perf_counter()
        signed = self.motion.signed_change(pooled.xyz_world)  # (P, R), newest reference first
        if signed.shape[1] == 0:
            signed = np.zeros((p, 1), np.float32)
        # what a patch's own depth relief explains is not motion: at a depth edge or on a
        # grazing surface a few pixels of misalignment change depth by decimetres
        slack = self.cfg.motion_relief_factor * np.nan_to_num(pooled.depth_spread_m)
        motion = np.maximum(np.abs(signed[:, 0]) - slack, 0.0).astype(np.float32)
        self.motion.update(pooled, cam, world_from_cam)
        t1 = time.perf_counter()
        timings["motion"] = (t1 - t0) * 1e3

        if self.encoder is None:
            features = (pooled.rgb / 255.0).astype(np.float32)
        else:
            features = np.asarray(self.encoder(rgb, self.cfg.patch_grid), dtype=np.float32)
            if features.shape != (p, self.encoder.feature_dim):
                raise ValueError(f"encoder returned features {features.shape}, expected "
                                 f"({p}, {self.encoder.feature_dim}) for grid "
                                 f"{self.cfg.patch_grid}")
        t2 = time.perf_counter()
        timings["encode"] = (t2 - t1) * 1e3

        kf = Keyframe(stamp_s=stamp_s, world_from_cam=world_from_cam, xyz_world=pooled.xyz_world,
                      rgb=pooled.rgb, features=features, depth_m=pooled.depth_m, motion=motion,
                      labels=pooled.labels, plane_rms_m=pooled.plane_rms_m)
        self.buffer.add(kf)
        self._last_kf_stamp_s = stamp_s
        self._last_kf_pose = world_from_cam
        t3 = time.perf_counter()
        timings["buffer"] = (t3 - t2) * 1e3

        self.timings_ms = timings
        self.counters[status] += 1
        return IngestResult(status, "time went backwards: buffer reset" if status == "reset"
                            else "")
