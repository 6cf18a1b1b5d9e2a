"""rosbag2 files written by bagtools read back with rosbags: counts, types, stamps, TF chain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from llava4d_ros.data.bagtools import (
    BODY_FRAME,
    LINK_FROM_OPTICAL,
    OPTICAL_FRAME,
    TOPIC_DEPTH,
    TOPIC_INFO,
    TOPIC_RGB,
    TOPIC_TF,
    TOPIC_TF_STATIC,
    depth_m_to_mm,
    main,
    stamp_ns,
    write_scene_bag,
)
from llava4d_ros.data.scene import make_scene, render, scene_from_dict

SEVEN_SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen"
EPOCH_S = 1_700_000_000.0


def _matrix(transform) -> np.ndarray:
    m = np.eye(4)
    q = transform.rotation
    m[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    m[:3, 3] = [transform.translation.x, transform.translation.y, transform.translation.z]
    return m


def _read(path: Path) -> dict[str, list[tuple[int, object]]]:
    typestore = get_typestore(Stores.ROS2_KILTED)
    out: dict[str, list[tuple[int, object]]] = {}
    with Reader(path) as reader:
        for conn, t_ns, raw in reader.messages():
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append((t_ns, msg))
            assert (
                conn.msgtype
                == {
                    TOPIC_RGB: "sensor_msgs/msg/Image",
                    TOPIC_DEPTH: "sensor_msgs/msg/Image",
                    TOPIC_INFO: "sensor_msgs/msg/CameraInfo",
                    TOPIC_TF: "tf2_msgs/msg/TFMessage",
                    TOPIC_TF_STATIC: "tf2_msgs/msg/TFMessage",
                }[conn.topic]
            )
    return out


def _stamp(msg_header) -> int:
    return msg_header.stamp.sec * 10**9 + msg_header.stamp.nanosec


def test_optical_rotation_is_the_rep103_quaternion():
    q = Rotation.from_matrix(LINK_FROM_OPTICAL[:3, :3]).as_quat()
    q *= np.sign(q[3])
    np.testing.assert_allclose(q, [-0.5, 0.5, -0.5, 0.5], atol=1e-12)


def test_stamp_ns_keeps_nanoseconds_at_epoch_scale():
    assert stamp_ns(EPOCH_S, 0.1) == 1_700_000_000_100_000_000
    assert stamp_ns(1_700_000_000.25, 0.000000001) == 1_700_000_000_250_000_001


def test_depth_to_mm_marks_invalid_as_zero_and_keeps_tiny_valid_depth():
    mm = depth_m_to_mm(np.array([[1.2344, np.nan, -1.0, 70.0, 0.0004, 0.0]], dtype=np.float32))
    np.testing.assert_array_equal(mm, [[1234, 0, 0, 0, 1, 0]])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_scene_bag_round_trip(tmp_path: Path, storage: str):
    scene = make_scene(5, width=64, height=48, fps=10.0, duration_s=0.5)
    bag = tmp_path / f"scene_{storage}"
    summary = write_scene_bag(bag, scene, storage=storage, epoch_s=EPOCH_S)
    assert summary.n_frames == 5
    msgs = _read(bag)
    counts = {topic: len(v) for topic, v in msgs.items()}
    assert counts == {TOPIC_RGB: 5, TOPIC_DEPTH: 5, TOPIC_INFO: 5, TOPIC_TF: 5, TOPIC_TF_STATIC: 1}

    expected_stamps = [stamp_ns(EPOCH_S, t) for t in scene.frame_times_s]
    (_, static_msg), = msgs[TOPIC_TF_STATIC]  # fmt: skip
    (static,) = static_msg.transforms
    assert (static.header.frame_id, static.child_frame_id) == (BODY_FRAME, OPTICAL_FRAME)
    link_from_optical = _matrix(static.transform)

    for k, t_s in enumerate(scene.frame_times_s):
        truth = render(scene, float(t_s))
        for topic in (TOPIC_RGB, TOPIC_DEPTH, TOPIC_INFO, TOPIC_TF):
            log_ns, msg = msgs[topic][k]
            header = msg.transforms[0].header if topic == TOPIC_TF else msg.header
            assert log_ns == _stamp(header) == expected_stamps[k]
        rgb, depth, info = msgs[TOPIC_RGB][k][1], msgs[TOPIC_DEPTH][k][1], msgs[TOPIC_INFO][k][1]
        assert rgb.header.frame_id == depth.header.frame_id == info.header.frame_id
        assert rgb.header.frame_id == OPTICAL_FRAME
        assert (rgb.encoding, depth.encoding) == ("rgb8", "16UC1")
        assert (rgb.width, rgb.height, rgb.step) == (64, 48, 64 * 3)
        np.testing.assert_array_equal(rgb.data.reshape(48, 64, 3), truth.rgb)
        depth_mm = depth.data.view("<u2").reshape(48, 64)
        np.testing.assert_allclose(depth_mm / 1000.0, truth.depth_m, atol=5e-4 + 1e-6)
        cam = scene.cam
        np.testing.assert_allclose(info.k, [cam.fx, 0, cam.cx, 0, cam.fy, cam.cy, 0, 0, 1])
        assert info.distortion_model == "plumb_bob" and not np.any(info.d)
        assert (info.width, info.height) == (64, 48)

        (tf,) = msgs[TOPIC_TF][k][1].transforms
        assert (tf.header.frame_id, tf.child_frame_id) == ("map", BODY_FRAME)
        world_from_cam = _matrix(tf.transform) @ link_from_optical
        np.testing.assert_allclose(world_from_cam, truth.world_from_cam, atol=1e-9)

    meta = json.loads((bag / "llava4d_source.json").read_text())
    assert scene_from_dict(meta["scene"]) == scene


def test_cli_writes_a_scene_bag_and_refuses_to_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "cli_bag"
    args = [str(out), "--scene", "3", "--duration-s", "0.3", "--width", "32", "--height", "24"]
    assert main([*args, "--storage", "sqlite3", "--depth-encoding", "32FC1"]) == 0
    assert "3 frames" in capsys.readouterr().out
    msgs = _read(out)
    depth = msgs[TOPIC_DEPTH][0][1]
    assert depth.encoding == "32FC1" and depth.step == 32 * 4
    assert np.all(np.isfinite(depth.data.view("<f4")))
    assert main(args) == 2


@pytest.mark.skipif(not SEVEN_SCENES.is_dir(), reason="7-Scenes sample data not present")
def test_cli_writes_a_folder_bag_with_raw_depth(tmp_path: Path):
    from llava4d_ros.core.surfaces import g_from_world
    from llava4d_ros.data.rgbd_folder import RGBDFolder

    out = tmp_path / "folder_bag"
    assert main([str(out), "--folder", str(SEVEN_SCENES), "--stop", "3"]) == 0
    msgs = _read(out)
    assert len(msgs[TOPIC_RGB]) == 3 and len(msgs[TOPIC_TF_STATIC]) == 1
    folder = RGBDFolder(SEVEN_SCENES, stop=3)
    link_from_optical = _matrix(msgs[TOPIC_TF_STATIC][0][1].transforms[0].transform)
    # the bag's map is the folder's world turned so that z points up (its gravity file)
    map_from_world = np.eye(4)
    map_from_world[:3, :3] = g_from_world(np.loadtxt(SEVEN_SCENES / "gravity-direction.txt"))
    for k, frame in enumerate(folder):
        depth = msgs[TOPIC_DEPTH][k][1]
        np.testing.assert_array_equal(depth.data.view("<u2").reshape(480, 640), frame.depth)
        map_from_link = _matrix(msgs[TOPIC_TF][k][1].transforms[0].transform)
        np.testing.assert_allclose(
            map_from_link @ link_from_optical, map_from_world @ frame.world_from_cam, atol=1e-9
        )
        down = map_from_link @ link_from_optical @ np.array([0, 1, 0, 0.0])  # image down
        assert down[2] < -0.8  # a hand-held camera held upright: image down is world down
        assert _stamp(depth.header) == stamp_ns(EPOCH_S, frame.stamp_s)
