"""Opening a memory file: recognise it, migrate it or move it aside, then read back what the
writer needs to continue where it stopped (ids, counts, each object's anchor)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llava4d_ros.memory import queries, schema
from llava4d_ros.memory.downsample import Track


@dataclass
class Opened:
    """The writer's connection (None when memory writes are off, `error` says why) and the
    state read from the file. `notes`: (level, text) lines for the log."""

    conn: sqlite3.Connection | None
    error: str = ""
    readable: bool = False  # with conn None: the file may still answer queries read-only
    warning: str = ""  # a file moved aside: status stays "warn" with this
    notes: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    tracks: dict[int, Track] = field(default_factory=dict)
    next_id: int = 0
    newest_s: float = -math.inf


class _NotOurs(Exception):
    """The file is not a memory of ours (foreign SQLite) or cannot be one (corrupt)."""


def _is_corrupt(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def connect_writer(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (one BEGIN ... COMMIT per batch).
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def open_memory(path: Path, on_connect: Callable[[sqlite3.Connection], None] | None
                ) -> Opened:
    """Open `path` for writing (creating its directory and the file). A corrupt or foreign
    file, found at its header or later while reading the state, is moved aside once and a new
    memory started; a newer schema is refused and left untouched."""
    out = Opened(None)
    for attempt in range(2):
        conn = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect_writer(path)
            what, detail = schema.inspect(conn)
            if what in ("corrupt", "foreign"):
                raise _NotOurs(f"{what}: {detail}")
            if what == "new":
                schema.create(conn)
            else:
                steps = schema.migrate(conn, int(detail))
                if steps:
                    out.notes.append(("info", f"migrated {path} from schema "
                                              f"{', '.join(steps)}"))
            schema.configure(conn)
            if on_connect is not None:
                on_connect(conn)
            _load_state(conn, out)
            out.conn = conn
            return out
        except (_NotOurs, sqlite3.DatabaseError) as exc:
            if conn is not None:
                conn.close()
            if attempt or not (isinstance(exc, _NotOurs) or _is_corrupt(exc)):
                out.error = f"cannot open {path}: {exc}; memory writes are off"
                out.readable = True
                return out
            aside = schema.move_aside(path)
            out.warning = (f"{path} is not a readable llava4d memory ({exc}); moved it to "
                           f"{aside} and started a new memory")
            out.notes.append(("warn", out.warning))
        except schema.SchemaTooNew as exc:
            conn.close()
            out.error = (f"refusing {path}: {exc}; the file is left untouched and memory is "
                         "off (use a newer llava4d_ros, or another memory_path)")
            return out
        except OSError as exc:
            if conn is not None:
                conn.close()
            out.error = f"cannot open {path}: {exc}; memory writes are off"
            out.readable = True
            return out
    raise AssertionError("unreachable")


def _load_state(c: sqlite3.Connection, out: Opened) -> None:
    """Ids, counts and every object's anchor, so that downsampling and move detection go on
    across a restart (an object moved while the node was off is a move)."""
    out.counts = {"observations": c.execute("SELECT count(*) FROM observations").fetchone()[0],
                  "events": c.execute("SELECT count(*) FROM events").fetchone()[0]}
    out.tracks = {}
    for oid, cx, cy, cz, sx, sy, sz, support, last, dyn, in_view, settled in c.execute(
            "SELECT object_id, cx_mm, cy_mm, cz_mm, sx_mm, sy_mm, sz_mm, support, last_seen, "
            "is_dynamic, in_view, settled_since FROM objects"):
        out.tracks[oid] = Track((cx / 1e3, cy / 1e3, cz / 1e3), (sx / 1e3, sy / 1e3, sz / 1e3),
                                support, bool(dyn), bool(in_view), last, last, settled, last)
    out.counts["objects"] = len(out.tracks)
    row = c.execute("SELECT value FROM meta WHERE key = 'next_object_id'").fetchone()
    out.next_id = max([int(row[0]) if row else 0, *(oid + 1 for oid in out.tracks)])
    span = queries.span(c)
    out.newest_s = span[1] if span else -math.inf


def open_reader(path: Path, read_only: bool) -> sqlite3.Connection | None:
    """The query connection (None when the file cannot be read). `read_only` when the writer
    could not open: a file in a read-only place may still answer."""
    if read_only and not path.is_file():
        return None
    uri = path.resolve().as_uri() + ("?mode=ro" if read_only else "")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False,
                               isolation_level=None)
        conn.execute("PRAGMA query_only=1")
        conn.execute("SELECT count(*) FROM meta").fetchone()
        return conn
    except sqlite3.Error:
        return None
