"""The llava4d lifecycle node: a thin adapter between ROS messages and the Engine.

configure: read parameters, create publishers and TF subscriptions, check the model path.
activate:  load the model on its device, subscribe to the cameras, offer `~/query`.
deactivate: unsubscribe, withdraw the service, free the model (and the GPU memory).

Sensor callbacks and the query service run in separate callback groups on a multi-threaded
executor; /tf and /tf_static on a small node of their own (`<name>_tf_listener`) with its own
executor thread, as tf2_ros does. The callbacks only convert and synchronize; matched frames
are ingested by one ingest thread (the heavy part), so TF and camera_info never wait behind it.
When the ingest falls behind, the image callbacks wait for room in its queue (back-pressure).
Every message it cannot use is dropped with a throttled warning and a counter; nothing here
raises out of a callback.
"""

from __future__ import annotations

import copy
import gc
import os
import sys
import threading
import time
import traceback

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from llava4d_ros.config import NodeConfig
from llava4d_ros.engine import Engine, QueryError
from llava4d_ros.msg import Answer, ObjectTrackArray
from llava4d_ros.ros import convert
from llava4d_ros.srv import Query

WARN_PERIOD_S = 5.0
BACKPRESSURE_S = 1.0  # longest an image callback waits for room in the ingest queue
TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                    reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# No QoS event handlers on our entities: with Fast DDS (Kilted) a best-effort image subscription
# losing samples under load woke the executor's wait set again and again with nothing ready
# (measured: the main thread at 100% CPU, every frame then lost). Incompatible QoS is found
# from the ROS graph instead (`_check_qos`).
NO_SUB_EVENTS = SubscriptionEventCallbacks(use_default_callbacks=False)
NO_PUB_EVENTS = PublisherEventCallbacks(use_default_callbacks=False)
QOS_CHECK_PERIOD_S = 5.0


class TfListener:
    """/tf and /tf_static on a node and executor of their own, in their own thread (as
    tf2_ros's listener with `spin_thread`): TF is reliable with a deep queue, so when it shared
    the node's executor with three image streams, a busy CPU let it fall seconds behind and
    every frame then waited for its transform in vain."""

    def __init__(self, owner: LifecycleNode, callback) -> None:
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


class Llava4dNode(LifecycleNode):
    def __init__(self, node_name: str = "llava4d", **kwargs):
        super().__init__(node_name, **kwargs)
        for name, desc in NodeConfig.descriptions().items():
            self.declare_parameter(name, getattr(NodeConfig(), name),
                                   ParameterDescriptor(description=desc))
        self.declare_parameter("autostart", True, ParameterDescriptor(
            description="Configure and activate on start (without a lifecycle manager)."))
        self.cfg: NodeConfig | None = None
        self.engine: Engine | None = None
        # One group per input stream: within a shared group the executor serves the first
        # ready subscription first, and under load camera_info starved behind rgb/depth until
        # the synchronizer's queues overflowed. Each stream in order, in its own group; the
        # Engine's lock serializes the shared state.
        self._groups = {k: MutuallyExclusiveCallbackGroup() for k in ("rgb", "depth", "info")}
        self._query_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._sensor_subs: list = []
        self._tf: TfListener | None = None
        self._timers: list = []
        self._service = None
        self._ingest_thread: threading.Thread | None = None
        self._ingest_stop = threading.Event()
        self._answer_markers = 0
        self._qos_checked_s = float("-inf")
        self._qos_warned: set[tuple] = set()
        self.counters: dict[str, int] = {}  # messages refused by the adapter, by reason
        self.received: dict[str, int] = {}  # messages received by kind

    # ------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            values = {n: self.get_parameter(n).value for n in NodeConfig.descriptions()}
            self.cfg = NodeConfig(**values)
        except (TypeError, ValueError) as exc:
            self.get_logger().error(f"configure failed: bad parameter: {exc}")
            return TransitionCallbackReturn.FAILURE
        if self.cfg.model_path and not os.path.isdir(self.cfg.model_path):
            self.get_logger().error(
                f"configure failed: model_path {self.cfg.model_path!r} is not a directory; "
                "set it to a local model directory, or leave it empty for the embedded default")
            return TransitionCallbackReturn.FAILURE
        self.engine = Engine(self.cfg, model=None)
        self._pub_answers = self._publisher(Answer, "~/answers", 10)
        self._pub_tracks = self._publisher(ObjectTrackArray, "~/tracks", 10)
        self._pub_markers = self._publisher(MarkerArray, "~/markers", 10)
        self._pub_cloud = self._publisher(PointCloud2, "~/cloud", LATCHED)
        self._pub_diag = self._publisher(DiagnosticArray, "/diagnostics", 10)
        self._pub_detections = None
        if convert.detections_msg([], "", 0) is not None:
            from vision_msgs.msg import Detection3DArray
            self._pub_detections = self._publisher(Detection3DArray, "~/detections", 10)
        self._tf = TfListener(self, self._on_tf)
        self.get_logger().info(f"configured: world_frame={self.cfg.world_frame} "
                               f"window={self.cfg.window_s}s budget={self.cfg.token_budget}")
        return TransitionCallbackReturn.SUCCESS

    def _publisher(self, msg_type, topic: str, qos):
        return self.create_lifecycle_publisher(msg_type, topic, qos,
                                               event_callbacks=NO_PUB_EVENTS)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from llava4d_ros.runtime import load_model  # torch is imported only when activating

        try:
            model = load_model(self.cfg.model_path or None, self.cfg.device, self.cfg.dtype,
                               self.cfg.cpu_threads, self.cfg.quantization)
        except Exception as exc:  # noqa: BLE001 - any load failure leaves the node inactive
            self.get_logger().error(f"activate failed: could not load the model: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.engine.set_model(model)
        self._ingest_stop.clear()
        self._ingest_thread = threading.Thread(target=self._ingest_loop, name="llava4d_ingest",
                                               daemon=True)
        self._ingest_thread.start()
        overrides = QoSOverridingOptions.with_default_policies()

        def sensor_qos() -> QoSProfile:
            # a copy per subscription: QoS overrides are applied to the profile object itself,
            # and rclpy's qos_profile_sensor_data is shared by the whole process
            return copy.copy(qos_profile_sensor_data)

        self._sensor_subs = [
            self.create_subscription(Image, "rgb/image", self._on_rgb, sensor_qos(),
                                     callback_group=self._groups["rgb"],
                                     qos_overriding_options=overrides,
                                     event_callbacks=NO_SUB_EVENTS),
            self.create_subscription(Image, "depth/image", self._on_depth,
                                     sensor_qos(), callback_group=self._groups["depth"],
                                     qos_overriding_options=overrides,
                                     event_callbacks=NO_SUB_EVENTS),
            self.create_subscription(CameraInfo, "camera_info", self._on_info,
                                     sensor_qos(), callback_group=self._groups["info"],
                                     qos_overriding_options=overrides,
                                     event_callbacks=NO_SUB_EVENTS),
        ]
        self._service = self.create_service(Query, "~/query", self._on_query,
                                            callback_group=self._query_group)
        self._timers = [self.create_timer(self.cfg.tracks_period_s, self._publish_tracks,
                                          callback_group=self._timer_group),
                        self.create_timer(1.0, self._publish_status,
                                          callback_group=self._timer_group)]
        if self.cfg.cloud_period_s > 0:
            self._timers.append(self.create_timer(self.cfg.cloud_period_s, self._publish_cloud,
                                                  callback_group=self._timer_group))
        self.get_logger().info(f"active: model {model.model_id} on {model.device}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_active()
        self.get_logger().info("inactive: unsubscribed, model freed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_active()
        self._close_tf()
        for pub in (self._pub_answers, self._pub_tracks, self._pub_markers, self._pub_cloud,
                    self._pub_diag, self._pub_detections):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self.engine = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_active()
        self._close_tf()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._teardown_active()
        self._close_tf()
        super().destroy_node()

    def _close_tf(self) -> None:
        if self._tf is not None:
            self._tf.close()
            self._tf = None

    def _teardown_active(self) -> None:
        for sub in self._sensor_subs:
            self.destroy_subscription(sub)
        self._sensor_subs = []
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None
        if self._ingest_thread is not None:
            self._ingest_stop.set()
            if self.engine is not None:
                self.engine.wake()
            self._ingest_thread.join(timeout=10)
            self._ingest_thread = None
        if self.engine is not None and self.engine.model is not None:
            # Keep the buffer (nothing observed is lost), drop the model and its memory.
            self.engine.set_model(None)
            gc.collect()
            try:
                import torch
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass

    # ------------------------------------------------------------- inputs
    def _count(self, reason: str, detail: str) -> None:
        key = reason.split(":")[0]
        self.counters[key] = self.counters.get(key, 0) + 1
        self.get_logger().warning(f"dropped ({key}, {self.counters[key]} so far): {detail}",
                                  throttle_duration_sec=WARN_PERIOD_S)

    def _report(self, outcomes) -> None:
        """Log what the engine did with frames (it counts them itself, see /diagnostics)."""
        for o in outcomes:
            if o.status == "dropped":
                key = o.reason.split(":")[0]
                self.get_logger().warning(f"dropped ({key}, {self.engine.stats.drops[key]} so "
                                          f"far): {o.reason}", throttle_duration_sec=WARN_PERIOD_S)
            elif o.status == "reset":
                self.get_logger().warning(f"buffer reset: {o.reason}")

    def _on_tf(self, msg: TFMessage, is_static: bool) -> None:
        if self.engine is None:
            return
        for parent, child, t_ns, trans, quat in convert.transforms(msg):
            try:
                self.engine.add_transform(parent, child, t_ns, trans, quat, is_static)
            except ValueError as exc:
                self._count("bad_tf", f"{parent}->{child}: {exc}")
        # Frames waiting for this transform are ingested by the ingest thread, woken by it.

    def _ingest_loop(self) -> None:
        """The ingest thread: every matched frame whose TF is known goes into the buffer, in
        stamp order; it pauses between frames while a question is answered."""
        engine = self.engine
        while not self._ingest_stop.is_set():
            try:
                self._report(engine.process_pending(yield_to_queries=True))
            except Exception as exc:  # noqa: BLE001 - a bad frame must never stop ingestion
                self._count("error", f"ingest: {exc}")
                self.get_logger().debug(traceback.format_exc())
            engine.wait_for_work(0.1)

    def _on_image(self, kind: str, msg, parse) -> None:
        if self.engine is None:
            return
        self.received[kind] = self.received.get(kind, 0) + 1
        try:
            item = parse(msg)
        except ValueError as exc:
            self._count(f"bad_{kind}", f"{kind} on {msg.header.frame_id!r}: {exc}")
            return
        try:
            # back-pressure: while the ingest thread is behind, wait here (not in the engine's
            # locks), so DDS keeps the messages or, for best effort, drops the newest ones
            self.engine.wait_for_room(BACKPRESSURE_S)
            self._report(self.engine.add_image(kind, convert.stamp_ns(msg.header.stamp), item,
                                               ingest=False))
        except Exception as exc:  # noqa: BLE001 - a bad frame must never stop the node
            self._count("error", f"{kind}: {exc}")
            self.get_logger().debug(traceback.format_exc())

    def _on_rgb(self, msg: Image) -> None:
        self._on_image("rgb", msg, lambda m: (m.header.frame_id.lstrip("/"),
                                              convert.image_to_rgb(m)))

    def _on_depth(self, msg: Image) -> None:
        self._on_image("depth", msg, convert.image_to_depth_m)

    def _on_info(self, msg: CameraInfo) -> None:
        self._on_image("info", msg, convert.camera_info_to_camera)

    # ------------------------------------------------------------ outputs
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        engine = self.engine
        if engine is None or engine.model is None:
            response.success, response.message = False, "node is not active (no model loaded)"
            return response
        t_start = convert.stamp_ns(request.window_start) / 1e9 or None
        t_end = convert.stamp_ns(request.window_end) / 1e9 or None
        try:
            result = engine.ask(request.question, t_start, t_end)
        except QueryError as exc:
            response.success, response.message = False, str(exc)
            self.get_logger().info(f"query refused: {exc}")
            return response
        except Exception as exc:  # noqa: BLE001 - the service must answer, the node live on
            response.success, response.message = False, f"internal error: {exc}"
            self.get_logger().error(f"query failed: {traceback.format_exc()}")
            return response
        now = self._now_ns()
        answer = convert.answer_msg(result, self.cfg.world_frame, now)
        response.success, response.message, response.answer = True, "ok", answer
        self._pub_answers.publish(answer)
        self._pub_markers.publish(convert.answer_markers(result, self.cfg.world_frame, now,
                                                         self._answer_markers))
        self._answer_markers = len(result.objects)
        self.get_logger().info(f"Q: {result.question!r} -> A: {result.text!r} "
                               f"({result.latency_s * 1000:.0f} ms, "
                               f"{result.num_visual_tokens} tokens)")
        return response

    def _publish_tracks(self) -> None:
        if self.engine is None:
            return
        tracks = self.engine.tracks()
        now = self._now_ns()
        frame = self.cfg.world_frame
        self._pub_tracks.publish(convert.tracks_msg(tracks, frame, now))
        self._pub_markers.publish(convert.track_markers(tracks, frame, now,
                                                        lifetime_s=3 * self.cfg.tracks_period_s))
        if self._pub_detections is not None:
            self._pub_detections.publish(convert.detections_msg(tracks, frame, now))

    def _check_qos(self) -> None:
        """Warn once per publisher whose QoS or type cannot reach our sensor subscriptions
        (e.g. a best-effort camera and a `reliable` override): found from the graph, since the
        node has no QoS event handlers (see NO_SUB_EVENTS)."""
        for sub in self._sensor_subs:
            for info in self.get_publishers_info_by_topic(sub.topic_name):
                problem = ""
                if info.topic_type != _type_name(sub.msg_type):
                    problem = f"type {info.topic_type}, expected {_type_name(sub.msg_type)}"
                elif reason := _qos_mismatch(info.qos_profile, sub.qos_profile):
                    problem = (f"incompatible QoS ({reason}); set "
                               f"qos_overrides.{sub.topic_name}.subscription.* to match")
                key = (sub.topic_name, info.node_namespace, info.node_name, problem)
                if problem and key not in self._qos_warned:
                    self._qos_warned.add(key)
                    self.counters["incompatible_publisher"] = (
                        self.counters.get("incompatible_publisher", 0) + 1)
                    self.get_logger().warning(
                        f"{sub.topic_name}: publisher {info.node_namespace.rstrip('/')}/"
                        f"{info.node_name} cannot reach us: {problem}")

    def _publish_status(self) -> None:
        """/diagnostics: counters a user (or bench/node.py) reads to see what was lost."""
        if self.engine is None:
            return
        now_s = time.monotonic()
        if now_s - self._qos_checked_s >= QOS_CHECK_PERIOD_S:
            self._qos_checked_s = now_s
            self._check_qos()
        window = self.engine.window()
        values = {
            **{f"received_{k}": v for k, v in sorted(self.received.items())},
            "ingested": self.engine.stats.ingested,
            "keyframes": self.engine.stats.keyframes,
            "resets": self.engine.stats.resets,
            **{f"dropped_{k}": v for k, v in sorted(self.engine.drops().items())},
            **{f"refused_{k}": v for k, v in sorted(self.counters.items())},
            "ingest_queue": self.engine.pending(),
            "buffer_keyframes": len(self.engine.ingestor.buffer.keyframes),
            "buffer_mb": round(self.engine.ingestor.buffer.nbytes / 2**20, 2),
            "window_s": 0.0 if window is None else round(window[1] - window[0], 3),
            "tracks": len(self.engine.tracks()),
            "model": self.engine.model.model_id if self.engine.model else "none",
        }
        self._pub_diag.publish(convert.diagnostics_msg(
            f"{self.get_fully_qualified_name()}", values, self._now_ns(),
            warn=bool(self.engine.stats.drops or self.counters)))

    def _publish_cloud(self) -> None:
        if self.engine is None:
            return
        xyz, dyn = self.engine.cloud()
        self._pub_cloud.publish(convert.cloud_msg(xyz, dyn, self.cfg.world_frame,
                                                  self._now_ns()))


def _qos_mismatch(pub: QoSProfile, sub: QoSProfile) -> str:
    """Why a publisher with `pub` cannot serve a subscription with `sub` ("" if it can), for
    the two policies that bite with cameras: reliability and durability."""
    if (pub.reliability == ReliabilityPolicy.BEST_EFFORT
            and sub.reliability == ReliabilityPolicy.RELIABLE):
        return "best effort publisher, reliable subscription"
    if (pub.durability == DurabilityPolicy.VOLATILE
            and sub.durability == DurabilityPolicy.TRANSIENT_LOCAL):
        return "volatile publisher, transient local subscription"
    return ""


def _type_name(msg_type) -> str:
    """sensor_msgs.msg.Image -> "sensor_msgs/msg/Image" (the graph's spelling)."""
    pkg = msg_type.__module__.split(".")[0]
    return f"{pkg}/msg/{msg_type.__name__}"


def main(argv: list[str] | None = None) -> int:
    """Console entry point: `llava4d-node --ros-args -p model_path:=... -r rgb/image:=...`."""
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = Llava4dNode()
    executor = MultiThreadedExecutor(num_threads=6)  # 3 image groups, query, timers, spare
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("staying unconfigured (see the error above); fix the "
                                        "parameters and call the configure transition")
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("staying inactive (see the error above)")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0





if __name__ == "__main__":
    sys.exit(main())
