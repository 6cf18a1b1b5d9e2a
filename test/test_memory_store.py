"""The object memory on disk (llava4d_ros.memory): round trips, downsampling, retention,
snapshots, clear, and every query on hand-made histories with known answers. No ROS."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from llava4d_ros.core.objects import MapObject, ObjectEvent
from llava4d_ros.memory import DownsamplePolicy, MemoryStore, default_memory_path

HZ = 15.0


def _obj(oid, t, center, support="table", dynamic=False, first=0.0, category="mug",
         colour="white", size=(0.1, 0.1, 0.12), in_view=True):
    return MapObject(oid, np.asarray(center, float), np.asarray(size, float), np.eye(3),
                     category, 0.8, colour, "", support, first, t, dynamic,
                     hypotheses=((category, 0.8), ("cup", 0.1)), in_view=in_view)


def _event(t, oid, kind, center=(0.0, 0.0, 0.0)):
    return ObjectEvent(t, oid, kind, np.asarray(center, float))


def _store(tmp_path, name="memory.db", **kw):
    kw.setdefault("retention_s", 24 * 3600.0)
    kw.setdefault("max_mb", 100.0)
    kw.setdefault("commit_period_s", 0.05)
    kw.setdefault("max_pending", 100_000)  # tests submit far faster than 15 Hz
    logs = kw.pop("logs", [])
    return MemoryStore(tmp_path / name, log=lambda level, text: logs.append((level, text)), **kw)


def _count(path, sql):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


def test_round_trip_and_ids_continue(tmp_path):
    st = _store(tmp_path)
    assert st.next_object_id() == 0
    for k in range(30):
        t = k / HZ
        st.submit(t, [_obj(5, t, [1, 2, 0.5]), _obj(7, t, [0, 0, 0.4], "floor", first=0.5,
                                                     category="chair", colour="")],
                  [_event(t, 7, "appeared")] if k == 0 else [])
    assert st.flush(10.0)
    before = st.objects()
    st.close()

    st = _store(tmp_path)
    assert st.objects() == before
    assert [o.object_id for o in before] == [5, 7]
    mug = before[0]
    assert mug.center == (1.0, 2.0, 0.5) and mug.size == (0.1, 0.1, 0.12)
    assert mug.label == "white mug" and mug.hypotheses == (("mug", 0.8), ("cup", 0.1))
    assert mug.last_seen_s == 29 / HZ and mug.support == "table"
    assert st.next_object_id() == 8
    assert [(e.object_id, e.kind) for e in st.events(0, 10)] == [(7, "appeared")]
    st.submit(3.0, [_obj(8, 3.0, [3, 3, 0])])
    assert st.flush(10.0)
    assert st.next_object_id() == 9
    st.close()


def test_static_object_history_stays_small_and_last_seen_exact(tmp_path):
    rng = np.random.default_rng(0)
    st = _store(tmp_path)
    n = int(600 * HZ)  # ten minutes at 15 Hz
    for k in range(n):
        t = 1000.0 + k / HZ
        st.submit(t, [_obj(0, t, np.array([1.0, 2.0, 0.5]) + rng.uniform(-0.008, 0.008, 3),
                           first=1000.0)])
    assert st.flush(30.0)
    rows = st.status().observations
    # one row at first sight, then one per 30 s heartbeat: jitter never writes a row
    assert 20 <= rows <= 22, rows
    assert st.last_seen(0) == 1000.0 + (n - 1) / HZ
    at = st.where_at(0, 1300.0)
    assert at is not None and np.allclose(at.center, [1, 2, 0.5], atol=0.009)
    assert st.moved_between(0, 2000) == []
    st.close()


def test_moving_object_rows_at_capped_rate(tmp_path):
    st = _store(tmp_path)
    for k in range(int(10 * HZ)):
        t = k / HZ
        st.submit(t, [_obj(3, t, [1.0 * t, 0, 0], "floor", dynamic=True)])
    assert st.flush(10.0)
    assert 48 <= st.status().observations <= 51  # 5 Hz over 10 s, not 15 Hz
    at = st.where_at(3, 5.0)
    assert 4.75 <= at.center[0] <= 5.0 and at.stamp_s <= 5.0
    (moved,) = st.moved_between(4.0, 6.0)
    assert moved.object_id == 3 and moved.start_s == 0.0 and moved.moves == 1
    assert moved.from_center == (0.0, 0.0, 0.0) and moved.to_center[0] > 9.5
    st.close()


def _hand_made(st):
    """mug 1: on the table at A from t=0, carried to the counter at B over 20-22 s, then still
    until 100. chair 2: first seen at 50, last seen at 70, its place seen empty at 80."""
    a, b = [1.0, 0.0, 0.8], [3.0, 1.0, 0.9]
    for k in range(int(100 * HZ) + 1):
        t = k / HZ
        if t < 20:
            mug = _obj(1, t, a)
        elif t < 22:
            f = (t - 20) / 2
            mug = _obj(1, t, np.add(a, f * np.subtract(b, a)), support="", dynamic=True)
        else:
            mug = _obj(1, t, b, support="counter")
        objs = [mug]
        evs = []
        if 50 <= t <= 70:
            objs.append(_obj(2, t, [0, 2, 0.45], "floor", first=50.0, category="chair",
                             colour="brown", size=(0.5, 0.5, 0.9)))
        elif t > 70:
            objs.append(_obj(2, 70.0, [0, 2, 0.45], "floor", first=50.0, category="chair",
                             colour="brown", size=(0.5, 0.5, 0.9), in_view=False))
        if k == int(20 * HZ):
            evs.append(_event(t, 1, "started_moving", a))
        if k == int(22 * HZ):
            evs.append(_event(t, 1, "stopped", b))
        if k == int(80 * HZ):
            evs.append(_event(t, 2, "disappeared", [0, 2, 0.45]))
        st.submit(t, objs, evs)
    assert st.flush(30.0)
    return a, b


def test_queries_on_a_hand_made_history(tmp_path):
    st = _store(tmp_path)
    a, b = _hand_made(st)
    assert st.span() == (0.0, 100.0)
    assert st.last_seen(1) == 100.0 and st.last_seen(2) == 70.0 and st.last_seen(9) is None

    assert np.allclose(st.where_at(1, 5.0).center, a)
    assert st.where_at(1, 5.0).support == "table"
    assert np.allclose(st.where_at(1, 50.0).center, b)
    assert st.where_at(1, 50.0).support == "counter"
    mid = st.where_at(1, 21.0).center[0]
    assert 1.6 <= mid <= 2.0  # half-way at 21 s; samples are at most 0.2 s old
    assert st.where_at(1, -1.0) is None  # not yet known
    assert st.where_at(2, 40.0) is None  # not yet seen
    assert np.allclose(st.where_at(2, 60.0).center, [0, 2, 0.45])
    assert np.allclose(st.where_at(2, 75.0).center, [0, 2, 0.45])  # last known, not yet gone
    assert st.where_at(2, 90.0) is None  # its place was seen empty at 80

    assert [o.object_id for o in st.known_objects()] == [1]
    chair = [o for o in st.objects() if o.object_id == 2][0]
    assert chair.disappeared_s == 80.0 and chair.in_view is False and chair.category == "chair"

    (moved,) = st.moved_between(15.0, 25.0)
    assert moved.object_id == 1
    assert 19.9 <= moved.start_s <= 20.1 and 21.7 <= moved.end_s <= 22.0
    assert np.allclose(moved.from_center, a) and np.allclose(moved.to_center, b, atol=0.1)
    assert st.moved_between(30.0, 100.0) == []
    assert st.moved_between(0.0, 19.0) == []

    assert [o.object_id for o in st.new_since(40.0)] == [2]
    assert [o.object_id for o in st.new_since(-1.0)] == [1, 2]
    assert st.new_since(60.0) == []

    on = st.on_support_since(1)
    assert on.support == "counter" and 21.9 <= on.since_s <= 22.1
    assert st.on_support_since(2) is None  # disappeared
    assert [e.kind for e in st.events(0, 100)] == ["started_moving", "stopped", "disappeared"]
    assert [e.stamp_s for e in st.events(0, 100, kinds=["disappeared"])] == [80.0]
    assert [e.kind for e in st.events(0, 100, object_id=1)] == ["started_moving", "stopped"]
    assert st.events(23.0, 79.0) == []
    with pytest.raises(ValueError):
        st.events(0, 100, kinds=["teleported"])
    st.close()


def test_a_move_while_the_node_was_off_is_a_move(tmp_path):
    st = _store(tmp_path)
    for k in range(15):
        st.submit(k / HZ, [_obj(4, k / HZ, [1, 1, 0.8])])
    st.close()
    st = _store(tmp_path)
    st.submit(500.0, [_obj(4, 500.0, [2, 1, 0.8])])
    assert st.flush(10.0)
    (moved,) = st.moved_between(400.0, 600.0)
    assert moved.start_s == 14 / HZ and moved.end_s == 500.0
    assert moved.from_center == (1.0, 1.0, 0.8) and moved.to_center == (2.0, 1.0, 0.8)
    assert st.on_support_since(4).since_s == 500.0
    st.close()


def test_retention_by_age(tmp_path):
    st = _store(tmp_path, retention_s=60.0)
    for k in range(int(300 * HZ)):
        t = k / HZ
        st.submit(t, [_obj(0, t, [1, 0, 0.8]),
                      _obj(1, t, [np.sin(t), np.cos(t), 0], "floor", dynamic=True)],
                  [_event(t, 1, "started_moving")] if k % int(30 * HZ) == 0 else [])
    assert st.flush(30.0)
    t0, t1 = st.span()
    assert t1 == (int(300 * HZ) - 1) / HZ
    assert t1 - 70.5 <= t0 <= t1 - 60.0 + 1e-9  # the horizon moves in 10 s steps
    assert all(e.stamp_s >= t0 for e in st.events(0, 1000))
    assert len(st.events(0, 1000)) == 2  # at 240 and 270
    assert st.where_at(1, 100.0) is None  # forgotten
    assert st.where_at(0, 100.0) is None
    # the static object's row in force at the horizon is kept: it is placed just after it
    assert np.allclose(st.where_at(0, t0 + 0.5).center, [1, 0, 0.8])
    assert st.moved_between(0.0, 200.0) == []
    assert st.status().observations == _count(tmp_path / "memory.db",
                                              "SELECT count(*) FROM observations")
    st.close()


def test_retention_by_size_drops_heartbeats_then_oldest_observations(tmp_path):
    policy = DownsamplePolicy(heartbeat_s=0.5)
    st = _store(tmp_path, max_mb=0.25, policy=policy)
    n_events = 0
    for k in range(int(240 * HZ)):
        t = k / HZ
        objs = [_obj(i, t, [i, 0, 0.8]) for i in range(10)]  # static: heartbeats at 2 Hz
        objs += [_obj(10 + i, t, [i + np.sin(t + i), np.cos(t), 0], "floor", dynamic=True)
                 for i in range(10)]
        evs = [_event(t, 10, "started_moving")] if k % 15 == 0 else []
        n_events += len(evs)
        st.submit(t, objs, evs)
        if k % 150 == 0:
            st.flush(10.0)
    assert st.flush(30.0)
    for _ in range(20):  # trimming is bounded per writer cycle: let it catch up
        st.flush(5.0)
    path = tmp_path / "memory.db"
    with sqlite3.connect(path) as conn:
        pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        t1 = conn.execute("SELECT max(last_seen) FROM objects").fetchone()[0]
        old_heartbeats = conn.execute("SELECT count(*) FROM observations WHERE kind = 0 AND "
                                      "stamp < ?", (t1 - 15.0,)).fetchone()[0]
    assert (pages - free) * size <= 0.25e6
    # none older than the last commits but each object's first row (its row in force)
    assert old_heartbeats <= 10
    t0, t1 = st.span()
    assert t0 > 60.0 and t1 == (int(240 * HZ) - 1) / HZ
    assert len(st.events(-1, 1e9)) == n_events  # events outlive observations
    assert len(st.objects()) == 20
    assert st.where_at(15, t1 - 1.0) is not None and st.where_at(3, t1 - 1.0) is not None
    st.close()


def test_save_gives_a_snapshot_while_writes_go_on(tmp_path):
    st = _store(tmp_path)
    stop = threading.Event()

    def feed():
        k = 0
        while not stop.is_set():
            t = k / HZ
            st.submit(t, [_obj(i, t, [i + 0.1 * t, 0, 0], dynamic=True) for i in range(5)])
            k += 1
            if k % 30 == 0:
                stop.wait(0.01)

    thread = threading.Thread(target=feed)
    thread.start()
    try:
        assert st.flush(10.0)
        ok, message = st.save(tmp_path / "snaps" / "copy.db")
        assert ok, message
    finally:
        stop.set()
        thread.join()
    snap = tmp_path / "snaps" / "copy.db"
    with sqlite3.connect(snap) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM observations").fetchone()[0] > 0
    copy = _store(tmp_path / "snaps", name="copy.db")
    assert [o.object_id for o in copy.objects()] == [0, 1, 2, 3, 4]
    copy.close()
    assert st.flush(10.0)
    assert st.status().observations >= _count(snap, "SELECT count(*) FROM observations")
    (tmp_path / "a-file").write_text("")
    ok, message = st.save(tmp_path / "a-file" / "x.db")  # its parent is a file
    assert not ok and "failed" in message
    st.close()


def test_clear_empties_and_ids_do_not_restart(tmp_path):
    st = _store(tmp_path)
    _hand_made(st)
    ok, _ = st.clear()
    assert ok
    assert st.objects() == [] and st.span() is None and st.events(-1e9, 1e9) == []
    assert st.moved_between(-1e9, 1e9) == [] and st.status().observations == 0
    assert st.next_object_id() == 3
    st.submit(200.0, [_obj(3, 200.0, [0, 0, 0])])
    assert st.flush(10.0)
    assert [o.object_id for o in st.objects()] == [3] and st.span() == (200.0, 200.0)
    st.close()
    st = _store(tmp_path)
    assert st.next_object_id() == 4
    st.close()


def test_a_full_queue_drops_the_oldest_keyframes_but_no_event(tmp_path):
    st = _store(tmp_path, commit_period_s=60.0, max_pending=4)
    for k in range(10):
        st.submit(float(k), [_obj(0, float(k), [k, 0, 0])], [_event(float(k), 0, "appeared")])
    status = st.status()
    assert status.dropped_batches == 6 and status.pending == 4 and status.level == "warn"
    assert st.flush(10.0)
    assert len(st.events(0, 100)) == 10
    assert st.where_at(0, 3.5) is None  # keyframes 0-5 never reached the writer
    assert st.last_seen(0) == 9.0
    st.close()


def test_default_memory_path_honours_ros_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_HOME", str(tmp_path / "rh"))
    assert default_memory_path() == tmp_path / "rh" / "llava4d" / "memory.db"
    monkeypatch.delenv("ROS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_memory_path() == tmp_path / ".ros" / "llava4d" / "memory.db"


def test_submit_after_close_is_a_no_op(tmp_path):
    st = _store(tmp_path)
    st.close()
    st.submit(1.0, [_obj(0, 1.0, [0, 0, 0])])
    st.close()
    assert st.objects() == []
