"""Everything between parsed sensor data and answers, with no ROS: the node and the offline
replay both drive this one class, so there is one code path to test.

    rgb/depth/info --ApproximateTimeSync--> matched frame --TF at its stamp--> world_from_cam
      --> Ingestor (patches, motion, features, Buffer4D)
      --> ObjectMap (objects from depth, persistent ids) --> Categoriser (crops, now and then)
    question --> Buffer4D.tokens --> model --> text + grounded boxes --> matched to objects

Frames wait for their transform in *data time* (up to `tf_timeout_s` after their stamp, measured
by the newest sensor stamp), so a bag replayed faster than real time behaves like a live robot.
Only an image stream going back in time (a bag looping) resets the buffer; a transform never
does: one stamped more than `tf_cache_s` from data time (0, int32 max, a stale publisher) is
refused and counted, as are loops, dynamic transforms on static edges and bad quaternions.

Two ways to drive it:
- synchronous (replay, tests): `add_image(...)` syncs and ingests what it completed, in the
  caller's thread;
- threaded (the node): `add_image(..., ingest=False)` only syncs and queues the matched frame
  (cheap, so the sensor and TF callbacks never wait for the heavy work); one ingest thread runs
  `wait_for_work()` + `process_pending()`. `wait_for_room()` gives the callbacks back-pressure
  when the ingest falls behind, and a running question pauses ingestion between frames (frames
  wait in the queue, none is lost) so that the model does not fight the ingest for the GIL.

Locks, always taken in this order: `_input_lock` (sync, TF, queue of matched frames) then
`_buffer_lock` (ingestor, buffer, object map, object log); `_stats_lock` alone; `_model_lock` for
one generation at a time. A reset bumps `_generation` under both, so a frame popped before a
reset is never ingested into the buffer after it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from llava4d_ros.answers.map_answers import MapScene
from llava4d_ros.answers.policy import AnswerPolicy
from llava4d_ros.config import NodeConfig
from llava4d_ros.core.buffer4d import EmptyBufferError, VisualTokens
from llava4d_ros.core.geometry import PinholeCamera
from llava4d_ros.core.notation import AGO_AFTER, ANY_NUMBER, TIME
from llava4d_ros.core.objectmap import ObjectMap, ObjectMapConfig
from llava4d_ros.core.objects import MapObject, ObjectEvent
from llava4d_ros.core.pipeline import IngestConfig, Ingestor, PatchEncoder
from llava4d_ros.core.sync import ApproximateTimeSync
from llava4d_ros.core.tf_buffer import (
    ExtrapolationError,
    StaticEdgeError,
    TransformBuffer,
    TransformError,
    TransformLoopError,
)

if TYPE_CHECKING:  # model/ imports torch; the engine loads it only with a model
    from llava4d_ros.model.spec import ModelSpec

NS = 1_000_000_000
# a model that does not say its longest answer (SceneModel.max_new_tokens) gets this many
MAX_NEW_TOKENS_FALLBACK = 160
# A number in a question is a coordinate [m] or a time [s] in a window of seconds to minutes;
# beyond these it is a typo or an attack, and the digit-by-digit tokenizer would read it as a
# long run of digits the model never saw (it answered "<pad> <pad> ...").
MAX_QUESTION_NUMBER = 1e5
MAX_QUESTION_DIGITS = 12
# slack [s] on a time named in a question (the user rounds; the window's ends move)
QUESTION_TIME_SLACK_S = 1.0


class QueryError(ValueError):
    """A question that cannot be answered now; the message says why, for the service reply."""


class InputRefused(ValueError):
    """An input the engine refused and counted (`stats.refused[reason]`); the message names
    what was wrong (the edge, the value) for a warning."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class BoxLike(Protocol):
    """A grounded box of a model answer (llava4d_ros.model.grounding.GroundedBox)."""

    label: str
    t_s: float | None  # seconds since the window start; None: no time named (window end)
    box6: tuple[float, ...]  # cx, cy, cz, sx, sy, sz: world frame [m]
    confidence: float


class AnswerLike(Protocol):
    text: str
    boxes: tuple[BoxLike, ...]


class SceneModel(Protocol):
    """What the engine needs of a model (LLaVA4D implements it)."""

    model_id: str
    tokenizer: Any  # a transformers tokenizer: its special tokens are refused in questions
    spec: ModelSpec  # patch grid, voxel, token budget the weights were trained with
    device: Any  # the torch.device it runs on: visual tokens are pooled there (pool_device)

    @property
    def patch_encoder(self) -> PatchEncoder: ...

    def answer(self, question: str, tokens: VisualTokens, t_ref_s: float,
               max_new_tokens: int, *, asked_time_s: float = float("nan"),
               must_name: Sequence[int] = (), on_text: Callable[[str], None] | None = None,
               cancel: threading.Event | None = None) -> AnswerLike: ...


@dataclass(frozen=True)
class GroundedObject:
    track_id: int  # the map object it is; -1 when none matched
    label: str
    stamp_s: float
    center: np.ndarray  # (3,) world [m]
    size: np.ndarray  # (3,) [m]
    confidence: float


@dataclass(frozen=True)
class QueryResult:
    question: str
    text: str
    objects: list[GroundedObject]
    window_start_s: float
    window_end_s: float
    num_visual_tokens: int
    latency_s: float
    model_id: str
    source: str = "network"  # who decided the answer: map, rules or network


@dataclass
class _Pending:
    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    depth_m: np.ndarray
    cam: PinholeCamera


@dataclass
class FrameOutcome:
    stamp_ns: int
    status: str  # keyframe | skipped | dropped | reset
    reason: str = ""


@dataclass
class EngineStats:
    ingested: int = 0
    keyframes: int = 0
    resets: int = 0
    drops: Counter = field(default_factory=Counter)  # frames lost, by reason
    refused: Counter = field(default_factory=Counter)  # inputs refused (TF, depth), by reason


def pool_device(model: SceneModel | None) -> str | None:
    """Where the buffer pools visual tokens for `model`: its CUDA device (torch scatter
    reductions, core/pool_torch.py), else None, numpy on the CPU, which is faster there
    (bench/pool.py, 1,024-wide features: numpy 71 ms, torch on the CPU 156 ms)."""
    if model is None or str(model.device) == "cpu":
        return None
    return str(model.device)


def ingest_config(cfg: NodeConfig, spec: ModelSpec | None = None) -> IngestConfig:
    """The ingest settings, in one place: the patch grid, voxel, token budget and window from
    the model's `spec` (what its weights were trained with), the keyframe policy and buffer cap
    from the node. A node parameter left at 0 takes the model's value; a patch grid, voxel or
    budget of any other value must equal it (ValueError naming both: the weights cannot read
    anything else). A window of another length is taken (a user may want one) and
    `window_mismatch` names it. Without a model, the node's values, else IngestConfig's."""
    node = {"max_buffer_mb": cfg.max_buffer_mb,
            "keyframe_min_interval_s": cfg.keyframe_min_interval_s,
            "keyframe_max_interval_s": cfg.keyframe_max_interval_s,
            "keyframe_min_translation_m": cfg.keyframe_min_translation_m,
            "keyframe_min_rotation_deg": cfg.keyframe_min_rotation_deg}
    if spec is None:
        default = IngestConfig()
        grid = (cfg.patch_rows or default.patch_grid[0], cfg.patch_cols or default.patch_grid[1])
        return IngestConfig(patch_grid=grid, voxel_m=cfg.voxel_m or default.voxel_m,
                            token_budget=cfg.token_budget or default.token_budget,
                            window_s=cfg.window_s or default.window_s, **node)
    model = {"patch_rows": spec.patch_grid[0], "patch_cols": spec.patch_grid[1],
             "voxel_m": spec.voxel_m, "token_budget": spec.token_budget}
    for name, model_value in model.items():
        node_value = getattr(cfg, name)
        if node_value and node_value != model_value:
            raise ValueError(
                f"node parameter {name} = {node_value} conflicts with the model, trained with "
                f"{name} = {model_value}; leave it 0 to use the model's value")
    if cfg.window_s:
        node["window_s"] = cfg.window_s
    return spec.ingest_config(**node)


def window_mismatch(cfg: NodeConfig, spec: ModelSpec) -> str:
    """Why the node's window differs from the one the model was trained on, or ""."""
    if not cfg.window_s or abs(cfg.window_s - spec.window_s) < 1e-6:
        return ""
    return (f"window_s = {cfg.window_s:g} s but the model was trained on {spec.window_s:g} s "
            "windows: times beyond its training reach it (window_s 0 takes the model's)")


class Engine:
    """Thread-safe: sensor input, the ingest thread and questions may be different threads."""

    def __init__(self, cfg: NodeConfig, model: SceneModel | None = None):
        self.cfg = cfg
        self.model = model
        self.tf = TransformBuffer(cache_s=cfg.tf_cache_s)
        self.sync = ApproximateTimeSync(slop_s=cfg.sync_slop_s, queue_size=cfg.sync_queue_size)
        self.ingestor = Ingestor(ingest_config(cfg, model.spec if model is not None else None),
                                 encoder=model.patch_encoder if model is not None else None)
        self.ingestor.buffer.pool_on(pool_device(model))
        self.stats = EngineStats()
        self._encoder_id = model.model_id if model is not None else None
        self._pending: deque[_Pending] = deque()
        self._newest_ns: int | None = None  # newest sensor stamp seen (data time)
        self._newest_by_kind: dict[str, int] = {}
        self._last_ingested_ns: int | None = None
        self.objects_map = (ObjectMap(ObjectMapConfig(gravity=cfg.gravity))
                            if cfg.object_map else None)
        self._object_log: dict[int, MapObject] = {}
        self._events: deque[ObjectEvent] = deque(maxlen=1000)
        # (stamp_s, world_from_cam (4, 4)) of every ingested frame, as far back as TF is kept
        self._camera: deque[tuple[float, np.ndarray]] = deque()
        self.memory: Any = None  # a memory.MemoryStore (attach_memory), or None
        self._categoriser: Any = None
        self._category_error = ""
        self._last_category_s = -np.inf
        self._generation = 0  # bumped by reset()
        self._input_lock = threading.RLock()  # sync, TF, pending frames, data time
        self._buffer_lock = threading.RLock()  # ingestor, buffer, object map, object log
        self._stats_lock = threading.Lock()
        self._ingest_lock = threading.Lock()  # one process_pending at a time (frame order)
        self._model_lock = threading.Lock()  # one generation at a time
        self._signal = threading.Condition()  # new frames / TF, room in the queue, queries
        self._queries_running = 0

    def set_model(self, model: SceneModel | None) -> None:
        """Swap the model (activate/deactivate). The buffer is kept when the new model's patch
        features and ingest settings are those already stored (same encoder, same spec);
        otherwise it starts over, since features from two encoders or two patch grids cannot
        be mixed in one window. Raises ValueError (nothing changed) when a node parameter
        conflicts with the model's spec."""
        new_cfg = ingest_config(self.cfg, model.spec) if model is not None else None
        with self._input_lock, self._buffer_lock, self._model_lock:
            self.model = model
            if model is None:
                self.ingestor.buffer.pool_on(None)
                return
            old_dim = self.ingestor.feature_dim
            if new_cfg != self.ingestor.cfg:
                self.ingestor = Ingestor(new_cfg, encoder=model.patch_encoder)
                self._last_ingested_ns = None
            self.ingestor.encoder = model.patch_encoder
            if self.ingestor.feature_dim != old_dim or self._encoder_id != model.model_id:
                self.ingestor.reset()
                self._last_ingested_ns = None
            self._encoder_id = model.model_id
            self.ingestor.buffer.pool_on(pool_device(model))

    # ----------------------------------------------------------------- inputs
    def add_transform(self, parent: str, child: str, stamp_ns: int, translation, quat_xyzw,
                      is_static: bool) -> None:
        """Store `parent_from_child` at `stamp_ns`; raises InputRefused (counted) for a
        transform the tree must not take. Never resets the buffer: a TF stamp far from data
        time is one bad message (or a stale publisher), not a restart; an image stream going
        back is what resets (`_check_time`)."""
        try:
            with self._input_lock:
                newest = self._newest_ns
                far_ns = self.cfg.tf_cache_s * NS
                if not is_static and newest is not None and abs(stamp_ns - newest) > far_ns:
                    raise InputRefused(
                        "tf far from data time",
                        f"{parent} -> {child} stamped {stamp_ns / NS:.3f} s is "
                        f"{(stamp_ns - newest) / NS:+.3f} s from the newest image "
                        f"({newest / NS:.3f} s); beyond tf_cache_s = {self.cfg.tf_cache_s} s")
                try:
                    self.tf.set_transform(parent, child, stamp_ns, translation, quat_xyzw,
                                          is_static)
                except TransformLoopError as exc:
                    raise InputRefused("tf loop", str(exc)) from None
                except StaticEdgeError as exc:
                    raise InputRefused("tf on a static edge", str(exc)) from None
                except ValueError as exc:
                    raise InputRefused("bad tf", f"{parent} -> {child}: {exc}") from None
        except InputRefused as exc:
            with self._stats_lock:
                self.stats.refused[exc.reason] += 1
            raise
        self.wake()

    def add_image(self, kind: str, stamp_ns: int, item, ingest: bool = True
                  ) -> list[FrameOutcome]:
        """`kind` rgb: (frame_id, rgb (H,W,3) uint8); depth: depth_m (H,W) float32 metres;
        info: PinholeCamera. With `ingest`, also ingests the frames this completed and returns
        what happened to them; without, the matched frames wait for `process_pending` (the
        ingest thread) and only resets and backlog drops are returned."""
        outcomes: list[FrameOutcome] = []
        if kind == "depth":
            item = self._clip_depth(item)
        with self._input_lock:
            outcomes += self._check_time(kind, stamp_ns)
            if self._newest_ns is None:
                # data time starts (or starts over): TF far from it came before any image
                # could be compared with it (a stamp of 0 or int32 max at start-up)
                far_ns = round(self.cfg.tf_cache_s * NS)
                n = self.tf.drop_dynamic_outside(stamp_ns - far_ns, stamp_ns + far_ns)
                if n:
                    with self._stats_lock:
                        self.stats.refused["tf far from data time"] += n
            for matched in self.sync.add(kind, stamp_ns, item):
                frame_id, rgb = matched.rgb
                self._pending.append(_Pending(matched.stamp_ns, frame_id, rgb, matched.depth,
                                              matched.info))
            self._newest_ns = max(stamp_ns, self._newest_ns or stamp_ns)
            while len(self._pending) > self.cfg.ingest_queue_size:
                old = self._pending.popleft()
                outcomes.append(self._dropped(old.stamp_ns, "ingest backlog: the ingest fell "
                                              "behind and ingest_queue_size frames waited"))
        self.wake()
        if ingest:
            outcomes += self.process_pending()
        return outcomes

    def _clip_depth(self, depth_m: np.ndarray) -> np.ndarray:
        """Depth beyond `max_depth_m` becomes invalid (NaN): no RGB-D sensor measures it, so
        it is a corrupt or mis-scaled image; counted once per image."""
        depth_m = np.asarray(depth_m)
        with np.errstate(invalid="ignore"):
            far = depth_m > self.cfg.max_depth_m
        if not far.any():
            return depth_m
        with self._stats_lock:
            self.stats.refused["depth beyond max_depth_m"] += 1
        out = depth_m.astype(np.float32, copy=True)
        out[far] = np.nan
        return out

    def pending(self) -> int:
        """Matched frames waiting for their TF or for the ingest thread."""
        with self._input_lock:
            return len(self._pending)

    def wait_for_room(self, timeout_s: float) -> bool:
        """Block while the queue of matched frames is full (back-pressure for the sensor
        callbacks); False if it still is after `timeout_s`."""
        with self._signal:
            return self._signal.wait_for(
                lambda: len(self._pending) < self.cfg.ingest_queue_size, timeout_s)

    def wait_for_work(self, timeout_s: float) -> None:
        """Block until a frame or a transform arrived (or `timeout_s` passed)."""
        with self._signal:
            self._signal.wait(timeout_s)

    def wake(self) -> None:
        """Wake every thread in `wait_for_work` / `wait_for_room`."""
        with self._signal:
            self._signal.notify_all()

    def drop(self, reason: str) -> FrameOutcome:
        """Count a message the adapter refused before it reached the engine (bad encoding...)."""
        with self._stats_lock:
            self.stats.drops[reason] += 1
        return FrameOutcome(0, "dropped", reason)

    def _check_time(self, kind: str, stamp_ns: int) -> list[FrameOutcome]:
        """A stream whose stamp falls far behind its own newest (a bag looping) resets
        everything but static TF. Per stream: a slow node drains a cheap topic (camera_info)
        ahead of a costly one (rgb), so comparing across streams would see time go back."""
        jump_ns = self.cfg.time_jump_reset_s * NS
        newest = self._newest_by_kind.get(kind)
        self._newest_by_kind[kind] = max(stamp_ns, newest or stamp_ns)
        if newest is None or stamp_ns >= newest - jump_ns:
            return []
        self.reset(keep_tf_until_ns=stamp_ns + round(jump_ns))
        self._newest_by_kind[kind] = stamp_ns
        self._count_reset()
        return [FrameOutcome(stamp_ns, "reset", f"{kind} stamp {stamp_ns / NS:.3f} s is "
                             f"{(newest - stamp_ns) / NS:.3f} s behind its newest "
                             f"({newest / NS:.3f} s): the source restarted (a bag looping?)")]

    def _count_reset(self) -> None:
        with self._stats_lock:
            self.stats.resets += 1

    def reset(self, keep_tf_until_ns: int | None = None) -> None:
        """Forget frames, the buffer, tracks and data time; static TF stays. Dynamic TF
        stamped after `keep_tf_until_ns` goes (None: all of it): on a bag loop the new run's
        transforms often arrive before its first image and must survive the reset."""
        with self._input_lock, self._buffer_lock:
            self._generation += 1
            if keep_tf_until_ns is None:
                self.tf.clear_dynamic()
            else:
                self.tf.drop_dynamic_outside(None, keep_tf_until_ns)
            self.sync.clear()
            self.ingestor.reset()
            self._pending.clear()
            self._newest_ns = None
            self._newest_by_kind.clear()
            self._last_ingested_ns = None
            self._object_log.clear()
            self._camera.clear()
            if self.objects_map is not None:
                self.objects_map.reset()
                self._seed_from_memory()
        self.wake()

    def process_pending(self, yield_to_queries: bool = False,
                        max_pause_s: float = 2.0) -> list[FrameOutcome]:
        """Ingest every waiting frame whose transform is known, oldest first; drop those that
        waited too long. With `yield_to_queries` (the ingest thread), wait between frames while
        a question is being answered and the queue is less than half full, at most
        `max_pause_s` per frame."""
        outcomes: list[FrameOutcome] = []
        with self._ingest_lock:
            while True:
                if yield_to_queries:
                    # the model gets the CPU (and the GIL) while the queue has room; once it
                    # is half full, ingest goes on, or frames would be lost to a long answer
                    half = max(1, self.cfg.ingest_queue_size // 2)
                    with self._signal:
                        self._signal.wait_for(lambda: self._queries_running == 0
                                              or len(self._pending) >= half, max_pause_s)
                with self._input_lock:
                    generation = self._generation
                    ready = self._next_ready(outcomes)
                if ready is None:
                    break
                p, world_from_cam = ready
                with self._buffer_lock:
                    if generation == self._generation:  # no reset since it was popped
                        outcomes.append(self._ingest(p, world_from_cam))
                self.wake()  # room in the queue
        return outcomes

    def _next_ready(self, outcomes: list[FrameOutcome]) -> tuple[_Pending, np.ndarray] | None:
        """Pop the oldest frame if its transform is known (under `_input_lock`). Frames that
        waited too long are dropped first; a frame still waiting for its transform keeps itself
        and every newer frame queued (stamp order: they would wait for it anyway, and scanning
        them on every wake-up cost the TF callback its lock under load)."""
        while self._pending:
            p = self._pending[0]
            try:
                world_from_cam = self.tf.lookup(self.cfg.world_frame, p.frame_id, p.stamp_ns)
            except TransformError as exc:
                # The transform may still come (TF lags images, or the tree is not complete
                # yet at start-up); a stamp older than the TF cache never will.
                waited_s = ((self._newest_ns or p.stamp_ns) - p.stamp_ns) / NS
                too_old = isinstance(exc, ExtrapolationError) and not exc.is_future
                if not too_old and waited_s < self.cfg.tf_timeout_s:
                    return None
                self._pending.popleft()
                outcomes.append(self._dropped(p.stamp_ns, f"no TF: {exc}"))
                continue
            self._pending.popleft()
            return p, world_from_cam
        return None

    def _dropped(self, stamp_ns: int, reason: str) -> FrameOutcome:
        with self._stats_lock:
            self.stats.drops[reason.split(":")[0]] += 1
        return FrameOutcome(stamp_ns, "dropped", reason)

    def ingest_frame(self, stamp_ns: int, rgb: np.ndarray, depth_m: np.ndarray,
                     cam: PinholeCamera, world_from_cam: np.ndarray) -> FrameOutcome:
        """Ingest one frame whose pose is known already (evaluation, a dataset folder): the
        path of a synchronised frame after its TF lookup, with no sync or TF."""
        with self._buffer_lock:
            return self._ingest(_Pending(int(stamp_ns), "", rgb, self._clip_depth(depth_m),
                                         cam), world_from_cam)

    def _ingest(self, p: _Pending, world_from_cam: np.ndarray) -> FrameOutcome:
        """Under `_buffer_lock`."""
        if self._last_ingested_ns is not None and p.stamp_ns <= self._last_ingested_ns:
            return self._dropped(p.stamp_ns, "out of order: stamp not newer than the last frame")
        stamp_s = p.stamp_ns / NS
        result = self.ingestor.ingest(stamp_s, p.rgb, p.depth_m, p.cam, world_from_cam)
        if result.status == "dropped":
            return self._dropped(p.stamp_ns, result.reason)
        self._last_ingested_ns = p.stamp_ns
        self._camera.append((stamp_s, np.asarray(world_from_cam, np.float64)))
        while self._camera and self._camera[0][0] < stamp_s - self.cfg.tf_cache_s:
            self._camera.popleft()
        if result.status == "reset" and self.objects_map is not None:
            self.objects_map.reset()
            self._object_log.clear()
            self._seed_from_memory()
        if result.status in ("keyframe", "reset") and self.objects_map is not None:
            t0 = time.perf_counter()
            events = self.objects_map.update(stamp_s, p.depth_m, p.rgb, p.cam, world_from_cam)
            self._events.extend(events)
            self.ingestor.timings_ms["object_map"] = (time.perf_counter() - t0) * 1e3
            self._categorise(stamp_s, p, world_from_cam)
            objects = self.objects_map.objects
            self._log_objects(objects)
            if self.memory is not None:
                self.memory.submit(stamp_s, objects, events)  # queued: the writer is a thread
        with self._stats_lock:
            self.stats.ingested += 1
            self.stats.keyframes += result.status in ("keyframe", "reset")
        return FrameOutcome(p.stamp_ns, result.status, result.reason)

    def _categorise(self, stamp_s: float, p: _Pending, world_from_cam: np.ndarray) -> None:
        """Classify crops of objects in view that have too few category views, at most once
        per `category_period_s` (under `_buffer_lock`). Without the classifier's packages
        objects keep the category "object", and `category_error` says why."""
        cfg = self.cfg
        if cfg.category_views == 0 or stamp_s - self._last_category_s < cfg.category_period_s:
            return
        if self._categoriser is None:
            if self._category_error:
                return
            try:
                from llava4d_ros.core.category import Categoriser

                self._categoriser = Categoriser()
            except (ImportError, OSError, RuntimeError) as exc:
                self._category_error = f"no object categories: {exc}"
                return
        requests = self.objects_map.category_requests(p.cam, world_from_cam,
                                                      cfg.category_views)[:2]
        if not requests:
            return
        self._last_category_s = stamp_s
        t0 = time.perf_counter()
        scores = self._categoriser.scores(p.rgb, [box for _, box in requests])
        for (object_id, _), sc in zip(requests, scores):
            self.objects_map.add_category_scores(object_id, sc)
        self.ingestor.timings_ms["category"] = (time.perf_counter() - t0) * 1e3

    @property
    def category_error(self) -> str:
        """Why objects have no categories ("" when they do or none were asked for)."""
        return self._category_error

    def _log_objects(self, objects: list[MapObject]) -> None:
        """Keep the last snapshot of every object seen in the window, also after it left the
        map (it moved away or its place was seen empty), so answers about the past can name
        its id."""
        for obj in objects:
            self._object_log[obj.object_id] = obj
        for oid in self.objects_map.retracted & set(self._object_log):
            del self._object_log[oid]
        window = self.ingestor.buffer.time_range()
        if window is not None:
            for oid in [o for o, obj in self._object_log.items()
                        if obj.last_seen_s < window[0]]:
                del self._object_log[oid]

    # ---------------------------------------------------------------- outputs
    def attach_memory(self, store: Any) -> None:
        """Write the object map to `store` (a `memory.MemoryStore`) after every keyframe, and
        take up what it remembers: ids continue after its largest, and its still objects
        wait at their places, so an object seen again there keeps its id (`ObjectMap.seed`).
        None detaches."""
        with self._buffer_lock:
            self.memory = store
            self._seed_from_memory()

    def _seed_from_memory(self) -> None:
        """Under `_buffer_lock`."""
        if self.memory is None or self.objects_map is None:
            return
        self.objects_map.continue_ids(max(int(self.memory.next_object_id()), 1))
        known = [o for o in self.memory.known_objects() if not o.is_dynamic]
        self.objects_map.seed([(o.object_id, np.asarray(o.center), np.asarray(o.size),
                                o.first_seen_s) for o in known])

    def objects(self, include_gone: bool = False) -> list[MapObject]:
        """The object map's objects (static and moving); with `include_gone`, also those seen
        in the window that left the map since. Oldest id first."""
        with self._buffer_lock:
            if self.objects_map is None:
                return []
            current = self.objects_map.objects
            if include_gone:
                # the map's objects (a still one stays while out of view) and those that left
                # it while the window still holds their last sighting
                by_id = {**self._object_log, **{o.object_id: o for o in current}}
                return sorted(by_id.values(), key=lambda o: o.object_id)
            return current

    def take_events(self) -> list[ObjectEvent]:
        """Object events since the last call (appeared, started/stopped moving, left view,
        disappeared), oldest first; at most the last 1000 are kept between calls."""
        with self._buffer_lock:
            out = list(self._events)
            self._events.clear()
            return out

    def camera_at(self, stamp_s: float) -> tuple[float, np.ndarray] | None:
        """`(stamp_s, world_from_cam (4, 4))` of the ingested frame nearest `stamp_s`, or None
        when no frame was ingested (the trail reaches back `tf_cache_s`)."""
        with self._buffer_lock:
            return _nearest_pose(list(self._camera), stamp_s)

    def drops(self) -> dict[str, int]:
        """Everything dropped so far by reason: frames (engine and core) and unmatched messages
        (the synchronizer's `sync: ...` reasons, e.g. rgb/depth with no camera_info)."""
        with self._stats_lock:
            out = dict(self.stats.drops)
        with self._input_lock:
            out.update({f"sync: {k}": v for k, v in self.sync.drops.items() if v})
            return out

    def window(self) -> tuple[float, float] | None:
        with self._buffer_lock:
            return self.ingestor.buffer.time_range()

    def cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """The window's valid world points (N, 3) and a dynamic flag (N,) per point."""
        with self._buffer_lock:
            kfs = list(self.ingestor.buffer.keyframes)
            thr = self.ingestor.cfg.motion_threshold_m
        if not kfs:
            return np.zeros((0, 3), np.float32), np.zeros((0,), bool)
        xyz = np.concatenate([k.xyz_world for k in kfs])
        dyn = np.concatenate([k.motion > thr for k in kfs])
        ok = np.isfinite(xyz).all(axis=1)
        return xyz[ok].astype(np.float32), dyn[ok]

    def ask(self, question: str, t_start_s: float | None = None,
            t_end_s: float | None = None, *, on_text: Callable[[str], None] | None = None,
            cancel: threading.Event | None = None) -> QueryResult:
        """Answer a question over the window (optionally restricted to [t_start_s, t_end_s],
        absolute stamps [s]). Raises QueryError with the reason for anything it refuses.
        `on_text(text)`: the answer so far while the model generates it, the whole answer last
        (`SceneModel.answer`); `cancel`: set it to stop generating, and the answer is what was
        said until then."""
        t0 = time.perf_counter()
        question = question.strip()
        if not question:
            raise QueryError("empty question")
        if len(question) > self.cfg.max_question_chars:
            raise QueryError(f"question has {len(question)} characters; the limit is "
                             f"{self.cfg.max_question_chars} (max_question_chars)")
        for name, t in (("window_start", t_start_s), ("window_end", t_end_s)):
            if t is not None and not (np.isfinite(t) and 0 <= t < 2**63 / NS):
                raise QueryError(f"{name} {t} s is not a valid stamp")
        if t_start_s is not None and t_end_s is not None and t_end_s < t_start_s:
            raise QueryError(f"window_end {t_end_s:.3f} is before window_start {t_start_s:.3f}")
        _check_numbers(question)
        model = self.model  # read again under the model lock (see below)
        if model is None:
            raise QueryError("no model is loaded (the node is not active)")
        _check_special_tokens(question, model)
        with self._signal:
            self._queries_running += 1  # the ingest thread pauses between frames
        try:
            with self._buffer_lock:
                try:
                    tokens = self.ingestor.tokens(t_start_s, t_end_s)
                except EmptyBufferError as exc:
                    raise QueryError(f"no observations in the window yet ({exc})") from None
                current = self.objects_map.objects if self.objects_map is not None else None
                logged = list({**self._object_log,
                               **{o.object_id: o for o in current or ()}}.values())
                trail = list(self._camera)
                newest_ns = self._last_ingested_ns
            t_ref = float(tokens.t_s.min())
            t_end = float(tokens.t_s.max())
            # "3 seconds ago" counts back from the newest frame, which made no token unless it
            # was a keyframe; a window_end asked for is the end the question is about
            t_now = t_end if t_end_s is not None or newest_ns is None else max(t_end,
                                                                                newest_ns / NS)
            _check_times(question, t_ref, t_end, durations_ok=self.memory is not None)
            scene = None
            if current is not None:
                scene = MapScene(current, now_s=t_now, window_start_s=t_ref,
                                 camera_at=lambda stamp_s: _nearest_pose(trail, stamp_s),
                                 memory=self.memory)
            # the model is read under its lock: deactivate (set_model(None)) may run meanwhile
            with self._model_lock:
                model = self.model
                if model is None:
                    raise QueryError("no model is loaded (the node is not active)")
                max_new = self.cfg.max_new_tokens or int(getattr(model, "max_new_tokens",
                                                                   MAX_NEW_TOKENS_FALLBACK))
                out = AnswerPolicy(model).answer(question, tokens, t_ref, max_new, scene,
                                                 t_end_s=t_now, on_text=on_text,
                                                 cancel=cancel)
        finally:
            with self._signal:
                self._queries_running -= 1
                self._signal.notify_all()
        objects = [self._ground(b, t_ref, t_end, logged) for b in out.boxes]
        objects += [GroundedObject(o.object_id, o.label, min(o.last_seen_s, t_end), o.center,
                                   o.size, 1.0) for o in out.objects]
        return QueryResult(question=question, text=out.text, objects=objects,
                           window_start_s=t_ref, window_end_s=t_end,
                           num_visual_tokens=int(len(tokens.t_s)),
                           latency_s=time.perf_counter() - t0,
                           model_id=model.model_id, source=out.source)

    @staticmethod
    def _ground(box: BoxLike, t_ref_s: float, window_end_s: float,
                objects: list[MapObject]) -> GroundedObject:
        """Name the object whose position at the box's time is nearest its centre, if close."""
        stamp_s = t_ref_s + box.t_s if box.t_s is not None else window_end_s
        center = np.asarray(box.box6[:3], np.float64)
        size = np.asarray(box.box6[3:], np.float64)
        best, best_d = -1, max(0.5, float(size.max()))
        for obj in objects:
            history = obj.history or ((obj.last_seen_s, obj.center),)
            times = np.array([h[0] for h in history])
            pos = np.array([h[1] for h in history])
            before = np.flatnonzero(times <= stamp_s + 1e-6)
            k = int(before[-1]) if before.size else 0  # where it was then (or first seen)
            d = float(np.linalg.norm(pos[k] - center))
            if d < best_d:
                best, best_d = obj.object_id, d
        return GroundedObject(best, box.label, stamp_s, center, size, box.confidence)


def _nearest_pose(trail: list[tuple[float, np.ndarray]], stamp_s: float
                  ) -> tuple[float, np.ndarray] | None:
    """The `(stamp_s, world_from_cam)` of `trail` nearest `stamp_s`, or None if empty."""
    if not trail:
        return None
    stamps = np.array([t for t, _ in trail])
    return trail[int(np.argmin(np.abs(stamps - stamp_s)))]


def _check_numbers(question: str) -> None:
    """Refuse numbers no coordinate [m] or time [s] of a window can have (see
    MAX_QUESTION_NUMBER): 400 digits, 1e300. A time ("at 12s") is checked against the
    window itself (`_check_times`), which names the window in its refusal."""
    times = {m.start(1) for m in TIME.finditer(question)}
    for m in ANY_NUMBER.finditer(question):
        text = m.group(0)
        digits = sum(c.isdigit() for c in m.group(1))
        too_big = m.start(1) not in times and not abs(float(text)) <= MAX_QUESTION_NUMBER
        if digits > MAX_QUESTION_DIGITS or too_big:
            shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text)} characters)"
            raise QueryError(f"the number {shown} in the question is out of range: coordinates "
                             f"[m] and times [s] are at most {MAX_QUESTION_NUMBER:g} with at "
                             f"most {MAX_QUESTION_DIGITS} digits")


def _check_times(question: str, t_ref_s: float, t_end_s: float,
                 durations_ok: bool = False) -> None:
    """A time named in a question ("at 2.5s") is seconds since the window start: it must fall
    in the window the model sees, or the answer would be about a time it has no data for.
    With `durations_ok` (a memory reaches back beyond the window), "200 seconds ago" is not
    checked."""
    length = t_end_s - t_ref_s
    for m in TIME.finditer(question):
        if durations_ok and AGO_AFTER.match(question, m.end()):
            continue
        t = float(m.group(1))
        if t > length + QUESTION_TIME_SLACK_S:
            raise QueryError(
                f"the question names {m.group(0)!r}, outside the window: times are seconds "
                f"since its start and it covers 0 .. {length:.1f} s (stamps {t_ref_s:.3f} .. "
                f"{t_end_s:.3f} s)")


def _check_special_tokens(question: str, model: SceneModel) -> None:
    """User text must never create the model's control tokens (an `<image>` placeholder
    without image features, a `<box>` slot, `<pad>`...): refused, naming the token."""
    tok = model.tokenizer
    special = set(tok.all_special_tokens) | set(tok.get_added_vocab())
    found = sorted(t for t in special if t and t in question)
    if found:
        raise QueryError(f"the question contains the model's special token(s) "
                         f"{', '.join(found[:5])}; rephrase without them")
