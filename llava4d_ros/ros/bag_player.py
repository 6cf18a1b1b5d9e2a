"""Play a rosbag2 file (mcap or sqlite3) onto ROS topics with rclpy: what `ros2 bag play` does,
for machines without rosbag2 (the no-ROS environment). Messages go out as the bag's CDR bytes,
unchanged; /clock is published from the bag's time, and /tf_static is latched.

    llava4d-bag-player BAG [--rate 1.0] [--start-delay 1.0] [--wait-for /node/query]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABLE = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def message_class(type_name: str):
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def play(bag: Path, rate: float = 1.0, start_delay_s: float = 1.0, node=None,
         wait_for_subscribers: float = 10.0, log=print) -> int:
    """Publish every message of `bag` at `rate` x its recorded pace. Returns messages sent."""
    from rosbags.highlevel import AnyReader
    from rosgraph_msgs.msg import Clock

    own = node is None
    if own:
        node = rclpy.create_node("llava4d_bag_player")
    sent = 0
    try:
        with AnyReader([bag]) as reader:
            pubs = {}
            for c in reader.connections:
                if c.topic not in pubs:
                    qos = LATCHED if c.topic == "/tf_static" else RELIABLE
                    pubs[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, qos)
            clock = node.create_publisher(Clock, "/clock", 10)
            deadline = time.monotonic() + wait_for_subscribers
            sensor = [p for t, p in pubs.items() if t not in ("/tf", "/tf_static")]
            while time.monotonic() < deadline and any(p.get_subscription_count() == 0
                                                      for p in sensor):
                time.sleep(0.05)
            time.sleep(start_delay_s)  # let discovery settle both ways
            log(f"playing {bag} ({reader.message_count} messages, {len(pubs)} topics, "
                f"rate {rate})")
            t_wall0, t_bag0 = time.monotonic(), None
            for conn, t_ns, raw in reader.messages():
                if t_bag0 is None:
                    t_bag0 = t_ns
                due = t_wall0 + (t_ns - t_bag0) / 1e9 / rate
                while (delay := due - time.monotonic()) > 0:
                    time.sleep(min(delay, 0.05))
                c = Clock()
                c.clock.sec, c.clock.nanosec = divmod(t_ns, 1_000_000_000)
                clock.publish(c)
                pubs[conn.topic].publish(bytes(raw))
                sent += 1
    finally:
        if own:
            node.destroy_node()
    return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", type=Path)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--start-delay", type=float, default=1.0)
    args, ros_args = ap.parse_known_args(argv)
    if not args.bag.exists():
        print(f"bag not found: {args.bag}", file=sys.stderr)
        return 2
    rclpy.init(args=ros_args)
    try:
        n = play(args.bag, args.rate, args.start_delay)
        print(f"played {n} messages")
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    return 0
