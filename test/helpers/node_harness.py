"""The node under test with a peer node (publishers, a query and an ask client, subscribers)
on one executor over real rclpy and loopback DDS; shared by the test_node*.py files."""

from __future__ import annotations

import threading
import time

import rclpy
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import MarkerArray

from helpers.publish import ScenePublisher
from llava4d_ros.action import Ask
from llava4d_ros.msg import ObjectTrackArray
from llava4d_ros.ros.node import Llava4dNode, executor_threads
from llava4d_ros.srv import Query

SUCCESS = TransitionCallbackReturn.SUCCESS
# the client keeps every reply of a burst of questions (the default depth 10 would lose some)
CLIENT_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


class Harness:
    """The node under test, a peer node (publishers, client, subscribers), one executor."""

    def __init__(self, ctx, **params):
        self.ctx = ctx
        params.setdefault("device", "cpu")
        params.setdefault("tracks_period_s", 0.1)
        # Sensor QoS is best effort by default; here (2 shared cores) frames must not be lost,
        # so the tests also exercise the QoS overrides a user sets the same way.
        for topic in ("/rgb/image", "/depth/image", "/camera_info"):
            params.setdefault(f"qos_overrides.{topic}.subscription.reliability", "reliable")
            params.setdefault(f"qos_overrides.{topic}.subscription.depth", 50)
        self.node = Llava4dNode(context=ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.peer = rclpy.create_node("llava4d_test_peer", context=ctx)
        self.tracks: list = []
        self.markers: list = []
        self.peer.create_subscription(ObjectTrackArray, "/llava4d/tracks", self.tracks.append, 10)
        self.peer.create_subscription(MarkerArray, "/llava4d/markers", self.markers.append, 10)
        self.client = self.peer.create_client(Query, "/llava4d/query", qos_profile=CLIENT_QOS)
        self.pub = ScenePublisher(self.peer)
        # Made here, before the spin thread: rclpy's ActionClient adds itself to the node's
        # waitables before it creates its lock, so one made while an executor spins can crash
        # that executor's thread (AttributeError: no '_lock'), and with it the node under test.
        self.action = ActionClient(self.peer, Ask, "/llava4d/ask")
        # as main(): a thread per waiting question on top of the node's own (see node.py)
        self.executor = MultiThreadedExecutor(
            num_threads=4 + executor_threads(self.node), context=ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def start(self):
        assert self.node.trigger_configure() == SUCCESS
        assert self.node.trigger_activate() == SUCCESS
        assert wait_for(self.client.service_is_ready, 20), "service never appeared"
        assert wait_for(self.pub.matched, 20), "node never subscribed"
        self.pub.send_static()
        return self

    def ask(self, question: str, timeout: float = 60.0, **request) -> Query.Response:
        future = self.client.call_async(Query.Request(question=question, **request))
        assert wait_for(future.done, timeout), f"no reply to {question!r}"
        return future.result()

    def close(self):
        self.executor.shutdown()
        # the spin thread may still be in its last spin_once, triggering the executor's guard
        # conditions: destroying the nodes under it raised InvalidHandle in that thread
        self.thread.join(timeout=10)
        self.node.destroy_node()
        self.peer.destroy_node()


def wait_for(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True



