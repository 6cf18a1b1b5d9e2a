"""The one module that knows message field names: ROS messages <-> numpy and engine results.

Parsing functions read fields only (duck typing), so they take rclpy messages and the `rosbags`
dataclasses alike: the offline replay uses them with no ROS installed. Builders import the message
classes when called, so importing this module needs no ROS either.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

from llava4d_ros.core.geometry import PinholeCamera, depth_to_metres

NS = 1_000_000_000
# builtin_interfaces/Time holds int32 seconds and uint32 nanoseconds below one second
MAX_STAMP_NS = (2**31 - 1) * NS + NS - 1
RGB_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")


class ConversionError(ValueError):
    """A message the node cannot use; the text says what was wrong, for a throttled warning."""


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds >= 0; refuses `nanosec >= 1e9` (not a
    normalised stamp: it would silently mean another second) and negative times."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nanosec < NS:
        raise ConversionError(f"stamp nanosec {nanosec} is not in [0, 1e9)")
    if sec < 0:
        raise ConversionError(f"stamp sec {sec} is negative")
    return sec * NS + nanosec


def time_fields(t_ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) for builtin_interfaces/Time; refuses what its
    int32 seconds cannot hold (a wrap to a negative stamp would be silent downstream)."""
    t_ns = int(t_ns)
    if not 0 <= t_ns <= MAX_STAMP_NS:
        raise ConversionError(f"time {t_ns / NS:.3f} s does not fit builtin_interfaces/Time "
                              f"(int32 seconds)")
    return t_ns // NS, t_ns % NS


def _ns_from_s(t_s: float) -> int:
    """Seconds (float64, from stamps that fitted builtin_interfaces/Time) -> nanoseconds, kept
    in range: float64 rounding near 2^31 s must not push a stamp past int32 seconds."""
    return min(max(round(t_s * NS), 0), MAX_STAMP_NS)


def _pixels(msg, channels: int, dtype: np.dtype) -> np.ndarray:
    """Image data as (H, W, C) honouring `step` (row padding) and `is_bigendian`."""
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ConversionError(f"image has size {w}x{h}")
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = w * channels * dtype.itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise ConversionError(f"step {step} < width*bytes-per-pixel {row_bytes}")
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data,
                         np.uint8)
    if data.size < step * h:
        raise ConversionError(f"data has {data.size} bytes, expected step*height = {step * h}")
    rows = data[: step * h].reshape(h, step)[:, :row_bytes]  # (H, row_bytes)
    return np.ascontiguousarray(rows).view(dtype).reshape(h, w, channels)


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> rgb (H, W, 3) uint8."""
    enc = msg.encoding
    if enc not in RGB_ENCODINGS:
        raise ConversionError(f"unsupported colour encoding {enc!r}; expected one of "
                              f"{', '.join(RGB_ENCODINGS)}")
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[enc]
    px = _pixels(msg, channels, np.uint8)
    if enc == "mono8":
        return np.repeat(px, 3, axis=2)
    if enc.startswith("bgr"):
        return np.ascontiguousarray(px[..., 2::-1])
    return np.ascontiguousarray(px[..., :3])


def image_to_depth_m(msg) -> np.ndarray:
    """sensor_msgs/Image (16UC1 millimetres, 32FC1 metres) -> depth_m (H, W) float32, NaN where
    invalid (0, 65535, NaN, inf)."""
    enc = msg.encoding
    if enc not in DEPTH_ENCODINGS:
        raise ConversionError(f"unsupported depth encoding {enc!r}; expected 16UC1 (mm) or "
                              "32FC1 (m)")
    px = _pixels(msg, 1, np.uint16 if enc == "16UC1" else np.float32)[..., 0]
    return depth_to_metres(px.astype(px.dtype.newbyteorder("=")), enc)


def camera_info_to_camera(msg) -> PinholeCamera:
    """sensor_msgs/CameraInfo -> PinholeCamera (refuses distortion it cannot undo)."""
    try:
        return PinholeCamera.from_camera_info(
            k=[float(v) for v in msg.k], width=int(msg.width), height=int(msg.height),
            distortion_model=str(msg.distortion_model), d=[float(v) for v in msg.d])
    except ValueError as exc:
        raise ConversionError(f"camera_info: {exc}") from None


def transforms(msg) -> list[tuple[str, str, int, np.ndarray, np.ndarray]]:
    """tf2_msgs/TFMessage -> [(parent, child, stamp_ns, translation (3,), quat_xyzw (4,))]."""
    out = []
    for ts in msg.transforms:
        t, q = ts.transform.translation, ts.transform.rotation
        out.append((ts.header.frame_id.lstrip("/"), ts.child_frame_id.lstrip("/"),
                    stamp_ns(ts.header.stamp), np.array([t.x, t.y, t.z]),
                    np.array([q.x, q.y, q.z, q.w])))
    return out


# ------------------------------------------------------------------ builders (need ROS)
def _set_time(dst, t_ns: int) -> None:
    dst.sec, dst.nanosec = time_fields(t_ns)


def _header(frame_id: str, t_ns: int):
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    _set_time(h.stamp, t_ns)
    return h


def answer_msg(result, frame_id: str, now_ns: int):
    """engine.QueryResult -> llava4d_ros/Answer."""
    from geometry_msgs.msg import Point, Vector3

    from llava4d_ros.msg import Answer, GroundedObject

    msg = Answer(header=_header(frame_id, now_ns), question=result.question, text=result.text,
                 num_visual_tokens=int(result.num_visual_tokens),
                 latency_s=float(result.latency_s), model_id=result.model_id)
    _set_time(msg.window_start, _ns_from_s(result.window_start_s))
    _set_time(msg.window_end, _ns_from_s(result.window_end_s))
    for o in result.objects:
        g = GroundedObject(track_id=int(o.track_id), label=o.label,
                           center=Point(x=float(o.center[0]), y=float(o.center[1]),
                                        z=float(o.center[2])),
                           size=Vector3(x=float(o.size[0]), y=float(o.size[1]),
                                        z=float(o.size[2])),
                           confidence=float(o.confidence))
        _set_time(g.stamp, _ns_from_s(o.stamp_s))
        msg.objects.append(g)
    return msg


def _orientation(pose, world_from_box: np.ndarray) -> None:
    """Set a Pose's orientation from a (3, 3) rotation (the box's upright axes)."""
    from llava4d_ros.core.geometry import quat_from_matrix

    m = np.eye(4)
    m[:3, :3] = np.asarray(world_from_box, np.float64)
    x, y, z, w = (float(v) for v in quat_from_matrix(m))
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = x, y, z, w


def tracks_msg(objects: Sequence, frame_id: str, now_ns: int):
    """[core MapObject] -> llava4d_ros/ObjectTrackArray."""
    from geometry_msgs.msg import Point, PointStamped, Pose, Vector3

    from llava4d_ros.msg import ObjectTrack, ObjectTrackArray

    out = ObjectTrackArray(header=_header(frame_id, now_ns))
    for o in objects:
        m = ObjectTrack(header=_header(frame_id, now_ns), id=int(o.object_id), label=o.label,
                        category=o.category, category_confidence=float(o.category_confidence),
                        colour=o.colour, support=o.support, is_dynamic=bool(o.is_dynamic),
                        in_view=bool(o.in_view))
        m.pose = Pose()
        m.pose.position = Point(x=float(o.center[0]), y=float(o.center[1]),
                                z=float(o.center[2]))
        _orientation(m.pose, o.world_from_box)
        m.size = Vector3(x=float(o.size[0]), y=float(o.size[1]), z=float(o.size[2]))
        m.velocity = Vector3(x=float(o.velocity[0]), y=float(o.velocity[1]),
                             z=float(o.velocity[2]))
        _set_time(m.first_seen, _ns_from_s(o.first_seen_s))
        _set_time(m.last_seen, _ns_from_s(o.last_seen_s))
        for t_s, p in o.history:
            ps = PointStamped(header=_header(frame_id, _ns_from_s(t_s)),
                              point=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])))
            m.history.append(ps)
        out.tracks.append(m)
    return out


def id_colour(track_id: int) -> tuple[float, float, float]:
    """A stable, well-separated colour per id (golden-ratio hue steps)."""
    return colorsys.hsv_to_rgb((track_id * 0.618034) % 1.0, 0.85, 0.95)


def _time_colour(frac: float) -> tuple[float, float, float]:
    """Old = blue, new = red, along a hue ramp."""
    return colorsys.hsv_to_rgb(0.66 * (1.0 - min(max(frac, 0.0), 1.0)), 0.9, 1.0)


def track_markers(objects: Sequence, frame_id: str, now_ns: int, lifetime_s: float):
    """The map's objects as a MarkerArray: upright boxes coloured by id, labels with the id
    (and "moving"), and trajectories coloured by time."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    arr = MarkerArray()
    life_ns = round(lifetime_s * NS)
    for o in objects:
        r, g, b = id_colour(o.object_id)
        box = Marker(header=_header(frame_id, now_ns), ns="objects", id=int(o.object_id),
                     type=Marker.CUBE, action=Marker.ADD)
        box.pose.position = Point(x=float(o.center[0]), y=float(o.center[1]),
                                  z=float(o.center[2]))
        _orientation(box.pose, o.world_from_box)
        box.scale.x, box.scale.y, box.scale.z = (max(float(s), 0.01) for s in o.size)
        box.color = ColorRGBA(r=r, g=g, b=b, a=0.5 if o.in_view else 0.25)
        box.lifetime.sec, box.lifetime.nanosec = time_fields(life_ns)
        text = Marker(header=box.header, ns="object_labels", id=int(o.object_id),
                      type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                      text=f"#{o.object_id} {o.label}{' (moving)' if o.is_dynamic else ''}")
        up = np.asarray(o.world_from_box, np.float64)[:, 2] * (float(o.size[2]) / 2 + 0.1)
        text.pose.position = Point(x=box.pose.position.x + float(up[0]),
                                   y=box.pose.position.y + float(up[1]),
                                   z=box.pose.position.z + float(up[2]))
        text.pose.orientation.w = 1.0
        text.scale.z = 0.12
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.lifetime = box.lifetime
        arr.markers += [box, text]
        if len(o.history) >= 2:
            line = Marker(header=box.header, ns="trajectories", id=int(o.object_id),
                          type=Marker.LINE_STRIP, action=Marker.ADD)
            line.pose.orientation.w = 1.0
            line.scale.x = 0.03
            t0, t1 = o.history[0][0], o.history[-1][0]
            for t_s, p in o.history:
                line.points.append(Point(x=float(p[0]), y=float(p[1]), z=float(p[2])))
                cr, cg, cb = _time_colour((t_s - t0) / max(t1 - t0, 1e-9))
                line.colors.append(ColorRGBA(r=cr, g=cg, b=cb, a=1.0))
            line.lifetime = box.lifetime
            arr.markers.append(line)
    return arr


def answer_markers(result, frame_id: str, now_ns: int, previous_count: int = 0):
    """The latest answer's grounded boxes and its text; deletes boxes of the previous answer."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    arr = MarkerArray()
    for i, o in enumerate(result.objects):
        m = Marker(header=_header(frame_id, now_ns), ns="answer", id=i, type=Marker.CUBE,
                   action=Marker.ADD)
        m.pose.position = Point(x=float(o.center[0]), y=float(o.center[1]),
                                z=float(o.center[2]))
        m.pose.orientation.w = 1.0
        m.scale.x, m.scale.y, m.scale.z = (max(float(s), 0.01) for s in o.size)
        m.color = ColorRGBA(r=1.0, g=0.85, b=0.0, a=0.6)
        arr.markers.append(m)
    for i in range(len(result.objects), previous_count):
        arr.markers.append(Marker(header=_header(frame_id, now_ns), ns="answer", id=i,
                                  action=Marker.DELETE))
    text = Marker(header=_header(frame_id, now_ns), ns="answer_text", id=0,
                  type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                  text=f"Q: {result.question}\nA: {result.text}")
    if result.objects:
        c = result.objects[0].center
        text.pose.position = Point(x=float(c[0]), y=float(c[1]), z=float(c[2]) + 0.6)
    text.pose.orientation.w = 1.0
    text.scale.z = 0.12
    text.color = ColorRGBA(r=1.0, g=1.0, b=0.6, a=1.0)
    arr.markers.append(text)
    return arr


def detections_msg(objects: Sequence, frame_id: str, now_ns: int):
    """[core MapObject] -> vision_msgs/Detection3DArray (`id` = object id, `results` = its
    category hypotheses with their fused scores, best first; "object" with 1 - their sum when
    it has none named); None without vision_msgs."""
    try:
        from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose
    except ImportError:
        return None
    out = Detection3DArray(header=_header(frame_id, now_ns))
    for o in objects:
        d = Detection3D(header=out.header, id=str(o.object_id))
        d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.position.z = (
            float(v) for v in o.center)
        _orientation(d.bbox.center, o.world_from_box)
        d.bbox.size.x, d.bbox.size.y, d.bbox.size.z = (float(v) for v in o.size)
        hyps = list(o.hypotheses) or [("object", 1.0)]
        if o.category == "object" and o.hypotheses:
            hyps.append(("object", max(0.0, 1.0 - sum(v for _, v in o.hypotheses))))
        for name, score in sorted(hyps, key=lambda h: -h[1]):
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id = name
            hyp.hypothesis.score = float(score)
            hyp.pose.pose = d.bbox.center
            d.results.append(hyp)
        out.detections.append(d)
    return out


def diagnostics_msg(name: str, values: dict, now_ns: int, warn: bool, error: str = ""):
    """Counters -> diagnostic_msgs/DiagnosticArray with one DiagnosticStatus: ERROR with
    `error` as its message when given, else WARN when input is being dropped, else OK."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    level = (DiagnosticStatus.ERROR if error else DiagnosticStatus.WARN if warn
             else DiagnosticStatus.OK)
    message = error or ("dropping input (see dropped_* / refused_*)" if warn else "ok")
    status = DiagnosticStatus(
        level=level, name=name, message=message,
        hardware_id="llava4d",
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    return DiagnosticArray(header=_header("", now_ns), status=[status])


def diagnostics_values(msg, name: str) -> dict[str, str] | None:
    """The key/values of the status called `name` in a DiagnosticArray, or None."""
    for s in msg.status:
        if s.name == name:
            return {kv.key: kv.value for kv in s.values}
    return None


def cloud_msg(xyz_world: np.ndarray, dynamic: np.ndarray, frame_id: str, now_ns: int):
    """(N, 3) points + (N,) dynamic flags -> sensor_msgs/PointCloud2 with fields x, y, z and
    `dynamic` (float32 0/1, for RViz's Intensity colouring). Packed with numpy."""
    from sensor_msgs.msg import PointCloud2, PointField

    n = int(len(xyz_world))
    rec = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("dynamic", "<f4")])
    rec["x"], rec["y"], rec["z"] = (xyz_world[:, i] for i in range(3)) if n else ([], [], [])
    rec["dynamic"] = dynamic.astype(np.float32)
    fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, name in enumerate(("x", "y", "z", "dynamic"))]
    return PointCloud2(header=_header(frame_id, now_ns), height=1, width=n, fields=fields,
                       is_bigendian=False, point_step=16, row_step=16 * n, is_dense=True,
                       data=rec.tobytes())


def track_dicts(msg) -> list[dict]:
    """llava4d_ros/ObjectTrackArray -> the JSON form the replay writes (for plots and logs)."""
    out = []
    for m in msg.tracks:
        p = m.pose.position
        out.append({
            "id": int(m.id), "label": m.label, "category": m.category,
            "category_confidence": float(m.category_confidence), "colour": m.colour,
            "support": m.support, "is_dynamic": bool(m.is_dynamic), "in_view": bool(m.in_view),
            "center": [p.x, p.y, p.z], "size": [m.size.x, m.size.y, m.size.z],
            "velocity": [m.velocity.x, m.velocity.y, m.velocity.z],
            "first_seen_s": stamp_ns(m.first_seen) / NS, "last_seen_s": stamp_ns(m.last_seen) / NS,
            "history": [[stamp_ns(h.header.stamp) / NS, h.point.x, h.point.y, h.point.z]
                        for h in m.history],
        })
    return out


def answer_dict(msg) -> dict:
    """llava4d_ros/Answer -> the JSON form the replay writes."""
    return {
        "question": msg.question, "text": msg.text, "latency_s": msg.latency_s,
        "window_start_s": stamp_ns(msg.window_start) / NS,
        "window_end_s": stamp_ns(msg.window_end) / NS,
        "num_visual_tokens": msg.num_visual_tokens, "model_id": msg.model_id,
        "objects": [{"track_id": o.track_id, "label": o.label, "stamp_s": stamp_ns(o.stamp) / NS,
                     "center": [o.center.x, o.center.y, o.center.z],
                     "size": [o.size.x, o.size.y, o.size.z], "confidence": o.confidence}
                    for o in msg.objects],
    }


def cloud_arrays(msg) -> tuple[np.ndarray, np.ndarray]:
    """sensor_msgs/PointCloud2 written by `cloud_msg` -> (N, 3) points, (N,) dynamic flags."""
    names = [f.name for f in msg.fields]
    if names != ["x", "y", "z", "dynamic"] or msg.point_step != 16:
        raise ConversionError(f"not a llava4d cloud: fields {names}, step {msg.point_step}")
    rec = np.frombuffer(bytes(msg.data), "<f4").reshape(-1, 4)
    return rec[:, :3].copy(), rec[:, 3] > 0.5
