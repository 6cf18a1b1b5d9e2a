"""Approximate-time sync fed with stamped fakes, as message_filters' own test does."""

from __future__ import annotations

import numpy as np

from llava4d_ros.core.sync import ApproximateTimeSync

MS = 1_000_000


def test_matches_within_slop_in_any_arrival_order():
    sync = ApproximateTimeSync(slop_s=0.005, queue_size=10)
    out = []
    for t in range(0, 300, 33):
        out += sync.add("depth", t * MS + 1 * MS, ("d", t))
        out += sync.add("info", t * MS + 1 * MS, ("k", t))
        out += sync.add("rgb", t * MS, ("c", t))
    assert [m.rgb[1] for m in out] == list(range(0, 300, 33))
    assert all(m.depth[1] == m.rgb[1] == m.info[1] for m in out)
    assert out[0].stamp_ns == 1 * MS  # the depth stamp
    assert sum(sync.drops.values()) == 0


def test_no_partner_within_slop_is_dropped_and_counted():
    sync = ApproximateTimeSync(slop_s=0.005, queue_size=10)
    assert sync.add("rgb", 0, "c0") == []
    assert sync.add("info", 20 * MS, "k1") == []  # info passed rgb@0 by > slop: hopeless
    assert sync.drops["no_partner"] == 1
    assert sync.add("depth", 21 * MS, "d1") == []
    out = sync.add("rgb", 22 * MS, "c1")
    assert len(out) == 1 and out[0].rgb == "c1" and out[0].stamp_ns == 21 * MS
    assert sync.pending() == {"rgb": 0, "depth": 0, "info": 0}


def test_queue_overflow_and_out_of_order():
    sync = ApproximateTimeSync(slop_s=0.001, queue_size=3)
    for i in range(5):  # rgb alone: nothing can pass it, the queue overflows
        sync.add("rgb", i * 100 * MS, i)
    assert sync.drops["queue_overflow"] == 2
    sync.add("rgb", 50 * MS, "late")
    assert sync.drops["out_of_order"] == 1
    out = sync.add("depth", 400 * MS, "d") + sync.add("info", 400 * MS, "k")
    assert [m.rgb for m in out] == [4]
    # everything older than the emitted match can never match now
    assert sync.pending()["rgb"] == 0
    sync.add("depth", 399 * MS, "old")
    assert sync.drops["out_of_order"] == 2


def test_random_jitter_matches_every_frame_once():
    rng = np.random.default_rng(0)
    sync = ApproximateTimeSync(slop_s=0.01, queue_size=5)
    events = []
    for f in range(200):
        base = f * 33 * MS
        for kind in ("rgb", "depth", "info"):
            events.append((base + int(rng.integers(0, 4 * MS)), kind, f))
    # streams arrive interleaved, each in its own stamp order
    events.sort(key=lambda e: (e[0] + int(rng.integers(0, 2 * MS))))
    seen = []
    for stamp, kind, f in sorted(events):
        seen += [m.rgb for m in sync.add(kind, stamp, f)]
    assert seen == list(range(200))
    assert sum(sync.drops.values()) == 0


def test_clear_forgets_stamps():
    sync = ApproximateTimeSync(slop_s=0.001, queue_size=3)
    sync.add("rgb", 10 * MS, 1)
    sync.clear()
    sync.add("rgb", 5 * MS, 2)  # not out of order after a reset
    assert sync.drops["out_of_order"] == 0 and sync.pending()["rgb"] == 1
