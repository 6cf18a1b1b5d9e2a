"""The writer's SQL: one keyframe batch's rows in one transaction, and snapshots."""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from llava4d_ros.core.objects import ObjectEvent
from llava4d_ros.memory.downsample import Pending, object_row
from llava4d_ros.memory.records import mm

UPSERT_OBJECT = """
INSERT INTO objects (object_id, category, category_confidence, colour, shape, label,
    cx_mm, cy_mm, cz_mm, sx_mm, sy_mm, sz_mm, yaw_mrad, support, first_seen, last_seen,
    is_dynamic, in_view, n_views, settled_since, appearance)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(object_id) DO UPDATE SET
    category = excluded.category, category_confidence = excluded.category_confidence,
    colour = excluded.colour, shape = excluded.shape, label = excluded.label,
    cx_mm = excluded.cx_mm, cy_mm = excluded.cy_mm, cz_mm = excluded.cz_mm,
    sx_mm = excluded.sx_mm, sy_mm = excluded.sy_mm, sz_mm = excluded.sz_mm,
    yaw_mrad = excluded.yaw_mrad, support = excluded.support,
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen),
    is_dynamic = excluded.is_dynamic, in_view = excluded.in_view, n_views = excluded.n_views,
    settled_since = excluded.settled_since, appearance = excluded.appearance,
    disappeared_s = CASE WHEN excluded.last_seen > disappeared_s THEN NULL
                         ELSE disappeared_s END
"""
INSERT_OBSERVATION = ("INSERT OR IGNORE INTO observations "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
INSERT_EVENT = ("INSERT INTO events (stamp, object_id, kind, cx_mm, cy_mm, cz_mm) "
                "VALUES (?, ?, ?, ?, ?, ?)")
INSERT_MOVE = ("INSERT INTO moves (object_id, start_s, end_s, x0_mm, y0_mm, z0_mm, "
               "x1_mm, y1_mm, z1_mm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")



def commit(c: sqlite3.Connection, pending: Pending, events: Sequence[ObjectEvent],
           next_id: int) -> tuple[int, int, int, float]:
    """Write `pending` and `events` in one transaction. Returns (observations inserted,
    events inserted, the next free object id, the newest stamp written)."""
    ev_rows = [(float(e.stamp_s), int(e.object_id), e.kind,
                *(mm(float(v)) for v in e.center[:3])) for e in events]
    n_obs = 0
    c.execute("BEGIN IMMEDIATE")
    try:
        if pending.objects:
            c.executemany(UPSERT_OBJECT, [object_row(o, settled)
                                          for o, settled in pending.objects.values()])
        if pending.observations:
            n_obs = max(c.executemany(INSERT_OBSERVATION, pending.observations).rowcount, 0)
        new_moves = []
        for mv in pending.moves.values():
            if mv.row_id is None:
                new_moves.append((mv, c.execute(INSERT_MOVE, mv.row()).lastrowid))
            else:
                c.execute("UPDATE moves SET end_s = ?, x1_mm = ?, y1_mm = ?, z1_mm = ? "
                          "WHERE id = ?", (mv.end_s, *(mm(v) for v in mv.p_to), mv.row_id))
        if ev_rows:
            c.executemany(INSERT_EVENT, ev_rows)
            # After the objects: a sighting later than the disappearance clears it, not this.
            c.executemany("UPDATE objects SET disappeared_s = ? WHERE object_id = ? "
                          "AND last_seen <= ?", [(r[0], r[1], r[0]) for r in ev_rows
                                                 if r[2] == "disappeared"])
        new_next = max(next_id, pending.max_object_id + 1,
                       max((r[1] + 1 for r in ev_rows), default=0))
        if new_next != next_id:
            c.execute("UPDATE meta SET value = ? WHERE key = 'next_object_id'",
                      (str(new_next),))
        c.execute("COMMIT")
    except BaseException:
        if c.in_transaction:  # SQLite may have rolled back already
            c.execute("ROLLBACK")
        raise
    for mv, row_id in new_moves:  # only once they are on disk
        mv.row_id = row_id
    newest = max(pending.newest_s, max((r[0] for r in ev_rows), default=-math.inf))
    return n_obs, len(ev_rows), new_next, newest


def save_snapshot(db_path: Path, dest: Path) -> tuple[bool, str]:
    """Back `db_path` up to `dest` in one backup step (one read transaction: consistent while
    another connection writes), through a temporary file renamed into place."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(tmp, dest)
    except (OSError, sqlite3.Error) as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False, f"saving the memory to {dest} failed: {exc}"
    return True, f"memory saved to {dest} ({dest.stat().st_size / 1e6:.1f} MB)"
