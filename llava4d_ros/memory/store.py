"""MemoryStore: the object memory on disk, written off the sensor path, read by the answers.

One SQLite file in WAL mode. `submit` only enqueues; a writer thread turns keyframes into rows
(downsample.py), commits them at most every `commit_period_s` (a kill -9 loses at most that),
then applies retention a bounded step at a time. Queries read through their own connection,
which WAL keeps consistent while the writer commits. No fault of the file or the disk raises
into a caller: the store goes to an error state that `status()` reports, writes stop, and
queries go on answering from what is readable.
"""

from __future__ import annotations

import collections
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from llava4d_ros.core.objects import MapObject, ObjectEvent
from llava4d_ros.memory import queries
from llava4d_ros.memory.downsample import DownsamplePolicy, Downsampler
from llava4d_ros.memory.opening import open_memory, open_reader
from llava4d_ros.memory.records import (
    MemoryStatus,
    Moved,
    OnSupport,
    StoredObject,
    StoredObservation,
)
from llava4d_ros.memory.retention import Retention
from llava4d_ros.memory.writer import commit, save_snapshot

LogFn = Callable[[str, str], None]


def default_memory_path() -> Path:
    """`$ROS_HOME/llava4d/memory.db`, or `~/.ros/llava4d/memory.db` when ROS_HOME is unset
    (where ROS 2 keeps its own per-user files)."""
    ros_home = os.environ.get("ROS_HOME") or "~/.ros"
    return Path(ros_home).expanduser() / "llava4d" / "memory.db"


def _default_log(level: str, text: str) -> None:
    import logging

    logging.getLogger("llava4d_ros.memory").log(
        {"info": logging.INFO, "warn": logging.WARNING}.get(level, logging.ERROR), text)


class MemoryStore:
    """The object memory at `path` (a file; its directory is created).

    retention_s: observations, events and moves older than this before the newest stamp go.
    max_mb: the database's used size [MB] that size trimming keeps under (oldest heartbeats,
        then oldest observations, then oldest events and moves; the objects table stays).
    commit_period_s: the writer commits at most this often, so a crash loses at most this.
    log: `log(level, text)`, level "info" / "warn" / "error"; Python logging by default.
    policy: the downsampling (downsample.DownsamplePolicy).
    max_pending: keyframes queued before the oldest is dropped (events are never dropped
        with them; they wait in their own queue of `max_pending_events`).
    on_connect: called with the writer's connection once it is set up; for tools and tests
        (e.g. `PRAGMA max_page_count` to play a full disk).

    Object ids are the map's; the store keeps the highest ever stored so that
    `next_object_id()` continues after a restart, and `clear()` does not reset it (an id never
    names two objects in one memory's lifetime, saved snapshots and logs included).
    """

    def __init__(self, path: str | os.PathLike, retention_s: float, max_mb: float,
                 commit_period_s: float = 1.0, log: LogFn | None = None, *,
                 policy: DownsamplePolicy | None = None, max_pending: int = 600,
                 max_pending_events: int = 100_000,
                 on_connect: Callable[[sqlite3.Connection], None] | None = None):
        if retention_s <= 0 or max_mb <= 0 or commit_period_s < 0 or max_pending < 1:
            raise ValueError("retention_s and max_mb must be > 0, commit_period_s >= 0, "
                             "max_pending >= 1")
        self.path = Path(path).expanduser()
        self.retention_s = float(retention_s)
        self.max_mb = float(max_mb)
        self.commit_period_s = float(commit_period_s)
        self._log = log or _default_log
        self._policy = policy or DownsamplePolicy()
        self._on_connect = on_connect
        self._cond = threading.Condition()  # guards the queues and the counters below
        self._batches: collections.deque = collections.deque()
        self._events: collections.deque = collections.deque(maxlen=max_pending_events)
        self._max_pending = max_pending
        self._submitted = self._committed = 0
        self._dropped = self._rejected = 0
        self._flush_wanted = self._stop = False
        self._generation = 0  # clear() counts up: batches taken before it are not written
        self._write_lock = threading.Lock()  # the writer connection: writer thread, clear()
        self._read_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._level, self._message = "ok", "ok"
        self._counts = {"observations": 0, "events": 0, "objects": 0}
        self._keyframes = 0
        self._writer_cpu_s = 0.0
        self._next_id = 0
        self._open()
        self._thread = threading.Thread(target=self._run, name="memory-writer", daemon=True)
        self._thread.start()

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> None:
        opened = open_memory(self.path, self._on_connect)
        for level, text in opened.notes:
            self._log(level, f"memory: {text}")
        if opened.warning:
            self._level, self._message = "warn", opened.warning
        if opened.conn is None:
            self._fail(opened.error)
            if opened.readable:
                self._reader = open_reader(self.path, read_only=True)
            return
        self._writer = conn = opened.conn
        self._counts.update(opened.counts)
        self._downsampler = Downsampler(self._policy, opened.tracks)
        self._next_id = opened.next_id
        self._newest_s = opened.newest_s
        try:
            self._retention = Retention(conn, self.retention_s, self.max_mb, self._warn)
        except sqlite3.Error as exc:
            self._fail(f"cannot read {self.path}: {exc}; memory writes are off")
        self._reader = open_reader(self.path, read_only=False)
        self._log("info", f"memory: {self.path} open: {self._counts['objects']} objects, "
                          f"{self._counts['observations']} observations, next id "
                          f"{self._next_id}")

    # -- the ingest side -------------------------------------------------------------------

    def submit(self, stamp_s: float, objects: Sequence[MapObject],
               events: Sequence[ObjectEvent] = ()) -> None:
        """Queue one keyframe (`stamp_s` [s], the robot's clock) of the map's objects and the
        events since the last call. Only appends to a queue: the writer thread does the rest.
        The records are kept by reference until written: do not change their arrays."""
        with self._cond:
            if self._writer is None or self._level == "error":
                self._rejected += 1
                return
            self._submitted += 1
            if objects:
                if len(self._batches) >= self._max_pending:
                    self._batches.popleft()
                    self._dropped += 1
                self._batches.append((stamp_s, objects))
            if events:
                self._events.extend(events)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Commit everything submitted so far; True when it is on disk within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._submitted
            self._flush_wanted = True
            self._cond.notify_all()
            while self._committed < target and self._level != "error" and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return self._committed >= target and self._level != "error"

    def close(self) -> None:
        """Commit what is queued, stop the writer, checkpoint the WAL into the file."""
        if self._thread.is_alive():
            self.flush(timeout_s=10.0)
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            self._thread.join(timeout=10.0)
        with self._write_lock:
            if self._writer is not None:
                try:
                    self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    pass
                self._writer.close()
                self._writer = None
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            with self._cond:
                while not (self._stop or self._flush_wanted):
                    left = last + self.commit_period_s - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batches = list(self._batches)
                self._batches.clear()
                events = list(self._events)
                self._events.clear()
                target, stop = self._submitted, self._stop
                generation = self._generation
                self._flush_wanted = False
            last = time.monotonic()
            cpu0 = time.thread_time()
            if self._writer is not None and self._level != "error":
                self._write(batches, events, generation)
            with self._cond:
                self._writer_cpu_s += time.thread_time() - cpu0
                self._keyframes += len(batches)
                self._committed = target
                self._cond.notify_all()
            if stop:
                return

    def _write(self, batches: list, events: list[ObjectEvent], generation: int) -> None:
        with self._write_lock:
            if self._writer is None:
                return
            if generation != self._generation:  # taken before a clear(): they go with it
                batches, events = [], []
            try:
                if batches or events:
                    self._commit(batches, events)
                self._retention.step(self._newest_s, self._counts)
                for oid in self._retention.removed_objects:
                    self._downsampler.tracks.pop(oid, None)
                self._retention.removed_objects.clear()
            except (sqlite3.Error, OSError) as exc:
                self._fail(f"memory writes stopped: {type(exc).__name__}: {exc} ({self.path})")
            except Exception as exc:  # a bad record must not end the writer silently
                self._fail(f"memory writes stopped by {type(exc).__name__}: {exc} "
                           f"({self.path})")

    def _commit(self, batches: list, events: list[ObjectEvent]) -> None:
        for stamp_s, objs in batches:
            self._downsampler.add(stamp_s, objs)
        pending = self._downsampler.take()
        n_obs, n_events, self._next_id, newest = commit(self._writer, pending, events,
                                                        self._next_id)
        self._counts["observations"] += n_obs
        self._counts["events"] += n_events
        self._counts["objects"] = len(self._downsampler.tracks)
        self._newest_s = max(self._newest_s, newest)

    # -- state -----------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        with self._cond:
            self._level, self._message = "error", message
            self._cond.notify_all()
        self._log("error", f"memory: {message}")

    def _warn(self, message: str) -> None:
        with self._cond:
            if self._level != "error":
                self._level, self._message = "warn", message
        self._log("warn", f"memory: {message}")

    def status(self) -> MemoryStatus:
        """A snapshot for diagnostics; cheap (counts are kept, not counted)."""
        span = self.span()
        try:
            size_mb = sum(p.stat().st_size for p in (
                self.path, self.path.with_name(self.path.name + "-wal"))
                if p.exists()) / 1e6
        except OSError:
            size_mb = float("nan")
        with self._cond:
            level, message = self._level, self._message
            if level == "ok" and self._dropped:
                level, message = "warn", (f"the writer fell behind: {self._dropped} keyframes "
                                          "dropped")
            return MemoryStatus(level, message, str(self.path), self._counts["objects"],
                                self._counts["observations"], self._counts["events"], span,
                                size_mb, self._dropped, self._rejected, len(self._batches),
                                self._keyframes, self._writer_cpu_s)

    def next_object_id(self) -> int:
        """The smallest id no object of this memory has had (0 for a new memory)."""
        return self._next_id

    # -- snapshot and clear (service calls) ------------------------------------------------

    def save(self, path: str | os.PathLike) -> tuple[bool, str]:
        """Copy a consistent snapshot to `path` with SQLite's backup API (one step, inside one
        read transaction, so the writer goes on). Returns (success, message)."""
        if self._reader is None:
            return False, f"memory {self.path} is not readable: {self._message}"
        return save_snapshot(self.path, Path(path).expanduser())

    def clear(self) -> tuple[bool, str]:
        """Delete every object, observation, event and move, and what is queued. Object ids
        do not restart (see the class docstring). Returns (success, message)."""
        with self._cond:
            self._batches.clear()
            self._events.clear()
            self._generation += 1
        with self._write_lock:
            if self._writer is None or self._level == "error":
                return False, f"memory is not writable: {self._message}"
            try:
                c = self._writer
                c.execute("BEGIN IMMEDIATE")
                for table in ("observations", "events", "moves", "objects"):
                    c.execute(f"DELETE FROM {table}")
                c.execute("COMMIT")
                self._retention.reset()
                c.execute("PRAGMA incremental_vacuum")
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                self._fail(f"clearing failed: {exc}")
                return False, f"clearing the memory failed: {exc}"
            self._downsampler = Downsampler(self._policy)
            self._counts.update(observations=0, events=0, objects=0)
            self._newest_s = -math.inf
        self._log("info", f"memory: {self.path} cleared (next object id {self._next_id})")
        return True, f"memory cleared; next object id {self._next_id}"

    # -- queries (see queries.py) ----------------------------------------------------------

    def _read(self, fn, *args, empty=None):
        with self._read_lock:
            if self._reader is None:
                return empty
            try:
                return fn(self._reader, *args)
            except sqlite3.Error as exc:
                self._log("warn", f"memory: query {fn.__name__} failed: {exc}")
                return empty

    def span(self) -> tuple[float, float] | None:
        """(t0, t1) [s]: the oldest and newest stamps the memory holds; None when empty."""
        return self._read(queries.span)

    def objects(self) -> list[StoredObject]:
        """Every stored object's latest state (disappeared ones too), by id."""
        return self._read(queries.objects, False, empty=[])

    def known_objects(self) -> list[StoredObject]:
        """The latest state of every object not disappeared, by id."""
        return self._read(queries.objects, True, empty=[])

    def get(self, object_id: int) -> StoredObject | None:
        return self._read(queries.get_object, object_id)

    def last_seen(self, object_id: int) -> float | None:
        """The stamp [s] the object was last seen at (exact, not downsampled)."""
        return self._read(queries.last_seen, object_id)

    def where_at(self, object_id: int, stamp_s: float) -> StoredObservation | None:
        """The object's observation in force at `stamp_s`; see queries.where_at."""
        return self._read(queries.where_at, object_id, stamp_s)

    def moved_between(self, t0: float, t1: float) -> list[Moved]:
        """Objects that moved between t0 and t1 [s], with when and from where to where."""
        return self._read(queries.moved_between, t0, t1, empty=[])

    def new_since(self, t0: float) -> list[StoredObject]:
        """Objects first seen after t0 [s], oldest first."""
        return self._read(queries.new_since, t0, empty=[])

    def on_support_since(self, object_id: int) -> OnSupport | None:
        """Its support and since when it has stood on it without moving."""
        return self._read(queries.on_support_since, object_id)

    def events(self, t0: float, t1: float, kinds: Iterable[str] | None = None,
               object_id: int | None = None) -> list[ObjectEvent]:
        """Events with t0 <= stamp <= t1 [s], oldest first; `kinds` among EVENT_KINDS."""
        if kinds is not None:
            kinds = list(kinds)
        return self._read(queries.events, t0, t1, kinds, object_id, empty=[])
