"""Frames of an RGB-D folder in the 7-Scenes layout of ../shared/data.

Layout (TUM-style lists, ROS camera_calibration YAML):

    associations.txt              "rgb_stamp rgb/NNNNNN.jpg depth_stamp depth/NNNNNN.png"
    poses_T_world_camera_4x4.txt  "stamp r00 r01 r02 tx ... 0 0 0 1" (row-major world_from_cam)
    camera_info.yaml              image_width/height, camera_matrix, distortion_model/coeffs
    rgb/*.jpg, depth/*.png        colour 8-bit RGB; depth uint16 millimetres (0, 65535 invalid)

Poses are matched to frames by the rgb stamp (nearest within `max_pose_dt_s`). The pose files
are ~1e-4 off orthonormal; `world_from_cam` is projected onto the nearest rotation (SVD) so that
quaternions and TF built from it are exact.

Example:
    >>> folder = RGBDFolder("/work/shared/data/7scenes-redkitchen")  # doctest: +SKIP
    >>> frame = next(iter(folder))                                   # doctest: +SKIP
    >>> frame.rgb.shape, frame.depth.dtype                           # doctest: +SKIP
    ((480, 640, 3), dtype('uint16'))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


@dataclass(frozen=True)
class RGBDFrame:
    """One frame: `rgb` (H, W, 3) uint8, `depth` (H, W) uint16 raw millimetres, `k` (3, 3),
    `world_from_cam` (4, 4) optical camera to world."""

    stamp_s: float
    rgb: np.ndarray
    depth: np.ndarray
    k: np.ndarray
    world_from_cam: np.ndarray
    index: int = 0

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.depth.ndim != 2 or self.depth.dtype != np.uint16:
            raise ValueError(
                f"depth must be (H, W) uint16, got {self.depth.shape} {self.depth.dtype}"
            )
        if self.k.shape != (3, 3) or self.world_from_cam.shape != (4, 4):
            raise ValueError("k must be (3, 3) and world_from_cam (4, 4)")

    @property
    def depth_m(self) -> np.ndarray:
        """(H, W) float32 metres, NaN where the raw value is 0 or 65535 (invalid)."""
        d = self.depth.astype(np.float32) / 1000.0
        d[(self.depth == 0) | (self.depth == 65535)] = np.nan
        return d


@dataclass(frozen=True)
class CameraInfo:
    """The fields of camera_info.yaml a CameraInfo message needs."""

    width: int
    height: int
    k: np.ndarray  # (3, 3)
    distortion_model: str
    d: tuple[float, ...]
    frame_id: str = ""

    def pinhole(self):
        """The core `PinholeCamera` (raises for distortion the core cannot handle)."""
        from llava4d_ros.core.geometry import PinholeCamera

        return PinholeCamera.from_camera_info(
            self.k.reshape(-1).tolist(), self.width, self.height, self.distortion_model, self.d
        )


def nearest_rotation(m: np.ndarray) -> np.ndarray:
    """The rotation (3, 3) closest to `m` (3, 3) in the Frobenius norm (SVD, det +1)."""
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def read_camera_info(path: str | Path) -> CameraInfo:
    """Parse a ROS camera_calibration YAML file."""
    with open(path) as f:
        y = yaml.safe_load(f)
    k = np.asarray(y["camera_matrix"]["data"], dtype=np.float64).reshape(3, 3)
    d = tuple(float(v) for v in y.get("distortion_coefficients", {}).get("data", []))
    return CameraInfo(
        width=int(y["image_width"]),
        height=int(y["image_height"]),
        k=k,
        distortion_model=str(y.get("distortion_model", "plumb_bob")),
        d=d,
        frame_id=str(y.get("camera_name", "")),
    )


def _data_lines(path: Path) -> Iterator[list[str]]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line.split()


class RGBDFolder:
    """Random access and iteration over the frames of a 7-Scenes-layout folder.

    Only the lists and the calibration are read on construction; images are decoded on access.
    `start`, `stop`, `step` select frames by list position, like a slice.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        start: int = 0,
        stop: int | None = None,
        step: int = 1,
        max_pose_dt_s: float = 1e-3,
    ) -> None:
        self.root = Path(root)
        for name in ("associations.txt", "poses_T_world_camera_4x4.txt", "camera_info.yaml"):
            if not (self.root / name).is_file():
                raise FileNotFoundError(f"{self.root / name} is missing (7-Scenes layout)")
        self.camera_info = read_camera_info(self.root / "camera_info.yaml")
        assoc = [
            (float(r[0]), r[1], float(r[2]), r[3])
            for r in _data_lines(self.root / "associations.txt")
        ]
        poses = [
            (float(r[0]), np.asarray(r[1:17], dtype=np.float64).reshape(4, 4))
            for r in _data_lines(self.root / "poses_T_world_camera_4x4.txt")
        ]
        if not assoc or not poses:
            raise ValueError(f"{self.root}: no frames or no poses")
        pose_stamps = np.array([t for t, _ in poses])
        entries = []
        for stamp_s, rgb_rel, _depth_stamp, depth_rel in assoc[start:stop:step]:
            i = int(np.argmin(np.abs(pose_stamps - stamp_s)))
            if abs(pose_stamps[i] - stamp_s) > max_pose_dt_s:
                continue  # no pose for this frame: skip, as a node would drop it
            world_from_cam = poses[i][1].copy()
            world_from_cam[:3, :3] = nearest_rotation(world_from_cam[:3, :3])
            world_from_cam[3] = (0.0, 0.0, 0.0, 1.0)
            entries.append((stamp_s, rgb_rel, depth_rel, world_from_cam))
        self._entries = entries

    @property
    def k(self) -> np.ndarray:
        return self.camera_info.k

    @property
    def stamps_s(self) -> np.ndarray:
        """(T,) stamps of the selected frames, seconds from the sequence start."""
        return np.array([e[0] for e in self._entries])

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> RGBDFrame:
        stamp_s, rgb_rel, depth_rel, world_from_cam = self._entries[i]
        with Image.open(self.root / rgb_rel) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        with Image.open(self.root / depth_rel) as im:
            depth = np.asarray(im, dtype=np.uint16)
        if rgb.shape[:2] != depth.shape:
            raise ValueError(f"frame {i}: rgb {rgb.shape} and depth {depth.shape} differ in size")
        return RGBDFrame(
            stamp_s=stamp_s,
            rgb=rgb,
            depth=depth,
            k=self.k.copy(),
            world_from_cam=world_from_cam.copy(),
            index=i,
        )

    def __iter__(self) -> Iterator[RGBDFrame]:
        for i in range(len(self)):
            yield self[i]


def read_rgbd_folder(
    root: str | Path, *, start: int = 0, stop: int | None = None, step: int = 1
) -> Iterator[RGBDFrame]:
    """Iterate the frames of `root` in stamp order (see `RGBDFolder`)."""
    yield from RGBDFolder(root, start=start, stop=stop, step=step)
