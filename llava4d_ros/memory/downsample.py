"""Which snapshots of the object map become rows: the policy that keeps 8 h of 50 objects at
15 Hz under the size budget while the latest state stays exact.

Per object, compared with the last row written for it (its anchor):
- first sighting, or a change of support or of is_dynamic: a CHANGE row at once;
- centre moved more than `position_tol_m` (or extents changed more than `size_tol_m`): a
  MOVING (CHANGE) row, at most one per `moving_period_s` (5 Hz by default), and the move is
  recorded as an episode (from where, to where, when) that `moved_between` reads;
- otherwise, seen again `heartbeat_s` after the last row: a HEARTBEAT row, so that the history
  says the object was still there (size trimming drops these first);
- otherwise nothing: the objects table still gets the latest state and last_seen each commit.
Only CHANGE and MOVING rows move the anchor, so jitter that keeps any two samples within the
tolerance (+-8 mm per axis for 3 cm) never writes a row or walks the anchor away: a static
object's history is one row per heartbeat however long it is watched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from llava4d_ros.core.objects import MapObject
from llava4d_ros.memory.records import mm
from llava4d_ros.memory.schema import CHANGE, HEARTBEAT, MOVING


@dataclass(frozen=True)
class DownsamplePolicy:
    position_tol_m: float = 0.03  # above a tracked box's jitter, below a mug's width
    size_tol_m: float = 0.05
    heartbeat_s: float = 30.0
    moving_period_s: float = 0.2  # 5 Hz: where-at-T stays within ~0.2 s of motion
    move_gap_s: float = 2.0  # a shorter pause continues the same move

    def __post_init__(self) -> None:
        if min(self.position_tol_m, self.size_tol_m, self.heartbeat_s) <= 0:
            raise ValueError(f"tolerances and heartbeat must be positive: {self}")
        if self.moving_period_s < 0 or self.move_gap_s < 0:
            raise ValueError(f"periods must be >= 0: {self}")


@dataclass
class Move:
    """One move of one object; `row_id` is None until it is inserted."""

    object_id: int
    start_s: float
    end_s: float
    p_from: tuple[float, float, float]
    p_to: tuple[float, float, float]
    row_id: int | None = None

    def row(self) -> tuple:
        return (self.object_id, self.start_s, self.end_s, *(mm(v) for v in self.p_from),
                *(mm(v) for v in self.p_to))


@dataclass
class Track:
    """What the policy remembers of one object: its anchor (the last written row) and when it
    was last seen."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    support: str
    is_dynamic: bool
    in_view: bool
    written_s: float
    seen_s: float
    settled_since_s: float
    at_anchor_s: float  # last seen within position_tol_m of the anchor: where a move starts
    move: Move | None = None


def _yaw_mrad(world_from_box) -> int:
    return int(round(1000.0 * math.atan2(float(world_from_box[1][0]),
                                         float(world_from_box[0][0]))))


@dataclass
class Pending:
    """Rows for one commit: observations, each object's latest snapshot (with its
    settled_since_s), the moves touched, the highest object id and the newest stamp seen."""

    observations: list[tuple] = field(default_factory=list)
    objects: dict[int, tuple[MapObject, float]] = field(default_factory=dict)  # settled_since
    moves: dict[int, Move] = field(default_factory=dict)  # keyed by id(move)
    max_object_id: int = -1
    newest_s: float = -math.inf


class Downsampler:
    """Turns keyframes of MapObjects into rows (see the module docstring). Not thread-safe:
    the writer thread owns it."""

    def __init__(self, policy: DownsamplePolicy, tracks: dict[int, Track] | None = None):
        self.policy = policy
        self.tracks: dict[int, Track] = dict(tracks or {})
        self.pending = Pending()

    def take(self) -> Pending:
        out, self.pending = self.pending, Pending()
        return out

    def add(self, stamp_s: float, objects: Sequence[MapObject]) -> None:
        """Feed one keyframe (`stamp_s` [s]) of the map's objects."""
        pol, out = self.policy, self.pending
        out.newest_s = max(out.newest_s, stamp_s)
        for obj in objects:
            oid = obj.object_id
            seen = obj.last_seen_s
            tr = self.tracks.get(oid)
            if tr is not None and seen <= tr.seen_s and obj.in_view == tr.in_view:
                continue  # not seen anew: nothing to store
            c = tuple(obj.center.tolist())
            s = tuple(obj.size.tolist())
            out.max_object_id = max(out.max_object_id, oid)
            kind = None
            if tr is None:
                tr = Track(c, s, obj.support, obj.is_dynamic, obj.in_view, seen, seen,
                           obj.first_seen_s, seen)
                self.tracks[oid] = tr
                kind = CHANGE
            elif seen > tr.seen_s:
                a = tr.center
                moved = math.dist(c, a) > pol.position_tol_m
                resized = max(abs(s[0] - tr.size[0]), abs(s[1] - tr.size[1]),
                              abs(s[2] - tr.size[2])) > pol.size_tol_m
                since_written = seen - tr.written_s
                if obj.support != tr.support or obj.is_dynamic != tr.is_dynamic:
                    kind = CHANGE
                    if obj.support != tr.support:
                        tr.settled_since_s = seen
                elif (moved or resized) and since_written >= pol.moving_period_s - 1e-6:
                    kind = MOVING if moved else CHANGE
                elif since_written >= pol.heartbeat_s - 1e-6:
                    kind = HEARTBEAT
                if kind is not None and moved:
                    self._moved(oid, tr, c, seen)
                if kind is not None or not moved:
                    tr.at_anchor_s = seen
            if kind is not None:
                out.observations.append((oid, seen, kind, mm(c[0]), mm(c[1]), mm(c[2]),
                                         mm(s[0]), mm(s[1]), mm(s[2]),
                                         _yaw_mrad(obj.world_from_box), obj.support,
                                         int(obj.is_dynamic)))
                if kind != HEARTBEAT:  # a heartbeat's jitter must not walk the anchor
                    tr.center, tr.size = c, s
                tr.written_s = seen
                tr.support, tr.is_dynamic = obj.support, obj.is_dynamic
            tr.seen_s = max(tr.seen_s, seen)
            tr.in_view = obj.in_view
            out.objects[oid] = (obj, tr.settled_since_s)

    def _moved(self, oid: int, tr: Track, c: tuple, seen: float) -> None:
        mv = tr.move
        if mv is None or seen - mv.end_s > self.policy.move_gap_s:
            mv = Move(oid, tr.at_anchor_s, seen, tr.center, c)
            tr.move = mv
        else:
            mv.end_s, mv.p_to = seen, c
        tr.settled_since_s = seen
        self.pending.moves[id(mv)] = mv


def object_row(obj: MapObject, settled_since_s: float) -> tuple:
    """The objects-table row of `obj`: writer.UPSERT_OBJECT's columns, in order."""
    c = obj.center.tolist()
    s = obj.size.tolist()
    appearance = json.dumps({"hypotheses": [[h, round(float(p), 4)] for h, p in obj.hypotheses]},
                            separators=(",", ":"))
    return (obj.object_id, obj.category, float(obj.category_confidence), obj.colour, obj.shape,
            obj.label, mm(c[0]), mm(c[1]), mm(c[2]), mm(s[0]), mm(s[1]), mm(s[2]),
            _yaw_mrad(obj.world_from_box), obj.support, float(obj.first_seen_s),
            float(obj.last_seen_s), int(obj.is_dynamic), int(obj.in_view), int(obj.n_views),
            float(settled_since_s), appearance)
