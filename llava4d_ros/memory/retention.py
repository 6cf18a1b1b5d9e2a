"""Retention by age and by size, a bounded step at a time in the writer thread.

The memory forgets through a *horizon* (meta.horizon_s): queries about times before it answer
"not known". Moving the horizon deletes each object's observations older than it except the
one in force at the horizon, so a static object seen once long ago is still placed correctly
just after the horizon. By age the horizon is `newest stamp - retention_s`, and events and
moves older than it go too (as do objects that disappeared before it). By size, when the
database's used pages pass `max_mb`: first heartbeats (the least informative rows), then the
horizon advances through observations, and only when observations can go no further the
oldest events and moves; the objects table is never trimmed by size.
"""

from __future__ import annotations

import collections
import math
import sqlite3
import time
from collections.abc import Callable

from llava4d_ros.memory.queries import oldest_observation
from llava4d_ros.memory.schema import HEARTBEAT

_AGE_PASS_S = 10.0  # the age horizon moves in steps of this much stream time


class Retention:
    """Deletes from `conn` (the writer's connection) at most ~`budget_s` per `step`."""

    def __init__(self, conn: sqlite3.Connection, retention_s: float, max_mb: float,
                 warn: Callable[[str], None], *, chunk: int = 2000, budget_s: float = 0.05):
        self.conn = conn
        self.retention_s = retention_s
        self.max_bytes = max_mb * 1e6
        self.warn = warn
        self.chunk = chunk
        self.budget_s = budget_s
        row = conn.execute("SELECT value FROM meta WHERE key = 'horizon_s'").fetchone()
        self.horizon = float(row[0]) if row else -math.inf
        self._todo: collections.deque[int] = collections.deque()  # objects left at `horizon`
        self._age_driven = True
        self._full_warned = False
        self.removed_objects: list[int] = []  # for the writer to forget their tracks

    # -- the writer calls this after each commit -------------------------------------------

    def step(self, newest_s: float, counts: dict[str, int]) -> None:
        deadline = time.monotonic() + self.budget_s
        if self._todo:
            self._apply(counts, deadline)
        want = newest_s - self.retention_s
        if not self._todo and math.isfinite(want) and want >= self.horizon + _AGE_PASS_S:
            self._start(want, age_driven=True)
            self._apply(counts, deadline)
        while time.monotonic() < deadline and self.used_bytes() > self.max_bytes:
            if not self._trim_one(newest_s, counts, deadline):
                break
        if self.used_bytes() <= self.max_bytes:
            self._full_warned = False
        pages, size = (self.conn.execute(f"PRAGMA {p}").fetchone()[0]
                       for p in ("page_count", "page_size"))
        if pages * size > 1.05 * self.max_bytes:
            self.shrink_file()

    def reset(self) -> None:
        """After clear(): nothing is forgotten any more."""
        self.horizon = -math.inf
        self._todo.clear()
        self._tx(lambda c: c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES "
                                     "('horizon_s', '-inf')"))

    def used_bytes(self) -> int:
        c = self.conn
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        free = c.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * c.execute("PRAGMA page_size").fetchone()[0]

    # -- the horizon -----------------------------------------------------------------------

    def _start(self, horizon: float, age_driven: bool) -> None:
        self.horizon = horizon
        self._age_driven = age_driven
        self._tx(lambda c: c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES "
                                     "('horizon_s', ?)", (repr(horizon),)))
        self._todo.extend(r[0] for r in self.conn.execute("SELECT object_id FROM objects"))

    def _apply(self, counts: dict[str, int], deadline: float) -> None:
        """Continue the pass at the current horizon: each object's rows before its row in
        force there, then (age only) old events, moves and disappeared objects."""
        c, h = self.conn, self.horizon
        while self._todo and time.monotonic() < deadline:
            oid = self._todo[0]
            row = c.execute("SELECT max(stamp) FROM observations WHERE object_id = ? AND "
                            "stamp < ?", (oid, h)).fetchone()
            n = 0
            if row[0] is not None:
                n = self._tx(lambda c: c.execute(
                    "DELETE FROM observations WHERE object_id = ? AND stamp IN (SELECT stamp "
                    "FROM observations WHERE object_id = ? AND stamp < ? ORDER BY stamp "
                    "LIMIT ?)", (oid, oid, row[0], self.chunk)).rowcount)
                counts["observations"] -= n
            if n < self.chunk:
                self._todo.popleft()
        if self._todo or not self._age_driven:
            return
        while time.monotonic() < deadline:
            n_ev = self._tx(lambda c: c.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE stamp < ? "
                "ORDER BY stamp LIMIT ?)", (h, self.chunk)).rowcount)
            counts["events"] -= n_ev
            n_mv = self._tx(lambda c: c.execute(
                "DELETE FROM moves WHERE id IN (SELECT id FROM moves WHERE end_s < ? "
                "ORDER BY end_s LIMIT ?)", (h, self.chunk)).rowcount)
            if n_ev < self.chunk and n_mv < self.chunk:
                break
        gone = [r[0] for r in c.execute("SELECT object_id FROM objects WHERE disappeared_s IS "
                                        "NOT NULL AND last_seen < ?", (h,))]
        for oid in gone:
            counts["observations"] -= self._tx(lambda c: (
                c.execute("DELETE FROM objects WHERE object_id = ?", (oid,)),
                c.execute("DELETE FROM observations WHERE object_id = ?", (oid,)).rowcount)[1])
        counts["objects"] -= len(gone)
        self.removed_objects.extend(gone)

    # -- size ------------------------------------------------------------------------------

    def _trim_one(self, newest_s: float, counts: dict[str, int], deadline: float) -> bool:
        """One bounded bite off the oldest, least useful rows; False when nothing is left
        that size trimming may delete."""
        c = self.conn
        # Heartbeats, oldest first, except an object's first remaining row (its row in force
        # at the horizon).
        n = self._tx(lambda c: c.execute(
            "DELETE FROM observations WHERE (object_id, stamp) IN (SELECT h.object_id, h.stamp "
            "FROM observations AS h WHERE h.kind = ? AND EXISTS (SELECT 1 FROM observations AS "
            "p WHERE p.object_id = h.object_id AND p.stamp < h.stamp) ORDER BY h.stamp "
            "LIMIT ?)", (HEARTBEAT, self.chunk)).rowcount)
        if n:
            counts["observations"] -= n
            return True
        if self._todo:
            self._apply(counts, deadline)
            return True
        oldest = oldest_observation(c)
        base = max(self.horizon, oldest if oldest is not None else math.inf)
        if base < newest_s - 1.0:
            # Advance by a twentieth of what is left (at least a minute), keeping the events.
            self._start(min(newest_s, base + max(60.0, (newest_s - base) / 20.0)),
                        age_driven=False)
            self._apply(counts, deadline)
            return True
        n_ev = self._tx(lambda c: c.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY stamp LIMIT ?)",
            (self.chunk,)).rowcount)
        n_mv = self._tx(lambda c: c.execute(
            "DELETE FROM moves WHERE id IN (SELECT id FROM moves ORDER BY end_s LIMIT ?)",
            (self.chunk,)).rowcount)
        counts["events"] -= n_ev
        if n_ev or n_mv:
            return True
        if not self._full_warned:
            self._full_warned = True
            self.warn(f"over memory_max_mb ({self.max_bytes / 1e6:.0f} MB) with only the objects "
                      "table and each object's latest rows left")
        return False

    def shrink_file(self, pages: int = 1024) -> None:
        """Hand up to `pages` free pages back to the file system (incremental auto-vacuum)."""
        self.conn.execute(f"PRAGMA incremental_vacuum({int(pages)})")

    def _tx(self, fn):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(self.conn)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # SQLite may have rolled back already
                self.conn.execute("ROLLBACK")
            raise
        return out
