"""Synthetic scenes: the renderer agrees with the analytic geometry it is generated from."""

from __future__ import annotations

import numpy as np
import pytest

from llava4d_ros.core.geometry import backproject, transform_points
from llava4d_ros.data.palette import PALETTE, colour_name
from llava4d_ros.data.scene import (
    CameraWaypoint,
    ObjectSpec,
    SceneSpec,
    default_camera,
    frames,
    make_scene,
    render,
    scene_from_dict,
    scene_to_dict,
    visible_object_ids,
)


def _backproject_world(frame, cam) -> np.ndarray:
    """p_world (H, W, 3) of every pixel, through the core's back-projection."""
    return transform_points(frame.world_from_cam, backproject(frame.depth_m, cam))


def _one_object_scene(obj: ObjectSpec, eye, target, width=160, height=120) -> SceneSpec:
    return SceneSpec(
        seed=0,
        objects=(obj,),
        room_size=(6.0, 5.0, 2.8),
        camera_waypoints=(CameraWaypoint(0.0, eye, target),),
        cam=default_camera(width, height),
    )


def test_floor_depth_is_the_analytic_ray_plane_distance():
    # Looking away from the cabinet (at +x), so every floor ray sees bare floor.
    scene = SceneSpec(
        seed=0,
        objects=(),
        room_size=(6.0, 5.0, 2.8),
        camera_waypoints=(CameraWaypoint(0.0, (1.5, 0.0, 1.5), (-1.0, 0.5, 0.0)),),
        cam=default_camera(160, 120),
    )
    frame = render(scene, 0.0)
    cam = scene.cam
    v, u = np.mgrid[0:120, 0:160].astype(np.float64)
    ray_cam = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], -1)
    ray_world = ray_cam @ frame.world_from_cam[:3, :3].T
    t_floor = -1.5 / ray_world[..., 2]  # z-depth, since ray_cam has unit z
    hit = np.array([1.5, 0.0, 1.5]) + t_floor[..., None] * ray_world
    on_floor = (t_floor > 0) & (np.abs(hit[..., 0]) < 2.95) & (np.abs(hit[..., 1]) < 2.45)
    assert on_floor.sum() > 5000
    np.testing.assert_allclose(frame.depth_m[on_floor], t_floor[on_floor], rtol=1e-6)
    assert np.all(frame.instance == -1)


def test_straight_down_camera_sees_the_floor_at_its_height():
    scene = SceneSpec(
        seed=0,
        objects=(),
        room_size=(6.0, 5.0, 2.8),
        camera_waypoints=(CameraWaypoint(0.0, (0.0, 0.0, 2.0), (0.0, 0.0, 0.0)),),
        cam=default_camera(80, 60),
    )
    frame = render(scene, 0.0)
    np.testing.assert_allclose(frame.depth_m, 2.0, rtol=1e-6)  # z-depth, not ray length


@pytest.mark.parametrize("shape", ["cube", "sphere", "cylinder"])
def test_object_pixels_lie_on_the_primitive_surface(shape):
    size = (0.4, 0.4, 0.5) if shape == "cylinder" else (0.4, 0.4, 0.4)
    centre = np.array([0.3, -0.2, size[2] / 2])
    obj = ObjectSpec(0, "red", shape, size, ((0.0, tuple(centre)),))
    scene = _one_object_scene(obj, (-1.5, -1.0, 1.4), (0.3, -0.2, 0.2))
    frame = render(scene, 0.0)
    mask = frame.instance == 0
    assert mask.sum() > 300
    p = _backproject_world(frame, scene.cam)[mask] - centre  # (N, 3) relative to the centre
    half = np.asarray(size) / 2
    if shape == "sphere":
        np.testing.assert_allclose(np.linalg.norm(p, axis=1), half[0], atol=2e-4)
    elif shape == "cube":
        np.testing.assert_allclose(np.abs(p / half).max(axis=1), 1.0, atol=1e-3)
    else:
        radial = np.linalg.norm(p[:, :2], axis=1) / half[0]
        on_side = np.abs(radial - 1.0) < 1e-3
        on_cap = np.abs(np.abs(p[:, 2]) - half[2]) < 1e-3
        assert np.all(on_side | on_cap)
        assert np.all(radial <= 1.0 + 1e-3) and np.all(np.abs(p[:, 2]) <= half[2] + 1e-3)


def test_instance_pixels_back_project_into_the_box_at_that_time():
    scene = make_scene(11, width=160, height=120, n_objects=5, n_moving=3)
    for t_s in (0.0, 2.3, 4.7, 7.9):
        frame = render(scene, t_s)
        p_world = _backproject_world(frame, scene.cam)
        seen = visible_object_ids(frame)
        assert len(seen) >= 3
        for oid in seen:
            box = np.asarray(scene.object_by_id(oid).box_at(t_s))
            q = p_world[frame.instance == oid]
            assert np.all(np.abs(q - box[:3]) <= box[3:] / 2 + 2e-3), (oid, t_s)


def test_objects_stay_mostly_in_view():
    for seed in range(0, 60, 6):
        scene = make_scene(seed, width=160, height=120)
        seen = {o.object_id: 0 for o in scene.objects}
        times = scene.frame_times_s[::10]
        for t_s in times:
            for oid in visible_object_ids(render(scene, float(t_s)), min_pixels=10):
                seen[oid] += 1
        assert min(seen.values()) >= 0.75 * len(times), (seed, seen)


def test_colours_render_as_their_palette_names_and_background_is_gray():
    scene = make_scene(5, width=160, height=120)
    frame = render(scene, 3.0)
    for oid in visible_object_ids(frame, min_pixels=50):
        rgb = frame.rgb[frame.instance == oid].astype(np.float64)
        assert colour_name(np.median(rgb, axis=0)) == scene.object_by_id(oid).colour
    bg = frame.rgb[frame.instance == -1].astype(np.float64)
    saturation = (bg.max(axis=1) - bg.min(axis=1)) / np.maximum(bg.max(axis=1), 1.0)
    assert saturation.max() < 0.4  # palette colours are all above 0.6


def test_make_scene_is_deterministic_by_seed():
    a, b = make_scene(42), make_scene(42)
    assert a == b
    assert make_scene(43) != a
    fa, fb = render(a, 3.3), render(b, 3.3)
    np.testing.assert_array_equal(fa.rgb, fb.rgb)
    np.testing.assert_array_equal(fa.depth_m, fb.depth_m)
    np.testing.assert_array_equal(fa.instance, fb.instance)


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_scene_invariants(seed):
    scene = make_scene(seed)
    colours = [o.colour for o in scene.objects]
    assert len(set(colours)) == len(colours) and set(colours) <= set(PALETTE)
    assert any(o.is_dynamic for o in scene.objects)
    times = np.arange(0.0, scene.duration_s + 1e-9, 0.02)
    lx, ly, _ = scene.room_size
    for o in scene.objects:
        c = o.centers_at(times)
        np.testing.assert_allclose(c[:, 2], o.size_xyz[2] / 2)  # resting on the floor
        assert np.all(np.abs(c[:, 0]) + o.size_xyz[0] / 2 < lx / 2)
        assert np.all(np.abs(c[:, 1]) + o.size_xyz[1] / 2 < ly / 2)
    for i, a in enumerate(scene.objects):  # footprint circles never overlap
        for b in scene.objects[i + 1 :]:
            gap = np.hypot(*a.size_xyz[:2]) / 2 + np.hypot(*b.size_xyz[:2]) / 2
            dist = np.linalg.norm(a.centers_at(times)[:, :2] - b.centers_at(times)[:, :2], axis=1)
            assert dist.min() > gap


@pytest.mark.parametrize("seed", range(8))
def test_start_moving_s_matches_the_waypoints(seed):
    for o in make_scene(seed).objects:
        pts = [np.array(p) for _, p in o.waypoints]
        first_change = next(
            (o.waypoints[i][0] for i in range(len(pts) - 1) if np.any(pts[i + 1] != pts[i])), None
        )
        assert o.start_moving_s == first_change
        if first_change is None:
            assert not o.is_moving_at(1.0)
            continue
        assert not o.is_moving_at(first_change - 0.05)
        assert o.is_moving_at(first_change + 0.05)
        np.testing.assert_array_equal(o.center_at(first_change - 0.3), pts[0])
        assert np.linalg.norm(o.center_at(first_change + 0.3) - pts[0]) > 0.05


def test_pause_and_turn_are_followed():
    obj = ObjectSpec(
        0,
        "blue",
        "cube",
        (0.3, 0.3, 0.3),
        ((1.0, (0.0, 0.0, 0.15)), (2.0, (1.0, 0.0, 0.15)), (3.0, (1.0, 0.0, 0.15)),
         (4.0, (1.0, 0.5, 0.15))),
    )  # fmt: skip
    np.testing.assert_allclose(obj.center_at(1.5), [0.5, 0.0, 0.15])
    np.testing.assert_allclose(obj.velocity_at(1.5), [1.0, 0.0, 0.0])
    assert not obj.is_moving_at(2.5) and obj.is_moving_at(3.5)
    np.testing.assert_allclose(obj.velocity_at(3.5), [0.0, 0.5, 0.0])
    assert obj.start_moving_s == 1.0 and obj.stop_moving_s == 4.0
    assert obj.box_at(9.0) == [1.0, 0.5, 0.15, 0.3, 0.3, 0.3]


def test_camera_looks_at_its_target_and_static_camera_does_not_move():
    scene = make_scene(2)
    w = scene.camera_waypoints[1]
    world_from_cam = scene.world_from_cam_at(w.t_s)
    np.testing.assert_allclose(world_from_cam[:3, 3], w.eye_world, atol=1e-9)
    forward = np.subtract(w.target_world, w.eye_world)
    np.testing.assert_allclose(world_from_cam[:3, 2], forward / np.linalg.norm(forward))
    r = world_from_cam[:3, :3]
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) > 0 and r[2, 1] < 0  # camera y (down) points down in the world
    static = make_scene(2, camera_motion="static")
    np.testing.assert_array_equal(static.world_from_cam_at(0.0), static.world_from_cam_at(5.0))


def test_frames_cover_the_duration_at_fps():
    scene = make_scene(1, width=32, height=24, fps=5.0, duration_s=1.0)
    stamps = [f.stamp_s for f in frames(scene)]
    np.testing.assert_allclose(stamps, [0.0, 0.2, 0.4, 0.6, 0.8])
    f = render(scene, 0.0)
    assert f.rgb.shape == (24, 32, 3) and f.rgb.dtype == np.uint8
    assert f.depth_m.dtype == np.float32 and f.instance.dtype == np.int16


def test_scene_dict_round_trip():
    scene = make_scene(9)
    assert scene_from_dict(scene_to_dict(scene)) == scene


def test_invalid_specs_are_rejected():
    wp = ((0.0, (0.0, 0.0, 0.15)),)
    with pytest.raises(ValueError):
        ObjectSpec(0, "brown", "cube", (0.3, 0.3, 0.3), wp)
    with pytest.raises(ValueError):
        ObjectSpec(0, "red", "cone", (0.3, 0.3, 0.3), wp)
    with pytest.raises(ValueError):
        ObjectSpec(0, "red", "cube", (0.3, 0.3, 0.3), ((1.0, (0, 0, 0)), (1.0, (1, 0, 0))))
    obj = ObjectSpec(0, "red", "cube", (0.3, 0.3, 0.3), wp)
    with pytest.raises(ValueError, match="colours"):
        SceneSpec(
            0,
            (obj, ObjectSpec(1, "red", "sphere", (0.3, 0.3, 0.3), wp)),
            (6.0, 5.0, 2.8),
            (CameraWaypoint(0.0, (0, 0, 2), (1, 0, 0)),),
            default_camera(),
        )


def test_clutter_is_background_that_is_no_palette_object():
    from llava4d_ros.data.palette import describe_colour
    from llava4d_ros.data.scene import scene_from_dict, scene_to_dict

    plain, cluttered = make_scene(3), make_scene(3, n_clutter=4)
    assert plain.clutter == () and len(cluttered.clutter) == 4
    # the objects, their paths and the camera are those of the scene without clutter
    assert cluttered.objects == plain.objects
    assert cluttered.camera_waypoints == plain.camera_waypoints
    assert scene_from_dict(scene_to_dict(cluttered)) == cluttered
    times = np.arange(0.0, plain.duration_s, 0.1)
    for c in cluttered.clutter:
        assert describe_colour(c.rgb) not in PALETTE
        lo, hi = np.array(c.bounds[:2]), np.array(c.bounds[3:5])
        for o in plain.objects:
            xy = o.centers_at(times)[:, :2]
            inside = np.all((xy > lo - o.size_xyz[0] / 2) & (xy < hi + o.size_xyz[0] / 2), axis=1)
            assert not inside.any(), "clutter in an object's path"
    seen = False
    for t in (0.0, 4.0, 7.9):
        a, b = render(plain, t), render(cluttered, t)
        changed = a.depth_m != b.depth_m
        seen |= bool(changed.any())
        assert np.all(b.instance[changed] == -1)  # clutter is background
        assert np.all(b.depth_m[changed] < a.depth_m[changed])  # in front of what was there
    assert seen
