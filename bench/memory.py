"""The object memory at scale: 8 h of a 15 Hz stream with 50 objects. Prints figures; asserts
nothing.

    python bench/memory.py [--hours 8] [--objects 50] [--movers 15] [--duty 0.6] [--max-mb 200]

The scene: `--objects` objects, `--movers` of them moving at times (circles of 1-2 m at
0.3-1 m/s, a `--duty` share of the time, in bouts of 20-120 s), the others static but carried
somewhere else every ~2 h on average. Every object is seen in every keyframe.

All of it goes through the real path: a MemoryStore in a temporary directory fed with
`submit` at the stream's stamps (a fake clock: no sleeping), and `flush()` after every 15
keyframes standing for the writer's 1 s commit period. Timed: each submit call on the
caller's thread (what the ingest thread pays), the writer thread's CPU time per keyframe, and
each flush (one writer cycle: downsampling, commit, retention step). Then the queries at full
size, 50 calls each at random ids and times (`last_seen`, `where_at`, `moved_between` over the
last hour, and the others), on the store's read connection. Last, `--paced-s` seconds in real
time (15 Hz with sleeps, the writer on its own 1 s period, one `where_at` per keyframe): the
submit and query costs while the writer works beside them. Output lines are `name=value`.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from llava4d_ros.core.objects import MapObject, ObjectEvent
from llava4d_ros.memory import MemoryStore

HZ = 15
EYE = np.eye(3)
CATEGORIES = ("mug", "bottle", "book", "bowl", "box", "plant", "laptop", "chair", "lamp", "vase")
MOVER_CATEGORIES = ("person", "robot", "cat", "ball", "chair")
COLOURS = ("white", "red", "blue", "green", "black", "brown", "yellow", "grey")
SUPPORTS = ("table", "counter", "shelf", "floor")


class Scene:
    """Objects and their moves: per object, sorted bouts `(k0, k1, centre, r, omega, phi0)` in
    keyframes [k0, k1) moving on a circle; at rest elsewhere."""

    def __init__(self, n_objects: int, n_movers: int, n_keyframes: int, duty: float,
                 seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n = n_objects
        self.start = rng.uniform(-4, 4, (n_objects, 3)) * (1, 1, 0) + (0, 0, 0.8)
        self.size = rng.uniform(0.06, 0.6, (n_objects, 3))
        self.mover = np.arange(n_objects) < n_movers
        self.category = [MOVER_CATEGORIES[i % 5] if self.mover[i] else CATEGORIES[i % 10]
                         for i in range(n_objects)]
        self.colour = [COLOURS[i % len(COLOURS)] for i in range(n_objects)]
        self.support = ["floor" if self.mover[i] else SUPPORTS[i % 3] for i in range(n_objects)]
        self.bouts: list[list[tuple]] = []
        for i in range(n_objects):
            bouts, k, p = [], 0, self.start[i].copy()
            while True:
                if self.mover[i]:
                    rest_s = rng.uniform(10, 2 * 70 * (1 - duty) / duty - 10)
                    move_s, speed = rng.uniform(20, 120), rng.uniform(0.3, 1.0)
                else:
                    rest_s, move_s, speed = rng.exponential(7200), rng.uniform(3, 6), 0.5
                k0 = k + int(rest_s * HZ)
                k1 = k0 + int(move_s * HZ)
                if k0 >= n_keyframes:
                    break
                r = rng.uniform(1, 2)
                phi0 = rng.uniform(0, 2 * math.pi)
                centre = p - r * np.array([math.cos(phi0), math.sin(phi0), 0.0])
                omega = speed / r * rng.choice([-1, 1])
                bouts.append((k0, k1, centre, r, omega, phi0))
                p = self._on_circle(bouts[-1], k1)
                k = k1
            self.bouts.append(bouts)

    @staticmethod
    def _on_circle(bout, k):
        k0, _, centre, r, omega, phi0 = bout
        a = phi0 + omega * (k - k0) / HZ
        return centre + r * np.array([math.cos(a), math.sin(a), 0.0])

    def state(self, i: int, k: int, hint: int = 0) -> tuple[np.ndarray, bool, int]:
        """(centre (3,) [m], moving, bouts begun by k) of object i at keyframe k; `hint`: a
        number of bouts begun at or before k, to walk forward from."""
        bouts = self.bouts[i]
        j = hint
        while j < len(bouts) and bouts[j][0] <= k:
            j += 1
        if j == 0:
            return self.start[i], False, 0
        bout = bouts[j - 1]
        if k < bout[1]:
            return self._on_circle(bout, k), True, j
        return self._on_circle(bout, bout[1]), False, j


def map_object(scene: Scene, i: int, k: int, centre, moving: bool) -> MapObject:
    return MapObject(i, centre, scene.size[i], EYE, scene.category[i], 0.9,
                     scene.colour[i], "", scene.support[i], 0.0, k / HZ, moving,
                     hypotheses=((scene.category[i], 0.9), ("object", 0.1)),
                     n_views=k + 1)


def timed(fn, calls):
    ms = []
    for args in calls:
        t = time.perf_counter()
        fn(*args)
        ms.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ms), max(ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--movers", type=int, default=15)
    ap.add_argument("--duty", type=float, default=0.6)
    ap.add_argument("--max-mb", type=float, default=200.0)
    ap.add_argument("--paced-s", type=float, default=30.0,
                    help="then this long in real time at 15 Hz, a where_at per keyframe")
    ap.add_argument("--keep", type=Path, help="copy the database here at the end")
    args = ap.parse_args()

    k_total = int(args.hours * 3600 * HZ)
    scene = Scene(args.objects, args.movers, k_total, args.duty)
    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    path = tmp / "memory.db"
    print(f"scene: {args.objects} objects ({args.movers} moving {args.duty:.0%} of the time), "
          f"{args.hours} h at {HZ} Hz = {k_total} keyframes, all through submit; "
          f"database {path}")

    store = MemoryStore(path, retention_s=48 * 3600.0, max_mb=args.max_mb, commit_period_s=1.0)
    hints = [0] * scene.n
    was_moving = [None] * scene.n
    submit_ns, flush_ms = [], []
    t = time.perf_counter()
    for k in range(k_total):
        objs, events = [], []
        for i in range(scene.n):
            centre, moving, hints[i] = scene.state(i, k, hints[i])
            objs.append(map_object(scene, i, k, centre, moving))
            if moving != was_moving[i]:
                kind = ("appeared" if was_moving[i] is None else
                        "started_moving" if moving else "stopped")
                events.append(ObjectEvent(k / HZ, i, kind, centre))
                was_moving[i] = moving
        t0 = time.perf_counter_ns()
        store.submit(k / HZ, objs, events)
        submit_ns.append(time.perf_counter_ns() - t0)
        if k % HZ == HZ - 1:  # one commit per second of stream, as at 15 Hz
            t0 = time.perf_counter_ns()
            store.flush(30.0)
            flush_ms.append((time.perf_counter_ns() - t0) / 1e6)
    store.flush(60.0)
    st = store.status()
    print(f"submit: {k_total} keyframes in {time.perf_counter() - t:.1f} s wall")
    print(f"observations_kept_per_hour={st.observations / args.hours:.0f}")
    print(f"submit_ms_per_keyframe={statistics.fmean(submit_ns) / 1e6:.4f}")
    print(f"submit_ms_p99={np.percentile(submit_ns, 99) / 1e6:.4f}")
    print(f"submit_ms_max={max(submit_ns) / 1e6:.3f}")
    print(f"writer_cpu_ms_per_keyframe={st.writer_cpu_s * 1e3 / max(st.keyframes, 1):.3f}")
    print(f"writer_cycle_ms_median={statistics.median(flush_ms):.2f} "
          f"writer_cycle_ms_max={max(flush_ms):.1f}")
    print(f"dropped_keyframes={st.dropped_batches}")
    print(f"status={st.level} ({st.message})")

    # 3. queries at full size
    rng = np.random.default_rng(1)
    t0_span, t1 = store.span()
    ids = rng.integers(0, scene.n, 50)
    stamps = rng.uniform(t0_span, t1, 50)
    print(f"observations={st.observations}")
    print(f"events={st.events}")
    print(f"span_h={(t1 - t0_span) / 3600:.2f}")
    for name, fn, calls in [
        ("last_seen", store.last_seen, [(int(i),) for i in ids]),
        ("where_at", store.where_at, [(int(i), float(s)) for i, s in zip(ids, stamps)]),
        ("moved_last_hour", store.moved_between, [(t1 - 3600.0, t1)] * 50),
        ("known_objects", store.known_objects, [()] * 50),
        ("events_last_hour", store.events, [(t1 - 3600.0, t1)] * 50),
        ("new_since", store.new_since, [(float(s),) for s in stamps]),
        ("on_support_since", store.on_support_since, [(int(i),) for i in ids]),
        ("span", store.span, [()] * 50),
    ]:
        med, worst = timed(fn, calls)
        print(f"query_{name}_ms_median={med:.3f} query_{name}_ms_max={worst:.3f}")
    moved = store.moved_between(t1 - 3600.0, t1)
    print(f"moved_last_hour_objects={len(moved)}")

    # 4. paced: real time at 15 Hz, the writer on its own 1 s period, a query per keyframe
    submit_ns, query_ms = [], []
    start = time.monotonic()
    for n, k in enumerate(range(k_total, k_total + int(args.paced_s * HZ))):
        objs = []
        for i in range(scene.n):
            centre, moving, hints[i] = scene.state(i, k, hints[i])
            objs.append(map_object(scene, i, k, centre, moving))
        t0 = time.perf_counter_ns()
        store.submit(k / HZ, objs)
        submit_ns.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        store.where_at(int(rng.integers(scene.n)), float(rng.uniform(t0_span, k / HZ)))
        query_ms.append((time.perf_counter_ns() - t0) / 1e6)
        time.sleep(max(0.0, start + (n + 1) / HZ - time.monotonic()))
    if submit_ns:
        print(f"paced_s={args.paced_s:.0f} paced_submit_ms_p99="
              f"{np.percentile(submit_ns, 99) / 1e6:.4f} paced_submit_ms_max="
              f"{max(submit_ns) / 1e6:.3f}")
        print(f"paced_where_at_ms_median={statistics.median(query_ms):.3f} "
              f"paced_where_at_ms_max={max(query_ms):.3f}")
    store.close()
    t = time.perf_counter()
    MemoryStore(path, retention_s=48 * 3600.0, max_mb=args.max_mb).close()
    print(f"reopen_ms={(time.perf_counter() - t) * 1e3:.0f}")  # a node start on this memory
    size = path.stat().st_size / 1e6
    print(f"db_mb={size:.1f}")
    print(f"bytes_per_observation={path.stat().st_size / st.observations:.1f}")
    if args.keep:
        shutil.copy(path, args.keep)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
