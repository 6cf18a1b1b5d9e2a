"""Real RGB-D data: 7-Scenes RedKitchen (../shared/data, see its README.txt).

Checks the camera model, depth decoding and pose convention against a real sensor (frame A
back-projected and re-projected into frame B agrees with B's depth), and that a static scene
seen by a moving hand-held camera gives the tracker nothing that lives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from llava4d_ros.core.geometry import (
    PinholeCamera,
    backproject,
    depth_to_metres,
    invert_se3,
    pool_patches,
    transform_points,
)
from llava4d_ros.core.objectmap import ObjectMap, ObjectMapConfig
from llava4d_ros.core.pipeline import IngestConfig, Ingestor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen"
Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to decode PNG/JPEG")
pytestmark = pytest.mark.skipif(not (DATA / "poses_T_world_camera_4x4.txt").exists(),
                                reason=f"7-Scenes RedKitchen data not found at {DATA}")


@pytest.fixture(scope="module")
def seq():
    rows = np.loadtxt(DATA / "poses_T_world_camera_4x4.txt", comments="#")
    info = yaml.safe_load((DATA / "camera_info.yaml").read_text())
    cam = PinholeCamera.from_camera_info(info["camera_matrix"]["data"], info["image_width"],
                                         info["image_height"], info["distortion_model"],
                                         info["distortion_coefficients"]["data"])
    return rows[:, 0], rows[:, 1:].reshape(-1, 4, 4), cam


def _load(stamp_s: float) -> tuple[np.ndarray, np.ndarray]:
    index = round(stamp_s * 30)  # file names keep the original 30 Hz frame index
    rgb = np.asarray(Image.open(DATA / "rgb" / f"{index:06d}.jpg").convert("RGB"))
    raw = np.asarray(Image.open(DATA / "depth" / f"{index:06d}.png"))
    assert raw.dtype in (np.uint16, np.int32), raw.dtype
    return rgb, depth_to_metres(raw.astype(np.uint16), "16UC1")


def _reprojection_error(p_world: np.ndarray, depth_b: np.ndarray, world_from_cam_b: np.ndarray,
                        cam: PinholeCamera) -> np.ndarray:
    """|z in B - B's depth at the projected pixel| for world points (N, 3), finite only."""
    p_b = transform_points(invert_se3(world_from_cam_b), p_world[np.isfinite(p_world).all(1)])
    u, v, z = cam.project(p_b)
    ui, vi = np.rint(u), np.rint(v)
    ok = (ui >= 0) & (ui < cam.width) & (vi >= 0) & (vi < cam.height)
    seen = depth_b[vi[ok].astype(int), ui[ok].astype(int)]
    err = np.abs(seen - z[ok])
    return err[np.isfinite(err)]


def test_camera_info_and_depth_decoding(seq):
    _, _, cam = seq
    assert (cam.fx, cam.cx, cam.cy, cam.width, cam.height) == (585, 320, 240, 640, 480)
    _, depth_m = _load(0.0)
    assert depth_m.shape == (480, 640) and depth_m.dtype == np.float32
    valid = np.isfinite(depth_m)
    assert 0.7 < valid.mean() < 0.95  # README: ~11% invalid per frame
    assert 0.3 < np.nanmin(depth_m) and np.nanmax(depth_m) < 10.0  # metres, not millimetres


@pytest.mark.parametrize("step", [1, 5])  # 2 and 10 original frames apart
def test_backprojection_agrees_with_another_frame(seq, step):
    stamps, poses, cam = seq
    a, b = 100, 100 + step
    _, depth_a = _load(stamps[a])
    _, depth_b = _load(stamps[b])
    p_world = transform_points(poses[a], backproject(depth_a, cam).reshape(-1, 3))
    err = _reprojection_error(p_world, depth_b, poses[b], cam)
    assert err.size > 0.5 * depth_a.size
    assert np.median(err) < 0.01, f"median {np.median(err):.4f} m"
    assert np.mean(err < 0.03) > 0.8
    if step >= 5:  # the inverse pose convention is off by decimetres: the check can fail
        wrong = _reprojection_error(transform_points(invert_se3(poses[a]),
                                                     backproject(depth_a, cam).reshape(-1, 3)),
                                    depth_b, invert_se3(poses[b]), cam)
        assert wrong.size == 0 or np.median(wrong) > 0.05
    # patch points (the 4D buffer's) land on the surface too
    pooled = pool_patches(depth_a, np.zeros((480, 640, 3), np.uint8), cam, poses[a], (24, 32))
    patch_err = _reprojection_error(pooled.xyz_world, depth_b, poses[b], cam)
    assert np.median(patch_err) < 0.01


def test_static_scene_gives_no_moving_object(seq):
    """A hand-held camera walks around a static kitchen: the object map finds objects, none of
    them moving, and their ids stay put (the same objects seen again keep theirs)."""
    stamps, poses, cam = seq
    gravity = tuple(np.loadtxt(DATA / "gravity-direction.txt"))
    ing = Ingestor(IngestConfig())
    objects = ObjectMap(ObjectMapConfig(gravity=gravity))
    keyframes = 0
    moving = set()
    for i in range(0, min(len(stamps), 300), 2):  # frames 0-299 only; 7.5 Hz
        rgb, depth_m = _load(stamps[i])
        result = ing.ingest(stamps[i], rgb, depth_m, cam, poses[i])
        assert result.status != "dropped", result
        if result.status == "keyframe":
            keyframes += 1
            events = objects.update(stamps[i], depth_m, rgb, cam, poses[i])
            moving |= {e.object_id for e in events if e.kind == "started_moving"}
            moving |= {o.object_id for o in objects.objects if o.is_dynamic}
    assert keyframes > 50
    assert len(objects.objects) >= 5
    assert not moving, f"objects {sorted(moving)} moved in a static kitchen"
