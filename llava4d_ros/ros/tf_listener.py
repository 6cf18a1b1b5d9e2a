"""/tf and /tf_static on a node and executor of their own, in their own thread (as tf2_ros's
listener with `spin_thread`): TF is reliable with a deep queue, so when it shared the node's
executor with three image streams, a busy CPU let it fall seconds behind and every frame then
waited for its transform in vain."""

from __future__ import annotations

import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from tf2_msgs.msg import TFMessage

from llava4d_ros.ros.qos import NO_SUB_EVENTS, TF_QOS, TF_STATIC_QOS


class TfListener:
    """Calls `callback(msg, is_static)` for every /tf and /tf_static message `owner` would
    receive (its remappings applied), from the thread `llava4d_tf`."""

    def __init__(self, owner: Node, callback: Callable[[TFMessage, bool], None]) -> None:
        # Without the process's global arguments: `-r __node:=name` would give this node the
        # owner's name too. The owner's remappings of /tf and /tf_static are applied here.
        self.node = rclpy.create_node(f"{owner.get_name()}_tf_listener",
                                      namespace=owner.get_namespace(), context=owner.context,
                                      start_parameter_services=False,
                                      use_global_arguments=False)
        self.topics = (owner.resolve_topic_name("/tf"), owner.resolve_topic_name("/tf_static"))
        self.node.create_subscription(TFMessage, self.topics[0], lambda m: callback(m, False),
                                      TF_QOS, event_callbacks=NO_SUB_EVENTS)
        self.node.create_subscription(TFMessage, self.topics[1], lambda m: callback(m, True),
                                      TF_STATIC_QOS, event_callbacks=NO_SUB_EVENTS)
        self.executor = SingleThreadedExecutor(context=owner.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, name="llava4d_tf", daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
