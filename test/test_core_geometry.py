"""Camera model, depth decoding, back-projection, SE(3) helpers and patch pooling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from llava4d_ros.core.geometry import (
    PinholeCamera,
    UnsupportedCameraError,
    UnsupportedEncodingError,
    backproject,
    depth_to_metres,
    interpolate_pose,
    invert_se3,
    majority_label,
    plane_rms,
    pool_patches,
    quat_from_matrix,
    se3,
    transform_points,
)

CAM = PinholeCamera(fx=300.0, fy=310.0, cx=159.5, cy=119.5, width=320, height=240)


def test_from_camera_info_reads_k_and_refuses_distortion():
    k = [585.0, 0, 320.0, 0, 585.0, 240.0, 0, 0, 1]
    cam = PinholeCamera.from_camera_info(k, 640, 480, "plumb_bob", [0.0] * 5)
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == (585, 585, 320, 240, 640,
                                                                       480)
    with pytest.raises(UnsupportedCameraError, match="non-zero D"):
        PinholeCamera.from_camera_info(k, 640, 480, "plumb_bob", [0.1, 0, 0, 0, 0])
    with pytest.raises(UnsupportedCameraError):
        PinholeCamera.from_camera_info([0.0] * 9, 640, 480, "plumb_bob", [])


def test_depth_to_metres_marks_invalid_values():
    mm = np.array([[0, 1000, 65535, 2500]], np.uint16)
    out = depth_to_metres(mm, "16UC1")
    assert out.dtype == np.float32
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 2])
    np.testing.assert_allclose(out[0, [1, 3]], [1.0, 2.5])
    m = np.array([[0.0, np.nan, np.inf, -1.0, 1.5]], np.float32)
    out = depth_to_metres(m, "32FC1")
    assert np.isnan(out[0, :4]).all() and out[0, 4] == np.float32(1.5)
    with pytest.raises(UnsupportedEncodingError):
        depth_to_metres(mm, "rgb8")


def _plane_depth(cam: PinholeCamera, n_cam: np.ndarray, d: float) -> np.ndarray:
    """z-depth (H, W) of the plane n . p = d seen by `cam` (ray cast, NaN where missed)."""
    u, v = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u, float)], -1)
    with np.errstate(divide="ignore"):
        z = d / (rays @ n_cam)
    return np.where(z > 0, z, np.nan).astype(np.float32)


def test_backprojected_points_land_on_the_true_plane_in_world():
    n_cam = np.array([0.2, -0.3, 1.0]) / np.linalg.norm([0.2, -0.3, 1.0])
    depth_m = _plane_depth(CAM, n_cam, 2.0)
    p_cam = backproject(depth_m, CAM)
    assert p_cam.shape == (240, 320, 3)
    np.testing.assert_allclose(p_cam.reshape(-1, 3) @ n_cam, 2.0, atol=1e-5)
    # the principal-point pixel lies on the optical axis
    assert abs(p_cam[119, 159, 0] + 0.5 * depth_m[119, 159] / CAM.fx) < 1e-5
    world_from_cam = se3([1.0, 2.0, 0.5], Rotation.from_euler("xyz", [0.3, -0.2, 1.0]).as_quat())
    p_world = transform_points(world_from_cam, p_cam)
    n_world = world_from_cam[:3, :3] @ n_cam
    d_world = 2.0 + n_world @ world_from_cam[:3, 3]
    np.testing.assert_allclose(p_world.reshape(-1, 3) @ n_world, d_world, atol=1e-4)
    # projecting back gives the pixel grid
    u, v, _ = CAM.project(p_cam)
    np.testing.assert_allclose(u[10, 20], 20.0, atol=1e-3)
    np.testing.assert_allclose(v[10, 20], 10.0, atol=1e-3)


def test_backproject_keeps_nan_and_checks_shape():
    depth_m = np.full((240, 320), np.nan, np.float32)
    depth_m[5, 7] = 1.0
    p = backproject(depth_m, CAM)
    assert np.isnan(p[0, 0]).all() and np.isfinite(p[5, 7]).all()
    with pytest.raises(ValueError):
        backproject(np.ones((10, 10), np.float32), CAM)


def test_se3_quaternion_round_trip_and_inverse():
    q = Rotation.from_euler("zyx", [0.4, 0.1, -0.7]).as_quat()
    t = np.array([0.5, -1.0, 2.0])
    b_from_a = se3(t, 3.0 * q)  # unnormalised input is normalised
    q_back = quat_from_matrix(b_from_a)
    assert min(np.abs(q_back - q).max(), np.abs(q_back + q).max()) < 1e-9
    np.testing.assert_allclose(invert_se3(b_from_a) @ b_from_a, np.eye(4), atol=1e-12)
    with pytest.raises(ValueError):
        se3(t, [0, 0, 0, 0])


def test_interpolate_pose_is_slerp_and_lerp():
    p0 = se3([0, 0, 0], Rotation.from_euler("z", 0.0).as_quat())
    p1 = se3([2, 0, 0], Rotation.from_euler("z", 1.0).as_quat())
    mid = interpolate_pose(p0, p1, 0.25)
    np.testing.assert_allclose(mid[:3, 3], [0.5, 0, 0])
    np.testing.assert_allclose(Rotation.from_matrix(mid[:3, :3]).as_euler("xyz")[2], 0.25,
                               atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(p0, p1, 1.0), p1, atol=1e-12)


def test_pool_patches_plane_and_colour_and_labels():
    n_cam = np.array([0.0, 0.0, 1.0])
    depth_m = _plane_depth(CAM, n_cam, 3.0)
    depth_m[:, :40] = np.nan  # first 4 patch columns (10 px each) have no depth
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:, 160:] = (200, 10, 10)
    labels = np.full((240, 320), 4, np.int64)
    labels[:120] = 7
    world_from_cam = se3([0, 0, 1.0], [0, 0, 0, 1])
    pooled = pool_patches(depth_m, rgb, CAM, world_from_cam, (24, 32), labels=labels)
    assert pooled.xyz_world.shape == (768, 3) and pooled.rgb.shape == (768, 3)
    grid_xyz = pooled.xyz_world.reshape(24, 32, 3)
    assert np.isnan(grid_xyz[:, :4]).all()
    np.testing.assert_allclose(grid_xyz[:, 4:, 2], 4.0, atol=1e-5)  # z_world = 1 + 3
    np.testing.assert_allclose(pooled.depth_m.reshape(24, 32)[:, 4:], 3.0, atol=1e-5)
    # each patch point lies inside its own patch's pixel footprint
    u, _, _ = CAM.project(pooled.xyz_cam.reshape(24, 32, 3)[:, 4:])
    cols = np.arange(4, 32)[None, :]
    assert np.all((u >= cols * 10) & (u < cols * 10 + 10))
    assert np.all(pooled.rgb.reshape(24, 32, 3)[:, 16:] == [200, 10, 10])
    lab = pooled.labels.reshape(24, 32)
    assert (lab[:12, 4:] == 7).all() and (lab[12:, 4:] == 4).all() and (lab[:, :4] == -1).all()


def test_pool_patches_median_ignores_outliers_and_min_valid():
    depth_m = np.full((240, 320), 2.0, np.float32)
    depth_m[::10, ::10] = 9.0  # sparse outliers
    depth_m[:10, :10] = np.nan
    depth_m[4, 4] = 2.0  # one valid sample in the first patch
    pooled = pool_patches(depth_m, np.zeros((240, 320, 3), np.uint8), CAM, np.eye(4), (24, 32))
    assert np.isnan(pooled.depth_m[0])
    np.testing.assert_allclose(pooled.depth_m[1:], 2.0)


def test_majority_label_ties_to_smallest():
    labels = np.array([[3, 1, 3, 1], [5, 5, 2, 2], [9, 9, 9, 9]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    assert majority_label(labels, mask).tolist() == [1, 2, -1]


@pytest.mark.parametrize("fx,fy,cx,cy,match", [
    (1e-300, 300.0, 159.5, 119.5, "field of view"),
    (300.0, 2.0, 159.5, 119.5, "field of view"),
    (300.0, 300.0, 1e6, 119.5, "principal point"),
    (300.0, 300.0, 159.5, -500.0, "principal point"),
    (float("nan"), 300.0, 159.5, 119.5, "finite"),
])
def test_physically_absurd_intrinsics_are_refused(fx, fy, cx, cy, match):
    with pytest.raises(UnsupportedCameraError, match=match):
        PinholeCamera(fx=fx, fy=fy, cx=cx, cy=cy, width=320, height=240)
    PinholeCamera(fx=20.0, fy=20.0, cx=-100.0, cy=300.0, width=320, height=240)  # odd, real


def test_plane_rms_is_zero_on_a_plane_and_the_sagitta_on_a_cylinder():
    rng = np.random.default_rng(0)
    uv = rng.uniform(-0.05, 0.05, (25, 2))
    tilt = Rotation.from_euler("xyz", [0.3, -0.5, 0.2]).as_matrix()
    plane = np.c_[uv, np.zeros(25)] @ tilt.T + [0.2, -0.1, 2.5]
    # a 10 cm wide strip of a cylinder of radius 0.15 m, the side of a rendered cylinder
    ang = rng.uniform(-0.05 / 0.15, 0.05 / 0.15, 25)
    arc = np.c_[0.15 * np.sin(ang), rng.uniform(-0.05, 0.05, 25), 0.15 * np.cos(ang)]
    valid = np.ones((3, 25), bool)
    valid[2, 2:] = False  # two valid points define no plane
    pts = np.stack([plane, arc, plane])
    pts[0, 5] = np.nan  # an invalid sample is left out, not read as a point
    valid[0, 5] = False
    rms = plane_rms(pts, valid)
    assert rms[0] < 1e-6 and rms[2] == 0.0
    # the points of a shallow arc lie within its sagitta (~8 mm here) of their plane
    assert 0.001 < rms[1] < 0.15 * (1 - np.cos(0.05 / 0.15))


def test_pooled_patches_of_a_rendered_cube_are_flat_and_of_a_cylinder_are_not():
    from llava4d_ros.data.scene import make_scene, render

    flat = {"cube": [], "cylinder": []}
    for seed in range(3):
        scene = make_scene(seed)
        shapes = {o.object_id: o.shape for o in scene.objects}
        f = render(scene, float(scene.frame_times_s[0]))
        pp = pool_patches(f.depth_m, f.rgb, scene.cam, f.world_from_cam, (24, 32),
                          labels=f.instance)
        for label, rms in zip(pp.labels, pp.plane_rms_m):
            if label >= 0 and shapes[label] in flat and np.isfinite(rms):
                flat[shapes[label]].append(rms <= 0.001)
    assert min(len(v) for v in flat.values()) > 20
    # a patch on a cube's edge is not flat either; on a cylinder only its top is
    assert np.mean(flat["cube"]) > 0.25 > 0.15 > np.mean(flat["cylinder"])
