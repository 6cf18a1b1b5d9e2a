"""Feed a synthetic scene into an Engine the way the node does (parsed images + TF records)."""

from __future__ import annotations

from llava4d_ros.core.geometry import quat_from_matrix
from llava4d_ros.data.bagtools import LINK_FROM_OPTICAL, world_from_link
from llava4d_ros.data.scene import frames

NS = 1_000_000_000
EPOCH_S = 1_700_000_000
OPTICAL = "camera_color_optical_frame"


def stamp_ns(t_s: float, epoch_s: float = EPOCH_S) -> int:
    return int(round((epoch_s + t_s) * NS))


def static_tf(engine) -> None:
    engine.add_transform("camera_link", OPTICAL, 0, LINK_FROM_OPTICAL[:3, 3],
                         quat_from_matrix(LINK_FROM_OPTICAL), True)


def pose_tf(engine, frame, t_ns: int) -> None:
    """map -> camera_link at t_ns, so that map -> optical is the frame's world_from_cam."""
    w = world_from_link(frame.world_from_cam)
    engine.add_transform("map", "camera_link", t_ns, w[:3, 3], quat_from_matrix(w), False)


def feed_frame(engine, frame, cam, t_ns: int, with_tf: bool = True, ingest: bool = True):
    """TF first (as a robot's localisation would), then info, depth, rgb. Returns outcomes.
    `ingest=False`: only queue the matched frame, as the node's callbacks do."""
    out = []
    if with_tf:
        pose_tf(engine, frame, t_ns)
        if ingest:
            out += engine.process_pending()
    out += engine.add_image("info", t_ns, cam, ingest=ingest)
    out += engine.add_image("depth", t_ns, frame.depth_m, ingest=ingest)
    out += engine.add_image("rgb", t_ns, (OPTICAL, frame.rgb), ingest=ingest)
    return out


def feed_scene(engine, scene, epoch_s: float = EPOCH_S, with_tf: bool = True):
    """All frames of `scene`, stamped epoch_s + t. Returns every outcome."""
    static_tf(engine)
    outcomes = []
    for f in frames(scene):
        outcomes += feed_frame(engine, f, scene.cam, stamp_ns(f.stamp_s, epoch_s), with_tf)
    return outcomes
