"""Write rosbag2 files (mcap or sqlite3) from a synthetic scene or an RGB-D folder.

Pure Python through `rosbags`: no ROS install is needed to make a bag, and the bag replays on
any ROS 2 distribution (the message definitions are those of the chosen typestore).

Topics (all stamped `epoch_s + t`, log time = header stamp):

    /camera/color/image_raw     sensor_msgs/Image rgb8, frame camera_color_optical_frame
    /camera/depth/image_raw     sensor_msgs/Image 16UC1 mm (0 invalid) or 32FC1 m, registered to
                                rgb, same frame and intrinsics
    /camera/color/camera_info   sensor_msgs/CameraInfo, plumb_bob, D = 0, K, P = [K | 0]
    /tf                         tf2_msgs/TFMessage map -> camera_link at every frame
    /tf_static                  tf2_msgs/TFMessage camera_link -> camera_color_optical_frame
                                (REP 103 optical rotation), once, transient-local QoS

`camera_link` is the body frame (x forward, y left, z up) at the optical frame's origin, so
`world_from_link @ link_from_optical == world_from_cam` exactly (up to float64 rounding).

CLI (`main`, installed as `llava4d-make-bag`):

    llava4d-make-bag out_bag --scene 7 [--duration-s 8 --fps 10 --static-camera]
    llava4d-make-bag out_bag --folder /work/shared/data/7scenes-redkitchen --stop 100
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability
from rosbags.interfaces import QosTime as _QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from llava4d_ros.core.geometry import quat_from_matrix

TOPIC_RGB = "/camera/color/image_raw"
TOPIC_DEPTH = "/camera/depth/image_raw"
TOPIC_INFO = "/camera/color/camera_info"
TOPIC_TF = "/tf"
TOPIC_TF_STATIC = "/tf_static"
WORLD_FRAME = "map"
BODY_FRAME = "camera_link"
OPTICAL_FRAME = "camera_color_optical_frame"
DEFAULT_EPOCH_S = 1_700_000_000.0

#: ROS distributions whose message definitions a bag can be written with.
STORES: dict[str, Stores] = {
    "kilted": Stores.ROS2_KILTED,
    "jazzy": Stores.ROS2_JAZZY,
    "humble": Stores.ROS2_HUMBLE,
}
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

#: link_from_optical (3, 3): optical z (forward) -> body x, optical x (right) -> body -y,
#: optical y (down) -> body -z. The same as quaternion xyzw (-0.5, 0.5, -0.5, 0.5) (REP 103).
LINK_FROM_OPTICAL_ROT = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
LINK_FROM_OPTICAL = np.eye(4)
LINK_FROM_OPTICAL[:3, :3] = LINK_FROM_OPTICAL_ROT


def _qos(durability: QosDurability) -> Qos:
    zero = _QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=1 if durability == QosDurability.TRANSIENT_LOCAL else 10,
        reliability=QosReliability.RELIABLE,
        durability=durability,
        deadline=zero,
        lifespan=zero,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero,
        avoid_ros_namespace_conventions=False,
    )


@dataclass(frozen=True)
class BagFrame:
    """What one synchronized camera frame contributes to a bag.

    `rgb` (H, W, 3) uint8; `depth_m` (H, W) float32 metres (NaN/0 invalid) or `depth_mm`
    (H, W) uint16 raw millimetres, exactly one of them; `world_from_cam` (4, 4) optical frame.
    """

    stamp_s: float
    rgb: np.ndarray
    world_from_cam: np.ndarray
    depth_m: np.ndarray | None = None
    depth_mm: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.depth_m is None) == (self.depth_mm is None):
            raise ValueError("give exactly one of depth_m and depth_mm")
        depth = self.depth_m if self.depth_m is not None else self.depth_mm
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if depth.shape != self.rgb.shape[:2]:
            raise ValueError(f"depth {depth.shape} and rgb {self.rgb.shape} differ in size")
        if self.depth_mm is not None and self.depth_mm.dtype != np.uint16:
            raise ValueError(f"depth_mm must be uint16, got {self.depth_mm.dtype}")
        if np.asarray(self.world_from_cam).shape != (4, 4):
            raise ValueError("world_from_cam must be (4, 4)")


@dataclass
class BagSummary:
    """What was written: path, storage, frame count, stamps, per-topic message counts."""

    path: Path
    storage: str
    n_frames: int = 0
    first_stamp_ns: int | None = None
    last_stamp_ns: int | None = None
    counts: dict[str, int] = field(default_factory=dict)


def stamp_ns(epoch_s: float, t_s: float) -> int:
    """Header stamp in integer nanoseconds: epoch + scene time.

    Whole seconds and fractions are converted apart, because float64 nanoseconds since 1970
    (~1.7e18) are only good to ~256 ns.
    """
    whole = int(epoch_s)
    return whole * 10**9 + round((epoch_s - whole) * 1e9) + round(t_s * 1e9)


def depth_m_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) metres -> uint16 millimetres; invalid (NaN, <= 0, beyond 65.534 m) -> 0.

    A valid depth under half a millimetre becomes 1 mm rather than the invalid 0.
    """
    d = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0) & (d * 1000.0 < 65534.5)
    mm = np.zeros(d.shape, dtype=np.uint16)
    mm[valid] = np.clip(np.round(d[valid] * 1000.0), 1, 65534).astype(np.uint16)
    return mm


def world_from_link(world_from_cam: np.ndarray) -> np.ndarray:
    """The body pose (4, 4) whose optical child is `world_from_cam`."""
    return np.asarray(world_from_cam, dtype=np.float64) @ np.linalg.inv(LINK_FROM_OPTICAL)


class _Msgs:
    """Message builders on one typestore."""

    def __init__(self, store: str) -> None:
        if store not in STORES:
            raise ValueError(f"store must be one of {sorted(STORES)}, got {store!r}")
        self.typestore = get_typestore(STORES[store])
        self.t = self.typestore.types

    def header(self, stamp: int, frame_id: str):
        time = self.t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
        return self.t["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def image(self, stamp: int, frame_id: str, array: np.ndarray, encoding: str):
        h, w = array.shape[:2]
        data = np.ascontiguousarray(array)
        if data.dtype.byteorder == ">":
            data = data.byteswap().view(data.dtype.newbyteorder("<"))
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp, frame_id),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=data.strides[0],
            data=data.reshape(-1).view(np.uint8),
        )

    def camera_info(self, stamp: int, frame_id: str, k: np.ndarray, width: int, height: int):
        k = np.asarray(k, dtype=np.float64).reshape(3, 3)
        p = np.zeros((3, 4))
        p[:, :3] = k
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp, frame_id),
            height=height,
            width=width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=k.reshape(-1),
            r=np.eye(3).reshape(-1),
            p=p.reshape(-1),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )

    def tf(self, stamp: int, parent: str, child: str, parent_from_child: np.ndarray):
        t = self.t
        x, y, z = (float(v) for v in parent_from_child[:3, 3])
        qx, qy, qz, qw = (float(v) for v in quat_from_matrix(parent_from_child))
        transform = t["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp, parent),
            child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
            ),
        )
        return t["tf2_msgs/msg/TFMessage"](transforms=[transform])


def write_bag(
    path: str | Path,
    frames: Iterable[BagFrame],
    k: np.ndarray,
    *,
    storage: str = "mcap",
    store: str = "kilted",
    epoch_s: float = DEFAULT_EPOCH_S,
    depth_encoding: str = "16UC1",
    world_frame: str = WORLD_FRAME,
    metadata: dict[str, Any] | None = None,
) -> BagSummary:
    """Write `frames` to a new rosbag2 directory `path` (must not exist).

    `k` (3, 3) intrinsics of the (registered) images. `metadata`, if given, is written as
    `llava4d_source.json` inside the bag directory (rosbag2 readers ignore unlisted files).
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    if depth_encoding not in ("16UC1", "32FC1"):
        raise ValueError(f"depth_encoding must be 16UC1 or 32FC1, got {depth_encoding!r}")
    path = Path(path)
    msgs = _Msgs(store)
    ts = msgs.typestore
    summary = BagSummary(path=path, storage=storage)
    volatile, latched = _qos(QosDurability.VOLATILE), _qos(QosDurability.TRANSIENT_LOCAL)

    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        conns = {
            TOPIC_TF_STATIC: writer.add_connection(
                TOPIC_TF_STATIC,
                "tf2_msgs/msg/TFMessage",
                typestore=ts,
                offered_qos_profiles=[latched],
            ),
            TOPIC_TF: writer.add_connection(
                TOPIC_TF, "tf2_msgs/msg/TFMessage", typestore=ts, offered_qos_profiles=[volatile]
            ),
            TOPIC_INFO: writer.add_connection(
                TOPIC_INFO,
                "sensor_msgs/msg/CameraInfo",
                typestore=ts,
                offered_qos_profiles=[volatile],
            ),
            TOPIC_RGB: writer.add_connection(
                TOPIC_RGB, "sensor_msgs/msg/Image", typestore=ts, offered_qos_profiles=[volatile]
            ),
            TOPIC_DEPTH: writer.add_connection(
                TOPIC_DEPTH,
                "sensor_msgs/msg/Image",
                typestore=ts,
                offered_qos_profiles=[volatile],
            ),
        }

        def put(topic: str, stamp: int, msg: Any) -> None:
            conn = conns[topic]
            writer.write(conn, stamp, ts.serialize_cdr(msg, conn.msgtype))
            summary.counts[topic] = summary.counts.get(topic, 0) + 1

        last = None
        for frame in frames:
            stamp = stamp_ns(epoch_s, frame.stamp_s)
            if last is not None and stamp <= last:
                raise ValueError(f"frame stamps must increase: {frame.stamp_s} s after {last} ns")
            if last is None:
                put(
                    TOPIC_TF_STATIC,
                    stamp,
                    msgs.tf(stamp, BODY_FRAME, OPTICAL_FRAME, LINK_FROM_OPTICAL),
                )
                summary.first_stamp_ns = stamp
            last = stamp
            h, w = frame.rgb.shape[:2]
            put(
                TOPIC_TF,
                stamp,
                msgs.tf(stamp, world_frame, BODY_FRAME, world_from_link(frame.world_from_cam)),
            )
            put(TOPIC_INFO, stamp, msgs.camera_info(stamp, OPTICAL_FRAME, k, w, h))
            put(TOPIC_RGB, stamp, msgs.image(stamp, OPTICAL_FRAME, frame.rgb, "rgb8"))
            if depth_encoding == "16UC1":
                depth = (
                    frame.depth_mm if frame.depth_mm is not None else depth_m_to_mm(frame.depth_m)
                )
            else:
                depth = (
                    frame.depth_m.astype(np.float32)
                    if frame.depth_m is not None
                    else np.where(frame.depth_mm == 0, np.nan, frame.depth_mm / 1000.0).astype(
                        np.float32
                    )
                )
            put(TOPIC_DEPTH, stamp, msgs.image(stamp, OPTICAL_FRAME, depth, depth_encoding))
            summary.n_frames += 1
            summary.last_stamp_ns = stamp

    if metadata is not None:
        (path / "llava4d_source.json").write_text(json.dumps(metadata, indent=1) + "\n")
    return summary


# ----------------------------------------------------------------------------- sources


def scene_frames(scene) -> Iterator[BagFrame]:
    """BagFrames of every frame of a synthetic `SceneSpec` (depth as float metres)."""
    from llava4d_ros.data.scene import frames

    for f in frames(scene):
        yield BagFrame(
            stamp_s=f.stamp_s, rgb=f.rgb, depth_m=f.depth_m, world_from_cam=f.world_from_cam
        )


def scene_k(scene) -> np.ndarray:
    cam = scene.cam
    return np.array([[cam.fx, 0.0, cam.cx], [0.0, cam.fy, cam.cy], [0.0, 0.0, 1.0]])


def write_scene_bag(path: str | Path, scene, **kwargs: Any) -> BagSummary:
    """Bag of a synthetic scene; the scene's seed and objects go to `llava4d_source.json`."""
    from llava4d_ros.data.scene import scene_to_dict

    meta = {"source": "synthetic_scene", "scene": scene_to_dict(scene)}
    return write_bag(path, scene_frames(scene), scene_k(scene), metadata=meta, **kwargs)


def write_folder_bag(
    path: str | Path,
    root: str | Path,
    *,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    gravity_aligned: bool = True,
    **kwargs: Any,
) -> BagSummary:
    """Bag of an RGB-D folder in the 7-Scenes layout (raw uint16 depth passes through).

    The folder's K fits the depth image; 7-Scenes rgb is not registered to it, so the rgb topic
    inherits that offset (see the dataset README). With `gravity_aligned` and the folder's
    gravity-direction.txt (the world-frame direction of gravity), the bag's world frame is the
    folder's turned about its origin so that z points up, as REP 103 has a map:
    `p_map = surfaces.g_from_world(gravity) @ p_folder_world`.
    """
    from llava4d_ros.core.surfaces import g_from_world
    from llava4d_ros.data.rgbd_folder import RGBDFolder

    map_from_world = np.eye(4)
    gravity_file = Path(root) / "gravity-direction.txt"
    if gravity_aligned and gravity_file.exists():
        map_from_world[:3, :3] = g_from_world(np.loadtxt(gravity_file))

    folder = RGBDFolder(root, start=start, stop=stop, step=step)
    info = folder.camera_info
    if info.distortion_model not in ("plumb_bob", "rational_polynomial", "equidistant") or any(
        info.d
    ):
        raise ValueError(f"{root}: only undistorted cameras are supported, got {info.d}")
    frames = (
        BagFrame(stamp_s=f.stamp_s, rgb=f.rgb, depth_mm=f.depth,
                 world_from_cam=map_from_world @ f.world_from_cam)
        for f in folder
    )
    meta = {"source": "rgbd_folder", "root": str(root), "start": start, "stop": stop, "step": step,
            "map_from_folder_world": map_from_world[:3, :3].round(9).tolist()}
    return write_bag(path, frames, info.k, metadata=meta, **kwargs)


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llava4d-make-bag",
        description="Write a rosbag2 (mcap or sqlite3) with RGB, depth, camera_info and TF from "
        "a synthetic 4D scene or from an RGB-D folder in the 7-Scenes layout.",
    )
    p.add_argument("output", help="bag directory to create (must not exist)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scene", type=int, metavar="SEED", help="synthetic scene seed")
    src.add_argument("--folder", metavar="DIR", help="RGB-D folder (7-Scenes layout)")
    p.add_argument("--storage", choices=sorted(STORAGES), default="mcap")
    p.add_argument(
        "--ros-distro",
        choices=sorted(STORES),
        default="kilted",
        help="message definitions to write with",
    )
    p.add_argument(
        "--epoch-s", type=float, default=DEFAULT_EPOCH_S, help="header stamp of scene time 0"
    )
    p.add_argument("--depth-encoding", choices=("16UC1", "32FC1"), default="16UC1")
    p.add_argument("--world-frame", default=WORLD_FRAME)
    g = p.add_argument_group("synthetic scene")
    g.add_argument("--duration-s", type=float, default=8.0)
    g.add_argument("--fps", type=float, default=10.0)
    g.add_argument("--width", type=int, default=320)
    g.add_argument("--height", type=int, default=240)
    g.add_argument("--n-objects", type=int, default=None)
    g.add_argument("--n-moving", type=int, default=None)
    g.add_argument("--static-camera", action="store_true")
    g = p.add_argument_group("RGB-D folder")
    g.add_argument("--start", type=int, default=0)
    g.add_argument("--stop", type=int, default=None)
    g.add_argument("--step", type=int, default=1)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `llava4d-make-bag`; returns the process exit code."""
    args = _parser().parse_args(argv)
    common = {
        "storage": args.storage,
        "store": args.ros_distro,
        "epoch_s": args.epoch_s,
        "depth_encoding": args.depth_encoding,
        "world_frame": args.world_frame,
    }
    if Path(args.output).exists():
        print(f"llava4d-make-bag: {args.output} exists; refusing to overwrite", file=sys.stderr)
        return 2
    if args.scene is not None:
        from llava4d_ros.data.scene import make_scene

        scene = make_scene(
            args.scene,
            n_objects=args.n_objects,
            n_moving=args.n_moving,
            camera_motion="static" if args.static_camera else "moving",
            width=args.width,
            height=args.height,
            fps=args.fps,
            duration_s=args.duration_s,
        )
        summary = write_scene_bag(args.output, scene, **common)
    else:
        summary = write_folder_bag(
            args.output, args.folder, start=args.start, stop=args.stop, step=args.step, **common
        )
    span = (summary.last_stamp_ns - summary.first_stamp_ns) / 1e9 if summary.n_frames else 0.0
    print(
        f"wrote {summary.path} ({summary.storage}): {summary.n_frames} frames over {span:.2f} s, "
        + ", ".join(f"{t} {n}" for t, n in sorted(summary.counts.items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
