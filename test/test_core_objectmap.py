"""The object map (core/objectmap.py) on synthetic scenes with exact truth: objects found,
ids that persist while the camera moves, while an object is out of view and while it starts
and stops moving; a place seen empty takes its object away."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from llava4d_ros.core.objectmap import ObjectMap, ObjectMapConfig
from llava4d_ros.core.surfaces import g_from_world
from llava4d_ros.core.voxels import voxel_centres, voxel_keys
from llava4d_ros.data.scene import (
    CameraWaypoint,
    ObjectSpec,
    SceneSpec,
    default_camera,
    make_scene,
    render,
)


def run(scene: SceneSpec, om: ObjectMap | None = None, every_s: float = 0.2,
        until_s: float | None = None):
    """Feed the scene's frames every `every_s`; yields (t, events, objects) per update."""
    om = om or ObjectMap()
    for t in np.arange(0.0, until_s or scene.duration_s, every_s):
        f = render(scene, float(t))
        events = om.update(float(t), f.depth_m, f.rgb, scene.cam, f.world_from_cam)
        yield float(t), events, om.objects


def nearest(objects, point, within=0.2):
    d = [np.linalg.norm(o.center - point) for o in objects]
    if not d or min(d) > within:
        return None
    return objects[int(np.argmin(d))]


def test_gravity_frame_and_voxel_keys():
    assert np.allclose(g_from_world((0, 0, -1)), np.eye(3))
    g = g_from_world((0.0, 0.9, 0.43))  # a camera-like world: y points down
    assert np.allclose(g @ np.array([0.0, -0.9, -0.43]) / np.linalg.norm([0.9, 0.43]),
                       [0, 0, 1])
    p = np.array([[0.01, -0.02, 1.5], [-3.3, 2.2, 0.0]])
    assert np.allclose(voxel_centres(voxel_keys(p, 0.03), 0.03), np.floor(p / 0.03) * 0.03
                       + 0.015)
    with pytest.raises(ValueError, match="gravity"):
        ObjectMapConfig(gravity=(0.0, 0.0, 0.0))


def test_static_and_moving_objects_keep_their_ids():
    """Val scene 3: the blue cube stands until 3.6 s, moves, pauses, moves and stops at 6.5 s;
    every object is found once; the cube keeps one id from still to moving to still, and is
    reported moving while it moves."""
    scene = make_scene(3)
    cube = next(o for o in scene.objects if o.colour == "blue")
    ids, moving_seen, still_after = set(), False, False
    for t, _, objs in run(scene):
        o = nearest(objs, cube.center_at(t))
        if o is None:
            continue
        ids.add(o.object_id)
        if 4.2 <= t <= 4.6:
            moving_seen |= o.is_dynamic
        if t >= 7.6:
            still_after = not o.is_dynamic
    assert len(ids) == 1, ids
    assert moving_seen and still_after
    found = [nearest(objs, o.center_at(t)) for o in scene.objects]
    assert all(found), [o.label for o, f in zip(scene.objects, found) if f is None]
    assert len({f.object_id for f in found}) == len(scene.objects)
    assert len(objs) == len(scene.objects)  # no phantom
    cube_now = nearest(objs, cube.center_at(t))
    assert cube_now.colour == "blue" and cube_now.support == "floor"


def _look(t_s: float, eye, target) -> CameraWaypoint:
    return CameraWaypoint(t_s, tuple(eye), tuple(target))


def test_a_still_object_keeps_its_id_out_of_view_and_leaves_when_its_place_is_empty():
    """The camera looks at two still objects, turns away to a bare wall and back: both keep
    their ids while out of view. Then one is taken away while the camera looks: its place is
    seen empty, it leaves the map with a `disappeared` event; the other stays."""
    red = ObjectSpec(0, "red", "cube", (0.4, 0.4, 0.4), ((0.0, (0.8, -0.5, 0.2)),))
    green = ObjectSpec(1, "green", "cylinder", (0.3, 0.3, 0.45), ((0.0, (0.8, 0.6, 0.225)),))
    eye = (-1.5, 0.0, 1.6)
    cams = (_look(0.0, eye, (0.8, 0.0, 0.2)), _look(2.0, eye, (0.8, 0.0, 0.2)),
            _look(3.5, eye, (-1.0, -2.5, 1.0)), _look(5.5, eye, (-1.0, -2.5, 1.0)),
            _look(7.0, eye, (0.8, 0.0, 0.2)), _look(9.0, eye, (0.8, 0.0, 0.2)))
    scene = SceneSpec(0, (red, green), (6.0, 5.0, 2.8), cams, default_camera(), fps=10.0,
                      duration_s=9.0)
    om = ObjectMap()
    before, events = {}, []
    for t, ev, objs in run(scene, om):
        events += ev
        if t < 2.0:
            before = {c: nearest(objs, o.center_at(t)) for c, o in (("red", red),
                                                                   ("green", green))}
        if 4.4 <= t <= 4.6:
            away = {o.object_id: o for o in objs}
            assert {b.object_id for b in before.values()} <= set(away)
            assert not any(o.in_view for o in away.values())
    after = {c: nearest(objs, o.center_at(t)) for c, o in (("red", red), ("green", green))}
    assert {c: o.object_id for c, o in after.items()} == {c: o.object_id
                                                        for c, o in before.items()}
    assert any(e.kind == "left_view" and e.object_id == before["red"].object_id
               for e in events)
    # the red cube is taken away while the camera looks at its place
    emptied = replace(scene, objects=(green,))
    gone = []
    for t in np.arange(9.0, 10.6, 0.2):
        f = render(emptied, 8.9)
        gone += om.update(float(t), f.depth_m, f.rgb, scene.cam, f.world_from_cam)
    assert [e.kind for e in gone if e.object_id == before["red"].object_id] == ["disappeared"]
    assert [o.object_id for o in om.objects] == [before["green"].object_id]


def test_a_thin_slab_and_a_reset():
    """A large thin board standing on the floor is structure, not an object; reset forgets
    the map and ids go on counting."""
    scene = make_scene(5)
    om = ObjectMap()
    for _ in run(scene, om, until_s=1.0):
        pass
    n = om.next_id
    assert n > 1
    om.reset()
    assert om.objects == [] and om.next_id == n
    om.continue_ids(500)
    for _, _, objs in run(scene, om, until_s=1.0):
        pass
    assert min(o.object_id for o in objs) >= 500
