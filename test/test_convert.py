"""Message <-> numpy conversion: every supported encoding, padding, byte order, bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import require_ros
from llava4d_ros.ros import convert


def fake_image(arr: np.ndarray, encoding: str, step_pad: int = 0, bigendian: bool = False):
    """A duck-typed sensor_msgs/Image (the way rosbags messages look to the converters)."""
    arr = np.ascontiguousarray(arr)
    if bigendian:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8)
    data = np.concatenate([row, np.zeros((h, step_pad), np.uint8)], axis=1)
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                           step=row.shape[1] + step_pad, data=data.reshape(-1),
                           header=SimpleNamespace(frame_id="cam"))


RGB = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding,arr", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.concatenate([RGB, np.full((4, 5, 1), 7, np.uint8)], axis=2)),
    ("bgra8", np.concatenate([RGB[..., ::-1], np.full((4, 5, 1), 7, np.uint8)], axis=2)),
])
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_give_rgb(encoding, arr, pad):
    out = convert.image_to_rgb(fake_image(arr, encoding, step_pad=pad))
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, RGB)


def test_mono8_is_replicated_to_three_channels():
    mono = RGB[..., 0]
    out = convert.image_to_rgb(fake_image(mono, "mono8"))
    np.testing.assert_array_equal(out, np.repeat(mono[..., None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
def test_16uc1_millimetres_with_invalid_values(bigendian):
    mm = np.array([[0, 1000, 65535], [1500, 2, 3000]], np.uint16)
    out = convert.image_to_depth_m(fake_image(mm, "16UC1", step_pad=2, bigendian=bigendian))
    expected = np.array([[np.nan, 1.0, np.nan], [1.5, 0.002, 3.0]], np.float32)
    np.testing.assert_allclose(out, expected, equal_nan=True)


def test_32fc1_metres_with_nan_inf_zero_negative():
    m = np.array([[np.nan, np.inf, 0.0], [-1.0, 2.5, 0.3]], np.float32)
    out = convert.image_to_depth_m(fake_image(m, "32FC1"))
    np.testing.assert_allclose(out, [[np.nan] * 3, [np.nan, 2.5, 0.3]], equal_nan=True)


@pytest.mark.parametrize("encoding", ["yuv422", "bayer_rggb8", "rgb16", ""])
def test_unknown_colour_encodings_are_refused_by_name(encoding):
    with pytest.raises(convert.ConversionError, match="unsupported colour encoding"):
        convert.image_to_rgb(fake_image(RGB, encoding))


@pytest.mark.parametrize("encoding", ["mono16", "64FC1", "rgb8"])
def test_unknown_depth_encodings_are_refused(encoding):
    with pytest.raises(convert.ConversionError, match="unsupported depth encoding"):
        convert.image_to_depth_m(fake_image(np.zeros((2, 2), np.uint16), encoding))


def test_truncated_data_and_bad_step_are_refused():
    img = fake_image(RGB, "rgb8")
    img.data = img.data[:-1]
    with pytest.raises(convert.ConversionError, match="bytes"):
        convert.image_to_rgb(img)
    img = fake_image(RGB, "rgb8")
    img.step = 5
    with pytest.raises(convert.ConversionError, match="step"):
        convert.image_to_rgb(img)


def test_camera_info_with_distortion_is_refused_and_plain_one_accepted():
    info = SimpleNamespace(k=[500.0, 0, 320, 0, 500.0, 240, 0, 0, 1], width=640, height=480,
                           distortion_model="plumb_bob", d=[0.0] * 5)
    cam = convert.camera_info_to_camera(info)
    assert (cam.fx, cam.cx, cam.width) == (500.0, 320.0, 640)
    info.d = [0.1, 0, 0, 0, 0]
    with pytest.raises(convert.ConversionError, match="camera_info"):
        convert.camera_info_to_camera(info)


def test_builders_make_messages_that_hold_the_numbers():
    require_ros()
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2

    from llava4d_ros.core.objects import MapObject

    yaw = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg about z
    tr = MapObject(object_id=4, center=np.array([1.0, 2.0, 0.5]), size=np.array([0.3, 0.3, 0.4]),
                   world_from_box=yaw, category="mug", category_confidence=0.7, colour="red",
                   shape="cylinder", support="table", first_seen_s=10.0, last_seen_s=12.5,
                   is_dynamic=True, velocity=np.array([0.2, 0.0, 0.0]),
                   hypotheses=(("mug", 0.7), ("bowl", 0.1)),
                   history=((10.0, np.array([0.5, 2.0, 0.5])), (12.5, np.array([1.0, 2.0, 0.5]))))
    msg = convert.tracks_msg([tr], "map", 13 * 10**9)
    d = convert.track_dicts(msg)[0]
    assert d["id"] == 4 and d["is_dynamic"] and d["center"] == [1.0, 2.0, 0.5]
    assert (d["label"], d["category"], d["colour"], d["support"]) == (
        "red mug", "mug", "red", "table")
    assert d["history"] == [[10.0, 0.5, 2.0, 0.5], [12.5, 1.0, 2.0, 0.5]]
    assert d["first_seen_s"] == 10.0 and d["last_seen_s"] == 12.5
    q = msg.tracks[0].pose.orientation
    assert (q.z, q.w) == (pytest.approx(np.sqrt(0.5)), pytest.approx(np.sqrt(0.5)))
    markers = convert.track_markers([tr], "map", 0, lifetime_s=1.0).markers
    assert {m.ns for m in markers} == {"objects", "object_labels", "trajectories"}
    line = next(m for m in markers if m.ns == "trajectories")
    assert len(line.points) == len(line.colors) == 2
    assert line.colors[0].b > line.colors[0].r and line.colors[1].r > line.colors[1].b  # old->new

    xyz = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], np.float32)
    cloud = convert.cloud_msg(xyz, np.array([False, True]), "map", 0)
    cloud = deserialize_message(serialize_message(cloud), PointCloud2)
    back_xyz, back_dyn = convert.cloud_arrays(cloud)
    np.testing.assert_array_equal(back_xyz, xyz)
    np.testing.assert_array_equal(back_dyn, [False, True])
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "dynamic"]
    det = convert.detections_msg([tr], "map", 0)
    assert det.detections[0].id == "4" and det.detections[0].bbox.size.z == pytest.approx(0.4)
    hyps = [(r.hypothesis.class_id, r.hypothesis.score) for r in det.detections[0].results]
    assert hyps == [("mug", pytest.approx(0.7)), ("bowl", pytest.approx(0.1))]


def test_stamps_are_refused_not_wrapped():
    ok = SimpleNamespace(sec=2**31 - 1, nanosec=999_999_999)
    assert convert.stamp_ns(ok) == convert.MAX_STAMP_NS
    with pytest.raises(convert.ConversionError, match="nanosec"):
        convert.stamp_ns(SimpleNamespace(sec=5, nanosec=4_000_000_000))
    with pytest.raises(convert.ConversionError, match="negative"):
        convert.stamp_ns(SimpleNamespace(sec=-1, nanosec=0))
    with pytest.raises(convert.ConversionError, match="int32"):
        convert.time_fields(2**31 * 10**9)
    # float seconds that round past int32 max are kept at the largest stamp, never wrapped
    assert convert._ns_from_s(2**31 - 1e-7) == convert.MAX_STAMP_NS
