"""The package's interfaces over real rclpy and DDS on loopback, between two processes."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, require_ros

OUR_TYPES = [
    "llava4d_ros/msg/GroundedObject",
    "llava4d_ros/msg/Answer",
    "llava4d_ros/msg/ObjectTrack",
    "llava4d_ros/msg/ObjectTrackArray",
]
# Generated here for the no-ROS environment; the node needs them too.
EXTRA_TYPES = ["tf2_msgs/msg/TFMessage", "vision_msgs/msg/Detection3DArray"]


def msg_type(name: str):
    pkg, kind, cls = name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), cls)


_INTS = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "octet",
         "byte", "char"}


def _value(type_str: str, seed: int):
    """A non-default value for a rosidl field type, so a field lost on the wire is noticed."""
    seq = re.fullmatch(r"sequence<(.+?)(, \d+)?>", type_str)
    arr = re.fullmatch(r"(.+)\[(\d+)\]", type_str)
    if seq or arr:
        inner, n = (seq.group(1), 2) if seq else (arr.group(1), int(arr.group(2)))
        if inner in _INTS or inner in ("float", "double"):
            import numpy as np
            dtype = {"float": np.float32, "double": np.float64}.get(inner, np.uint8)
            if inner in _INTS and inner not in ("octet", "byte", "char", "uint8"):
                dtype = np.dtype(inner.replace("u", "u") if inner[0] != "u" else inner)
            vals = np.arange(seed, seed + n).astype(dtype)
            return vals if arr or inner not in ("octet", "byte") else [bytes([v % 256])
                                                                       for v in range(n)]
        return [_value(inner, seed + i) for i in range(n)]
    if type_str in ("boolean", "bool"):
        return True
    if type_str in _INTS:
        if type_str in ("octet", "byte"):
            return bytes([seed % 256])
        return seed % 100 + 1
    if type_str in ("float", "double"):
        return seed + 0.25
    if type_str.startswith("string") or type_str.startswith("wstring"):
        return f"s{seed}"
    return filled(msg_type(type_str.replace("/", "/msg/", 1)), seed)


def filled(cls, seed: int = 1):
    msg = cls()
    for i, (name, type_str) in enumerate(cls.get_fields_and_field_types().items()):
        setattr(msg, name, _value(type_str, seed + i))
    return msg


def spawn_peer(*args: str) -> subprocess.Popen:
    peer = str(REPO / "test" / "helpers" / "peer.py")
    proc = subprocess.Popen([sys.executable, peer, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"peer did not start: {line!r} {proc.stderr.read()}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def spin_until(ctx, node, done, timeout_s: float) -> bool:
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    deadline = time.monotonic() + timeout_s
    try:
        while not done() and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
    finally:
        ex.remove_node(node)
    return done()


def test_filled_messages_are_not_defaults():
    require_ros()
    for name in OUR_TYPES + EXTRA_TYPES:
        cls = msg_type(name)
        assert filled(cls) != cls(), name


def test_every_type_round_trips_between_processes(ros_context):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    names = OUR_TYPES + EXTRA_TYPES + ["llava4d_ros/srv/Query_Request",
                                       "llava4d_ros/srv/Query_Response"]
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    peer = spawn_peer("echo", *names)
    node = __import__("rclpy").create_node("roundtrip_test", context=ros_context)
    try:
        sent, got, pubs = {}, {}, []
        for i, name in enumerate(names):
            cls = msg_type(name)
            sent[i] = filled(cls, seed=10 * i + 1)
            pubs.append(node.create_publisher(cls, f"in_{i}", qos))
            node.create_subscription(cls, f"out_{i}", lambda m, i=i: got.setdefault(i, m), qos)

        def all_matched():
            return all(p.get_subscription_count() >= 1 for p in pubs)

        assert spin_until(ros_context, node, all_matched, 20.0), "peer never subscribed"
        last = 0.0

        def all_back():
            nonlocal last
            if time.monotonic() - last > 0.5:  # resend until echoed: discovery may lag
                last = time.monotonic()
                for i, p in enumerate(pubs):
                    if i not in got:
                        p.publish(sent[i])
            return len(got) == len(names)

        assert spin_until(ros_context, node, all_back, 30.0), (
            f"not echoed: {[names[i] for i in sent if i not in got]}")
        for i, name in enumerate(names):
            assert got[i] == sent[i], name
    finally:
        node.destroy_node()
        stop(peer)


def test_query_service_answers_across_processes(ros_context):
    import rclpy

    from llava4d_ros.srv import Query

    peer = spawn_peer("query_server")
    node = rclpy.create_node("query_client_test", context=ros_context)
    try:
        client = node.create_client(Query, "query")
        assert spin_until(ros_context, node, client.service_is_ready, 20.0), "no server"
        req = Query.Request(question="where was the red box 3 s ago?")
        req.window_start.sec = 42
        future = client.call_async(req)
        assert spin_until(ros_context, node, future.done, 20.0), "no answer"
        resp = future.result()
        assert resp.success
        assert resp.answer.question == req.question
        assert resp.answer.text == "you asked: where was the red box 3 s ago?"
        assert resp.answer.window_start.sec == 42
    finally:
        node.destroy_node()
        stop(peer)


def test_rgbd_stream_crosses_processes_without_loss(ros_context):
    """640x480 rgb8 + 16UC1 at 30 Hz for 5 s, reliable: every pair arrives, intact."""
    import numpy as np
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    n = 150
    qos = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE)
    node = rclpy.create_node("rgbd_sink_test", context=ros_context)
    rgb_seen, depth_seen, corrupt = set(), set(), []

    def on_rgb(m):
        seq = int(m.header.frame_id)
        arr = np.frombuffer(m.data, np.uint8)
        if m.width != 640 or m.height != 480 or arr.size != 640 * 480 * 3 or arr[-1] != seq % 256:
            corrupt.append(("rgb", seq))
        rgb_seen.add(seq)

    def on_depth(m):
        seq = int(m.header.frame_id)
        arr = np.frombuffer(m.data, np.uint16)
        if m.encoding != "16UC1" or arr.size != 640 * 480 or arr[0] != 1000 + seq:
            corrupt.append(("depth", seq))
        depth_seen.add(seq)

    node.create_subscription(Image, "rgb", on_rgb, qos)
    node.create_subscription(Image, "depth", on_depth, qos)
    peer = spawn_peer("images", str(n), "30")
    try:
        spin_until(ros_context, node, lambda: len(rgb_seen) == n and len(depth_seen) == n, 40.0)
        assert not corrupt, corrupt[:5]
        assert sorted(rgb_seen) == list(range(n)), f"rgb lost {set(range(n)) - rgb_seen}"
        assert sorted(depth_seen) == list(range(n)), f"depth lost {set(range(n)) - depth_seen}"
    finally:
        node.destroy_node()
        stop(peer)


@pytest.mark.parametrize("path", ["launch", "config", "msg", "srv"])
def test_layout_folders_exist(path):
    assert (REPO / path).is_dir()
    assert any((REPO / path).iterdir()), f"{path}/ is empty"


def test_package_xml_is_format3_and_parses():
    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    pkg = catkin_pkg.parse_package(str(REPO / "package.xml"))
    assert pkg.package_format == 3
    assert pkg.name == "llava4d_ros"
    cmake = Path(REPO / "CMakeLists.txt").read_text()
    assert cmake.count("rosidl_generate_interfaces(${PROJECT_NAME}") == 1
