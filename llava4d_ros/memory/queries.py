"""Read-only questions to a memory's database; each function takes an open connection.

Every query is one or a few index lookups (objects by primary key, observations by
(object_id, stamp), events and moves by stamp), so its cost does not grow with the number of
observations. Stamps [s] in the robot's clock; positions in the world frame [m].
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable

import numpy as np

from llava4d_ros.core.objects import EVENT_KINDS, ObjectEvent
from llava4d_ros.memory.records import (
    OBJECT_COLUMNS,
    OBSERVATION_COLUMNS,
    Moved,
    OnSupport,
    StoredObject,
    StoredObservation,
    metres,
    object_from_row,
    observation_from_row,
)
from llava4d_ros.memory.schema import OBSERVATION_KINDS


def horizon(conn: sqlite3.Connection) -> float:
    """The stamp [s] before which retention has forgotten (-inf when it has not yet)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'horizon_s'").fetchone()
    return float(row[0]) if row else -math.inf


def oldest_observation(conn: sqlite3.Connection) -> float | None:
    """The oldest observation's stamp [s], through the (kind, stamp) index."""
    firsts = [conn.execute("SELECT stamp FROM observations WHERE kind = ? ORDER BY stamp LIMIT 1",
                           (k,)).fetchone() for k in OBSERVATION_KINDS]
    return min((r[0] for r in firsts if r is not None), default=None)


def span(conn: sqlite3.Connection) -> tuple[float, float] | None:
    """(t0, t1) [s]: from the oldest stored observation or event (not before the retention
    horizon) to the newest sighting or event."""
    t0 = [t for t in (oldest_observation(conn),
                      conn.execute("SELECT min(stamp) FROM events").fetchone()[0])
          if t is not None]
    t1 = [t for t in (conn.execute("SELECT max(last_seen) FROM objects").fetchone()[0],
                      conn.execute("SELECT max(stamp) FROM events").fetchone()[0])
          if t is not None]
    if not t0 and not t1:
        return None
    t1_max = max(t1 + t0)
    return (min(max(min(t0 or t1), horizon(conn)), t1_max), t1_max)


def objects(conn: sqlite3.Connection, known_only: bool) -> list[StoredObject]:
    """Every object's latest state, by id; `known_only` leaves out the disappeared ones."""
    where = " WHERE disappeared_s IS NULL" if known_only else ""
    rows = conn.execute(f"SELECT {OBJECT_COLUMNS} FROM objects{where} ORDER BY object_id")
    return [object_from_row(r) for r in rows]


def get_object(conn: sqlite3.Connection, object_id: int) -> StoredObject | None:
    row = conn.execute(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE object_id = ?",
                       (int(object_id),)).fetchone()
    return object_from_row(row) if row else None


def last_seen(conn: sqlite3.Connection, object_id: int) -> float | None:
    row = conn.execute("SELECT last_seen FROM objects WHERE object_id = ?",
                       (int(object_id),)).fetchone()
    return row[0] if row else None


def where_at(conn: sqlite3.Connection, object_id: int, stamp_s: float
             ) -> StoredObservation | None:
    """The observation in force at `stamp_s`: the latest at or before it, or the object's
    latest state once `stamp_s` is past its last sighting. None when the object was not known
    then: not yet seen, its place seen empty in between, or its history before the stamp
    already dropped by retention."""
    obj = get_object(conn, object_id)
    if obj is None or stamp_s < obj.first_seen_s or stamp_s < horizon(conn):
        return None
    if stamp_s >= obj.last_seen_s:
        if obj.disappeared_s is not None and obj.disappeared_s <= stamp_s:
            return None
        return StoredObservation(obj.object_id, obj.last_seen_s, obj.center, obj.size,
                                 obj.yaw_rad, obj.support, obj.is_dynamic)
    row = conn.execute(
        f"SELECT {OBSERVATION_COLUMNS} FROM observations WHERE object_id = ? AND stamp <= ? "
        "ORDER BY stamp DESC LIMIT 1", (int(object_id), float(stamp_s))).fetchone()
    if row is None:
        return None
    gone = conn.execute(
        "SELECT 1 FROM events WHERE object_id = ? AND stamp > ? AND stamp <= ? "
        "AND kind = 'disappeared' LIMIT 1", (int(object_id), row[1], float(stamp_s))).fetchone()
    return None if gone else observation_from_row(row)


def moved_between(conn: sqlite3.Connection, t0: float, t1: float) -> list[Moved]:
    """Objects with a move overlapping [t0, t1], ordered by when their first such move began.
    Nothing before the retention horizon; a move that began before it keeps its start."""
    t0 = max(float(t0), horizon(conn))
    if t1 < t0:
        return []
    rows = conn.execute(
        "SELECT object_id, start_s, end_s, x0_mm, y0_mm, z0_mm, x1_mm, y1_mm, z1_mm FROM moves "
        "WHERE end_s >= ? AND start_s <= ? ORDER BY object_id, start_s",
        (float(t0), float(t1))).fetchall()
    out: dict[int, Moved] = {}
    for oid, start, end, x0, y0, z0, x1, y1, z1 in rows:
        prev = out.get(oid)
        if prev is None:
            out[oid] = Moved(oid, start, end, metres(x0, y0, z0), metres(x1, y1, z1), 1)
        else:
            later = end >= prev.end_s
            out[oid] = Moved(oid, prev.start_s, max(end, prev.end_s), prev.from_center,
                             metres(x1, y1, z1) if later else prev.to_center, prev.moves + 1)
    return sorted(out.values(), key=lambda m: (m.start_s, m.object_id))


def new_since(conn: sqlite3.Connection, t0: float) -> list[StoredObject]:
    """Objects first seen after `t0`, oldest first (disappeared ones included)."""
    rows = conn.execute(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE first_seen > ? "
                        "ORDER BY first_seen, object_id", (float(t0),))
    return [object_from_row(r) for r in rows]


def on_support_since(conn: sqlite3.Connection, object_id: int) -> OnSupport | None:
    """Since when the object has stood on its current support without moving; None when it is
    unknown, disappeared or on nothing."""
    obj = get_object(conn, object_id)
    if obj is None or obj.disappeared_s is not None or not obj.support:
        return None
    return OnSupport(obj.object_id, obj.support, obj.settled_since_s)


def events(conn: sqlite3.Connection, t0: float, t1: float,
           kinds: Iterable[str] | None = None, object_id: int | None = None
           ) -> list[ObjectEvent]:
    """Events with t0 <= stamp <= t1, oldest first, optionally of `kinds` / one object."""
    sql = "SELECT stamp, object_id, kind, cx_mm, cy_mm, cz_mm FROM events WHERE "
    args: list = []
    if object_id is not None:
        sql += "object_id = ? AND "
        args.append(int(object_id))
    sql += "stamp >= ? AND stamp <= ?"
    args += [float(t0), float(t1)]
    if kinds is not None:
        kinds = list(kinds)
        unknown = set(kinds) - set(EVENT_KINDS)
        if unknown:
            raise ValueError(f"event kinds must be among {EVENT_KINDS}, got {sorted(unknown)}")
        sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
        args += kinds
    rows = conn.execute(sql + " ORDER BY stamp, id", args)
    return [ObjectEvent(stamp, oid, kind, np.array(metres(x, y, z)))
            for stamp, oid, kind, x, y, z in rows]
