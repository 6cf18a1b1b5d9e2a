"""What the memory's queries return: frozen records of plain floats and tuples.

Frames and units throughout: centres and extents in the world frame [m] (`center`, `size`
`(3,)` tuples, extents along the box axes), `yaw_rad` the upright box's rotation about the
world z axis [rad], stamps in the robot's clock [s].
"""

from __future__ import annotations

import json
from dataclasses import dataclass

Vec3 = tuple[float, float, float]


def mm(v: float) -> int:
    return int(round(v * 1000.0))


def metres(a: int, b: int, c: int) -> Vec3:
    return (a / 1000.0, b / 1000.0, c / 1000.0)


@dataclass(frozen=True)
class StoredObject:
    """The latest stored state of one object and what identifies it again after a restart:
    category, colour, shape, size and `hypotheses` ((category, score) pairs, best first).
    `settled_since_s`: when it last moved or changed support; `disappeared_s`: when its place
    was seen empty (None while it is known)."""

    object_id: int
    category: str
    category_confidence: float
    colour: str
    shape: str
    label: str
    center: Vec3
    size: Vec3
    yaw_rad: float
    support: str
    first_seen_s: float
    last_seen_s: float
    is_dynamic: bool
    in_view: bool
    n_views: int
    settled_since_s: float
    disappeared_s: float | None
    hypotheses: tuple[tuple[str, float], ...]

    @property
    def box6(self) -> tuple[float, ...]:
        """`(cx, cy, cz, sx, sy, sz)` [m], as MapObject.box6."""
        return (*self.center, *self.size)


@dataclass(frozen=True)
class StoredObservation:
    """Where one object was at `stamp_s` (the stamp it was seen at)."""

    object_id: int
    stamp_s: float
    center: Vec3
    size: Vec3
    yaw_rad: float
    support: str
    is_dynamic: bool

    @property
    def box6(self) -> tuple[float, ...]:
        return (*self.center, *self.size)


@dataclass(frozen=True)
class Moved:
    """An object that moved in a queried span: its moves (pauses under the store's
    `move_gap_s` joined) overlapping the span, from the first one's start to the last one's
    end. `start_s` is the last time it was seen at its old place (a move may start before the
    span); `from_center` where it was then, `to_center` where the last move left it."""

    object_id: int
    start_s: float
    end_s: float
    from_center: Vec3
    to_center: Vec3
    moves: int


@dataclass(frozen=True)
class OnSupport:
    """`object_id` has stood on `support` without moving since `since_s`."""

    object_id: int
    support: str
    since_s: float


@dataclass(frozen=True)
class MemoryStatus:
    """For /diagnostics: `level` "ok" / "warn" / "error" and why; counts of stored rows;
    `span` (t0, t1) [s] the memory covers, None when empty; `dropped_batches` keyframes the
    writer could not keep up with; `rejected` submits turned away while writes are off;
    `writer_cpu_s` / `keyframes` the writer's cost so far."""

    level: str
    message: str
    path: str
    objects: int
    observations: int
    events: int
    span: tuple[float, float] | None
    size_mb: float
    dropped_batches: int
    rejected: int
    pending: int
    keyframes: int
    writer_cpu_s: float


OBJECT_COLUMNS = (
    "object_id, category, category_confidence, colour, shape, label, cx_mm, cy_mm, cz_mm, "
    "sx_mm, sy_mm, sz_mm, yaw_mrad, support, first_seen, last_seen, is_dynamic, in_view, "
    "n_views, settled_since, disappeared_s, appearance")

OBSERVATION_COLUMNS = ("object_id, stamp, cx_mm, cy_mm, cz_mm, sx_mm, sy_mm, sz_mm, yaw_mrad, "
                       "support, is_dynamic")


def object_from_row(row: tuple) -> StoredObject:
    """A row of OBJECT_COLUMNS -> StoredObject."""
    (oid, category, conf, colour, shape, label, cx, cy, cz, sx, sy, sz, yaw, support, first,
     last, dynamic, in_view, n_views, settled, gone, appearance) = row
    try:
        hyps = tuple((str(c), float(s)) for c, s in json.loads(appearance).get("hypotheses", ()))
    except (ValueError, TypeError, AttributeError):
        hyps = ()
    return StoredObject(oid, category, conf, colour, shape, label, metres(cx, cy, cz),
                        metres(sx, sy, sz), yaw / 1000.0, support, first, last, bool(dynamic),
                        bool(in_view), n_views, settled, gone, hyps)


def observation_from_row(row: tuple) -> StoredObservation:
    """A row of OBSERVATION_COLUMNS -> StoredObservation."""
    oid, stamp, cx, cy, cz, sx, sy, sz, yaw, support, dynamic = row
    return StoredObservation(oid, stamp, metres(cx, cy, cz), metres(sx, sy, sz), yaw / 1000.0,
                             support, bool(dynamic))
