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
    TransformBuffer,
    TransformError,
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
