"""QoS profiles of the node's entities, and why a publisher cannot reach a subscription.

No QoS event handlers on our entities (`NO_SUB_EVENTS`, `NO_PUB_EVENTS`): with Fast DDS
(Kilted) a best-effort image subscription losing samples under load woke the executor's wait
set again and again with nothing ready (measured: the main thread at 100% CPU, every frame
then lost). Incompatible QoS is found from the ROS graph instead (`publisher_problem`).
"""

from __future__ import annotations

import copy

from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# requests held by DDS before the service callback takes them: more than the admitted ones,
# so a burst is answered "busy" instead of being lost in the middleware
QUERY_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.RELIABLE)
TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                    reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
NO_SUB_EVENTS = SubscriptionEventCallbacks(use_default_callbacks=False)
NO_PUB_EVENTS = PublisherEventCallbacks(use_default_callbacks=False)


def sensor_qos() -> QoSProfile:
    """Sensor-data QoS for one subscription: a copy each time, since QoS overrides are applied
    to the profile object itself and rclpy's `qos_profile_sensor_data` is shared by the whole
    process."""
    return copy.copy(qos_profile_sensor_data)


def mismatch(pub: QoSProfile, sub: QoSProfile) -> str:
    """Why a publisher with `pub` cannot serve a subscription with `sub` ("" if it can), for
    the two policies that bite with cameras: reliability and durability."""
    if (pub.reliability == ReliabilityPolicy.BEST_EFFORT
            and sub.reliability == ReliabilityPolicy.RELIABLE):
        return "best effort publisher, reliable subscription"
    if (pub.durability == DurabilityPolicy.VOLATILE
            and sub.durability == DurabilityPolicy.TRANSIENT_LOCAL):
        return "volatile publisher, transient local subscription"
    return ""


def type_name(msg_type) -> str:
    """sensor_msgs.msg.Image -> "sensor_msgs/msg/Image" (the graph's spelling)."""
    pkg = msg_type.__module__.split(".")[0]
    return f"{pkg}/msg/{msg_type.__name__}"


def publisher_problem(info, sub) -> str:
    """Why the publisher `info` (a `TopicEndpointInfo` from the graph) cannot reach the
    subscription `sub`, with what to set; "" if it can."""
    if info.topic_type != type_name(sub.msg_type):
        return f"type {info.topic_type}, expected {type_name(sub.msg_type)}"
    reason = mismatch(info.qos_profile, sub.qos_profile)
    if reason:
        return (f"incompatible QoS ({reason}); set "
                f"qos_overrides.{sub.topic_name}.subscription.* to match")
    return ""
