"""The llava4d lifecycle node: a thin adapter between ROS messages and the Engine.

configure: read parameters, create publishers and TF subscriptions, check the model path.
activate:  load the model on its device, subscribe to the cameras, offer `~/query`.
deactivate: unsubscribe, withdraw the service, free the model (and the GPU memory).

Sensor callbacks and the query service run in separate callback groups on a multi-threaded
executor; /tf and /tf_static on a small node of their own (`<name>_tf_listener`) with its own
executor thread, as tf2_ros does. The callbacks only convert and synchronize; matched frames
are ingested by one ingest thread (the heavy part), so TF and camera_info never wait behind it.
When the ingest falls behind, the image callbacks wait for room in its queue (back-pressure).
Every message it cannot use is dropped with a warning (throttled per reason, so one bad stream
cannot hide another) and a counter; nothing here raises out of a callback.

Questions: `~/query` takes every request at once (a reentrant group) and admits one answered
plus `query_queue_size` waiting (`questions.QuestionGate`); the rest get a "busy" reply straight
away, never silence.
Deactivate (and cleanup, shutdown) stop admitting, reply "not active" to the questions still
waiting, let the one being answered finish, and withdraw the service only once every reply has
been sent: destroying a service whose reply is still to be sent raised InvalidHandle out of the
executor and killed the process.

`~/ask` (action/Ask.action, `ask_server.AskServer`) is the same question as an action: the
answer so far as feedback, cancel stopping generation at the next decode step. Its goals share
the admission of `~/query` (one answered, `query_queue_size` waiting, "busy" beyond, both kinds
counted together), and are ended with a result, never left open: busy and inactive ones at once
(aborted, with the reason), a cancelled one with what was said until the cancel. Deactivate
cancels the running goal and answers it (aborted, `cancelled` true, the text so far). The
action server lives from configure to cleanup, not only while active, so that a client can
still fetch the result of a goal that deactivate ended; while inactive it answers every goal
"not active".
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
import traceback

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from llava4d_ros.config import NodeConfig
from llava4d_ros.engine import Engine, InputRefused, QueryError, window_mismatch
from llava4d_ros.model.shipped import SHIPPED, model_dir
from llava4d_ros.msg import Answer, ObjectTrackArray
from llava4d_ros.ros import convert
from llava4d_ros.ros.ask_server import AskServer
from llava4d_ros.ros.malloc_arenas import limit_arenas, trim_heap
from llava4d_ros.ros.qos import (
    LATCHED,
    NO_PUB_EVENTS,
    NO_SUB_EVENTS,
    QUERY_QOS,
    publisher_problem,
    sensor_qos,
)
from llava4d_ros.ros.questions import CLOSED_WHILE_WAITING, QuestionGate, Refused
from llava4d_ros.ros.tf_listener import TfListener
from llava4d_ros.srv import Query, SaveMemory

WARN_PERIOD_S = 5.0  # per reason: each refusal reason has its own throttle
LOG_CHARS = 400  # longest detail a warning carries (an error listing 50,000 frames was 547 kB)
QUERY_DRAIN_S = 60.0  # longest a transition waits for the question being answered
DESTROY_DRAIN_S = 5.0  # the same in destroy_node
BACKPRESSURE_S = 1.0  # longest an image callback waits for room in the ingest queue
QOS_CHECK_PERIOD_S = 5.0


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
        # reentrant: every request is taken at once and admitted or answered "busy"
        self._query_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._sensor_subs: list = []
        self._tf: TfListener | None = None
        self._timers: list = []
        self._service = None
        self._action: AskServer | None = None
        self._ingest_thread: threading.Thread | None = None
        self._ingest_stop = threading.Event()
        self._answer_markers = 0
        self._qos_checked_s = float("-inf")
        self._qos_warned: set[tuple] = set()
        self.counters: dict[str, int] = {}  # messages refused by the adapter, by reason
        self.received: dict[str, int] = {}  # messages received by kind
        self._warned_at: dict[str, float] = {}  # reason -> monotonic time of its last warning
        self._received_seen: dict[str, int] = {}  # `received` at the last status check
        # ~/query and ~/ask questions: admitted, answered one at a time (sized on configure)
        self.questions = QuestionGate(queue_size=0)
        self._memory = None  # memory.MemoryStore while configured with a memory_path
        self._memory_services: list = []

    # ------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            values = {n: self.get_parameter(n).value for n in NodeConfig.descriptions()}
            self.cfg = NodeConfig(**values)
        except (TypeError, ValueError) as exc:
            self.get_logger().error(f"configure failed: bad parameter: {exc}")
            return TransitionCallbackReturn.FAILURE
        if self.cfg.model_path and not os.path.isdir(model_dir(self.cfg.model_path)):
            self.get_logger().error(
                f"configure failed: model_path {self.cfg.model_path!r} is not a directory; "
                "set it to a local model directory, the name of a model shipped in the "
                f"package ({', '.join(SHIPPED)}), or leave it empty for the embedded default")
            return TransitionCallbackReturn.FAILURE
        self.engine = Engine(self.cfg, model=None)
        self.questions = QuestionGate(self.cfg.query_queue_size)
        self._pub_answers = self._publisher(Answer, "~/answers", 10)
        self._pub_tracks = self._publisher(ObjectTrackArray, "~/tracks", 10)
        self._pub_markers = self._publisher(MarkerArray, "~/markers", 10)
        self._pub_cloud = self._publisher(PointCloud2, "~/cloud", LATCHED)
        self._pub_diag = self._publisher(DiagnosticArray, "/diagnostics", 10)
        self._pub_detections = None
        if convert.detections_msg([], "", 0) is not None:
            from vision_msgs.msg import Detection3DArray
            self._pub_detections = self._publisher(Detection3DArray, "~/detections", 10)
        self._open_memory()
        self._tf = TfListener(self, self._on_tf)
        self._action = AskServer(self, self.questions, self._ask, self._refused,
                                 self._query_group, QUERY_QOS)
        self.get_logger().info(f"configured: world_frame={self.cfg.world_frame}")
        return TransitionCallbackReturn.SUCCESS

    def _publisher(self, msg_type, topic: str, qos):
        return self.create_lifecycle_publisher(msg_type, topic, qos,
                                               event_callbacks=NO_PUB_EVENTS)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from llava4d_ros.model.runtime import load_model  # torch is imported only when activating

        try:
            model = load_model(self.cfg.model_path or None, self.cfg.device, self.cfg.dtype,
                               self.cfg.cpu_threads, self.cfg.quantization,
                               self.cfg.decode_mode)
        except Exception as exc:  # noqa: BLE001 - any load failure leaves the node inactive
            self.get_logger().error(f"activate failed: could not load the model: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            self.engine.set_model(model)
        except ValueError as exc:  # a node parameter conflicts with the model's spec
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        spec = model.spec
        self.get_logger().info(
            f"model {model.model_id}: patch grid {spec.patch_grid}, voxel {spec.voxel_m} m, "
            f"token budget {spec.token_budget}, trained on {spec.window_s} s windows; window "
            f"{self.engine.ingestor.cfg.window_s:g} s")
        mismatch = window_mismatch(self.cfg, spec)
        if mismatch:
            self.get_logger().warning(mismatch)
        self._ingest_stop.clear()
        self._ingest_thread = threading.Thread(target=self._ingest_loop, name="llava4d_ingest",
                                               daemon=True)
        self._ingest_thread.start()
        overrides = QoSOverridingOptions.with_default_policies()
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
                                            qos_profile=QUERY_QOS,
                                            callback_group=self._query_group)
        self._track_replies(self._service)
        self.questions.open()
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
        self._destroy_action()
        self._close_memory()
        for pub in (self._pub_answers, self._pub_tracks, self._pub_markers, self._pub_cloud,
                    self._pub_diag, self._pub_detections):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self.engine = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_active()
        self._close_tf()
        self._destroy_action()
        self._close_memory()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        # the executor may be gone already: a reply still unsent then never will be
        self._teardown_active(drain_s=DESTROY_DRAIN_S)
        self._close_tf()
        self._destroy_action()
        self._close_memory()
        super().destroy_node()

    def _close_tf(self) -> None:
        if self._tf is not None:
            self._tf.close()
            self._tf = None

    def _open_memory(self) -> None:
        """The object memory (memory_path): opened on configure, kept across deactivate and
        activate, closed on cleanup. It never fails configure: a corrupt file is moved aside,
        an unwritable place leaves the memory off with an ERROR on /diagnostics."""
        path = self.cfg.memory_file()
        if not path:
            return
        from llava4d_ros.memory import MemoryStore

        def log(level: str, text: str) -> None:
            # one call site per severity: rclpy refuses a site that changes severity
            if level == "info":
                self.get_logger().info(text)
            elif level == "warn":
                self.get_logger().warning(text)
            else:
                self.get_logger().error(text)

        self._memory = MemoryStore(path, self.cfg.memory_retention_s, self.cfg.memory_max_mb,
                                   log=log)
        self.engine.attach_memory(self._memory)
        self._memory_services = [
            self.create_service(SaveMemory, "~/memory/save", self._on_memory_save,
                                callback_group=self._timer_group),
            self.create_service(Trigger, "~/memory/clear", self._on_memory_clear,
                                callback_group=self._timer_group)]
        status = self._memory.status()
        self.get_logger().info(f"memory {path}: {status.objects} objects, "
                               f"{status.observations} observations ({status.level}"
                               f"{': ' + status.message if status.message else ''})")

    def _close_memory(self) -> None:
        for srv in self._memory_services:
            self.destroy_service(srv)
        self._memory_services = []
        if self._memory is not None:
            if self.engine is not None:
                self.engine.attach_memory(None)
            self._memory.close()  # commits what is queued
            self._memory = None

    def _on_memory_save(self, request, response):
        response.success, response.message = self._memory.save(request.path)
        (self.get_logger().info if response.success else self.get_logger().error)(
            f"memory save: {response.message}")
        return response

    def _on_memory_clear(self, request, response):
        response.success, response.message = self._memory.clear()
        self.get_logger().info(f"memory clear: {response.message}")
        return response

    def _destroy_action(self) -> None:
        """Called once no goal runs (after `_teardown_active`)."""
        if self._action is not None:
            self._action.destroy()
            self._action = None

    def _track_replies(self, service) -> None:
        """Count a reply as sent only once the executor has sent it (after the callback
        returned), so a transition never withdraws the service between the two; a reply that
        still finds it withdrawn is logged, not raised out of the executor."""
        send = service.send_response

        def send_response(response, header) -> None:
            try:
                send(response, header)
            except InvalidHandle:
                self.get_logger().warning("a query reply was lost: the service was withdrawn "
                                          f"(node no longer active): {response.message!r}")
            finally:
                self.questions.reply_sent()

        service.send_response = send_response

    def _withdraw_service(self, drain_s: float) -> None:
        """Stop admitting questions, let the one being answered through `~/query` finish and
        cancel a running `~/ask` goal (waiting ones of both are told the node is no longer
        active), then destroy the service once every reply was sent and every goal ended."""
        if not self.questions.close(drain_s):
            self.get_logger().error(f"a question still runs after {drain_s:.0f} s; "
                                    "withdrawing ~/query anyway (its reply will be lost)")
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None

    def _teardown_active(self, drain_s: float = QUERY_DRAIN_S) -> None:
        self._withdraw_service(drain_s)
        for sub in self._sensor_subs:
            self.destroy_subscription(sub)
        self._sensor_subs = []
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
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
    def _warn(self, key: str, text: str) -> None:
        """A warning throttled per `key` (rclpy's throttle is per call site: one bad stream
        then hid every other reason), its text bounded to LOG_CHARS."""
        now = time.monotonic()
        if now - self._warned_at.get(key, float("-inf")) < WARN_PERIOD_S:
            return
        self._warned_at[key] = now
        if len(text) > LOG_CHARS:
            text = f"{text[:LOG_CHARS]}... ({len(text)} characters)"
        self.get_logger().warning(text)

    def _count(self, reason: str, detail: str) -> None:
        key = reason.split(":")[0]
        self.counters[key] = self.counters.get(key, 0) + 1
        self._warn(key, f"dropped ({key}, {self.counters[key]} so far): {detail}")

    def _report(self, outcomes) -> None:
        """Log what the engine did with frames (it counts them itself, see /diagnostics)."""
        for o in outcomes:
            if o.status == "dropped":
                key = o.reason.split(":")[0]
                self._warn(key, f"dropped ({key}, {self.engine.stats.drops[key]} so far): "
                                f"{o.reason}")
            elif o.status == "reset":
                self.get_logger().warning(f"buffer reset ({self.engine.stats.resets} so far): "
                                          f"{o.reason}")

    def _on_tf(self, msg: TFMessage, is_static: bool) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            transforms = convert.transforms(msg)
        except ValueError as exc:
            self._count("bad_tf", f"{'/tf_static' if is_static else '/tf'} message: {exc}")
            return
        for parent, child, t_ns, trans, quat in transforms:
            try:
                engine.add_transform(parent, child, t_ns, trans, quat, is_static)
            except InputRefused as exc:  # counted by the engine (/diagnostics)
                self._warn(exc.reason, f"refused ({exc.reason}, "
                                       f"{engine.stats.refused[exc.reason]} so far): {exc}")
            except Exception as exc:  # noqa: BLE001 - an error here would stop the TF thread
                self._count("error", f"tf {parent} -> {child}: {exc}")
                self.get_logger().debug(traceback.format_exc())
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
            t_ns = convert.stamp_ns(msg.header.stamp)
        except ValueError as exc:
            self._count(f"bad_{kind}", f"{kind} on {msg.header.frame_id!r}: {exc}")
            return
        try:
            refused = self.engine.stats.refused["depth beyond max_depth_m"]
            # back-pressure: while the ingest thread is behind, wait here (not in the engine's
            # locks), so DDS keeps the messages or, for best effort, drops the newest ones
            self.engine.wait_for_room(BACKPRESSURE_S)
            self._report(self.engine.add_image(kind, t_ns, item, ingest=False))
            if self.engine.stats.refused["depth beyond max_depth_m"] > refused:
                self._warn("depth beyond max_depth_m", (
                    f"depth on {msg.header.frame_id!r} has pixels beyond max_depth_m = "
                    f"{self.cfg.max_depth_m} m; they are invalid (a corrupt or mis-scaled "
                    f"image, {self.engine.stats.refused['depth beyond max_depth_m']} so far)"))
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
        """Admit the question (or reply "busy" at once), wait for its turn, answer it."""
        self.questions.reply_pending()  # sent by the executor after this returns
        try:
            with self.questions.admit(), self.questions.turn:
                if not self.questions.is_open:  # deactivated while it waited: told, not answered
                    response.success, response.message = False, CLOSED_WHILE_WAITING
                    return response
                return self._answer(request, response)
        except Refused as exc:
            self._refused(exc, "query")
            response.success, response.message = False, str(exc)
            return response

    def _refused(self, exc: Refused, what: str) -> None:
        """Count and log a question turned away because the queue is full."""
        if not exc.busy:
            return
        self.counters["query_busy"] = self.counters.get("query_busy", 0) + 1
        q = self.questions.queue_size
        self._warn("query_busy", f"{what} refused, busy: {1 + q} questions are already "
                                 f"answered or waiting (query_queue_size {q}; "
                                 f"{self.counters['query_busy']} refused so far)")

    def _answer(self, request: Query.Request, response: Query.Response) -> Query.Response:
        response.success, response.message, answer = self._ask(request)
        if answer is not None:
            response.answer = answer
        return response

    def _ask(self, request, on_text=None, cancel: threading.Event | None = None
             ) -> tuple[bool, str, Answer | None]:
        """Answer `request` (a Query request or an Ask goal: question and window) with the
        engine, publish the answer and its markers; (success, message, Answer or None)."""
        engine = self.engine
        if engine is None or engine.model is None:
            return False, "node is not active (no model loaded)", None
        try:
            t_start = convert.stamp_ns(request.window_start) / 1e9 or None
            t_end = convert.stamp_ns(request.window_end) / 1e9 or None
        except ValueError as exc:
            self.get_logger().info(f"query refused: bad window: {exc}")
            return False, f"bad window: {exc}", None
        try:
            result = engine.ask(request.question, t_start, t_end, on_text=on_text,
                                cancel=cancel)
            trim_heap()  # see ros/malloc_arenas.py
        except QueryError as exc:
            self.get_logger().info(f"query refused: {str(exc)[:LOG_CHARS]}")
            return False, str(exc), None
        except Exception as exc:  # noqa: BLE001 - the service must answer, the node live on
            self.get_logger().error(f"query failed: {traceback.format_exc()}")
            return False, f"internal error: {exc}", None
        now = self._now_ns()
        answer = convert.answer_msg(result, self.cfg.world_frame, now)
        self._pub_answers.publish(answer)
        self._pub_markers.publish(convert.answer_markers(result, self.cfg.world_frame, now,
                                                         self._answer_markers))
        self._answer_markers = len(result.objects)
        stopped = " (cancelled)" if cancel is not None and cancel.is_set() else ""
        self.get_logger().info(f"Q: {result.question[:LOG_CHARS]!r} -> A: "
                               f"{result.text[:LOG_CHARS]!r}{stopped} "
                               f"({result.latency_s * 1000:.0f} ms, "
                               f"{result.num_visual_tokens} tokens)")
        return True, "ok", answer

    def _publish_tracks(self) -> None:
        if self.engine is None:
            return
        tracks = self.engine.objects()
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
                problem = publisher_problem(info, sub)
                key = (sub.topic_name, info.node_namespace, info.node_name, problem)
                if problem and key not in self._qos_warned:
                    self._qos_warned.add(key)
                    self.counters["incompatible_publisher"] = (
                        self.counters.get("incompatible_publisher", 0) + 1)
                    self.get_logger().warning(
                        f"{sub.topic_name}: publisher {info.node_namespace.rstrip('/')}/"
                        f"{info.node_name} cannot reach us: {problem}")

    def _check_streams(self) -> None:
        """Warn when some image streams arrive and another does not (a camera_info topic not
        remapped): the synchronizer drops the others with only a counter otherwise."""
        got = {k: self.received.get(k, 0) - self._received_seen.get(k, 0)
               for k in ("rgb", "depth", "info")}
        self._received_seen = dict(self.received)
        missing = [k for k, n in got.items() if n == 0]
        if missing and len(missing) < len(got):
            names = {"rgb": "rgb/image", "depth": "depth/image", "info": "camera_info"}
            arriving = ", ".join(f"{names[k]} ({n})" for k, n in got.items() if n)
            for k in missing:
                topic = self.resolve_topic_name(names[k])
                self._warn(f"no_{k}", f"no {topic} for a second while {arriving} arrived: "
                                      f"no frame can be matched; check the topic name "
                                      f"(remapping) and its publisher")

    def _publish_status(self) -> None:
        """/diagnostics: counters a user (or bench/node.py) reads to see what was lost."""
        if self.engine is None:
            return
        now_s = time.monotonic()
        if now_s - self._qos_checked_s >= QOS_CHECK_PERIOD_S:
            self._qos_checked_s = now_s
            self._check_qos()
        self._check_streams()
        window = self.engine.window()
        values = {
            **{f"received_{k}": v for k, v in sorted(self.received.items())},
            "ingested": self.engine.stats.ingested,
            "keyframes": self.engine.stats.keyframes,
            "resets": self.engine.stats.resets,
            **{f"dropped_{k}": v for k, v in sorted(self.engine.drops().items())},
            **{f"refused_{k}": v for k, v in sorted(
                {**self.engine.stats.refused, **self.counters}.items())},
            "ingest_queue": self.engine.pending(),
            "buffer_keyframes": len(self.engine.ingestor.buffer.keyframes),
            "buffer_mb": round(self.engine.ingestor.buffer.nbytes / 2**20, 2),
            "window_s": 0.0 if window is None else round(window[1] - window[0], 3),
            "objects": len(self.engine.objects()),
            "model": self.engine.model.model_id if self.engine.model else "none",
        }
        if self.engine.category_error:
            values["categories"] = self.engine.category_error
        error = ""
        if self._memory is not None:
            m = self._memory.status()
            values.update({"memory": m.level, "memory_path": m.path,
                           "memory_objects": m.objects, "memory_observations": m.observations,
                           "memory_mb": round(m.size_mb, 2),
                           "memory_span_s": 0.0 if m.span is None else
                           round(m.span[1] - m.span[0], 1)})
            if m.message:
                values["memory_message"] = m.message
            if m.level == "error":
                error = f"memory writes stopped: {m.message}"
        self._pub_diag.publish(convert.diagnostics_msg(
            f"{self.get_fully_qualified_name()}", values, self._now_ns(),
            warn=bool(self.engine.stats.drops or self.counters), error=error))

    def _publish_cloud(self) -> None:
        if self.engine is None:
            return
        xyz, dyn = self.engine.cloud()
        self._pub_cloud.publish(convert.cloud_msg(xyz, dyn, self.cfg.world_frame,
                                                  self._now_ns()))


def executor_threads(node: Llava4dNode) -> int:
    """Threads the node needs on a MultiThreadedExecutor: one per image stream, timers, the
    lifecycle and parameter services, a question answered and each one waiting its turn (they
    hold a thread while they wait, `~/query` and `~/ask` alike), one to answer "busy" at once
    and one for the action's goal, cancel and result requests."""
    return 3 + 1 + 1 + 1 + int(node.get_parameter("query_queue_size").value) + 1 + 1


def main(argv: list[str] | None = None) -> int:
    """Console entry point: `llava4d-node --ros-args -p model_path:=... -r rgb/image:=...`.

    SIGINT and SIGTERM only set an event; the main thread then shuts down in order while the
    context is still valid: the shutdown transition (ingest thread stopped, questions
    answered, service withdrawn), the executor, the node, rclpy. With rclpy's own handlers the
    context was shut down from the signal while callbacks, the ingest thread and the TF thread
    still used it, and about 1 SIGINT in 5 on an ingesting node ended in a segfault.
    """
    limit_arenas()  # before DDS and our threads start: see ros/malloc_arenas.py
    rclpy.init(args=argv if argv is not None else sys.argv,
               signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = Llava4dNode()
    executor = MultiThreadedExecutor(num_threads=executor_threads(node))
    executor.add_node(node)
    failed: list[str] = []  # why the executor stopped, if it did on its own
    spinner = threading.Thread(target=_spin, args=(executor, stop, node, failed),
                               name="llava4d_exec")
    spinner.start()
    rc = 0
    try:
        if node.get_parameter("autostart").value and not stop.is_set():
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("staying unconfigured (see the error above); fix the "
                                        "parameters and call the configure transition")
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("staying inactive (see the error above)")
        stop.wait()
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second signal ends it at once
            signal.signal(signum, signal.SIG_DFL)
        node.get_logger().info("shutting down")
        if node._state_machine.current_state[1] in ("unconfigured", "inactive", "active"):
            node.trigger_shutdown()
    except Exception:  # noqa: BLE001 - log it, then still shut down in order
        node.get_logger().error(f"shutting down after an error: {traceback.format_exc()}")
        rc = 1
    finally:
        executor.shutdown()
        spinner.join(timeout=30)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 1 if failed else rc


def _spin(executor: MultiThreadedExecutor, stop: threading.Event, node: Llava4dNode,
          failed: list[str]) -> None:
    """The executor's thread: an error out of spin is logged and stops the node in order."""
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    except Exception:  # noqa: BLE001 - main() shuts down; the log says why
        failed.append(traceback.format_exc())
        node.get_logger().error(f"executor stopped: {failed[-1]}")
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
