"""The memory's file: its tables, how an existing file is recognised, and how an older one is
brought up to date.

Units on disk: stamps are seconds of the robot's clock (REAL, exact as submitted); box centres
and extents are integer millimetres in the world frame and the yaw of the upright box about the
world z axis is integer milliradians. Integers keep an observation row near 50 bytes (SQLite
stores small integers in 1-3 bytes and every REAL in 8), which is what lets 8 h of 50 objects
fit the size budget.

Version history (`meta.schema_version`):
  1  the first layout (`SCHEMA_V1` below, kept so the migration stays testable);
  2  adds `objects.appearance`, a JSON descriptor for re-identification (category hypotheses).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path

APP = "llava4d_ros.memory"
SCHEMA_VERSION = 2

#: `observations.kind`: why a row was written (size trimming drops heartbeats first).
HEARTBEAT, CHANGE, MOVING = 0, 1, 2
OBSERVATION_KINDS = (HEARTBEAT, CHANGE, MOVING)

_TABLES_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE objects (
    object_id INTEGER PRIMARY KEY,
    category TEXT NOT NULL, category_confidence REAL NOT NULL,
    colour TEXT NOT NULL, shape TEXT NOT NULL, label TEXT NOT NULL,
    cx_mm INTEGER NOT NULL, cy_mm INTEGER NOT NULL, cz_mm INTEGER NOT NULL,
    sx_mm INTEGER NOT NULL, sy_mm INTEGER NOT NULL, sz_mm INTEGER NOT NULL,
    yaw_mrad INTEGER NOT NULL,
    support TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    is_dynamic INTEGER NOT NULL, in_view INTEGER NOT NULL, n_views INTEGER NOT NULL,
    settled_since REAL NOT NULL,
    disappeared_s REAL
);
CREATE INDEX objects_first_seen ON objects(first_seen);
CREATE TABLE observations (
    object_id INTEGER NOT NULL, stamp REAL NOT NULL, kind INTEGER NOT NULL,
    cx_mm INTEGER NOT NULL, cy_mm INTEGER NOT NULL, cz_mm INTEGER NOT NULL,
    sx_mm INTEGER NOT NULL, sy_mm INTEGER NOT NULL, sz_mm INTEGER NOT NULL,
    yaw_mrad INTEGER NOT NULL,
    support TEXT NOT NULL, is_dynamic INTEGER NOT NULL,
    PRIMARY KEY (object_id, stamp)
) WITHOUT ROWID;
CREATE INDEX observations_kind_stamp ON observations(kind, stamp);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, stamp REAL NOT NULL, object_id INTEGER NOT NULL, kind TEXT NOT NULL,
    cx_mm INTEGER NOT NULL, cy_mm INTEGER NOT NULL, cz_mm INTEGER NOT NULL
);
CREATE INDEX events_stamp ON events(stamp);
CREATE INDEX events_object ON events(object_id, stamp);
CREATE TABLE moves (
    id INTEGER PRIMARY KEY, object_id INTEGER NOT NULL,
    start_s REAL NOT NULL, end_s REAL NOT NULL,
    x0_mm INTEGER NOT NULL, y0_mm INTEGER NOT NULL, z0_mm INTEGER NOT NULL,
    x1_mm INTEGER NOT NULL, y1_mm INTEGER NOT NULL, z1_mm INTEGER NOT NULL
);
CREATE INDEX moves_end ON moves(end_s);
"""

#: The version-1 layout, as files of that version hold it (the tests build one from it).
SCHEMA_V1 = _TABLES_V1


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE objects ADD COLUMN appearance TEXT NOT NULL DEFAULT '{}'")


#: from-version -> the step to the next version; each runs inside the opening transaction.
MIGRATIONS = {1: _v1_to_v2}

_TABLES = _TABLES_V1.replace(
    "    disappeared_s REAL\n);",
    "    disappeared_s REAL,\n    appearance TEXT NOT NULL DEFAULT '{}'\n);")
assert _TABLES != _TABLES_V1


class SchemaTooNew(Exception):
    """The file was written by a newer version of this package; it is left untouched."""


def utc_stamp() -> str:
    """`20261201T101500Z`: the current UTC time, safe inside a file name."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def configure(conn: sqlite3.Connection) -> None:
    """Settings every writing connection needs. WAL lets the query connection read while the
    writer commits; synchronous=NORMAL keeps every commit across a process crash (kill -9) and
    the file consistent across a power cut, which may lose the last commits."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA journal_size_limit=8388608")  # the WAL shrinks back to 8 MB
    conn.execute("PRAGMA cache_size=-16000")  # 16 MB
    conn.execute("PRAGMA temp_store=MEMORY")


def create(conn: sqlite3.Connection, version: int = SCHEMA_VERSION) -> None:
    """Write a new, empty memory into an empty database (`version` 1 only for tests)."""
    # Incremental auto-vacuum must be chosen before the first table: it lets clear() and size
    # trimming hand pages back to the file system without a full VACUUM.
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("BEGIN IMMEDIATE")  # all or nothing: a half-made file would read as foreign
    try:
        for statement in (SCHEMA_V1 if version == 1 else _TABLES).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
            ("app", APP), ("schema_version", str(version)), ("created_utc", utc_stamp()),
            ("next_object_id", "0"), ("horizon_s", "-inf")])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already
            conn.execute("ROLLBACK")
        raise


def inspect(conn: sqlite3.Connection) -> tuple[str, str]:
    """What the file behind `conn` is: ("new", "") for an empty database, ("ours", version),
    ("foreign", why) or ("corrupt", why). Errors that are not about the file's content
    (locked, permission, I/O) propagate as sqlite3.OperationalError."""
    try:
        names = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not names:
            return "new", ""
        if "meta" not in names:
            return "foreign", f"no meta table (tables: {', '.join(sorted(names)[:5])})"
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            return "corrupt", str(exc)
        if isinstance(exc, sqlite3.OperationalError):
            raise
        return "corrupt", str(exc)
    if meta.get("app") != APP:
        return "foreign", f"meta.app is {meta.get('app')!r}, not {APP!r}"
    try:
        return "ours", str(int(meta["schema_version"]))
    except (KeyError, ValueError):
        return "foreign", f"meta.schema_version is {meta.get('schema_version')!r}"


def migrate(conn: sqlite3.Connection, version: int) -> list[str]:
    """Bring a memory of `version` to SCHEMA_VERSION in one transaction; returns the steps
    ("1->2"). Raises SchemaTooNew for a version this package does not know."""
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"schema version {version} is newer than this package's "
                           f"{SCHEMA_VERSION}")
    steps: list[str] = []
    if version == SCHEMA_VERSION:
        return steps
    conn.execute("BEGIN IMMEDIATE")
    try:
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            steps.append(f"{version}->{version + 1}")
            version += 1
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already
            conn.execute("ROLLBACK")
        raise
    return steps


def move_aside(path: Path) -> Path:
    """Rename `path` (and its -wal / -shm, which belong to it) to `<name>.corrupt-<utc>`."""
    aside = path.with_name(f"{path.name}.corrupt-{utc_stamp()}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{utc_stamp()}-{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    os.replace(path, aside)
    return aside
