"""Publish synthetic scene frames as real ROS messages (rgb, depth, camera_info, TF)."""

from __future__ import annotations

import time

import numpy as np

from helpers.scene_feed import OPTICAL, stamp_ns
from llava4d_ros.core.geometry import quat_from_matrix
from llava4d_ros.data.bagtools import LINK_FROM_OPTICAL, depth_m_to_mm, world_from_link


def _time(msg_stamp, t_ns: int) -> None:
    msg_stamp.sec, msg_stamp.nanosec = divmod(int(t_ns), 1_000_000_000)


def image_msg(arr: np.ndarray, encoding: str, t_ns: int, frame_id: str = OPTICAL):
    from sensor_msgs.msg import Image

    arr = np.ascontiguousarray(arr)
    m = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=0,
              step=arr.strides[0], data=arr.tobytes())
    m.header.frame_id = frame_id
    _time(m.header.stamp, t_ns)
    return m


def info_msg(cam, t_ns: int):
    from sensor_msgs.msg import CameraInfo

    m = CameraInfo(width=cam.width, height=cam.height, distortion_model="plumb_bob",
                   d=[0.0] * 5, k=[cam.fx, 0.0, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0])
    m.header.frame_id = OPTICAL
    _time(m.header.stamp, t_ns)
    return m


def tf_msg(parent: str, child: str, b_from_a: np.ndarray, t_ns: int):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    ts = TransformStamped(child_frame_id=child)
    ts.header.frame_id = parent
    _time(ts.header.stamp, t_ns)
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = (
        float(v) for v in b_from_a[:3, 3])
    q = quat_from_matrix(b_from_a)
    r = ts.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return TFMessage(transforms=[ts])


class ScenePublisher:
    """Publishers on the node's input topics (relative names as the node sees them)."""

    def __init__(self, node):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        rel = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self.rgb = node.create_publisher(Image, "rgb/image", rel)
        self.depth = node.create_publisher(Image, "depth/image", rel)
        self.info = node.create_publisher(CameraInfo, "camera_info", rel)
        self.tf = node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
        self.tf_static = node.create_publisher(
            TFMessage, "/tf_static",
            QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def matched(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (self.rgb, self.depth, self.info))

    def send_static(self) -> None:
        self.tf_static.publish(tf_msg("camera_link", OPTICAL, LINK_FROM_OPTICAL, 0))

    def send_frame(self, frame, cam, t_ns: int, with_tf: bool = True, rgb=None, depth=None):
        if with_tf:
            self.tf.publish(tf_msg("map", "camera_link", world_from_link(frame.world_from_cam),
                                   t_ns))
        self.info.publish(info_msg(cam, t_ns))
        self.depth.publish(depth if depth is not None else
                           image_msg(depth_m_to_mm(frame.depth_m), "16UC1", t_ns))
        self.rgb.publish(rgb if rgb is not None else image_msg(frame.rgb, "rgb8", t_ns))

    def send_scene(self, scene_frames, cam, hz: float = 20.0, epoch_s: float | None = None):
        start = time.monotonic()
        for i, f in enumerate(scene_frames):
            t_ns = stamp_ns(f.stamp_s) if epoch_s is None else stamp_ns(f.stamp_s, epoch_s)
            self.send_frame(f, cam, t_ns)
            time.sleep(max(0.0, start + (i + 1) / hz - time.monotonic()))
