"""Transform tree: chains, interpolation, errors, cache pruning, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from llava4d_ros.core.geometry import invert_se3, se3
from llava4d_ros.core.tf_buffer import (
    DisconnectedError,
    ExtrapolationError,
    StaticEdgeError,
    TransformBuffer,
    TransformError,
    TransformLoopError,
    UnknownFrameError,
)

S = 1_000_000_000
IDENTITY_Q = (0.0, 0.0, 0.0, 1.0)


def _quat_z(angle: float) -> np.ndarray:
    return Rotation.from_euler("z", angle).as_quat()


def _tree() -> TransformBuffer:
    tf = TransformBuffer(cache_s=10.0)
    # map -> odom (static), odom -> base (dynamic), base -> cam (static), map -> marker (static)
    tf.set_transform("map", "odom", 0, (1, 0, 0), IDENTITY_Q, is_static=True)
    tf.set_transform("odom", "base", 1 * S, (0, 0, 0), _quat_z(0.0), is_static=False)
    tf.set_transform("odom", "base", 3 * S, (2, 0, 0), _quat_z(np.pi / 2), is_static=False)
    tf.set_transform("base", "cam", 0, (0, 0, 1), IDENTITY_Q, is_static=True)
    tf.set_transform("map", "marker", 0, (0, 5, 0), _quat_z(0.3), is_static=True)
    return tf


def test_chain_up_and_interpolated():
    tf = _tree()
    map_from_cam = tf.lookup("map", "cam", 2 * S)
    expected = (se3((1, 0, 0), IDENTITY_Q) @ se3((1, 0, 0), _quat_z(np.pi / 4))
                @ se3((0, 0, 1), IDENTITY_Q))
    np.testing.assert_allclose(map_from_cam, expected, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("map", "cam", 3 * S)[:3, 3], [3, 0, 1], atol=1e-12)


def test_both_directions_through_common_ancestor():
    tf = _tree()
    cam_from_marker = tf.lookup("cam", "marker", 2 * S)
    marker_from_cam = tf.lookup("marker", "cam", 2 * S)
    np.testing.assert_allclose(cam_from_marker, invert_se3(marker_from_cam), atol=1e-12)
    expected = invert_se3(tf.lookup("map", "cam", 2 * S)) @ tf.lookup("map", "marker", 2 * S)
    np.testing.assert_allclose(cam_from_marker, expected, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("cam", "cam", 7 * S), np.eye(4))


def test_errors_name_frames_and_times():
    tf = _tree()
    tf.set_transform("world2", "other", 0, (0, 0, 0), IDENTITY_Q, is_static=True)
    with pytest.raises(UnknownFrameError, match="'nope'"):
        tf.lookup("map", "nope", 2 * S)
    with pytest.raises(DisconnectedError, match="'other'"):
        tf.lookup("map", "other", 2 * S)
    with pytest.raises(ExtrapolationError, match=r"4\.000000s") as exc:
        tf.lookup("map", "cam", 4 * S)
    assert exc.value.is_future and exc.value.child == "base"
    with pytest.raises(ExtrapolationError, match="before the oldest") as exc:
        tf.lookup("map", "cam", S // 2)
    assert not exc.value.is_future
    for cls in (UnknownFrameError, DisconnectedError, ExtrapolationError):
        assert issubclass(cls, TransformError) and issubclass(cls, LookupError)
    assert not tf.can_transform("map", "cam", 9 * S)


def test_cache_prunes_old_samples_and_clear_dynamic_keeps_static():
    tf = TransformBuffer(cache_s=2.0)
    for k in range(11):
        tf.set_transform("map", "base", k * S, (k, 0, 0), IDENTITY_Q, is_static=False)
    tf.set_transform("base", "cam", 0, (0, 0, 1), IDENTITY_Q, is_static=True)
    np.testing.assert_allclose(tf.lookup("map", "base", 8 * S)[:3, 3], [8, 0, 0])
    with pytest.raises(ExtrapolationError):
        tf.lookup("map", "base", 7 * S)
    tf.clear_dynamic()
    assert tf.frames == {"base", "cam"}
    np.testing.assert_allclose(tf.lookup("base", "cam", 123)[:3, 3], [0, 0, 1])


def test_out_of_order_samples_are_inserted_sorted():
    tf = TransformBuffer(cache_s=10.0)
    tf.set_transform("map", "base", 2 * S, (2, 0, 0), IDENTITY_Q, is_static=False)
    tf.set_transform("map", "base", 0, (0, 0, 0), IDENTITY_Q, is_static=False)
    np.testing.assert_allclose(tf.lookup("map", "base", S)[:3, 3], [1, 0, 0])


def test_concurrent_writers_and_readers():
    tf = TransformBuffer(cache_s=1.0)
    tf.set_transform("map", "base", 0, (0, 0, 0), IDENTITY_Q, is_static=False)
    errors = []

    def write():
        for k in range(1, 2000):
            tf.set_transform("map", "base", k * S // 1000, (k, 0, 0), IDENTITY_Q, is_static=False)

    def read():
        for _ in range(2000):
            try:
                tf.lookup("map", "base", 0)
            except ExtrapolationError:
                pass
            except Exception as exc:  # noqa: BLE001 - any other failure is a race
                errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_a_loop_is_refused_naming_the_edge_and_lookups_keep_working():
    tf = _tree()
    with pytest.raises(TransformLoopError, match="cam -> map"):
        tf.set_transform("cam", "map", 2 * S, (0, 0, 0), IDENTITY_Q, is_static=False)
    with pytest.raises(TransformLoopError, match="base -> odom"):
        tf.set_transform("base", "odom", 0, (0, 0, 0), IDENTITY_Q, is_static=True)
    assert tf.lookup("map", "cam", 2 * S)[:3, 3] == pytest.approx([2.0, 0, 1])


def test_dynamic_transform_on_a_static_edge_is_refused_and_static_survives_clear_dynamic():
    tf = _tree()
    with pytest.raises(StaticEdgeError, match="base -> cam.*/tf_static holds base -> cam"):
        tf.set_transform("base", "cam", 2 * S, (9, 9, 9), IDENTITY_Q, is_static=False)
    tf.clear_dynamic()
    tf.set_transform("odom", "base", 5 * S, (0, 0, 0), IDENTITY_Q, is_static=False)
    assert tf.lookup("map", "cam", 5 * S)[:3, 3] == pytest.approx([1.0, 0, 1])


@pytest.mark.parametrize("quat", [(1e200, 1e200, 0, 0), (0, 0, 0, 2.0), (np.nan, 0, 0, 1)])
def test_absurd_quaternions_are_refused(quat):
    tf = _tree()
    with pytest.raises(ValueError, match="odom -> base|non-finite"):
        tf.set_transform("odom", "base", 2 * S, (0, 0, 0), quat, is_static=False)
    # the edge keeps its good samples: nothing stored as a zero rotation
    assert tf.lookup("odom", "base", 3 * S)[:3, :3] == pytest.approx(
        se3((0, 0, 0), _quat_z(np.pi / 2))[:3, :3])


def test_frames_expire_with_the_cache_and_lookups_need_no_frame_set(monkeypatch):
    tf = TransformBuffer(cache_s=1.0)
    tf.set_transform("map", "odom", 0, (0, 0, 0), IDENTITY_Q, is_static=True)
    for i in range(5000):  # a flood of short-lived frames at one time
        tf.set_transform("odom", f"wheel_{i}", 10 * S, (0, 0, 0), IDENTITY_Q, is_static=False)
    tf.set_transform("odom", "base", 10 * S, (1, 0, 0), IDENTITY_Q, is_static=False)
    assert len(tf) == 5002
    # lookups walk parent links; building the set of every frame per lookup made one take
    # 54 ms at 100,000 frames
    monkeypatch.setattr(TransformBuffer, "frames", property(lambda self: 1 / 0))
    assert tf.lookup("map", "base", 10 * S)[0, 3] == 1.0
    with pytest.raises(UnknownFrameError) as err:
        tf.lookup("map", "nowhere", 10 * S)
    assert len(str(err.value)) < 400  # the message no longer lists every known frame
    monkeypatch.undo()
    for k in range(1, 30):  # time goes on for one edge only: the flood expires
        tf.set_transform("odom", "base", 10 * S + k * S // 10, (1, 0, 0), IDENTITY_Q, False)
    assert len(tf) == 2 and tf.frames == {"map", "odom", "base"}


def test_drop_dynamic_outside_keeps_samples_in_range():
    tf = _tree()
    tf.drop_dynamic_outside(0, 2 * S)
    assert tf.lookup("odom", "base", 1 * S)[0, 3] == 0.0
    with pytest.raises(ExtrapolationError):
        tf.lookup("odom", "base", 2 * S)
    tf.drop_dynamic_outside(5 * S, 6 * S)  # no sample left: the edge goes, static ones stay
    assert len(tf) == 3 and tf.can_transform("base", "cam", 0)
    assert not tf.can_transform("odom", "base", 5 * S)
