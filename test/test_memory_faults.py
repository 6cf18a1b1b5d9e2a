"""The object memory under faults: kill -9 mid-ingest, a corrupt or foreign file, a read-only
place, a full disk, an older and a newer schema. Each leaves the caller running.

Read-only: these tests run as root in CI, where chmod does not stop writes, so a read-only
place is played two ways that hold for any user: a memory path whose parent is a file (nothing
can be created there), and a writer connection switched to `PRAGMA query_only` (every write
fails as SQLite fails on a read-only file). The chmod version runs where it can work. A full
disk is `PRAGMA max_page_count` on the writer connection: SQLite then fails with the same
"database or disk is full" it gives when the disk fills.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llava4d_ros.core.objects import MapObject, ObjectEvent
from llava4d_ros.memory import MemoryStore
from llava4d_ros.memory import schema as memory_schema

REPO = Path(__file__).resolve().parents[1]


def _obj(oid, t, center, dynamic=False):
    return MapObject(oid, np.asarray(center, float), np.full(3, 0.1), np.eye(3), "mug", 0.8,
                     "white", "", "table", 0.0, t, dynamic)


def _store(path, logs=None, **kw):
    kw.setdefault("commit_period_s", 0.05)
    sink = logs if logs is not None else []
    return MemoryStore(path, retention_s=3600.0, max_mb=100.0,
                       log=lambda level, text: sink.append((level, text)), **kw)


def _fill(st, n=30, t0=0.0):
    for k in range(n):
        t = t0 + k / 15
        st.submit(t, [_obj(0, t, [1, 0, 0]), _obj(1, t, [t, 0, 0], dynamic=True)],
                  [ObjectEvent(t, 1, "started_moving", np.zeros(3))] if k == 0 else [])


KILL_CHILD = """
import sys, time
import numpy as np
from llava4d_ros.core.objects import MapObject
from llava4d_ros.memory import MemoryStore
st = MemoryStore(sys.argv[1], retention_s=3600.0, max_mb=100.0, commit_period_s=1.0)
print("ready", flush=True)
start = time.time()
k = 0
while True:
    t = time.time()
    st.submit(t, [MapObject(i, np.array([i + 0.5 * (t - start), 0.0, 0.0]), np.full(3, 0.1),
                            np.eye(3), "box", 0.9, "red", "cube", "floor", start, t, True)
                  for i in range(20)])
    k += 1
    time.sleep(max(0.0, start + k / 15 - time.time()))
"""


def test_kill_9_while_ingesting_keeps_all_but_the_last_second(tmp_path):
    path = tmp_path / "memory.db"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(path)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(3.5)
        killed_at = time.time()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    st = _store(path)
    t0, t1 = st.span()
    # commits every 1 s; the rest is slack for a busy 2-core machine
    assert t1 >= killed_at - 2.0, (killed_at - t1)
    assert t1 - t0 >= 1.5
    assert len(st.objects()) == 20 and st.status().observations > 20
    st.close()


@pytest.mark.parametrize("content", ["random", "pages", "foreign"])
def test_corrupt_or_foreign_file_is_moved_aside(tmp_path, content):
    path = tmp_path / "memory.db"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    elif content == "pages":  # a sound header and schema, every table's pages garbage
        st = _store(path)
        _fill(st, n=300)
        st.close()
        data = bytearray(path.read_bytes())
        data[4096:] = np.random.default_rng(1).bytes(len(data) - 4096)
        path.write_bytes(bytes(data))
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, data BLOB)")
            conn.execute("INSERT INTO images (data) VALUES (x'00')")
        conn.close()
    original = path.read_bytes()
    logs = []
    st = _store(path, logs)
    asides = list(tmp_path.glob("memory.db.corrupt-*"))
    assert len(asides) == 1 and asides[0].read_bytes() == original
    (line,) = [text for level, text in logs if level == "warn"]
    assert str(asides[0]) in line and str(path) in line
    status = st.status()
    assert status.level == "warn" and str(asides[0]) in status.message
    _fill(st)
    assert st.flush(10.0)
    assert [o.object_id for o in st.objects()] == [0, 1]
    st.close()


def test_a_record_the_writer_cannot_read_is_an_error_not_a_crash(tmp_path):
    logs = []
    st = _store(tmp_path / "memory.db", logs)
    st.submit(1.0, [object()])  # not a MapObject
    assert not st.flush(5.0)
    status = st.status()
    assert status.level == "error" and "AttributeError" in status.message
    st.submit(2.0, [_obj(0, 2.0, [0, 0, 0])])  # never raises
    st.close()


def test_unwritable_place_is_an_error_and_submit_still_returns(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    logs = []
    st = _store(blocker / "memory.db", logs)
    status = st.status()
    assert status.level == "error" and "cannot open" in status.message
    assert any(level == "error" for level, _ in logs)
    _fill(st)  # never raises
    assert not st.flush(1.0) and st.status().rejected == 30
    assert st.objects() == [] and st.span() is None and st.where_at(0, 1.0) is None
    assert not st.save(tmp_path / "x.db")[0] and not st.clear()[0]
    st.close()


def test_read_only_connection_stops_writes_but_queries_go_on(tmp_path):
    path = tmp_path / "memory.db"
    st = _store(path)
    _fill(st)
    st.close()
    logs = []
    st = _store(path, logs, on_connect=lambda conn: conn.execute("PRAGMA query_only=1"))
    assert st.status().level == "ok"
    _fill(st, t0=10.0)
    assert not st.flush(10.0)
    status = st.status()
    assert status.level == "error" and "readonly" in status.message.replace("-", "")
    assert [text for level, text in logs if level == "error"]
    _fill(st, t0=20.0)  # never raises
    assert [o.object_id for o in st.objects()] == [0, 1]
    assert st.last_seen(0) == 29 / 15  # the data from before is still answered
    st.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    st = _store(folder / "memory.db")
    _fill(st)
    st.close()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user can write a 0555 directory")
        st = _store(folder / "memory.db")
        _fill(st, t0=10.0)
        assert not st.flush(5.0)
        assert st.status().level == "error"
        st.close()
    finally:
        folder.chmod(0o755)


def test_full_disk_stops_writes_with_a_clear_error(tmp_path):
    path = tmp_path / "memory.db"

    def small_disk(conn):
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages + 8}")

    st = _store(path, on_connect=small_disk)
    _fill(st)
    assert st.flush(10.0)
    for k in range(200):
        t = 10.0 + k / 15
        st.submit(t, [_obj(i, t, [t + i, 0, 0], dynamic=True) for i in range(50)])
        if k % 15 == 0:
            st.flush(5.0)
    assert not st.flush(5.0)
    status = st.status()
    assert status.level == "error" and "database or disk is full" in status.message
    _fill(st, t0=100.0)  # never raises
    assert st.where_at(0, 1.0) is not None and len(st.known_objects()) >= 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    st.close()


def test_older_schema_is_migrated(tmp_path):
    path = tmp_path / "memory.db"
    conn = sqlite3.connect(path, isolation_level=None)
    memory_schema.create(conn, version=1)
    conn.execute("INSERT INTO objects VALUES (4, 'mug', 0.9, 'white', '', 'white mug', 1000, "
                 "0, 800, 100, 100, 120, 0, 'table', 1.0, 5.0, 0, 1, 3, 1.0, NULL)")
    conn.execute("INSERT INTO observations VALUES (4, 1.0, 1, 1000, 0, 800, 100, 100, 120, 0, "
                 "'table', 0)")
    conn.close()
    logs = []
    st = _store(path, logs)
    assert st.status().level == "ok"
    assert any("migrated" in text and "1->2" in text for _, text in logs)
    (mug,) = st.objects()
    assert mug.object_id == 4 and mug.center == (1.0, 0.0, 0.8) and mug.hypotheses == ()
    assert st.where_at(4, 2.0).support == "table" and st.next_object_id() == 5
    st.submit(6.0, [_obj(4, 6.0, [1, 0, 0.8])])
    assert st.flush(10.0)
    st.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                            ).fetchone()[0] == str(memory_schema.SCHEMA_VERSION)
        assert conn.execute("SELECT appearance FROM objects").fetchone()[0].startswith("{")


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "memory.db"
    st = _store(path)
    _fill(st)
    st.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    before = path.read_bytes()
    logs = []
    st = _store(path, logs)
    status = st.status()
    assert status.level == "error" and "99" in status.message and "newer" in status.message
    assert [text for level, text in logs if level == "error"]
    _fill(st, t0=10.0)  # never raises
    assert not st.flush(1.0) and st.objects() == []
    st.close()
    assert path.read_bytes() == before and not list(tmp_path.glob("*.corrupt-*"))
