"""A second ROS process for the cross-process tests (`python test/helpers/peer.py MODE ...`).

Modes:
  echo TYPE...      subscribe `in_<i>` and republish each message on `out_<i>` (TYPE: pkg/msg/Name)
  query_server      a llava4d_ros/srv/Query server on `query` that echoes the question
  images N HZ       publish N 640x480 rgb8 + 16UC1 pairs at HZ once a subscriber is matched
Prints "ready" on stdout once its endpoints exist; exits on SIGTERM or when done.
"""

from __future__ import annotations

import importlib
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABLE = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE)


def msg_type(name: str):
    pkg, kind, cls = name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), cls)


def echo(node, names: list[str]) -> None:
    for i, name in enumerate(names):
        t = msg_type(name)
        pub = node.create_publisher(t, f"out_{i}", RELIABLE)
        node.create_subscription(t, f"in_{i}", pub.publish, RELIABLE)
    print("ready", flush=True)
    rclpy.spin(node)


def query_server(node) -> None:
    from llava4d_ros.srv import Query

    def answer(req, resp):
        resp.success = True
        resp.message = "echo"
        resp.answer.question = req.question
        resp.answer.text = f"you asked: {req.question}"
        resp.answer.window_start = req.window_start
        return resp

    node.create_service(Query, "query", answer)
    print("ready", flush=True)
    rclpy.spin(node)


def images(node, n: int, hz: float) -> None:
    from sensor_msgs.msg import Image

    rgb_pub = node.create_publisher(Image, "rgb", RELIABLE)
    depth_pub = node.create_publisher(Image, "depth", RELIABLE)
    print("ready", flush=True)
    deadline = time.monotonic() + 20.0
    while (rgb_pub.get_subscription_count() < 1 or depth_pub.get_subscription_count() < 1):
        if time.monotonic() > deadline:
            raise SystemExit("no subscriber matched")
        rclpy.spin_once(node, timeout_sec=0.05)
    rgb = np.zeros((480, 640, 3), np.uint8)
    depth = np.zeros((480, 640), np.uint16)
    start = time.monotonic()
    for seq in range(n):
        rgb[...] = seq % 256
        depth[...] = 1000 + seq
        stamp = node.get_clock().now().to_msg()
        for pub, arr, enc in ((rgb_pub, rgb, "rgb8"), (depth_pub, depth, "16UC1")):
            m = Image(height=480, width=640, encoding=enc, is_bigendian=0,
                      step=arr.strides[0], data=arr.tobytes())
            m.header.stamp = stamp
            m.header.frame_id = str(seq)
            pub.publish(m)
        # Rate-limited: an unthrottled publisher starves the subscriber on 2 cores.
        time.sleep(max(0.0, start + (seq + 1) / hz - time.monotonic()))
    time.sleep(2.0)  # let reliable resends finish before the process goes


def main(argv: list[str]) -> None:
    rclpy.init()
    node = rclpy.create_node("llava4d_test_peer")
    try:
        if argv[0] == "echo":
            echo(node, argv[1:])
        elif argv[0] == "query_server":
            query_server(node)
        elif argv[0] == "images":
            images(node, int(argv[1]), float(argv[2]))
        else:
            raise SystemExit(f"unknown mode {argv[0]}")
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
