"""RGB-D folders in the 7-Scenes layout: stamps, images, intrinsics and poses as written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava4d_ros.data.rgbd_folder import RGBDFolder, nearest_rotation, read_rgbd_folder

# ../shared/data next to the repository (see docs/ARCHITECTURE.md); skipped where absent.
SEVEN_SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen"

_CAMERA_INFO = """\
image_width: 8
image_height: 6
camera_name: tiny
camera_matrix: {rows: 3, cols: 3, data: [10.0, 0.0, 3.5, 0.0, 11.0, 2.5, 0.0, 0.0, 1.0]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [0.0, 0.0, 0.0, 0.0, 0.0]}
"""


def _pose(k: int) -> np.ndarray:
    c, s = np.cos(0.1 * k), np.sin(0.1 * k)
    m = np.eye(4)
    m[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    m[:3, 3] = [0.1 * k, -0.2, 1.0]
    return m


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """Three 8x6 frames; the third has no pose and must be skipped."""
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    (tmp_path / "camera_info.yaml").write_text(_CAMERA_INFO)
    assoc, poses = ["# rgb_stamp rgb depth_stamp depth"], ["# stamp 16 values"]
    rng = np.random.default_rng(0)
    for k in range(3):
        stamp = 0.5 * k
        rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        depth = (1000 + 100 * k + np.arange(48, dtype=np.uint16).reshape(6, 8)).astype(np.uint16)
        depth[0, 0] = 0
        depth[0, 1] = 65535
        Image.fromarray(rgb).save(tmp_path / f"rgb/{k:06d}.png")
        Image.fromarray(depth).save(tmp_path / f"depth/{k:06d}.png")
        assoc.append(f"{stamp:.6f} rgb/{k:06d}.png {stamp:.6f} depth/{k:06d}.png")
        if k < 2:
            poses.append(f"{stamp:.6f} " + " ".join(f"{v:.9f}" for v in _pose(k).reshape(-1)))
    (tmp_path / "associations.txt").write_text("\n".join(assoc) + "\n")
    (tmp_path / "poses_T_world_camera_4x4.txt").write_text("\n".join(poses) + "\n")
    return tmp_path


def test_tiny_folder_round_trip(tiny_folder: Path):
    folder = RGBDFolder(tiny_folder)
    assert len(folder) == 2  # the frame without a pose is dropped
    np.testing.assert_allclose(folder.stamps_s, [0.0, 0.5])
    np.testing.assert_allclose(folder.k, [[10, 0, 3.5], [0, 11, 2.5], [0, 0, 1]])
    for k, frame in enumerate(folder):
        assert frame.rgb.shape == (6, 8, 3) and frame.rgb.dtype == np.uint8
        expected = np.asarray(Image.open(tiny_folder / f"depth/{k:06d}.png"), dtype=np.uint16)
        np.testing.assert_array_equal(frame.depth, expected)
        np.testing.assert_allclose(frame.world_from_cam, _pose(k), atol=1e-8)
        assert np.isnan(frame.depth_m[0, 0]) and np.isnan(frame.depth_m[0, 1])
        assert frame.depth_m[1, 0] == pytest.approx((1000 + 100 * k + 8) / 1000.0)


def test_missing_lists_raise(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        RGBDFolder(tmp_path)


def test_nearest_rotation_is_orthonormal():
    rng = np.random.default_rng(1)
    r = _pose(3)[:3, :3] + 1e-4 * rng.standard_normal((3, 3))
    q = nearest_rotation(r)
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-12)
    assert np.linalg.det(q) == pytest.approx(1.0)
    np.testing.assert_allclose(q, r, atol=5e-4)


@pytest.mark.skipif(not SEVEN_SCENES.is_dir(), reason="7-Scenes sample data not present")
def test_seven_scenes_frames():
    frames = list(read_rgbd_folder(SEVEN_SCENES, stop=30, step=10))
    assert [round(f.stamp_s, 6) for f in frames] == [0.0, 0.666667, 1.333333]
    lines = (SEVEN_SCENES / "poses_T_world_camera_4x4.txt").read_text().splitlines()
    raw = np.array([[float(v) for v in ln.split()] for ln in lines if not ln.startswith("#")])
    for f, row in zip(frames, raw[:30:10], strict=True):
        assert f.rgb.shape == (480, 640, 3) and f.depth.shape == (480, 640)
        assert f.depth.dtype == np.uint16
        np.testing.assert_allclose(f.k, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
        np.testing.assert_allclose(f.world_from_cam, row[1:].reshape(4, 4), atol=1e-3)
        r = f.world_from_cam[:3, :3]
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
        valid = f.depth_m[np.isfinite(f.depth_m)]
        assert 0.3 < np.median(valid) < 5.0  # a kitchen seen from a hand-held Kinect
